"""Every ingest and decide run leaves a record, however it ends (issue 14; docs/fault-injection.md).

``recorded(...)`` wraps a flow's body: it first marks the runs of this host whose process is gone as
``crashed`` (a ``kill -9`` leaves no chance to say anything: the next start says it), then opens the run's
row in ``pipeline_runs`` and closes it as the body ends: its outcome, ``failed`` with the error's first
line, or ``interrupted`` with the signal (SIGINT arrives as KeyboardInterrupt, SIGTERM as Prefect's
TerminationSignal or the CLI's ``qtrader.interrupts.Stopped``). An ingest also writes the ``ingest_runs`` row of the
interval it was working on, so ``qtrader status`` lists the run with the others.

The run-record writes hold the warehouse's writer limit like every other write of a flow; when the limit
cannot be had (Prefect's server gone while a run ends), the record is written without it: it is one short
statement, and DuckDB's own lock still orders it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

import pandas as pd
import psutil

from qtrader.interrupts import stopping_signal
from warehouse.db import Warehouse, transaction
from warehouse.runs import (
    PipelineRun,
    close_run,
    crashed_flow_runs,
    move_run,
    open_run,
    record_ingest_end,
    running_on,
)

log = logging.getLogger(__name__)


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int, started: float | None) -> bool:
    """The process ``pid`` runs and is the one that started at ``started`` (not a reuse of its pid)."""
    now = _process_started(pid)
    if now is None:
        return False
    return started is None or abs(now - started) < 1.0


@dataclass
class RunHandle:
    """The open record of a running flow; ``stage`` / ``outcome`` update it."""

    wh: Warehouse
    run: PipelineRun
    status: str = "success"
    message: str | None = None
    on_stop: list[Callable] = field(default_factory=list)

    def stage(self, stage: str, interval: str | None = None) -> None:
        self.run.stage = stage
        if interval is not None:
            self.run.interval = interval
        move_run(self.wh, self.run.run_id, stage=stage, interval=interval)

    def outcome(self, status: str, message: str | None = None) -> None:
        self.status, self.message = status, message


def _ingest_row_needed(run: PipelineRun) -> bool:
    """An ingest stopped before its interval's own ingest_runs row was written (``recorded``)."""
    return run.flow == "ingest" and run.stage != "recorded"


def _guarded_or_not(wh: Warehouse, write: Callable[[Warehouse], object]) -> object:
    try:
        return write(wh)
    except Exception:  # noqa: BLE001 - the limit (a Prefect API call) failed: the record still matters
        if wh.writer is None:
            raise
        log.warning("run record written without the writer limit (Prefect unavailable)", exc_info=True)
        return write(Warehouse(wh.path, wh.policy))


def _end(wh: Warehouse, run: PipelineRun, status: str, message: str, at: pd.Timestamp) -> None:
    _guarded_or_not(wh, lambda w: _end_in(w, run, status, message, at))


def _end_in(wh: Warehouse, run: PipelineRun, status: str, message: str, at: pd.Timestamp) -> None:
    with transaction(wh) as con:
        closed = close_run(wh, run.run_id, status, message, at, con=con)
        if closed and status in ("failed", "interrupted", "crashed") and _ingest_row_needed(run):
            record_ingest_end(con, run, status, message, at)


def reap_crashed(wh: Warehouse, host: str | None = None, now: pd.Timestamp | None = None) -> list[str]:
    """Mark the runs of this host whose process is gone as crashed; their run ids."""
    host = host or socket.gethostname()
    now = now or pd.Timestamp.now(tz="UTC")
    reaped = []
    for row in running_on(wh, host).itertuples(index=False):
        if process_alive(int(row.pid), None if pd.isna(row.pid_started) else float(row.pid_started)):
            continue
        params = row.parameters if isinstance(row.parameters, dict) else _json(row.parameters)
        run = PipelineRun(run_id=row.run_id, flow=row.flow, host=host, pid=int(row.pid),
                          started_at=row.started_at, flow_run_id=row.flow_run_id, interval=row.interval,
                          parameters=params, stage=row.stage)  # fmt: skip
        why = f"process {row.pid} on {host} ended without closing the run (killed, or the machine stopped)"
        _end(wh, run, "crashed", why, now)
        log.warning("run %s (%s) marked crashed: %s", row.run_id, row.flow, why)
        reaped.append(row.run_id)
    return reaped


def close_prefect_runs(wh: Warehouse, days: int = 7) -> int:
    """In a flow: the Prefect flow runs of runs marked crashed (in the last ``days``) that Prefect still
    shows Running or Pending are set Crashed, with the warehouse's reason. A killed process could not report
    its end; this is the next start doing it. Best effort: the flow's own work comes first."""
    if "prefect" not in sys.modules:
        return 0
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return 0
    crashed = crashed_flow_runs(wh, pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days))
    if not crashed:
        return 0
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    closed = 0
    try:
        with get_client(sync_client=True) as client:
            stuck = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[UUID(i) for i in crashed]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                    ),
                )
            )
            for fr in stuck:
                client.set_flow_run_state(fr.id, Crashed(message=crashed[str(fr.id)]), force=True)
                closed += 1
    except Exception:  # noqa: BLE001 - never fail a run over an older run's Prefect state
        log.exception("could not mark the Prefect flow runs of crashed runs")
    return closed


def _json(text) -> dict:
    import json

    try:
        return json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}


@contextmanager
def recorded(
    wh: Warehouse,
    flow: str,
    run_id: str,
    *,
    flow_run_id: str | None = None,
    interval: str | None = None,
    parameters: dict | None = None,
) -> Iterator[RunHandle]:
    """Record the run for the block: open as it starts, closed with its outcome however it ends."""
    pid = os.getpid()
    run = PipelineRun(run_id=run_id, flow=flow, host=socket.gethostname(), pid=pid,
                      pid_started=_process_started(pid), started_at=pd.Timestamp.now(tz="UTC"),
                      flow_run_id=flow_run_id, interval=interval, parameters=parameters, stage="start")  # fmt: skip
    with wh.session():  # reaping and opening share one connection and one writer slot
        _guarded_or_not(wh, reap_crashed)
        close_prefect_runs(wh)
        open_run(wh, run)
    handle = RunHandle(wh, run)
    try:
        yield handle
    except BaseException as exc:
        signum = stopping_signal(exc)
        if signum is not None:
            status, message = "interrupted", f"stopped by {signal.Signals(signum).name}"
        else:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            status, message = "failed", f"{type(exc).__name__}: {text}"
        try:
            _end(wh, run, status, message, pd.Timestamp.now(tz="UTC"))
        except BaseException:  # noqa: BLE001 - the run's own error is the one to raise
            log.exception("could not record run %s as %s", run_id, status)
        raise
    _end(wh, run, handle.status, handle.message, pd.Timestamp.now(tz="UTC"))
