"""Health flow: read the warehouse -> score every module -> trend metrics toward their learned
thresholds -> record health, metric points and alerts -> summary artifact. Frequent (see prefect.yaml)."""

from __future__ import annotations

import pandas as pd
from prefect import flow
from prefect.runtime import flow_run

from qtrader.calendar import utc
from qtrader.orchestration import run_form, run_name
from qtrader.settings import load_settings
from tasks.failures import publish_failure
from tasks.health import health_pass, publish_health
from tasks.ingest import new_run_id


@flow(
    name="health",
    description="Score module health, update predictive alerts.",
    flow_run_name=run_name("health"),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def health(warehouse: str | None = None, now: str | None = None, overrides: dict | None = None) -> dict:
    """Score every module's health and update the predictive alerts.

    Args:
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        now: Tests and backfills: pins the clock; lags and ages are measured against it, and bars and
            features after it are not read.
        overrides: Settings to override for this run, e.g. {"trade_filter": {"min_confidence": 0.52}}.
    """
    settings = load_settings(warehouse=warehouse, **(overrides or {}))
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    run_id = new_run_id("health")

    done = health_pass(settings, clock, run_id)
    result, changes, counts = done.result, done.changes, done.counts
    publish_health(settings, result, done.context.thresholds, clock, run_id)
    return {
        "run_id": run_id,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "ts": str(clock),
        "overall": result.overall,
        "scores": {m: a.health.score for m, a in result.assessments.items()},
        "components": {
            m: {c.name: c.score for c in a.health.components} for m, a in result.assessments.items()
        },
        "alerts_opened": [(e.module, e.metric, e.severity.value) for e in changes.opened],
        "alerts_resolved": [aid for aid, _ in changes.resolved],
        "counts": counts,
        "warehouse": str(settings.warehouse),
    }


run_form(health)
