"""Prefect tasks of the decision flow: preconditions, one bar's decision (one task per bar), the summary.

The bar's work is plain functions (``run_bar`` and its helpers) so the benchmark and tests can call them
without Prefect: advance the local broker, reconcile, sync fills, predict, manage open stops, assemble
decisions (models/decision.py), gate the order batch, submit idempotently, record.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from brokers import make_broker
from brokers.base import Broker, BrokerUnavailable, OrderRejected, OrderRole, OrderStatus, submit_idempotent
from brokers.reconcile import reconcile
from expectations.frame_gate import gate_frame
from models import decision as dm
from models.brackets import Side
from models.features import FEATURE_SET_VERSION
from models.health import gate_value
from models.thresholds import LearnedThreshold, metric_specs
from models.training import live_predictions
from qtrader.calendar import in_session, is_daily
from qtrader.settings import Settings
from tasks.retrain import Champion
from tasks.retry import NETWORK_RETRIES, NETWORK_RETRY_DELAYS_S, NETWORK_RETRY_JITTER, retry_on
from warehouse import decisions as wd
from warehouse.db import LockPolicy
from warehouse.health import active_alerts, latest_health, learned_threshold
from warehouse.models import PREDICTION_COLUMNS
from warehouse.trading import (
    apply_reconciliation,
    load_order_records,
    record_exit_adjustment,
    record_submission,
)


def policy(settings: Settings) -> LockPolicy:
    return LockPolicy.from_settings(settings)


def decision_broker(settings: Settings, interval: str, *, clock: Callable | None = None) -> Broker:
    """The configured broker; the local paper broker fills against the decision interval's bars."""
    if str(settings.broker) == "local" and settings.paper.interval != interval:
        settings = settings.model_copy(
            update={"paper": settings.paper.model_copy(update={"interval": interval})}
        )
    return make_broker(settings, clock=clock)


@dataclass
class HealthView:
    ts: pd.Timestamp | None
    overall: float | None
    modules: dict[str, float | None]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    # Learned health baselines and what drove each score down ({module or "overall": ...}), see
    # models/health.gate_value; empty before the health flow records them.
    baselines: dict[str, float | None] = field(default_factory=dict)
    drivers: dict[str, Any] = field(default_factory=dict)


def read_health(settings: Settings) -> HealthView:
    pol = policy(settings)
    try:
        scores = latest_health(settings.warehouse, policy=pol)
        alerts = active_alerts(settings.warehouse, policy=pol)
    except Exception as exc:  # noqa: BLE001 - no health tables yet: reported as "no health run"
        if "does not exist" not in str(exc):
            raise
        return HealthView(None, None, {})
    if scores.empty:
        return HealthView(None, None, {}, [])
    mods = {
        str(m): (None if s is None or pd.isna(s) else float(s))
        for m, s in zip(scores["module"], scores["score"], strict=True)
    }
    overall = mods.pop("overall", None)
    keep = ["module", "metric", "time_to_threshold_hours", "reason", "severity"]
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
        alerts.reindex(columns=keep).to_dict("records") if len(alerts) else [],
        baselines,
        drivers,
    )


# ----------------------------------------------------------------------------------------- preconditions


def exit_health_gates(settings: Settings, health: HealthView) -> dict[str, float]:
    """The exit planner's health gates (seed 1.2's 70 overall, 60 ensemble) against the learned baselines."""
    x, floor = settings.exits, settings.health.kill_floor
    learned = settings.trade_filter.learned_gates
    return {
        "overall_gate": gate_value(
            x.min_overall_health, health.baselines.get("overall"), floor, learned=learned
        ).value,
        "ensemble_gate": gate_value(
            x.ensemble_degraded_health, health.baselines.get(x.ensemble_module), floor, learned=learned
        ).value,
    }


def health_max_age(settings: Settings, interval: str) -> pd.Timedelta:
    d = settings.decision
    minutes = d.max_health_age_minutes_daily if is_daily(interval) else d.max_health_age_minutes_intraday
    return pd.Timedelta(minutes=minutes)


def preconditions(
    settings: Settings,
    interval: str,
    bars: list[pd.Timestamp],
    champions: dict[str, Champion],
    health: HealthView,
    now: pd.Timestamp,
) -> list[str]:
    """Why the flow must not trade (empty: it may). Data gated for every bar, champions, fresh health."""
    problems = []
    pol = policy(settings)
    if not bars:
        return [f"no {interval} bars in {settings.warehouse}: run `qtrader ingest` first"]
    ready = wd.readiness(settings.warehouse, interval, bars, FEATURE_SET_VERSION, policy=pol)
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
    if str(settings.broker) == "local":
        acct = wd.paper_account_interval(settings.warehouse, policy=pol)
        if acct is not None and acct != interval:
            problems.append(
                f"the local paper account trades {acct} bars; decide with --interval {acct} "
                "(or use another warehouse for a new paper account)"
            )
    return problems


