"""End to end through real Prefect infrastructure: a server, `prefect deploy --all`, a process worker.

Every deployment of prefect.yaml is checked through the API (schedules, time zone, work pool), then
triggered once in pipeline order; each run must complete and leave its rows in a temporary warehouse.
Everything started here is stopped, even on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qtrader.orchestration import deployment_specs
from warehouse.db import query_df

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "qtrader-process"
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None, method: str | None = None):
    # The server answers 503 while its SQLite database is busy (two cores, a worker starting flows): retry.
    for attempt in range(10):
        try:
            return _api_once(url, path, body, method)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == 9:
                raise
            time.sleep(1 + attempt)


def _api_once(url: str, path: str, body: dict | None, method: str | None):
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method or ("POST" if body is not None else "GET"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or "null")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "QTRADER_HOME": str(ROOT),
        "QTRADER_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "QTRADER_DATA_DIR": str(tmp / "data"),
        "QTRADER_UNIVERSE": '["AAA", "BBB", "CCC", "DDD"]',
    }
    procs: list[subprocess.Popen] = []
    logs = tmp / "logs"
    logs.mkdir()

    def start(name: str, *args: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            [str(BIN / "prefect"), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(p)
        return p

    try:
        start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off")
        deadline = time.monotonic() + 90
        while True:
            try:
                if _api(url, "/health") is True:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("Prefect server did not start: " + (logs / "server.log").read_text()[-2000:])
            time.sleep(0.5)

        def run(*args: str) -> None:
            done = subprocess.run(
                [str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        run("work-pool", "create", POOL, "--type", "process", "--overwrite")
        run("gcl", "create", "warehouse-writer", "--limit", "1")
        run("--no-prompt", "deploy", "--all")
        start("worker", "worker", "start", "--pool", POOL, "--prefetch-seconds", "5")
        yield {"url": url, "env": env, "logs": logs}
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(tmp / "prefect", ignore_errors=True)


def test_every_deployment_is_registered_with_its_schedule(stack):
    deployments = _api(stack["url"], "/deployments/filter", {})
    by_name = {d["name"]: d for d in deployments}
    for spec in deployment_specs():
        d = by_name[spec.name]
        assert d["work_pool_name"] == POOL
        crons = sorted(s["schedule"]["cron"] for s in d["schedules"])
        assert crons == sorted(c for c, _ in spec.crons)
        assert {s["schedule"]["timezone"] for s in d["schedules"]} == {"America/New_York"}
    assert set(ORDER) == set(by_name)
    limits = _api(stack["url"], "/v2/concurrency_limits/filter", {})
    assert any(lim["name"] == "warehouse-writer" and lim["limit"] == 1 for lim in limits)


def test_each_deployment_runs_to_completion_through_the_worker(stack):
    url, env = stack["url"], stack["env"]
    deployments = {d["name"]: d for d in _api(url, "/deployments/filter", {})}
    for name in ORDER:
        run = _api(url, f"/deployments/{deployments[name]['id']}/create_flow_run", {})
        deadline = time.monotonic() + 240
        while True:
            state = _api(url, f"/flow_runs/{run['id']}")["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{name} did not finish: {state}; worker log:\n"
                    + (stack["logs"] / "worker.log").read_text()[-3000:]
                )
            time.sleep(1)
        assert state["type"] == "COMPLETED", (
            f"{name}: {state['message']}\n" + (stack["logs"] / "worker.log").read_text()[-4000:]
        )
        n = query_df(env["QTRADER_WAREHOUSE"], EXPECTED_ROWS[name]).iloc[0, 0]
        assert n > 0, f"{name} completed but wrote no rows ({EXPECTED_ROWS[name]})"
        artifacts = _api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        assert artifacts, f"{name} published no artifact"
