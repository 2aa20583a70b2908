"""End to end through real Prefect infrastructure, as deployed: a server, `prefect deploy --all`, the
scheduler, the event triggers and a process worker. No run is triggered by hand.

1. Every deployment of prefect.yaml is registered with its schedules, time zone, tags and triggers.
2. Prefect's scheduler service fills every deployment's upcoming runs on its production crons.
3. A CLI command, with the server up, runs its flow on that server (one Prefect home), named for what ran.
4. An unattended trading day: the compressed cadence of prefect.yaml (docs/orchestration.md) and a
   worker; ingest -> features -> retrain -> benchmark -> health/thresholds -> decide run by themselves
   in that order, the completion triggers queue features after an ingest and decide after features, and
   the warehouse ends with decisions and bracket orders from the local paper broker.

Everything started here is stopped, even on failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from qtrader.orchestration import deployment_specs
from qtrader.prefect_stack import BIN, POOL, ROOT, PrefectStack
from warehouse.db import query_df

# Pipeline order: each flow reads what the ones before it wrote.
ORDER = [
    "ingest-daily", "ingest-intraday", "features", "retrain-daily", "retrain-intraday",
    "benchmark-daily", "benchmark-intraday", "health", "thresholds", "decide",
]  # fmt: skip
EXPECTED_ROWS = {
    "ingest-daily": "SELECT count(*) FROM bars WHERE interval = '1d'",
    "ingest-intraday": "SELECT count(*) FROM bars WHERE interval = '5m'",
    "features": "SELECT count(*) FROM features",
    "retrain-daily": "SELECT count(*) FROM model_registry WHERE interval = '1d'",
    "retrain-intraday": "SELECT count(*) FROM model_registry WHERE interval = '5m'",
    "benchmark-daily": "SELECT count(*) FROM benchmarks WHERE interval = '1d'",
    "benchmark-intraday": "SELECT count(*) FROM benchmarks WHERE interval = '5m'",
    "health": "SELECT count(*) FROM health",
    "thresholds": "SELECT count(*) FROM thresholds",
    "decide": "SELECT count(*) FROM decisions",
}
# The test profile's trade filter (docs/orchestration.md): the synthetic modules sit near a coin flip, so
# the default filter would reject every candidate; this one lets brackets through to the paper broker. A
# member votes at any edge: with the default 0.05 most calibrated members abstain near 0.5, and a day with
# one decision bar of six symbols then often has no candidate with a consensus (seen: all six NONE).
LOOSE_FILTER = {
    "QTRADER_SIGNAL__ENSEMBLE_MIN_EDGE": "0.0",
    "QTRADER_TRADE_FILTER__MIN_CONFIDENCE": "0.5",
    "QTRADER_TRADE_FILTER__HEALTH_GATING": "false",
    "QTRADER_TRADE_FILTER__ALLOWED_CONSENSUS": '["UNANIMOUS", "STRONG", "WEAK"]',
}
DAY_TIMEOUT_S = 1500


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {
        "QTRADER_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "QTRADER_DATA_DIR": str(tmp / "data"),
        "QTRADER_UNIVERSE": '["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]',
        **LOOSE_FILTER,
    }
    with PrefectStack(tmp, env) as stack:
        stack.deploy(worker=False)
        yield stack
        shutil.rmtree(tmp / "prefect", ignore_errors=True)


def _deployments(stack) -> dict[str, dict]:
    return {d["name"]: d for d in stack.api("/deployments/filter", {})}


def test_every_deployment_is_registered_with_its_schedule_tags_and_triggers(stack):
    by_name = _deployments(stack)
    assert set(ORDER) == set(by_name)
    for spec in deployment_specs():
        d = by_name[spec.name]
        assert d["work_pool_name"] == POOL
        crons = sorted(s["schedule"]["cron"] for s in d["schedules"])
        assert crons == sorted(c for c, _ in spec.crons)
        assert {s["schedule"]["timezone"] for s in d["schedules"]} == {"America/New_York"}
        assert "America/New_York" in d["description"] and d["tags"] == list(spec.tags)
        assert not {"now", "faults", "broker"} & set(d["parameter_openapi_schema"]["properties"])
    automations = stack.api("/automations/filter", {})
    targets = {
        a["actions"][0]["deployment_id"]: a["trigger"]["match_related"]["prefect.resource.name"]
        for a in automations
        if a["actions"][0]["type"] == "run-deployment"
    }
    assert targets == {
        by_name["features"]["id"]: ["ingest-daily", "ingest-intraday"],
        by_name["decide"]["id"]: "features",
    }


def _runs(stack, deployment_ids: list[str], limit: int = 200) -> list[dict]:
    return stack.api(
        "/flow_runs/filter",
        {"flow_runs": {"deployment_id": {"any_": deployment_ids}}, "sort": "EXPECTED_START_TIME_ASC",
         "limit": limit},
    )  # fmt: skip


def test_the_scheduler_creates_runs_from_the_production_schedules(stack):
    """Prefect's scheduler service itself (no manual trigger) fills every deployment's upcoming runs, on the
    times of its crons in New York time, whatever day and hour the test runs."""
    deployments = _deployments(stack)
    missing: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        runs = {name: _runs(stack, [d["id"]], limit=20) for name, d in deployments.items()}
        missing = [name for name, r in runs.items() if not r]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, f"the scheduler created no run for {missing}:\n" + stack.server_log()
    ny = ZoneInfo("America/New_York")
    for spec in deployment_specs():
        for run in runs[spec.name]:
            assert run["auto_scheduled"] and run["state"]["type"] == "SCHEDULED", run
            when = datetime.fromisoformat(run["expected_start_time"]).astimezone(ny)
            # Each run falls on one of the deployment's crons: the next fire time from just before it is it.
            just_before = when.replace(second=0, microsecond=0) - timedelta(minutes=1)
            fire_times = {next(iter(CronSim(cron, just_before))) for cron, _ in spec.crons}
            assert when in fire_times, f"{spec.name}: run at {when} not on {spec.crons}"


def test_a_cli_run_lands_on_the_running_server_named_for_what_ran(stack, tmp_path):
    """With a server up (here on a free port instead of `make ui`'s 4200), `qtrader ingest` runs its flow
    there, not on a temporary server of its own: the run is in the UI. Its first write creates the
    warehouse-writer limit; no Prefect warning is printed."""
    env = {k: v for k, v in stack.env.items() if k != "PREFECT_API_URL"}
    env |= {"QTRADER_PREFECT_UI_URL": stack.url, "QTRADER_WAREHOUSE": str(tmp_path / "cli.duckdb"),
            "QTRADER_DATA_DIR": str(tmp_path / "data"), "QTRADER_HISTORY_DAYS": "60"}  # fmt: skip
    done = subprocess.run([str(BIN / "qtrader"), "ingest", "--interval", "1d", "--symbols", "AAA"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"Prefect: the Prefect server at {stack.url}" in out
    assert "Starting temporary server" not in out and "WARNING" not in out, out
    runs = stack.api("/flow_runs/filter", {"flow_runs": {"name": {"any_": ["ingest 1d synthetic"]}}})
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"], "the CLI's run is not on the server"
    limits = stack.api("/v2/concurrency_limits/filter", {})
    assert any(lim["name"] == "warehouse-writer" and lim["limit"] == 1 for lim in limits)


def _created_by_automation(run: dict) -> bool:
    return (run.get("created_by") or {}).get("type") == "AUTOMATION"


@pytest.mark.slow
@pytest.mark.timeout(DAY_TIMEOUT_S + 300)  # beyond the suite's 600 s: ten flow runs one after another
def test_an_unattended_trading_day(stack):
    started = time.monotonic()
    deployments = _deployments(stack)
    names = {d["id"]: n for n, d in deployments.items()}
    # What `make deploy CADENCE=compressed` runs after `prefect deploy --all`.
    applied = subprocess.run([sys.executable, "-m", "qtrader.orchestration", "--cadence", "compressed"], cwd=ROOT,
                             env=stack.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert applied.returncode == 0, applied.stdout + applied.stderr
    stack.start_worker()
    deadline = time.monotonic() + 120
    while missing := [n for n, d in deployments.items() if not _runs(stack, [d["id"]], limit=1)]:
        if time.monotonic() > deadline:
            pytest.fail(f"the scheduler created no run for {missing}:\n" + stack.server_log())
        time.sleep(2)

    def progress() -> tuple[list[dict], set[str], bool, bool, bool]:
        runs = _runs(stack, list(names))
        bad = [r for r in runs if r["state"]["type"] in ("FAILED", "CRASHED", "CANCELLED")]
        assert not bad, "\n".join(f"{names[r['deployment_id']]}: {r['state']['message']}" for r in bad) + (
            "\n" + stack.worker_log()
        )
        done = {names[r["deployment_id"]] for r in runs if r["state"]["type"] == "COMPLETED"}
        traded = any(
            names[r["deployment_id"]] == "decide" and r["state"]["type"] == "COMPLETED"
            and r["state"]["name"] == "Completed" for r in runs
        )  # fmt: skip
        features_by_event = any(
            names[r["deployment_id"]] == "features" and _created_by_automation(r) for r in runs
        )
        decide_by_event = any(
            names[r["deployment_id"]] == "decide" and _created_by_automation(r) for r in runs
        )
        return runs, done, traded, features_by_event, decide_by_event

    deadline = started + DAY_TIMEOUT_S
    while True:
        runs, done, traded, features_by_event, decide_by_event = progress()
        if done == set(ORDER) and traded and features_by_event and decide_by_event:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {DAY_TIMEOUT_S} s: completed {sorted(done)}, decide traded {traded}, features by "
                f"event {features_by_event}, decide by event {decide_by_event}\n" + stack.worker_log()
            )
        time.sleep(3)
    elapsed = time.monotonic() - started
    stack.stop_worker()  # the warehouse is free to read
    print(f"unattended day: {elapsed:.0f} s, {len(runs)} runs")

    # Nobody triggered a run: each came from a schedule or a completion event.
    assert all(r["auto_scheduled"] or _created_by_automation(r) for r in runs), [
        (names[r["deployment_id"]], r["created_by"]) for r in runs if not r["auto_scheduled"]
    ]
    # Each stage first completed after the one before it started: the day ran in pipeline order.
    first_start = {}
    for r in sorted((r for r in runs if r["state"]["type"] == "COMPLETED"), key=lambda r: r["start_time"]):
        first_start.setdefault(names[r["deployment_id"]], r["start_time"])
    assert sorted(ORDER, key=first_start.__getitem__) == ORDER
    db = stack.env["QTRADER_WAREHOUSE"]
    for name, sql in EXPECTED_ROWS.items():
        assert query_df(db, sql).iloc[0, 0] > 0, f"{name} completed but wrote no rows ({sql})"
    orders = query_df(db, "SELECT role, count(*) AS n FROM paper_orders GROUP BY role")
    assert set(orders["role"]) == {"entry", "take_profit", "stop_loss"}, orders
    for r in runs:
        if r["state"]["type"] == "COMPLETED":
            artifacts = stack.api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [r["id"]]}}})
            assert artifacts, f"{names[r['deployment_id']]} run {r['name']} published no artifact"
    log = stack.worker_log(200_000)
    assert "do not exist" not in log and "skipping acquisition" not in log
    limits = stack.api("/v2/concurrency_limits/filter", {})
    assert [lim["limit"] for lim in limits if lim["name"] == "warehouse-writer"] == [1]
