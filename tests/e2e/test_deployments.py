"""End to end through real Prefect infrastructure: a server, `prefect deploy --all`, a process worker.

Every deployment of prefect.yaml is checked through the API (schedules, time zone, work pool), then
triggered once in pipeline order; each run must complete and leave its rows in a temporary warehouse.
Everything started here is stopped, even on failure.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from qtrader.orchestration import deployment_specs
from qtrader.prefect_stack import POOL, PrefectStack
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {
        "QTRADER_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "QTRADER_DATA_DIR": str(tmp / "data"),
        "QTRADER_UNIVERSE": '["AAA", "BBB", "CCC", "DDD"]',
    }
    with PrefectStack(tmp, env) as stack:
        stack.deploy(worker=False)
        yield stack
        shutil.rmtree(tmp / "prefect", ignore_errors=True)


def test_every_deployment_is_registered_with_its_schedule(stack):
    deployments = stack.api("/deployments/filter", {})
    by_name = {d["name"]: d for d in deployments}
    for spec in deployment_specs():
        d = by_name[spec.name]
        assert d["work_pool_name"] == POOL
        crons = sorted(s["schedule"]["cron"] for s in d["schedules"])
        assert crons == sorted(c for c, _ in spec.crons)
        assert {s["schedule"]["timezone"] for s in d["schedules"]} == {"America/New_York"}
    assert set(ORDER) == set(by_name)


def _scheduled_runs(stack, deployment_id: str) -> list[dict]:
    return stack.api(
        "/flow_runs/filter",
        {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC",
         "limit": 20},
    )  # fmt: skip


def test_the_scheduler_creates_runs_from_the_production_schedules(stack):
    """Prefect's scheduler service itself (no manual trigger) fills every deployment's upcoming runs, on the
    times of its crons in New York time, whatever day and hour the test runs."""
    deployments = {d["name"]: d for d in stack.api("/deployments/filter", {})}
    missing: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        runs = {name: _scheduled_runs(stack, d["id"]) for name, d in deployments.items()}
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


def test_each_deployment_runs_to_completion_through_the_worker(stack):
    stack.start_worker()
    deployments = {d["name"]: d for d in stack.api("/deployments/filter", {})}
    for name in ORDER:
        run = stack.run_deployment(deployments[name]["id"], timeout=240, poll=1)
        state = run["state"]
        assert state["type"] == "COMPLETED", f"{name}: {state['message']}\n" + stack.worker_log()
        n = query_df(stack.env["QTRADER_WAREHOUSE"], EXPECTED_ROWS[name]).iloc[0, 0]
        assert n > 0, f"{name} completed but wrote no rows ({EXPECTED_ROWS[name]})"
        artifacts = stack.api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        assert artifacts, f"{name} published no artifact"
