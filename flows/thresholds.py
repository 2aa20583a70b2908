"""Thresholds flow: metric history -> robust learned thresholds per (module, metric) -> `thresholds`
table -> summary artifact. Hourly (see prefect.yaml)."""

from __future__ import annotations

import pandas as pd
from prefect import flow
from prefect.runtime import flow_run

from qtrader.calendar import utc
from qtrader.settings import load_settings
from tasks.failures import publish_failure
from tasks.health import learn_thresholds, load_metric_history, publish_thresholds, record_thresholds
from tasks.ingest import new_run_id


@flow(
    name="thresholds",
    description="Learn per-module metric thresholds from their history.",
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def thresholds(warehouse: str | None = None, now: str | None = None) -> dict:
    """``now`` pins the clock: the history read ends there and the rows are stamped with it."""
    settings = load_settings(warehouse=warehouse)
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    run_id = new_run_id("thresholds")

    history = load_metric_history(settings, clock)
    learned = learn_thresholds(settings, history)
    written = record_thresholds(settings, learned, clock, run_id)
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
