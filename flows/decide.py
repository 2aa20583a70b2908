"""Decision flow: preconditions -> per bar: reconcile with the broker, predict, move stops, decide, gate the
order batch, send brackets -> summary artifact. ``bars > 1`` replays the newest bars in one run."""

from __future__ import annotations

from contextlib import ExitStack

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed

from qtrader.calendar import utc
from qtrader.faults import fault_point
from qtrader.orchestration import INTERVAL_CHOICES, run_form, run_name
from qtrader.runs import RunHandle, recorded
from qtrader.settings import load_settings
from tasks import resources
from tasks.decide import (
    check_preconditions,
    decide_bar,
    decision_broker,
    finish_bar,
    new_trader,
    publish_decisions,
    publish_refusal,
    read_health,
)
from tasks.failures import publish_failure
from tasks.ingest import new_run_id
from tasks.retrain import load_champions
from warehouse.decisions import decision_bars, last_decided_bar, unfinished_bars


@flow(
    name="decide",
    description="Decide and trade at the newest bar(s): filter, size, plan exits, send brackets.",
    flow_run_name=run_name(
        "decide", "interval", defaults=lambda: {"interval": load_settings().decision.interval}
    ),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def decide(
    at: str | None = None,
    interval: str | None = None,
    bars: int = 1,
    warehouse: str | None = None,
    broker=None,
    now: str | None = None,
    overrides: dict | None = None,
):
    """Decide at bar ``at`` (default: the newest stored bar) or replay the ``bars`` newest bars up to it.

    Args:
        at: Decision bar, e.g. 2026-11-20 15:55 (UTC if no zone); empty: the newest stored bar.
        interval: Bar interval decided on; empty: the configured decision interval (5m).
        bars: Replay the newest N bars up to the decision bar in one run.
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        broker: Tests: a Broker object; empty: the configured broker (local paper or Alpaca paper).
        now: Tests and backfills: the clock the health freshness is measured against.
        overrides: Settings to override for this run, e.g. {"trade_filter": {"min_overall_health": 60}}
            (the demo's policy).
    """
    settings = load_settings(warehouse=warehouse, **(overrides or {}))
    interval = interval or settings.decision.interval
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    run_id = new_run_id("decide")
    wh = resources.warehouse(settings)
    asked = dict(at=at, bars=bars, now=now, overrides=overrides)
    # The run record's start and the run's inputs share one connection and one writer slot (its
    # read-write open applies pending migrations); _decide closes it once the inputs are read.
    with ExitStack() as inputs:
        inputs.enter_context(wh.session())
        with recorded(wh, "decide", run_id, flow_run_id=str(flow_run.id) if flow_run.id else None,
                      interval=interval, parameters=asked) as record:  # fmt: skip
            return _decide(record, inputs, settings, wh, interval, at, bars, broker, clock, run_id)


def _decide(record: RunHandle, inputs: ExitStack, settings, wh, interval, at, bars, broker, clock, run_id):
    """The flow's body, inside its run record; ``inputs`` holds the session the inputs are read in."""
    log = get_run_logger()
    with inputs:
        times = decision_bars(wh, interval, utc(at) if at else None, bars)
        champions, _ = load_champions(settings, interval)
        health = read_health(wh)
        problems = check_preconditions(settings, wh, interval, times, champions, health, clock)
        if not problems:
            broker = broker or decision_broker(settings, interval, wh)
            trader = new_trader(settings, wh, broker, run_id)
            unfinished = unfinished_bars(wh, interval, broker.name)
            # Finishing a bar below stores what the broker did, never a decision: ``done`` stays.
            done = last_decided_bar(wh, interval, settings.orders.strategy, broker.name)
    # After the session: a run killed here holds no writer slot.
    fault_point("decide:start")
    if problems:
        publish_refusal(interval, problems)
        record.outcome("refused", "; ".join(problems))
        return Completed(
            name="Refused",
            message="refused to trade: " + "; ".join(problems),
            data={"run_id": run_id, "refused": problems, "bars": [], "interval": interval},
        )

    resumed = [finish_bar(settings, wh, trader, t) for t in unfinished]
    # One transaction per bar: a bar with decisions was decided whole, so it is never decided again (a
    # second pass could pick other candidates than the stored rows say).
    skipped = [t for t in times if done is not None and t <= done]
    summaries = [
        decide_bar(settings, wh, trader, interval, t, champions, health, run_id)
        for t in times
        if t not in skipped
    ]
    if skipped:
        log.info("%d bar(s) up to the newest decided bar %s skipped (already decided)", len(skipped), done)
    publish_decisions(interval, run_id, summaries, health)
    return {
        "run_id": run_id,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "interval": interval,
        "broker": broker.name,
        "refused": [],
        "skipped": [str(t) for t in skipped],
        "resumed": resumed,
        "bars": summaries,
        "warehouse": str(settings.warehouse),
    }


run_form(decide, choices={"interval": INTERVAL_CHOICES})
