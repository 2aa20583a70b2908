"""Run records of the ingest and decide flows (``pipeline_runs``, migration 012): open, move, close, and
find the ones whose process died without closing them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from warehouse.db import WarehouseLike, transaction
from warehouse.ingest import IngestRun, _insert_run

ENDED = ("success", "partial", "failed", "refused", "interrupted", "crashed")
MASK = "********"


def masked(value):
    """``value`` with every entry whose name says key or secret masked (overrides may carry Alpaca keys):
    secrets never reach the warehouse."""
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and ("key" in k.lower() or "secret" in k.lower()) else masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


@dataclass
class PipelineRun:
    run_id: str
    flow: str
    host: str
    pid: int
    started_at: pd.Timestamp
    pid_started: float | None = None
    flow_run_id: str | None = None
    interval: str | None = None
    parameters: dict | None = None
    status: str = "running"
    stage: str | None = None


def open_run(wh: WarehouseLike, run: PipelineRun) -> None:
    with transaction(wh) as con:
        con.execute(
            "INSERT INTO pipeline_runs (run_id, flow, flow_run_id, interval, status, stage, host, pid, "
            "pid_started, parameters, started_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
            [run.run_id, run.flow, run.flow_run_id, run.interval, run.stage, run.host, run.pid,
             run.pid_started, json.dumps(masked(run.parameters or {}), default=str), run.started_at],
        )  # fmt: skip


def move_run(wh: WarehouseLike, run_id: str, *, stage: str, interval: str | None = None) -> None:
    """Record what a running run is doing now (and, for ingest, the interval in flight)."""
    with transaction(wh) as con:
        con.execute(
            "UPDATE pipeline_runs SET stage = ?, interval = coalesce(?, interval) "
            "WHERE run_id = ? AND status = 'running'",
            [stage, interval, run_id],
        )


def close_run(
    wh: WarehouseLike, run_id: str, status: str, message: str | None, at: pd.Timestamp, con=None
) -> bool:
    """Close a running run; False when it was closed already (a run is closed once)."""
    if status not in ENDED:
        raise ValueError(f"not an end status: {status}")
    sql = (
        "UPDATE pipeline_runs SET status = ?, message = ?, finished_at = ? "
        "WHERE run_id = ? AND status = 'running' RETURNING run_id"
    )
    if con is not None:
        return bool(con.execute(sql, [status, message, at, run_id]).fetchall())
    with transaction(wh) as own:
        return bool(own.execute(sql, [status, message, at, run_id]).fetchall())


def running_on(wh: WarehouseLike, host: str) -> pd.DataFrame:
    """Runs of this host still marked running (some may belong to processes that died)."""
    with transaction(wh) as con:  # read-write: the file may be behind migration 012
        return con.execute(
            "SELECT run_id, flow, flow_run_id, interval, stage, pid, pid_started, parameters, started_at "
            "FROM pipeline_runs WHERE status = 'running' AND host = ?",
            [host],
        ).df()


def crashed_flow_runs(wh: WarehouseLike, since: pd.Timestamp) -> dict[str, str]:
    """Prefect flow run id -> why, of the runs marked crashed since ``since``."""
    with transaction(wh) as con:
        rows = con.execute(
            "SELECT flow_run_id, message FROM pipeline_runs WHERE status = 'crashed' "
            "AND flow_run_id IS NOT NULL AND finished_at >= ?",
            [since],
        ).fetchall()
    return {str(fid): str(msg) for fid, msg in rows}


def record_ingest_end(con, run: PipelineRun, status: str, message: str, at: pd.Timestamp) -> None:
    """The ingest_runs row of the interval an ingest was working on when it was stopped or died."""
    params = run.parameters or {}
    _insert_run(
        con,
        IngestRun(
            run_id=run.run_id,
            flow_run_id=run.flow_run_id,
            source=str(params.get("source") or "?"),
            interval=run.interval or "?",
            symbols=list(params.get("symbols") or []),
            started_at=run.started_at,
            finished_at=at,
            status=status,
            message=message,
        ),
    )