@task(name="check-preconditions", cache_policy=NO_CACHE)
def check_preconditions(
    settings: Settings,
    interval: str,
    bars: list[pd.Timestamp],
    champions: dict[str, Champion],
    health: HealthView,
    now: pd.Timestamp,
) -> list[str]:
    problems = preconditions(settings, interval, bars, champions, health, now)
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
    ``out_of_sample`` true only when the bar is after the champion's training window.
    """
    symbols = features["symbol"].astype(str).tolist()
    p = pd.DataFrame(index=pd.Index(symbols, name="symbol"), columns=members, dtype="float64")
    detail: dict[str, dict[str, Any]] = {s: {} for s in symbols}
    new_rows = []
    for m in members:
        art = champions[m].artifact
        have = stored[stored["module"] == m].set_index("symbol")
        have = have[have.index.isin(symbols)]
        p.loc[have.index, m] = have["p_up"].astype(float)
        for sym, r in have.iterrows():
            detail[str(sym)][m] = {
                "p_up": round(float(r["p_up"]), 4), "p_up_calibrated": round(float(r["p_up_calibrated"]), 4),
                "version": int(r["model_version"]),
            }  # fmt: skip
        missing = features[~features["symbol"].isin(have.index)]
        if missing.empty:
            continue
        keys = missing[["symbol"]].assign(interval=interval, ts=ts).reset_index(drop=True)
        frame = live_predictions(art, keys, missing.reset_index(drop=True))
        frame["out_of_sample"] = bool(ts > pd.Timestamp(art.train_end))
        new_rows.append(frame)
        p.loc[frame["symbol"].to_numpy(), m] = frame["p_up"].to_numpy()
        for sym, pu, pc in zip(frame["symbol"], frame["p_up"], frame["p_up_calibrated"], strict=True):
            detail[str(sym)][m] = {"p_up": round(float(pu), 4), "p_up_calibrated": round(float(pc), 4),
                                   "version": int(art.version)}  # fmt: skip
    new = pd.concat(new_rows, ignore_index=True) if new_rows else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return p, new, detail


# ------------------------------------------------------------------------------------------------ the bar


def _f(x) -> float:
    return float(x) if x is not None else 0.0


def open_brackets(orders, decision_orders: pd.DataFrame) -> tuple[list[dm.OpenBracket], set[str]]:
    """Filled entries with a working stop leg, and the decisions whose TP1 bracket took profit."""
    by_coid = decision_orders.set_index("client_order_id") if len(decision_orders) else pd.DataFrame()
    out, tp1 = [], set()
    for o in orders:
        if o.role is not OrderRole.entry or o.status is not OrderStatus.filled:
            continue
        info = by_coid.loc[o.client_order_id] if o.client_order_id in by_coid.index else None
        did = None if info is None else str(info["decision_id"])
        leg = None if info is None else int(info["leg"])
        tp = o.take_profit
        if leg == 1 and tp is not None and tp.status is OrderStatus.filled:
            tp1.add(did)
        sl = o.stop_loss
        if sl is None or sl.status not in (OrderStatus.new, OrderStatus.held) or sl.stop_price is None:
            continue
        out.append(
            dm.OpenBracket(o.client_order_id, did, leg, o.symbol, Side(o.side), float(o.filled_avg_price),
                           sl.id, float(sl.stop_price))
        )  # fmt: skip
    return out, tp1


@dataclass(frozen=True)
class ModelInputs:
    """What the decision reads of the benchmarks and thresholds: the source module's accuracy,
    performance score and TP hit rates, and the learned stop cap."""

    stats: dict[str, float | None]
    stop_cap: LearnedThreshold


def model_inputs(settings: Settings, interval: str) -> ModelInputs:
    d = settings.decision
    window = d.benchmark_window_daily if is_daily(interval) else d.benchmark_window_intraday
    pol = policy(settings)
    stats = wd.latest_module_stats(settings.warehouse, d.source_module, interval, window, policy=pol)
    cap = learned_threshold(
        d.stop_threshold_module,
        "stop_distance_atr",
        warehouse=settings.warehouse,
        policy=pol,
        specs=metric_specs(settings),
    )
    return ModelInputs(stats, cap)


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
        gated = gate_frame(new_preds, suite="predictions", run_id=run_id, stage="predictions")
        quarantined = len(gated.quarantined)
        bad = gated.quarantined
        for sym, mod in zip(bad.get("symbol", []), bad.get("module", []), strict=False):
            p_up.loc[sym, mod] = np.nan
        new_preds = gated.passed.assign(run_id=run_id, predicted_at=clock())
        dq.append(gated.dq_results)
    return BarPredictions(p_up, new_preds, detail, quarantined, dq)


# Replaces the ensemble's signals at a bar (the backtest's --signals): (bar time, features) -> signals.
SignalSource = Callable[[pd.Timestamp, pd.DataFrame], list[dm.Signal]]


def run_bar(
    settings: Settings,
    broker: Broker,
    interval: str,
    ts: pd.Timestamp,
    champions: dict[str, Champion],
    health: HealthView,
    run_id: str,
    clock: Callable[[], pd.Timestamp] | None = None,
    *,
    model: ModelInputs | None = None,
    signal_source: SignalSource | None = None,
) -> dict[str, Any]:
    """One decision bar, end to end (module docstring). Returns a summary for the artifact.

    ``model``: the benchmarks and thresholds in force (default: the newest stored; a backtest passes the
    ones of the simulated time). ``signal_source``: entries from elsewhere instead of the ensemble's.
    """
    clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
    path, pol, name = settings.warehouse, policy(settings), broker.name
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(key: str) -> None:
        nonlocal t0
        now_ = time.perf_counter()
        timings[key] = round(now_ - t0, 4)
        t0 = now_

    # 1. The market moves to the bar (local paper broker), then the broker's state is the truth.
    stepped = broker.advance_to(ts).bars if hasattr(broker, "advance_to") else 0
    orders = broker.get_orders("all")
    positions, account = broker.positions(), broker.account()
    plan = reconcile(orders, load_order_records(path, name, policy=pol), positions, account)
    recon = apply_reconciliation(path, name, plan, ts=ts.to_pydatetime(), recorded_at=clock(), policy=pol)
    since = wd.last_fill_ts(path, name, policy=pol)
    fills = broker.fills(since=None if since is None else since.to_pydatetime())
    n_fills = wd.write_fills(path, wd.fill_rows(name, fills, orders, clock()), policy=pol)
    lap("broker")

    # 2. Inputs at the bar.
    source = settings.decision.source_module
    members = [m for m in settings.signal.members if m in champions and champions[m].artifact is not None]
    data = wd.bar_frame(path, interval, ts, FEATURE_SET_VERSION, members, name, policy=pol)
    features = data["features"]
    ens = champions[source].artifact
    if signal_source is not None:
        preds = BarPredictions(pd.DataFrame(), pd.DataFrame(columns=PREDICTION_COLUMNS), {}, 0, [])
        signals = signal_source(ts, features)
    else:
        preds = predict_bar(champions, members, data, interval, ts, run_id, clock)
        sig = settings.signal
        signals = dm.ensemble_signals(
            preds.p_up, features, weights=getattr(ens, "weights", None), calibrator=ens.calibrator,
            seed_accuracy=ens.seed_accuracy, min_edge=sig.ensemble_min_edge, strong=sig.ensemble_strong,
            weak=sig.ensemble_weak, min_voters=sig.ensemble_min_voters, module_detail=preds.detail,
        )  # fmt: skip
    new_preds, quarantined_preds, dq_frames = preds.new, preds.quarantined, list(preds.dq)
    model = model or model_inputs(settings, interval)
    stats, stop_cap = model.stats, model.stop_cap
    lap("inputs")

    # 3. Exits of open positions: breakeven after TP1, health-gated tightening, predictive tightening.
    dorders = wd.decision_orders(path, name, policy=pol)
    brackets, tp1 = open_brackets(orders, dorders)
    current = dict(zip(features["symbol"].astype(str), features["bar_close"].astype(float), strict=True))
    exit_gates = exit_health_gates(settings, health)
    moves = dm.plan_stop_moves(
        brackets, tp1_filled=tp1, current=current, overall_health=health.overall,
        ensemble_health=health.modules.get(settings.exits.ensemble_module), alerts=health.alerts,
        cfg=settings.exits, tick=settings.orders.tick, **exit_gates,
    )  # fmt: skip
    moved = []
    for mv in moves:
        try:
            new = broker.replace_stop(mv.bracket.stop_order_id, mv.new_stop)
        except OrderRejected as exc:
            get_run_logger().warning("stop move %s refused: %s", mv.bracket.entry_client_order_id, exc)
            continue
        record_exit_adjustment(
            path, broker=name, ts=ts.to_pydatetime(), symbol=mv.bracket.symbol,
            client_order_id=mv.bracket.entry_client_order_id, replaced_order_id=mv.bracket.stop_order_id,
            new_order_id=new.id, old_stop=mv.bracket.stop_price, new_stop=new.stop_price or mv.new_stop,
            rule=mv.rule, reason=mv.reason, recorded_at=clock(), policy=pol,
        )  # fmt: skip
        moved.append({"symbol": mv.bracket.symbol, "rule": mv.rule, "old": mv.bracket.stop_price,
                      "new": float(new.stop_price or mv.new_stop)})  # fmt: skip
    lap("exits")

    # 4. Decisions for new entries.
    exits = data["exits"]
    sod = data["sod_equity"]
    equity = _f(account.equity)
    ctx = dm.DecisionContext(
        ts=ts.to_pydatetime(),
        interval=interval,
        strategy=settings.orders.strategy,
        broker=name,
        source_module=source,
        market_open=bool(in_session(pd.DatetimeIndex([ts]), interval, settings.exchange)[0]),
        overall_health=health.overall,
        module_health=health.modules,
        health_ts=None if health.ts is None else health.ts.to_pydatetime(),
        model_version=int(ens.version),
        calibration=ens.calibrator.method if ens.calibrator is not None else "none",
        accuracy=stats["accuracy"],
        performance_score=stats["performance_score"],
        hit_rates={k: stats[k] for k in ("tp1", "tp2", "tp3")},
        learned_stop_atr=stop_cap.value,
        equity=equity,
        buying_power=_f(account.buying_power),
        gross_exposure=sum(abs(_f(p.market_value)) for p in positions),
        open_position_symbols={p.symbol for p in positions if p.qty != 0},
        pending_order_symbols={o.symbol for o in orders if o.role is OrderRole.entry and o.is_open},
        open_positions=sum(1 for p in positions if p.qty != 0),
        start_of_day_equity=None if sod is None else float(sod),
        day_pnl=equity - float(sod) if sod is not None else 0.0,
        last_exit_ts={
            str(s): pd.Timestamp(t).to_pydatetime() for s, t in zip(exits["symbol"], exits["ts"], strict=True)
        },
        allow_short=settings.decision.allow_short,
        tick=settings.orders.tick,
        tp_weights=tuple(settings.orders.tp_weights),
        time_in_force=settings.orders.time_in_force,
        use_calibration=settings.decision.calibrated_confidence,
        health_baselines=health.baselines,
        health_floor=settings.health.kill_floor,
        health_drivers=health.drivers,
    )
    batch = dm.assemble(signals, ctx, settings.trade_filter, settings.sizing, settings.exits)
    lap("assemble")

    # 5. The order gate, then the broker.
    gate_failures: dict[str, int] = {}
    planned = len(batch.brackets)
    submitted, already, order_rows = 0, 0, []
    if batch.brackets:
        frame = dm.order_batch_frame(batch, ctx, settings.sizing)
        gated = gate_order_batch(frame, run_id)
        dq_frames.append(gated.dq_results)
        gate_failures = {r: n for r, n in gated.failures.items() if n}
        if not gated.ok:
            block_batch(batch, gate_failures)
        else:
            submitted, already, order_rows = submit_batch(settings, broker, batch, ts, clock)
    lap("orders")

    now = clock()
    rows = pd.DataFrame(batch.rows).assign(run_id=run_id, decided_at=now)
    if len(rows):
        rows["client_order_ids"] = [",".join(c) if c else None for c in rows["client_order_ids"]]
    written = wd.write_decisions(
        path, rows, pd.DataFrame(order_rows), new_preds,
        pd.concat(dq_frames, ignore_index=True) if dq_frames else None,
        prediction_columns=PREDICTION_COLUMNS, policy=pol,
    )  # fmt: skip
    lap("record")
    accepted = [r for r in batch.rows if r["accepted"]]
    return {
        "ts": str(ts),
        "bars_stepped": stepped,
        "fills": n_fills,
        "reconciled": recon,
        "candidates": len(batch.rows),
        "accepted": len(accepted),
        "brackets": planned,
        "submitted": submitted,
        "already_at_broker": already,
        "stop_moves": moved,
        "reasons": batch.reasons(),
        "order_gate_failures": gate_failures,
        "predictions_made": len(new_preds),
        "predictions_quarantined": quarantined_preds,
        "decisions_written": written,
        "equity": equity,
        "timings_s": timings,
    }


def gate_order_batch(frame: pd.DataFrame, run_id: str):
    return gate_frame(frame, suite="orders", run_id=run_id, stage="orders", derive=dm.order_gate_view)


def block_batch(batch: dm.DecisionBatch, failures: dict[str, int]) -> None:
    """A failing order gate sends nothing: every accepted decision of the bar says which rules failed."""
    rules = ", ".join(sorted(failures))
    for r in batch.rows:
        if r["accepted"]:
            r.update(accepted=False, reason_code=dm.ORDER_GATE_FAILED, failed=rules, client_order_ids=[])
    batch.brackets.clear()


def submit_batch(settings: Settings, broker: Broker, batch: dm.DecisionBatch, ts: pd.Timestamp, clock):
    """Submit unless the broker already knows the client order id; record what was sent."""
    pol = policy(settings)
    rows = {r["decision_id"]: r for r in batch.rows}
    created, known, order_rows = 0, 0, []
    for p in batch.brackets:
        row = rows[p.decision_id]
        if not row["accepted"]:
            continue
        try:
            sent = submit_idempotent(broker, p.bracket)
        except OrderRejected as exc:
            row.update(accepted=False, reason_code=dm.BROKER_REJECTED, failed=f"{exc.code}: {exc.message}")
            continue
        record_submission(
            settings.warehouse, broker.name, sent.order, strategy=settings.orders.strategy, leg=f"tp{p.leg}",
            bar_ts=ts.to_pydatetime(), recorded_at=clock(), policy=pol,
        )  # fmt: skip
        created += int(sent.created)
        known += int(not sent.created)
        row["submitted"] = row["submitted"] or sent.created
        b = p.bracket
        order_rows.append(
            {"client_order_id": b.client_order_id, "decision_id": p.decision_id, "leg": p.leg, "symbol": b.symbol,
             "side": b.side.value, "qty": b.qty, "entry_ref": b.entry_ref, "take_profit": b.take_profit,
             "stop_price": b.stop, "broker": broker.name, "broker_order_id": sent.order.id, "recorded_at": clock()}
        )  # fmt: skip
    return created, known, order_rows


# A broker that is briefly down (Alpaca 5xx, timeout) retries the whole bar: safe, because reconciliation
# runs first and client order ids make every submission idempotent.
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
    broker: Broker,
    interval: str,
    ts: pd.Timestamp,
    champions: dict[str, Champion],
    health: HealthView,
    run_id: str,
) -> dict[str, Any]:
    summary = run_bar(settings, broker, interval, ts, champions, health, run_id)
    get_run_logger().info(
        "%s: %d candidates, %d accepted, %d brackets sent (%d already there), %d stop moves; %s",
        summary["ts"], summary["candidates"], summary["accepted"], summary["submitted"],
        summary["already_at_broker"], len(summary["stop_moves"]),
        ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()),
    )  # fmt: skip
    return summary


# ------------------------------------------------------------------------------------------------ summary


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:,.2f}"
    return str(x)


def decide_markdown(interval: str, run_id: str, bars: list[dict[str, Any]], health: HealthView) -> str:
    md = [
        f"# Decisions {interval}",
        "",
        f"run `{run_id}`; health {_fmt(health.overall)} (run at {health.ts}); "
        f"{len(bars)} bar(s) from {bars[0]['ts'] if bars else '-'} to {bars[-1]['ts'] if bars else '-'}",
        "",
        "| bar | candidates | accepted | sent | stop moves | fills | equity | top reasons | order gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in bars:
        reasons = ", ".join(f"{k} {v}" for k, v in list(b["reasons"].items())[:3])
        gate = ", ".join(b["order_gate_failures"]) or "ok"
        md.append(
            f"| {b['ts']} | {b['candidates']} | {b['accepted']} | {b['submitted']} | {len(b['stop_moves'])} | "
            f"{b['fills']} | {_fmt(b['equity'])} | {reasons} | {gate} |"
        )
    return "\n".join(md)


@task(name="publish-decisions", cache_policy=NO_CACHE)
def publish_decisions(interval: str, run_id: str, bars: list[dict[str, Any]], health: HealthView) -> None:
    create_markdown_artifact(
        key="decisions-summary",
        markdown=decide_markdown(interval, run_id, bars, health),
        description=f"Decision run {run_id}",
    )


@task(name="publish-refusal", cache_policy=NO_CACHE)
def publish_refusal(interval: str, problems: list[str]) -> str:
    md = "\n".join([f"# Decisions {interval}: refused to trade", "", *[f"- {p}" for p in problems]])
    create_markdown_artifact(
        key="decisions-refused", markdown=md, description="Why the decision flow refused"
    )
    return md


def summary_json(bars: list[dict[str, Any]]) -> str:
    return json.dumps(bars, default=str)
