"""Benchmark flow: stored predictions + labels -> metrics and exit statistics per module and window ->
`benchmarks` and `exit_stats` (one transaction) -> table artifact."""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from qtrader.calendar import utc
from qtrader.orchestration import INTERVAL_CHOICES, run_form, run_name
from qtrader.settings import load_settings
from tasks.benchmark import benchmark_pass, benchmark_windows, publish_benchmark_table
from tasks.failures import publish_failure
from tasks.ingest import new_run_id


@flow(
    name="benchmark",
    description="Score every signal module's stored predictions per window.",
    flow_run_name=run_name("benchmark", "interval"),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def benchmark(
    interval: str = "1d",
    windows: list[str] | None = None,
    warehouse: str | None = None,
    now: str | None = None,
    overrides: dict | None = None,
) -> dict:
    """Benchmark every module with predictions on ``interval`` over ``windows``; windows end at the
    newest labelled bar.

    Args:
        interval: Bar interval whose modules are benchmarked.
        windows: Windows such as 30d, 90d, all; empty: the configured windows.
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        now: Tests and backfills: pins computed_at; empty: the current time.
        overrides: Settings to override for this run, e.g. {"trade_filter": {"min_confidence": 0.52}}.
    """
    settings = load_settings(warehouse=warehouse, **(overrides or {}))
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    run_id = new_run_id("benchmark")
    chosen = benchmark_windows(settings, interval, windows)

    benchmarks, exits, end = benchmark_pass(settings, interval, chosen, clock, run_id)
    table = publish_benchmark_table(interval, run_id, benchmarks, exits)
    get_run_logger().info(
        "benchmark %s: %d modules x %d windows up to %s",
        interval,
        benchmarks["module"].nunique(),
        len(chosen),
        end,
    )
    return {
        "run_id": run_id,
        "interval": interval,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "window_end": str(end),
        "windows": chosen,
        "rows": table,
        "warehouse": str(settings.warehouse),
    }


run_form(benchmark, choices={"interval": INTERVAL_CHOICES})
