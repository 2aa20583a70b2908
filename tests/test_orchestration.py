"""prefect.yaml is the one declaration of deployments: check it and that `qtrader serve` reads it."""

from pathlib import Path

from qtrader.orchestration import PREFECT_YAML, deployment_specs, runner_deployments

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_points_at_a_flow_file_and_has_a_schedule():
    specs = deployment_specs()
    assert {s.name for s in specs} >= {
        "ingest-daily",
        "ingest-intraday",
        "features",
        "retrain-daily",
        "benchmark-daily",
        "health",
        "thresholds",
        "decide",
    }
    for s in specs:
        file, fn = s.entrypoint.split(":")
        assert (ROOT / file).exists(), s.entrypoint
        assert f"def {fn}(" in (ROOT / file).read_text()
        assert s.crons and all(tz == "America/New_York" for _, tz in s.crons)


def test_serve_builds_the_same_deployments_with_the_same_schedules():
    deployments = runner_deployments(PREFECT_YAML)
    by_name = {d.name: d for d in deployments}
    for spec in deployment_specs():
        d = by_name[spec.name]
        assert d.parameters == spec.parameters
        assert [s.schedule.cron for s in d.schedules] == [c for c, _ in spec.crons]
