"""Prefect's own cost, and the decide deployment end to end through a process worker.

Setup (not timed): a Prefect server on a free port with a temporary ``PREFECT_HOME``, a temporary warehouse
and data folder (``QTRADER_WAREHOUSE``, ``QTRADER_DATA_DIR``) and a universe of N synthetic tickers
(``QTRADER_UNIVERSE``).

(a) Overhead, in this process against that server: an empty flow and a flow of T trivial tasks, each run
    R times after one warm-up run. Printed: ms per flow run (the empty flow, and the flow with its tasks)
    and ms per task (timed inside the flow body, so the flow's own start and end are not in it).
(b) ``decide`` (interval 5m) for N symbols: the warehouse is prepared in this process with plain calls of
    the flows (ingest 1d+5m, features, retrain 5m, benchmark 5m, health), then the work pool, the
    ``warehouse-writer`` limit and ``prefect deploy --all``, a process worker; the ``decide`` deployment
    is triggered through the REST API and timed from trigger to a final state: target <= 15 s.

Everything started here is stopped, even on failure.

    .venv/bin/python benchmarks/orchestration.py [--symbols 50] [--runs 10] [--tasks 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_DECIDE_S = 15.0

from benchmarks.machine import describe, peak_rss_mib  # noqa: E402
from qtrader.prefect_stack import PrefectStack  # noqa: E402


def overhead(runs: int, n_tasks: int) -> tuple[float, float, float]:
    """ms per flow run (an empty flow), ms per flow run with n_tasks trivial tasks, and ms per task (timed
    inside the flow body, so flow start and end are not in it), in this process against the server."""
    from prefect import flow, task

    @task
    def noop(i: int) -> int:
        return i

    @flow(name="bench-empty")
    def empty() -> int:
        return 0

    @flow(name="bench-tasks")
    def with_tasks(n: int) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            noop(i)
        return time.perf_counter() - t0

    empty()
    with_tasks(n_tasks)  # warm-up
    t0 = time.perf_counter()
    for _ in range(runs):
        empty()
    per_flow = (time.perf_counter() - t0) / runs
    t0 = time.perf_counter()
    in_tasks = sum(with_tasks(n_tasks) for _ in range(runs))
    per_flow_with_tasks = (time.perf_counter() - t0) / runs
    return per_flow * 1000, per_flow_with_tasks * 1000, in_tasks / (runs * n_tasks) * 1000


def prepare(db: str) -> float:
    """The warehouse decide needs, with plain flow calls (as `qtrader demo` does). Returns seconds."""
    from flows.benchmark import benchmark
    from flows.features import features
    from flows.health import health
    from flows.ingest import ingest
    from flows.retrain import retrain

    t0 = time.perf_counter()
    ingest(warehouse=db)  # every configured interval: 1d and 5m
    features(warehouse=db)
    retrain(interval="5m", warehouse=db)
    benchmark(interval="5m", warehouse=db)
    health(warehouse=db)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=20)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="qtrader-bench-orch-"))
    db = str(tmp / "warehouse.duckdb")
    stack = PrefectStack(
        tmp,
        {
            "QTRADER_WAREHOUSE": db,
            "QTRADER_DATA_DIR": str(tmp / "data"),
            "QTRADER_UNIVERSE": json.dumps([f"S{i:03d}" for i in range(args.symbols)]),
            "TQDM_DISABLE": "1",
        },
    )
    # Before prefect is imported: this process runs its flows against the same server.
    os.environ.update(stack.env)
    ok = True
    try:
        t0 = time.perf_counter()
        with stack:
            print(f"server up on port {stack.port} in {time.perf_counter() - t0:.1f} s (not timed)")
            ms_flow, ms_flow_tasks, ms_task = overhead(args.runs, args.tasks)
            print(f"(a) overhead, {args.runs} runs each: {ms_flow:.0f} ms per flow run (empty flow), "
                  f"{ms_flow_tasks:.0f} ms per flow run with {args.tasks} trivial tasks, "
                  f"{ms_task:.1f} ms per task (timed inside the flow)")  # fmt: skip

            prep_s = prepare(db)
            print(f"setup: warehouse for {args.symbols} symbols (ingest 1d+5m, features, retrain 5m, "
                  f"benchmark 5m, health) in {prep_s:.1f} s (not timed)")  # fmt: skip
            t0 = time.perf_counter()
            stack.deploy()
            print(
                f"setup: pool, deploy --all, worker started in {time.perf_counter() - t0:.1f} s (not timed)"
            )

            deployment = stack.api("/deployments/name/decide/decide")
            t0 = time.perf_counter()
            run_info = stack.run_deployment(deployment["id"], timeout=300, poll=0.2)
            decide_s = time.perf_counter() - t0
            state = run_info["state"]
            start_lag = None
            if run_info.get("start_time"):
                started = datetime.fromisoformat(run_info["start_time"])
                start_lag = (started - datetime.fromisoformat(run_info["created"])).total_seconds()

            from warehouse.db import query_df

            decisions = int(query_df(db, "SELECT count(*) FROM decisions").iloc[0, 0])
            ok = state["type"] == "COMPLETED" and state["name"] != "Refused" and decide_s <= TARGET_DECIDE_S
            print(f"(b) decide 5m, {args.symbols} symbols, deployment through a process worker: "
                  f"{decide_s:.1f} s trigger to {state['type']} ({state['name']}), target <= "
                  f"{TARGET_DECIDE_S:.0f} s: {'met' if ok else 'MISSED'}")  # fmt: skip
            if start_lag is not None:
                print(
                    f"    of which trigger to flow start (worker poll, subprocess, imports): {start_lag:.1f} s; "
                    f"flow run time {run_info.get('total_run_time', 0):.1f} s; {decisions} decision rows"
                )
            if state["type"] != "COMPLETED" or state["name"] == "Refused":
                print(f"    state message: {state.get('message')}")
                if state["type"] != "COMPLETED":
                    print(stack.worker_log())
    except Exception as exc:
        ok = False
        print(f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"peak RSS of this process {peak_rss_mib():.0f} MiB")
    print(f"machine: {describe()}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
