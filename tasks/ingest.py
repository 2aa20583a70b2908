"""Prefect tasks of the ingest flow: fetch (the only step that retries), gate, write, summarise."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from expectations.gate import GateResult, build_data_docs, gate_bars
from qtrader import artifacts as qa
from qtrader import progress
from qtrader.settings import Settings
from sources.base import FetchRequest, FetchResult, MarketDataSource, TransientSourceError
from tasks.resources import data_docs_site, warehouse
from tasks.retry import NETWORK_RETRIES, NETWORK_RETRY_DELAYS_S, NETWORK_RETRY_JITTER, retry_on
from warehouse.ingest import IngestRun, record_failed_run, write_ingest


def new_run_id(prefix: str = "ingest") -> str:
    return f"{prefix}-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@task(
    name="fetch-bars",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_RETRY_DELAYS_S,
    retry_jitter_factor=NETWORK_RETRY_JITTER,
    retry_condition_fn=retry_on(TransientSourceError),
    cache_policy=NO_CACHE,
)
def fetch_bars(source: MarketDataSource, request: FetchRequest) -> FetchResult:
    log = get_run_logger()
    started = time.perf_counter()
    # Sources that fetch symbol by symbol or in batches report as they go; the others at the end.
    total = len(request.symbols) if request.symbols else 1
    progress.report(f"fetch {request.interval}", 0, total)
    result = source.fetch(request)
    if not request.symbols:  # the source chose the symbols (a folder of files, the synthetic universe)
        total = max(1, result.bars["symbol"].nunique() + len(result.failures))
    progress.report(f"fetch {request.interval}", total, total)
    for note in result.notes:
        log.info("%s: %s", source.name, note)
    for symbol, reason in result.failures.items():
        log.warning("%s %s: %s", source.name, symbol, reason)
    log.info(
        "fetched %d %s rows for %d symbols from %s in %.2fs",
        len(result.bars),
        request.interval,
        result.bars["symbol"].nunique(),
        source.name,
        time.perf_counter() - started,
    )
    return result


def stale_reference(
    bars: pd.DataFrame, window_end: pd.Timestamp | None, as_of: pd.Timestamp | None, is_files: bool
) -> pd.Timestamp | dict[str, pd.Timestamp] | None:
    """What each symbol's last bar is judged against by the stale_last_bar rule.

    ``as_of`` when given (the time the data was meant to reach). Else a network source's window end; a
    folder of files has no window end, so each file's own last bar: a history file ending years ago is
    history, not a stale feed, and is not blocked because another file ends later.
    """
    if as_of is not None:
        return as_of
    if is_files:
        return {str(s): pd.Timestamp(t) for s, t in bars.groupby("symbol", sort=True)["ts"].max().items()}
    return window_end


@task(name="gate-bars", cache_policy=NO_CACHE)
def gate_raw_bars(
    bars: pd.DataFrame,
    interval: str,
    settings: Settings,
    run_id: str,
    reference_end: pd.Timestamp | Mapping[str, pd.Timestamp] | None,
) -> GateResult:
    log = get_run_logger()
    result = gate_bars(
        bars,
        interval=interval,
        settings=settings.gate,
        run_id=run_id,
        reference_end=reference_end,
        exchange=settings.exchange,
    )
    lines = result.summary_lines()
    for line in lines:
        log.info(line)
    if lines:  # one warning, not one per symbol: the terminal prints the findings once, after the run
        log.warning(
            "gate %s: %d symbol(s) with findings (%d rows quarantined, %d symbols blocked): %s",
            interval, len(lines), len(result.quarantined), len(result.blocked_symbols),
            "the ingest-summary artifact lists them",
        )  # fmt: skip
    log.info(
        "gate %s: %d rows in, %d passed, %d quarantined, %d symbols blocked",
        interval,
        len(bars),
        len(result.passed),
        len(result.quarantined),
        len(result.blocked_symbols),
    )
    return result


@task(name="write-bars", cache_policy=NO_CACHE)
def write_gated(settings: Settings, run: IngestRun, gated: GateResult, source_name: str) -> IngestRun:
    log = get_run_logger()
    started = time.perf_counter()
    now = pd.Timestamp.now(tz="UTC")
    bars = gated.passed.assign(source=source_name, run_id=run.run_id, ingested_at=now)
    quarantine = gated.quarantined.assign(
        run_id=run.run_id, stage="raw_bars", source=source_name, quarantined_at=now
    )
    run.rows_quarantined = len(gated.quarantined)
    run.symbols_blocked = sorted(gated.blocked_symbols)
    run.rows_written = len(bars)
    run.finished_at = pd.Timestamp.now(tz="UTC")
    run.write_s = None
    with progress.step(f"write {run.interval}"):
        write_ingest(warehouse(settings), run, bars, quarantine, gated.dq_results)
    run.write_s = time.perf_counter() - started
    log.info(
        "wrote %d %s bars to %s in %.2fs (run %s)",
        run.rows_written,
        run.interval,
        warehouse(settings),
        run.write_s,
        run.run_id,
    )
    return run


@task(name="record-failed-run", cache_policy=NO_CACHE)
def record_failure(settings: Settings, run: IngestRun) -> None:
    record_failed_run(warehouse(settings), run)


@task(name="build-dq-docs", cache_policy=NO_CACHE)
def build_dq_docs(settings: Settings, gated: list[GateResult]) -> str | None:
    if not gated:
        return None
    with progress.step("data docs"):
        return str(build_data_docs(list(gated), data_docs_site(settings)))


@task(name="ingest-summary", cache_policy=NO_CACHE)
def publish_summary(runs: list[IngestRun], lines: list[str], docs_path: str | None) -> str:
    md = ingest_summary_markdown(runs, lines, docs_path)
    create_markdown_artifact(
        key="ingest-summary", markdown=md, description="What the ingest run wrote and quarantined"
    )
    return md


def ingest_summary_markdown(runs: list[IngestRun], lines: list[str], docs_path: str | None) -> str:
    out = [
        "# Ingest summary",
        "",
    ]
    head = ["Run", "Source", "Interval", "Symbols", "Rows in", "Written", "Quarantined", "Blocked", "Failed",
            "Status"]  # fmt: skip
    rows = [
        {"Run": f"`{r.run_id}`", "Source": r.source, "Interval": r.interval, "Symbols": qa.count(len(r.symbols)),
         "Rows in": qa.count(r.rows_in), "Written": qa.count(r.rows_written),
         "Quarantined": qa.count(r.rows_quarantined), "Blocked": qa.count(len(r.symbols_blocked)),
         "Failed": qa.count(len(r.symbols_failed)), "Status": r.status}
        for r in runs
    ]  # fmt: skip
    out += qa.md_table(rows, head, head[3:9])
    if lines:
        out += ["", "## Data-quality findings", ""] + [f"- {line}" for line in lines]
    if docs_path:
        out += ["", f"Data Docs: {qa.file_link(docs_path)}"]
    return "\n".join(out)
