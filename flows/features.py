"""Features flow: gated bars -> point-in-time TA-Lib features -> GX gate -> `features` table.

The computation runs per symbol batch on the configured task runner (threads, or a Dask cluster:
docs/scale-out.md); loading, the gate and the one write stay in this process, because DuckDB allows a
single writing process per warehouse file and Dask workers must never open it.
"""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import TaskRunner

from expectations.frame_gate import build_frame_docs
from qtrader import progress
from qtrader.calendar import is_daily
from qtrader.orchestration import INTERVAL_CHOICES, run_form, run_name
from qtrader.runners import symbol_batches, task_runner
from qtrader.settings import Settings, load_settings
from tasks.failures import publish_failure
from tasks.features import compute_batch, features_markdown, gate, load_bars, load_daily_context, write
from tasks.ingest import new_run_id
from tasks.resources import data_docs_site


def _compute(
    runner: TaskRunner, settings: Settings, bars: pd.DataFrame, interval: str
) -> tuple[pd.DataFrame, int]:
    """Features of the new bars, one ``compute_batch`` task per symbol batch; (rows, batches)."""
    daily = load_daily_context(settings, bars, interval)
    batches = symbol_batches(bars["symbol"].unique(), settings.scale_out.symbol_batch_size)
    futures = [
        runner.submit(
            compute_batch,
            parameters={
                "bars": bars[bars["symbol"].isin(batch)].reset_index(drop=True),
                "interval": interval,
                "daily": None if daily is None else daily[daily["symbol"].isin(batch)].reset_index(drop=True),
                "exchange": settings.exchange,
            },
        )
        for batch in batches
    ]
    parts = []
    for done, future in enumerate(futures, start=1):  # in batch order: the same rows as one batch gives
        parts.append(future.result())
        progress.report(f"features {interval}", done, len(futures))
    return pd.concat(parts, ignore_index=True), len(batches)


@flow(
    name="features",
    description="Compute point-in-time features for new gated bars (incremental).",
    flow_run_name=run_name(
        "features", "intervals", defaults=lambda: {"intervals": load_settings().intervals}
    ),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def features(
    intervals: list[str] | None = None,
    symbols: list[str] | None = None,
    full: bool = False,
    warehouse: str | None = None,
) -> dict:
    """Features for the bars stored since the last run, daily first: intraday bars get daily regime
    context joined point in time from the daily features.

    Args:
        intervals: Bar intervals to compute; empty: every configured interval.
        symbols: Symbols to compute; empty: every stored symbol.
        full: Recompute every stored bar, not only the new ones.
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
    """
    settings = load_settings(warehouse=warehouse)
    ordered = sorted(intervals or settings.intervals, key=lambda iv: not is_daily(iv))
    run_id = new_run_id("features")
    runner_name = settings.scale_out.task_runner.value
    summary, findings, gated_all = [], [], []
    with task_runner(settings) as runner:  # a temporary Dask cluster starts at the first batch, if any
        for iv in ordered:
            bars = load_bars(settings, iv, symbols, full)
            computed, batches = _compute(runner, settings, bars, iv) if len(bars) else (pd.DataFrame(), 0)
            row = {"interval": iv, "bars_read": len(bars), "batches": batches, "new": len(computed)}
            if computed.empty:
                summary.append(row | {"written": 0, "quarantined": 0})
                continue
            gated = gate(computed, run_id)
            written = write(settings, gated, run_id)  # the one write, from this process
            summary.append(row | {"written": written, "quarantined": len(gated.quarantined)})
            gated_all.append(gated)
            findings += [f"[{iv}] {line}" for line in gated.summary_lines()]
    docs = str(build_frame_docs(gated_all, data_docs_site(settings))) if gated_all else None
    md = features_markdown(summary, findings, run_id, runner_name, docs)
    create_markdown_artifact(key="features-summary", markdown=md, description="Features computed")
    get_run_logger().info(
        "features: %s", "; ".join(f"{s['interval']} {s['written']} written" for s in summary)
    )
    return {
        "run_id": run_id,
        "task_runner": runner_name,
        "intervals": summary,
        "findings": findings,
        "dq_docs": docs,
    }


run_form(features, choices={"intervals": INTERVAL_CHOICES})
