"""Prefect tasks of the decision flow: preconditions, one bar (load, decide, store), the summary.

The deciding is ``models/engine.py`` and the broker work ``brokers/trader.py`` (the same code the backtest
runs); this module only loads a bar's inputs from the warehouse, calls them, and stores everything the bar
produced in **one transaction**: the paper account's books (local broker), the reconciliation, fills,
decisions, the brackets they sent, stop moves, new predictions and gate verdicts. A crash anywhere in a bar
leaves the warehouse as it was before the bar; the local account with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from brokers.base import Broker, BrokerUnavailable
from brokers.reconcile import reconcile
from brokers.trader import (
    BarMarket,
    BarOutcome,
    BarPlan,
    GateVerdict,
    OrderGate,
    Trader,
    TraderState,
    fill_rows,
    stop_move_rows,
)
from expectations.frame_gate import gate_rows
from models import decision as dm
from models import engine as me
from models.brackets import Bracket, Side
from models.engine import HealthView, ModelView
from models.features import FEATURE_SET_VERSION
from models.thresholds import metric_specs
from models.training import live_predictions
from qtrader import artifacts as qa
from qtrader.calendar import in_session, is_daily
from qtrader.faults import fault_point
from qtrader.settings import Settings
from tasks.resources import make_broker
from tasks.retrain import Champion
from tasks.retry import NETWORK_RETRIES, NETWORK_RETRY_DELAYS_S, NETWORK_RETRY_JITTER, retry_on
from warehouse import decisions as wd
from warehouse.db import Warehouse
from warehouse.health import active_alerts, latest_health, learned_threshold
from warehouse.models import PREDICTION_COLUMNS
from warehouse.trading import (
    apply_reconciliation,
    load_order_records,
    record_exit_adjustments,
    record_submissions,
)


def decision_broker(
    settings: Settings, interval: str, wh: Warehouse, *, clock: Callable | None = None
) -> Broker:
    """The configured broker for a decision run; the local paper account fills against the decision
    interval's bars and is saved once per bar (with the bar's records)."""
    if str(settings.broker) == "local" and settings.paper.interval != interval:
        settings = settings.model_copy(
            update={"paper": settings.paper.model_copy(update={"interval": interval})}
        )
    return make_broker(settings, wh, clock=clock, autocommit=False)


def read_health(wh: Warehouse, at: pd.Timestamp | None = None) -> HealthView:
    """The newest health run and the active alerts (the run at ``at`` and the alerts as they stood then,
    when given: a replay of a past decision)."""
    try:
        scores = latest_health(wh, at)
        alerts = active_alerts(wh, at)
    except Exception as exc:  # noqa: BLE001 - no health tables yet: reported as "no health run"
        if "does not exist" not in str(exc):
            raise
        return HealthView(None, None, {})
    keep = ["module", "metric", "time_to_threshold_hours", "reason", "severity"]
    return health_view(scores, tuple(alerts.reindex(columns=keep).to_dict("records")) if len(alerts) else ())


def health_view(scores: pd.DataFrame, alerts: tuple) -> HealthView:
    """A health run's rows (``latest_health``: module, ts, score, baseline, drivers as JSON text) and its
    active alerts as the bar decides with them."""
    if scores.empty:
        return HealthView(None, None, {}, ())
    mods = {
        str(m): (None if s is None or pd.isna(s) else float(s))
        for m, s in zip(scores["module"], scores["score"], strict=True)
    }
    overall = mods.pop("overall", None)
    baselines = {
        str(m): (None if b is None or pd.isna(b) else float(b))
        for m, b in zip(
            scores["module"], scores.get("baseline", pd.Series([None] * len(scores))), strict=True
        )
    }
    drivers = {
        str(m): (json.loads(d) if isinstance(d, str) else None)
        for m, d in zip(scores["module"], scores.get("drivers", pd.Series([None] * len(scores))), strict=True)
    }
    return HealthView(
        pd.Timestamp(scores["ts"].iloc[0]).tz_convert("UTC"),
        overall,
        mods,
        alerts,
        baselines,
        drivers,
    )


# ----------------------------------------------------------------------------------------- preconditions


def health_max_age(settings: Settings, interval: str) -> pd.Timedelta:
    d = settings.decision
    minutes = d.max_health_age_minutes_daily if is_daily(interval) else d.max_health_age_minutes_intraday
    return pd.Timedelta(minutes=minutes)


def preconditions(
    settings: Settings,
    wh: Warehouse,
    interval: str,
    bars: list[pd.Timestamp],
    champions: dict[str, Champion],
    health: HealthView,
    now: pd.Timestamp,
    *,
    check_data: bool = True,
) -> list[str]:
    """Why the flow must not trade (empty: it may). Data gated for every bar, champions, fresh health.
    ``check_data`` False: the caller knows the bars and features are there (a backtest's history)."""
    problems = []
    if not bars:
        return [f"no {interval} bars in {wh}: run `qtrader ingest` first"]
    if check_data:
        ready = wd.readiness(wh, interval, bars, FEATURE_SET_VERSION)
        for r in ready.itertuples(index=False):
            if r.bars == 0 or r.features == 0:
                problems.append(
                    f"bar {pd.Timestamp(r.ts):%Y-%m-%d %H:%M} {interval}: {r.bars} gated bars, {r.features} gated "
                    "feature rows (run ingest and the features flow)"
                )
    source = settings.decision.source_module
    usable = {m for m, c in champions.items() if c.artifact is not None}
    members = [m for m in settings.signal.members if m in usable]
    if source not in usable:
        problems.append(
            f"no usable {source} champion for {interval}: run `qtrader retrain --interval {interval}`"
        )
    if len(members) < settings.signal.ensemble_min_voters:
        problems.append(
            f"{len(members)} member champions for {interval} (need {settings.signal.ensemble_min_voters}): "
            f"run `qtrader retrain --interval {interval}`"
        )
    if health.ts is None:
        problems.append("no health run yet: run the health flow (`qtrader health --run`)")
    else:
        age = now - health.ts
        if age > health_max_age(settings, interval):
            problems.append(
                f"health is stale: newest run {health.ts:%Y-%m-%d %H:%M} UTC is {age} old "
                f"(max {health_max_age(settings, interval)}); run the health flow"
            )
    if check_data and str(settings.broker) == "local":
        acct = wd.paper_account_interval(wh)
        if acct is not None and acct != interval:
            problems.append(
                f"the local paper account trades {acct} bars; decide with --interval {acct} "
                "(or use another warehouse for a new paper account)"
            )
    return problems


# check_preconditions and the publish_* functions are plain functions, not tasks: they have no retries
# or caching to give, a task's start costs ~0.1 s, and their warnings and artifacts land on the flow run.
def check_preconditions(
    settings: Settings,
    wh: Warehouse,
    interval: str,
    bars: list[pd.Timestamp],
    champions: dict[str, Champion],
    health: HealthView,
    now: pd.Timestamp,
) -> list[str]:
    problems = preconditions(settings, wh, interval, bars, champions, health, now)
    for p in problems:
        get_run_logger().warning("refusing to trade: %s", p)
    return problems


# -------------------------------------------------------------------------------------------- predictions


def member_predictions(
    champions: dict[str, Champion],
    members: list[str],
    features: pd.DataFrame,
    stored: pd.DataFrame,
    interval: str,
    ts: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """(P(up) per symbol x member, new prediction rows, per-symbol detail for the decisions row).

    A stored prediction of the bar (walk-forward or live, written by the retrain) is used as is; a missing
    one is made by the champion's artifact on the bar's features (``models.training.live_predictions``),
    ``out_of_sample`` true only when the bar is after the champion's training window. The stored rows
    are split by module once and placed by position (a backtest calls this on every bar).
    """
    symbols = features["symbol"].astype(str).tolist()
    at = {sym: i for i, sym in enumerate(symbols)}
    values = np.full((len(symbols), len(members)), np.nan)
    detail: dict[str, dict[str, Any]] = {sym: {} for sym in symbols}
    by_module = dict(tuple(stored.groupby("module", sort=False))) if len(stored) else {}
    new_rows = []
    for j, m in enumerate(members):
        art = champions[m].artifact
        have: set[str] = set()
        g = by_module.get(m)
        if g is not None:
            syms = g["symbol"].astype(str).to_numpy()
            keep = np.fromiter((sym in at for sym in syms), dtype=bool, count=len(syms))
            syms = syms[keep]
            pu = g["p_up"].to_numpy()[keep]
            values[[at[sym] for sym in syms], j] = pu.astype(float)
            for sym, u, c, v in zip(syms, pu, g["p_up_calibrated"].to_numpy()[keep],
                                    g["model_version"].to_numpy()[keep], strict=True):  # fmt: skip
                detail[sym][m] = {"p_up": round(float(u), 4), "p_up_calibrated": round(float(c), 4),
                                  "version": int(v)}  # fmt: skip
            have = set(syms.tolist())
        missing = features[~features["symbol"].astype(str).isin(have)] if have else features
        if missing.empty:
            continue
        keys = missing[["symbol"]].assign(interval=interval, ts=ts).reset_index(drop=True)
        frame = live_predictions(art, keys, missing.reset_index(drop=True))
        frame["out_of_sample"] = bool(ts > pd.Timestamp(art.train_end))
        new_rows.append(frame)
        values[[at[str(sym)] for sym in frame["symbol"]], j] = frame["p_up"].to_numpy(dtype=float)
        for sym, pu, pc in zip(frame["symbol"], frame["p_up"], frame["p_up_calibrated"], strict=True):
            detail[str(sym)][m] = {"p_up": round(float(pu), 4), "p_up_calibrated": round(float(pc), 4),
                                   "version": int(art.version)}  # fmt: skip
    p = pd.DataFrame(values, index=pd.Index(symbols, name="symbol"), columns=members, dtype="float64")
    new = pd.concat(new_rows, ignore_index=True) if new_rows else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return p, new, detail


@dataclass
class BarPredictions:
    p_up: pd.DataFrame  # symbol x member
    new: pd.DataFrame  # gated new prediction rows (run_id, predicted_at set)
    detail: dict[str, dict[str, Any]]
    quarantined: int
    dq: list[pd.DataFrame]


def predict_bar(
    champions: dict[str, Champion],
    members: list[str],
    data: dict[str, Any],
    interval: str,
    ts: pd.Timestamp,
    run_id: str,
    clock: Callable[[], pd.Timestamp],
) -> BarPredictions:
    """Every member's P(up) at the bar: stored ones, or made by the champion and gated (predictions suite)."""
    p_up, new_preds, detail = member_predictions(
        champions, members, data["features"], data["predictions"], interval, ts
    )
    quarantined, dq = 0, []
    if len(new_preds):
        gated = gate_rows(new_preds, suite="predictions", run_id=run_id, stage="predictions")
        quarantined = len(gated.quarantined)
        bad = gated.quarantined
        for sym, mod in zip(bad.get("symbol", []), bad.get("module", []), strict=False):
            p_up.loc[sym, mod] = np.nan
        new_preds = gated.passed.assign(run_id=run_id, predicted_at=clock())
        dq.append(gated.dq_results)
    return BarPredictions(p_up, new_preds, detail, quarantined, dq)


def bar_signals(
    settings: Settings, champion: Champion, preds: BarPredictions, features: pd.DataFrame
) -> list[dm.Signal]:
    ens = champion.artifact
    sig = settings.signal
    return dm.ensemble_signals(
        preds.p_up, features, weights=getattr(ens, "weights", None), calibrator=ens.calibrator,
        seed_accuracy=ens.seed_accuracy, min_edge=sig.ensemble_min_edge, strong=sig.ensemble_strong,
        weak=sig.ensemble_weak, min_voters=sig.ensemble_min_voters, module_detail=preds.detail,
    )  # fmt: skip


def model_view(settings: Settings, wh: Warehouse, interval: str, champion: Champion) -> ModelView:
    """The source module's champion, newest benchmark and exit hit rates, and the learned stop cap."""
    d = settings.decision
    window = d.benchmark_window_daily if is_daily(interval) else d.benchmark_window_intraday
    stats = wd.latest_module_stats(wh, d.source_module, interval, window)
    cap = learned_threshold(
        d.stop_threshold_module, "stop_distance_atr", warehouse=wh, specs=metric_specs(settings)
    )
    return view_of(d.source_module, champion, stats, cap.value)


def view_of(
    source: str, champion: Champion, stats: dict[str, float | None], stop_cap: float | None
) -> ModelView:
    art = champion.artifact
    return ModelView(
        source_module=source,
        model_version=int(art.version),
        calibration=art.calibrator.method if art.calibrator is not None else "none",
        accuracy=stats.get("accuracy"),
        performance_score=stats.get("performance_score"),
        hit_rates={k: stats.get(k) for k in ("tp1", "tp2", "tp3")},
        learned_stop_atr=stop_cap,
    )


def order_gate(run_id: str) -> OrderGate:
    """The orders suite on each bar's batch: a failing rule blocks the whole batch. Its rules checked in
    memory (``gate_rows``: the same verdicts and dq_results rows as Great Expectations, without the second
    a GX validation costs per bar)."""

    def gate(columns) -> GateVerdict:
        frame = pd.DataFrame(columns, columns=dm.ORDER_BATCH_COLUMNS)
        gated = gate_rows(frame, suite="orders", run_id=run_id, stage="orders", derive=dm.order_gate_view)
        return GateVerdict(gated.ok, dict(gated.failures), gated.dq_results)

    return gate


# ------------------------------------------------------------------------------------------------ the bar


def trader_state(wh: Warehouse, broker: Broker) -> TraderState:
    """The trader's memory, as stored: bracket legs, TP1s taken, last exits, the equity snapshots."""
    h = wd.trader_history(wh, broker.name)
    state = TraderState()
    state.legs = {
        str(c): (str(d), int(leg))
        for c, d, leg in zip(
            h["legs"]["client_order_id"], h["legs"]["decision_id"], h["legs"]["leg"], strict=True
        )
    }
    state.tp1_filled = set(h["tp1"]["decision_id"].astype(str))
    state.last_exit = {
        str(s): pd.Timestamp(t).tz_convert("UTC").to_pydatetime()
        for s, t in zip(h["exits"]["symbol"], h["exits"]["ts"], strict=True)
    }
    state.equity_ts = [pd.Timestamp(t).tz_convert("UTC") for t in h["equity"]["ts"]]
    state.equity = [float(x) for x in h["equity"]["equity"]]
    state.learn_orders(broker.get_orders("all"))
    return state


class Laps:
    """Seconds per stage: ``lap("name")`` closes the stage that began at the previous lap."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self._t, 4)
        self._t = now


def market_open(ts: pd.Timestamp, interval: str, exchange: str) -> bool:
    return bool(in_session(pd.DatetimeIndex([ts]), interval, exchange)[0])


# Replaces the ensemble's signals at a bar (the backtest's --signals): (bar time, features) -> signals.
SignalSource = Callable[[pd.Timestamp, pd.DataFrame], list[dm.Signal]]


def run_bar(
    settings: Settings,
    wh: Warehouse,
    trader: Trader,
    interval: str,
    ts: pd.Timestamp,
    champions: dict[str, Champion],
    health: HealthView,
    run_id: str,
    clock: Callable[[], pd.Timestamp] | None = None,
    *,
    model: ModelView | None = None,
) -> dict[str, Any]:
    """One live decision bar: load its inputs, plan it and store the plan, send it and store what the
    broker did (two transactions: a crash between them is finished by the next run, ``resume_bar``)."""
    clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
    lap = Laps()
    broker = trader.broker
    source = settings.decision.source_module
    members = [m for m in settings.signal.members if m in champions and champions[m].artifact is not None]
    planning = False
    # The bar's reads and its plan (the local broker reads the bar's prices) on one connection. It closes
    # before the first fault point: a run killed while it holds the writer slot leaves the slot leased for
    # minutes (tests/flows/test_decide_crash.py).
    try:
        with wh.session():
            data = wd.bar_frame(wh, interval, ts, FEATURE_SET_VERSION, members, broker.name)
            features = data["features"]
            lap("load")
            preds = predict_bar(champions, members, data, interval, ts, run_id, clock)
            lap("predict")
            bar = BarMarket(
                ts=ts,
                interval=interval,
                market_open=market_open(ts, interval, settings.exchange),
                signals=bar_signals(settings, champions[source], preds, features),
                prices=dict(
                    zip(features["symbol"].astype(str), features["bar_close"].astype(float), strict=True)
                ),
                health=health,
                model=model or model_view(settings, wh, interval, champions[source]),
            )
            planning = True  # from here on the broker may hold unsaved work
            plan = trader.plan(bar)
        fault_point("decide:decided")
        lap("decide")
        written = store_plan(wh, trader, plan, run_id, clock(), preds)
        fault_point("decide:planned")
        lap("store")
        outcome = trader.execute(plan, after_order=lambda n: fault_point(f"decide:order{n}"))
        fault_point("decide:sent")
        lap("send")
        store_outcome(wh, trader, outcome, clock())
        fault_point("decide:stored")
        lap("store")
    except BaseException:
        if planning:  # what this process did not save is forgotten: the warehouse is the truth
            broker.reload()
        raise
    return summary(outcome, preds, written) | {"timings_s": lap.timings}


def resume_bar(
    settings: Settings, wh: Warehouse, trader: Trader, ts: pd.Timestamp, clock=None
) -> dict[str, Any]:
    """Finish a bar whose plan was stored but whose orders or stop moves were not all recorded (a run
    that died in between): send what is missing (idempotent: client order ids, stops found replaced) and
    store what the broker did."""
    clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
    legs, stops = wd.unfinished_plan(wh, trader.broker.name, ts)
    o = settings.orders
    brackets = tuple(
        dm.PlannedBracket(
            str(r.decision_id), int(r.leg),
            Bracket(str(r.symbol), Side(r.side), int(r.qty), float(r.entry_ref), float(r.take_profit),
                    float(r.stop_price), str(r.client_order_id), time_in_force=o.time_in_force, tick=o.tick),
        )
        for r in legs.itertuples(index=False)
    )  # fmt: skip
    moves = tuple(
        dm.StopMove(
            dm.OpenBracket(r.client_order_id, r.decision_id, None if pd.isna(r.leg) else int(r.leg), str(r.symbol),
                           Side(r.side), float(r.entry_price), str(r.replaced_order_id), float(r.old_stop)),
            float(r.new_stop), str(r.rule), str(r.reason),
        )
        for r in stops.itertuples(index=False)
    )  # fmt: skip
    trader.state.learn_orders(trader.broker.get_orders("all"))
    for p in brackets:
        trader.state.legs[p.bracket.client_order_id] = (p.decision_id, p.leg)
    plan = BarPlan(ts, me.BarResult((), brackets, moves, None), 0, [], [], [], trader.broker.account(), {}, [],
                   len(brackets))  # fmt: skip
    outcome = trader.execute(plan)
    store_outcome(wh, trader, outcome, clock())
    return {"ts": str(ts), "resumed": True, "submitted": outcome.submitted, "already_at_broker": outcome.already,
            "stop_moves": len(outcome.stop_moves), "refused": outcome.refused}  # fmt: skip


def store_plan(
    wh: Warehouse, trader: Trader, plan: BarPlan, run_id: str, now: pd.Timestamp, preds: BarPredictions
) -> int:
    """The decided bar before any order leaves, in one transaction: the local account as the bar found it
    (fills), the reconciliation, the decisions, the brackets they will send (decision_orders rows without a
    broker order id yet), the stop moves, new predictions and gate verdicts."""
    broker = trader.broker
    name = broker.name
    rows = plan.result.frame().assign(run_id=run_id, decided_at=now)
    legs = [
        {"client_order_id": p.bracket.client_order_id, "decision_id": p.decision_id, "leg": p.leg,
         "symbol": p.bracket.symbol, "side": p.bracket.side.value, "qty": p.bracket.qty,
         "entry_ref": p.bracket.entry_ref, "take_profit": p.bracket.take_profit, "stop_price": p.bracket.stop,
         "broker": name, "broker_order_id": None, "recorded_at": now, "plan_seq": i}
        for i, p in enumerate(plan.result.brackets)
    ]  # fmt: skip
    stops = [
        {"replaced_order_id": m.bracket.stop_order_id, "ts": plan.ts, "broker": name, "symbol": m.bracket.symbol,
         "client_order_id": m.bracket.entry_client_order_id, "decision_id": m.bracket.decision_id,
         "leg": m.bracket.leg, "side": m.bracket.side.value, "entry_price": m.bracket.entry_price,
         "old_stop": m.bracket.stop_price, "new_stop": m.new_stop, "rule": m.rule, "reason": m.reason,
         "planned_at": now}
        for m in plan.result.stop_moves
    ]  # fmt: skip
    dq = [*preds.dq, *plan.dq_results]
    orders = broker.get_orders("all")  # outside the transaction: a network call for Alpaca
    with wh.transaction() as con:
        recon = reconcile(orders, load_order_records(con, name), plan.positions, plan.account)
        broker.commit(con)
        apply_reconciliation(con, name, recon, ts=plan.ts.to_pydatetime(), recorded_at=now)
        wd.write_fills(
            con,
            pd.DataFrame(fill_rows(name, plan.fills, trader.state.entry_of, now), columns=wd.FILL_COLUMNS),
        )
        wd.write_stop_plans(con, stops)
        return wd.write_decisions(
            con, rows, pd.DataFrame(legs), preds.new, pd.concat(dq, ignore_index=True) if dq else None,
            prediction_columns=PREDICTION_COLUMNS,
        )  # fmt: skip


def store_outcome(wh: Warehouse, trader: Trader, outcome: BarOutcome, now: pd.Timestamp) -> None:
    """What the broker did with the plan, in one transaction: the local account's new orders and moved
    stops, the orders sent (order_records, the broker's ids on decision_orders), the stop moves, and the
    decisions the broker refused."""
    broker = trader.broker
    name = broker.name
    with wh.transaction() as con:
        broker.commit(con)
        record_submissions(con, name, [(s.order, f"tp{s.planned.leg}") for s in outcome.sent],
                           strategy=trader.cfg.strategy, bar_ts=outcome.ts.to_pydatetime(), recorded_at=now)  # fmt: skip
        wd.record_sent(con, [(s.planned.bracket.client_order_id, s.order.id) for s in outcome.sent])
        wd.record_refusals(con, outcome.refused, outcome.created)
        record_exit_adjustments(con, stop_move_rows(outcome, name, now))


def summary(outcome: BarOutcome, preds: BarPredictions, written: int) -> dict[str, Any]:
    r = outcome.result
    return {
        "ts": str(outcome.ts),
        "bars_stepped": outcome.stepped,
        "fills": len(outcome.fills),
        "candidates": len(r.decisions),
        "accepted": len(r.accepted),
        "brackets": outcome.planned,
        "submitted": outcome.submitted,
        "already_at_broker": outcome.already,
        "stop_moves": [
            {
                "symbol": d.move.bracket.symbol,
                "rule": d.move.rule,
                "old": d.move.bracket.stop_price,
                "new": d.new_stop,
            }
            for d in outcome.stop_moves
        ],
        "reasons": r.reasons(),
        "order_gate_failures": outcome.gate_failures,
        "predictions_made": len(preds.new),
        "predictions_quarantined": preds.quarantined,
        "decisions_written": written,
        "equity": float(outcome.account.equity),
    }


# A broker that is briefly down (Alpaca 5xx, timeout) retries the whole bar: safe, because nothing of the
# bar was stored, reconciliation runs first and client order ids make every submission idempotent.
@task(
    name="decide-bar",
    cache_policy=NO_CACHE,
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_RETRY_DELAYS_S,
    retry_jitter_factor=NETWORK_RETRY_JITTER,
    retry_condition_fn=retry_on(BrokerUnavailable),
)
def decide_bar(
    settings: Settings,
    wh: Warehouse,
    trader: Trader,
    interval: str,
    ts: pd.Timestamp,
    champions: dict[str, Champion],
    health: HealthView,
    run_id: str,
) -> dict[str, Any]:
    s = run_bar(settings, wh, trader, interval, ts, champions, health, run_id)
    get_run_logger().info(
        "%s: %d candidates, %d accepted, %d brackets sent (%d already there), %d stop moves; %s",
        s["ts"], s["candidates"], s["accepted"], s["submitted"], s["already_at_broker"], len(s["stop_moves"]),
        ", ".join(f"{k} {v}" for k, v in s["reasons"].items()),
    )  # fmt: skip
    return s


@task(name="resume-bar", cache_policy=NO_CACHE, retries=NETWORK_RETRIES, retry_delay_seconds=NETWORK_RETRY_DELAYS_S,
      retry_jitter_factor=NETWORK_RETRY_JITTER, retry_condition_fn=retry_on(BrokerUnavailable))  # fmt: skip
def finish_bar(settings: Settings, wh: Warehouse, trader: Trader, ts: pd.Timestamp) -> dict[str, Any]:
    s = resume_bar(settings, wh, trader, ts)
    get_run_logger().warning(
        "%s: a run died after storing this bar's plan: %d brackets sent now, %d found at the broker, %d stop "
        "moves, %d refused", s["ts"], s["submitted"], s["already_at_broker"], s["stop_moves"], len(s["refused"]),
    )  # fmt: skip
    return s


def new_trader(settings: Settings, wh: Warehouse, broker: Broker, run_id: str) -> Trader:
    return Trader(
        broker,
        me.EngineConfig.from_settings(settings, broker.name),
        order_gate(run_id),
        trader_state(wh, broker),
    )


# ------------------------------------------------------------------------------------------------ summary


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return qa.number(x, 2)
    if isinstance(x, int):
        return qa.count(x)
    return str(x)


def decide_markdown(interval: str, run_id: str, bars: list[dict[str, Any]], health: HealthView) -> str:
    md = [
        f"# Decisions {interval}",
        "",
        f"run `{run_id}`; health {_fmt(health.overall)} (run at {qa.short_ts(health.ts)} UTC); "
        f"{len(bars)} bar(s) from {qa.short_ts(bars[0]['ts']) if bars else '-'} to "
        f"{qa.short_ts(bars[-1]['ts']) if bars else '-'} UTC",
        "",
    ]
    head = ["Bar (UTC)", "Candidates", "Accepted", "Sent", "Stop moves", "Fills", "Equity", "Top reasons",
            "Order gate"]  # fmt: skip
    rows = [
        {"Bar (UTC)": qa.short_ts(b["ts"], date_only=False), "Candidates": _fmt(b["candidates"]),
         "Accepted": _fmt(b["accepted"]), "Sent": _fmt(b["submitted"]), "Stop moves": _fmt(len(b["stop_moves"])),
         "Fills": _fmt(b["fills"]), "Equity": _fmt(b["equity"]),
         "Top reasons": ", ".join(f"{k} {_fmt(v)}" for k, v in list(b["reasons"].items())[:3]),
         "Order gate": ", ".join(b["order_gate_failures"]) or "ok"}
        for b in bars
    ]  # fmt: skip
    md += qa.md_table(rows, head, head[1:7])
    return "\n".join(md)


def publish_decisions(interval: str, run_id: str, bars: list[dict[str, Any]], health: HealthView) -> None:
    create_markdown_artifact(
        key="decisions-summary",
        markdown=decide_markdown(interval, run_id, bars, health),
        description=f"Decision run {run_id}",
    )


def publish_refusal(interval: str, problems: list[str]) -> str:
    md = "\n".join([f"# Decisions {interval}: refused to trade", "", *[f"- {p}" for p in problems]])
    create_markdown_artifact(
        key="decisions-refused", markdown=md, description="Why the decision flow refused"
    )
    return md


def summary_json(bars: list[dict[str, Any]]) -> str:
    return json.dumps(bars, default=str)
