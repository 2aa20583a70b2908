"""Writes of the ingest stage: bars, quarantine, dq_results and the run record, in one transaction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from warehouse.db import WarehouseLike, insert_frame, transaction

BARS_COLUMNS = [
    "symbol",
    "interval",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "source",
    "run_id",
    "ingested_at",
]
QUARANTINE_COLUMNS = [
    "run_id", "stage", "rule", "severity", "symbol", "interval", "ts",
    "open", "high", "low", "close", "volume", "source", "detail", "quarantined_at",
]  # fmt: skip
DQ_COLUMNS = [
    "run_id", "stage", "suite", "expectation", "rule", "severity", "column_name",
    "success", "observed_value", "element_count", "unexpected_count", "validated_at",
]  # fmt: skip


@dataclass
class IngestRun:
    run_id: str
    source: str
    interval: str
    symbols: list[str]
    started_at: pd.Timestamp
    finished_at: pd.Timestamp
    window_start: pd.Timestamp | None = None
    window_end: pd.Timestamp | None = None
    rows_in: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    symbols_failed: list[str] = field(default_factory=list)
    symbols_blocked: list[str] = field(default_factory=list)
    status: str = "success"
    message: str | None = None
    flow_run_id: str | None = None
    fetch_s: float | None = None
    gate_s: float | None = None
    write_s: float | None = None


def _insert_run(con, run: IngestRun) -> None:
    row = asdict(run)
    cols = list(row)
    con.execute(
        f"INSERT INTO ingest_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [row[c] for c in cols],
    )


def write_ingest(
    wh: WarehouseLike,
    run: IngestRun,
    bars: pd.DataFrame,
    quarantine: pd.DataFrame,
    dq_results: pd.DataFrame,
) -> int:
    """Upsert gated bars and record the run, atomically. Returns the number of bars written.

    Re-ingesting a window replaces the same (symbol, interval, ts) keys: an idempotent upsert.
    If anything fails, the transaction rolls back and the warehouse is exactly as before.
    """
    bars = bars[BARS_COLUMNS]
    if bars.duplicated(["symbol", "interval", "ts"]).any():
        # DuckDB keeps the first of duplicate keys in one statement silently; the gate must dedupe first.
        raise ValueError("bars batch has duplicate (symbol, interval, ts) keys: it was not gated")
    with transaction(wh) as con:
        insert_frame(con, "bars", bars, replace=True)
        insert_frame(con, "quarantine", quarantine[QUARANTINE_COLUMNS] if len(quarantine) else quarantine)
        insert_frame(con, "dq_results", dq_results[DQ_COLUMNS] if len(dq_results) else dq_results)
        _insert_run(con, run)
    return len(bars)


def record_failed_run(wh: WarehouseLike, run: IngestRun) -> None:
    """Record a run that failed before writing: only its ingest_runs row, nothing else is touched."""
    with transaction(wh) as con:
        _insert_run(con, run)
