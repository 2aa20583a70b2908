"""Thresholds flow: metric history -> robust learned thresholds per (module, metric) -> `thresholds`
table -> summary artifact. Hourly (see prefect.yaml)."""

from __future__ import annotations

import pandas as pd
from prefect import flow
from prefect.runtime import flow_run

from qtrader.calendar import utc
from qtrader.orchestration import run_form, run_name
from qtrader.settings import load_settings
from tasks.failures import publish_failure
from tasks.health import publish_thresholds, thresholds_pass
from tasks.ingest import new_run_id


@flow(
    name="thresholds",
    description="Learn per-module metric thresholds from their history.",
    flow_run_name=run_name("thresholds"),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def thresholds(warehouse: str | None = None, now: str | None = None, overrides: dict | None = None) -> dict:
    """Learn every module's metric thresholds from the metric history.

    Args:
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        now: Tests and backfills: pins the clock; the history read ends there and rows are stamped with it.
        overrides: Settings to override for this run, e.g. {"trade_filter": {"min_confidence": 0.52}}.
    """
    settings = load_settings(warehouse=warehouse, **(overrides or {}))
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    run_id = new_run_id("thresholds")

    learned, written = thresholds_pass(settings, clock, run_id)
    publish_thresholds(learned, clock, run_id)
    return {
        "run_id": run_id,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "ts": str(clock),
        "written": written,
        "thresholds": [
            {
                "module": m,
                "metric": t.metric,
                "value": t.value,
                "method": t.method,
                "n": t.n,
                "is_default": t.is_default,
                "reason": t.reason,
            }
            for m, t in learned
        ],  # fmt: skip
        "warehouse": str(settings.warehouse),
    }


run_form(thresholds)
