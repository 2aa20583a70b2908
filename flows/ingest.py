"""Ingest flow: fetch -> gate -> upsert -> summary artifact, once per bar interval."""

from __future__ import annotations

import time

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from qtrader.calendar import ingest_window, utc
from qtrader.faults import fault_point
from qtrader.orchestration import INTERVAL_CHOICES, run_form, run_name
from qtrader.runs import RunHandle, recorded
from qtrader.settings import Settings, SourceName, load_settings
from sources import make_source
from sources.base import AUTO_INTERVAL, FetchRequest, SourceError
from tasks import resources
from tasks.failures import publish_failure
from tasks.ingest import (
    build_dq_docs,
    fetch_bars,
    gate_raw_bars,
    new_run_id,
    publish_summary,
    record_failure,
    stale_reference,
    write_gated,
)
from warehouse.ingest import IngestRun


@flow(
    name="ingest",
    description="Fetch market bars, gate them with Great Expectations, upsert into DuckDB.",
    flow_run_name=run_name("ingest", "interval", "source", defaults=lambda: _named_defaults()),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def ingest(
    source: str | None = None,
    symbols: list[str] | None = None,
    interval: str | None = None,
    start: str | None = None,
    end: str | None = None,
    path: str | None = None,
    warehouse: str | None = None,
    faults: list[str] | None = None,
    now: str | None = None,
    as_of: str | None = None,
    date_format: str | None = None,
) -> dict:
    """Ingest bars for each configured interval (or the one given). Returns the runs and findings.

    Args:
        source: Where bars come from; empty: the configured source (synthetic unless set).
        symbols: Tickers to ingest; empty: the configured universe (files: every file in the folder).
        interval: Bar interval; empty: every configured interval (files: inferred from the timestamps).
        start: Window start, e.g. 2024-01-01 (UTC if no zone); empty: the configured history.
        end: Window end; empty: now.
        path: Folder of CSV/Parquet files, one per symbol (source files only).
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        faults: Synthetic only, tests and the demo: data faults such as "nan_price:MSFT" to exercise the gate.
        now: Tests and backfills: the clock the window is measured from; empty: the current time.
        as_of: The time the data was meant to reach, for the stale-last-bar rule; empty: the window end
            (files: each file's own last bar).
        date_format: The files' date format, e.g. %d/%m/%Y (over [files] date_format); empty: detected per file.
    """
    files = {"date_format": date_format} if date_format else None
    settings = load_settings(source=source, warehouse=warehouse, files_path=path, files=files)
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    is_files = settings.source == SourceName.files
    intervals = [interval] if interval else ([AUTO_INTERVAL] if is_files else list(settings.intervals))
    wh = resources.warehouse(settings)
    asked = dict(source=settings.source.value, symbols=symbols or [], interval=interval, start=start, end=end,
                 path=path, as_of=as_of)  # fmt: skip
    with recorded(wh, "ingest", new_run_id(), flow_run_id=str(flow_run.id) if flow_run.id else None,
                  interval=",".join(intervals), parameters=asked) as record:  # fmt: skip
        return _ingest(record, settings, interval, intervals, symbols, start, end, faults, clock, as_of,
                       is_files)  # fmt: skip


def _ingest(record: RunHandle, settings: Settings, interval, intervals, symbols, start, end, faults, clock,
            as_of, is_files) -> dict:  # fmt: skip
    """The flow's body, inside its run record: ``record.stage`` says which interval is in flight."""
    log = get_run_logger()
    src = make_source(settings, faults=faults, now=clock, interval=interval)
    universe = symbols or (None if is_files else list(settings.universe))

    runs: list[IngestRun] = []
    lines: list[str] = []
    gated_all = []
    for iv in intervals:
        request = _request(settings, universe, iv, start, end, clock, is_files)
        run_started = pd.Timestamp.now(tz="UTC")
        t0 = time.perf_counter()
        record.stage("fetch", iv)
        fault_point("ingest:fetch")
        try:
            fetched = fetch_bars(src, request)
        except SourceError as exc:
            run = _run(settings, request, iv, run_started, status="failed", message=str(exc))
            record_failure(settings, run)
            record.stage("recorded")
            raise
        fetch_s = time.perf_counter() - t0
        lines += [f"[{iv}] {sym}: FAILED to fetch: {why}" for sym, why in fetched.failures.items()]
        groups = _by_interval(fetched.bars, iv)
        if not groups:
            run = _run(
                settings,
                request,
                iv,
                run_started,
                status="failed",
                fetch_s=fetch_s,
                failed=sorted(fetched.failures),
                message="no rows fetched",
            )
            record_failure(settings, run)
            record.stage("recorded")
            runs.append(run)
            continue
        for group_iv, bars in groups.items():
            run = _run(
                settings,
                request,
                group_iv,
                run_started,
                fetch_s=fetch_s,
                failed=sorted(fetched.failures),
                symbols=sorted(bars["symbol"].unique()),
            )
            run.rows_in = len(bars)
            record.stage("gate", group_iv)
            t1 = time.perf_counter()
            reference_end = stale_reference(bars, request.end, utc(as_of) if as_of else None, is_files)
            gated = gate_raw_bars(bars, group_iv, settings, run.run_id, reference_end)
            run.gate_s = time.perf_counter() - t1
            lines += [f"[{group_iv}] {line}" for line in gated.summary_lines()]
            blocked_or_failed = bool(gated.blocked_symbols or fetched.failures)
            run.status = "partial" if blocked_or_failed else "success"
            run.message = f"{len(gated.quarantined)} rows quarantined" if len(gated.quarantined) else None
            runs.append(write_gated(settings, run, gated, settings.source.value))
            record.stage("recorded")
            gated_all.append(gated)

    docs = build_dq_docs(settings, gated_all)
    publish_summary(runs, lines, docs)
    log.info(
        "ingest finished: %s",
        ", ".join(
            f"{r.interval} {r.status} ({r.rows_written} written, {r.rows_quarantined} quarantined)"
            for r in runs
        ),
    )
    failed = [r for r in runs if r.status == "failed"]
    if failed and len(failed) == len(runs):
        raise RuntimeError(f"ingest wrote nothing: {failed[0].message}; " + "; ".join(lines[:5]))
    if any(r.status != "success" for r in runs):
        record.outcome("partial", "; ".join(f"{r.interval} {r.status}" for r in runs))
    return {
        "runs": [r.__dict__ for r in runs],
        "findings": lines,
        "dq_docs": docs,
        "warehouse": str(settings.warehouse),
        "flow_run_id": flow_run.id,
    }


run_form(ingest, choices={"source": [s.value for s in SourceName], "interval": INTERVAL_CHOICES})


def _named_defaults() -> dict:
    """What an empty source or interval means, for the run name."""
    settings = load_settings()
    return {"source": settings.source.value, "interval": list(settings.intervals)}


def _request(settings: Settings, universe, iv, start, end, clock, is_files) -> FetchRequest:
    if is_files or iv == AUTO_INTERVAL:
        # A folder of files has its own history: only filter when the user asks.
        return FetchRequest(universe, iv, utc(start) if start else None, utc(end) if end else None)
    s, e = ingest_window(
        iv,
        start=start,
        end=end,
        now=clock,
        history_days=settings.history_days,
        intraday_sessions=settings.intraday_history_sessions,
        exchange=settings.exchange,
    )
    return FetchRequest(universe, iv, s, e)


def _by_interval(bars: pd.DataFrame, requested: str) -> dict[str, pd.DataFrame]:
    if bars.empty:
        return {}
    if requested != AUTO_INTERVAL:
        return {requested: bars}
    return {str(iv): g.reset_index(drop=True) for iv, g in bars.groupby("interval", sort=True)}


def _run(
    settings: Settings,
    request: FetchRequest,
    interval: str,
    started: pd.Timestamp,
    *,
    status="success",
    message=None,
    fetch_s=None,
    failed=None,
    symbols=None,
) -> IngestRun:
    return IngestRun(
        run_id=new_run_id(),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        source=settings.source.value,
        interval=interval,
        symbols=symbols if symbols is not None else list(request.symbols or []),
        window_start=request.start,
        window_end=request.end,
        started_at=started,
        finished_at=pd.Timestamp.now(tz="UTC"),
        status=status,
        message=message,
        fetch_s=fetch_s,
        symbols_failed=failed or [],
    )
