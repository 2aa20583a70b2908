"""Decision assembly at one bar: candidates -> trade filter -> sizing -> exit plan -> bracket legs.

Pure (no I/O, no Prefect, no SQL): the decision flow gathers the inputs (tasks/decide.py) and this module
turns them into one ``decisions`` row per candidate, with a reason code, and the brackets to send. The
rows are made as columns (``assemble_columns``: the trade filter over the whole bar as arrays, only the
candidates it lets through sized one by one), the speed a backtest of 500 symbols needs.

Order of the checks for one candidate (the first failure is its ``reason_code``):

1. ``short_disabled`` when a down call would open a short and ``decision.allow_short`` is false;
2. the trade filter (models/trade_filter.py: market_closed ... cooldown);
3. the exit plan (models/exits.py): ``no_atr`` without a usable ATR, ``exit_plan_invalid`` when levels
   are impossible;
4. sizing (models/sizing.py): ``size_rejected`` when it rounds to zero shares;
5. brackets (models/brackets.py): ``invalid_bracket`` when a leg's prices are not a tick apart.

Candidates are taken best calibrated confidence first (raw with ``decision.calibrated_confidence`` off), so ``max_open_positions`` and the buying power
go to the strongest signals; each accepted one uses up a position slot, buying power and gross exposure
before the next is sized. The order gate (expectations/suites/orders.json) runs afterwards, on the
whole batch, in the flow.

Stop management for open brackets (``plan_stop_moves``) applies ``models/exits.next_stop`` to each
bracket whose stop leg is still working: breakeven after TP1, the health-gated ensemble rule and the
predictive alert rule; only tightening moves come out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from models.brackets import (
    DEFAULT_TICK,
    Bracket,
    InvalidBracket,
    Side,
    client_order_id,
    round_exit,
    split_quantity,
)
from models.exits import ProfileShape, adaptive_profile, is_tighter, next_stop, plan_levels, profile_shape
from models.signals.ensemble import combine, ensemble_p_up
from models.signals.volatility import vol_state
from models.sizing import SizeCaps, performance_multiplier, position_size
from models.trade_filter import FilterContext, Reason, filter_batch
from models.training import side_values
from qtrader.settings import ExitSettings, FilterSettings, SizingSettings

ACCEPTED = "accepted"
SHORT_DISABLED = "short_disabled"
NO_ATR = "no_atr"
EXIT_PLAN_INVALID = "exit_plan_invalid"
SIZE_REJECTED = "size_rejected"
INVALID_BRACKET = "invalid_bracket"
ORDER_GATE_FAILED = "order_gate_failed"
BROKER_REJECTED = "broker_rejected"


@dataclass(frozen=True, slots=True)
class Signal:
    """One symbol's ensemble view at the decision bar, with the bar's price, ATR and volatility state."""

    symbol: str
    direction: int  # +1 up, -1 down, 0 none
    consensus: str
    voters: int
    agree: int
    contributors: str
    confidence_raw: float | None
    confidence_seed: float | None
    confidence_calibrated: float | None
    close: float
    atr: float | None
    vol_state: str | None
    module_p_up: Mapping[str, Any] = field(default_factory=dict)
    module_p_up_json: str | None = None  # module_p_up serialised once (a backtest reuses a signal per mode)


def _opt(x: float) -> float | None:
    return None if x != x else x  # NaN -> None


@dataclass(frozen=True)
class SignalBatch:
    """A bar's candidates as columns: how a backtest's timeline keeps the signals of thousands of bars
    (a ``Signal`` object per symbol and bar would not fit in memory at 500 symbols x 10 years); the
    engine takes either form. Missing floats are NaN here, None on a ``Signal``."""

    symbol: list[str]
    direction: np.ndarray  # int
    consensus: list[str]
    voters: np.ndarray
    agree: np.ndarray
    contributors: list[str]
    confidence_raw: np.ndarray
    confidence_seed: np.ndarray
    confidence_calibrated: np.ndarray
    close: np.ndarray
    atr: np.ndarray
    vol_state: list[str | None]
    module_p_up_json: list[str]

    def __len__(self) -> int:
        return len(self.symbol)

    @classmethod
    def of(cls, signals: Sequence[Signal]) -> SignalBatch:
        def f(x: float | None) -> float:
            return np.nan if x is None else float(x)

        return cls(
            [s.symbol for s in signals],
            np.array([s.direction for s in signals], dtype=np.int64),
            [s.consensus for s in signals],
            np.array([s.voters for s in signals], dtype=np.int64),
            np.array([s.agree for s in signals], dtype=np.int64),
            [s.contributors for s in signals],
            np.array([f(s.confidence_raw) for s in signals]),
            np.array([f(s.confidence_seed) for s in signals]),
            np.array([f(s.confidence_calibrated) for s in signals]),
            np.array([float(s.close) for s in signals]),
            np.array([f(s.atr) for s in signals]),
            [s.vol_state for s in signals],
            [s.module_p_up_json or p_up_json(s.module_p_up) for s in signals],
        )

    def signals(self) -> list[Signal]:
        cols = zip(
            self.symbol, self.direction.tolist(), self.consensus, self.voters.tolist(), self.agree.tolist(),
            self.contributors, self.confidence_raw.tolist(), self.confidence_seed.tolist(),
            self.confidence_calibrated.tolist(), self.close.tolist(), self.atr.tolist(), self.vol_state,
            self.module_p_up_json, strict=True,
        )  # fmt: skip
        return [
            Signal(sym, d, c, v, a, con, _opt(raw), _opt(seed), _opt(cal), close, _opt(atr), vs, {}, js)
            for sym, d, c, v, a, con, raw, seed, cal, close, atr, vs, js in cols
        ]


@dataclass(frozen=True)
class DecisionContext:
    """Everything about the account, the modules and the market that is the same for every candidate."""

    ts: datetime
    interval: str
    strategy: str
    broker: str
    source_module: str
    market_open: bool
    overall_health: float | None
    module_health: Mapping[str, float | None]
    health_ts: datetime | None = None
    model_version: int | None = None
    calibration: str | None = None
    accuracy: float | None = None
    performance_score: float | None = None
    hit_rates: Mapping[str, float | None] = field(default_factory=dict)
    learned_stop_atr: float | None = None
    equity: float = 0.0
    buying_power: float = 0.0
    gross_exposure: float = 0.0
    open_position_symbols: Collection[str] = ()
    pending_order_symbols: Collection[str] = ()
    open_positions: int = 0
    start_of_day_equity: float | None = None
    day_pnl: float = 0.0
    last_exit_ts: Mapping[str, datetime] = field(default_factory=dict)
    allow_short: bool = True
    tick: float = DEFAULT_TICK
    tp_weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)
    time_in_force: str = "day"
    use_calibration: bool = True  # False: filter and rank on the raw ensemble confidence
    # The learned health baselines ({module or "overall": value}), the kill-switch floor and what drove
    # each score down, from the newest health run (models/trade_filter.py, docs/health.md).
    health_baselines: Mapping[str, float | None] = field(default_factory=dict)
    health_floor: float | None = None
    health_drivers: Mapping[str, Any] = field(default_factory=dict)

    def confidence(self, sig: Signal) -> float | None:
        return _num(sig.confidence_calibrated if self.use_calibration else sig.confidence_raw)


@dataclass(frozen=True)
class PlannedBracket:
    decision_id: str
    leg: int
    bracket: Bracket


@dataclass
class DecisionBatch:
    rows: list[dict[str, Any]]  # one per candidate: the ``decisions`` table's columns (no run_id yet)
    brackets: list[PlannedBracket]

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r["reason_code"]] = out.get(r["reason_code"], 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


# One encoder for every row: json.dumps with arguments builds a new encoder per call.
_JSON = json.JSONEncoder(sort_keys=True, default=str)
_BUY, _SELL = Side.buy.value, Side.sell.value


def p_up_json(module_p_up: Mapping[str, Any]) -> str:
    return _JSON.encode(dict(module_p_up))


def decision_id(strategy: str, interval: str, symbol: str, ts: datetime) -> str:
    return f"{strategy}|{interval}|{symbol}|{_iso(ts)}"


def _iso(ts: datetime) -> str:
    return ts.isoformat() if hasattr(ts, "isoformat") else str(ts)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _context_row(ctx: DecisionContext) -> dict[str, Any]:
    """The columns of a decisions row that are the same for every candidate of the bar (made once)."""
    return {
        "ts": ctx.ts,
        "interval": ctx.interval,
        "strategy": ctx.strategy,
        "broker": ctx.broker,
        "source_module": ctx.source_module,
        "model_version": ctx.model_version,
        "calibration": ctx.calibration,
        "overall_health": _num(ctx.overall_health),
        "module_health": _num(ctx.module_health.get(ctx.source_module)),
        "health_ts": ctx.health_ts,
        "accuracy": _num(ctx.accuracy),
        "performance_score": _num(ctx.performance_score),
        "size_multiplier": None,
        "size_reason": None,
        "capped_by": None,
        "tp1_rate": _num(ctx.hit_rates.get("tp1")),
        "tp2_rate": _num(ctx.hit_rates.get("tp2")),
        "tp3_rate": _num(ctx.hit_rates.get("tp3")),
        "learned_stop_atr": _num(ctx.learned_stop_atr),
        "exit_profile": None,
        "stop_price": None,
        "tp1_price": None,
        "tp2_price": None,
        "tp3_price": None,
        "qty": 0,
        "accepted": False,
        "submitted": False,
        "reason_code": "",
        "failed": None,
        "details": None,
        "health_drivers": None,
    }


# A decisions row's columns (models.engine.Decision's fields, in its order).
DECISION_FIELDS = (
    "decision_id", "ts", "interval", "symbol", "strategy", "broker", "side", "direction", "consensus", "voters",
    "agree", "contributors", "module_p_up", "source_module", "model_version", "calibration", "confidence_raw",
    "confidence_seed", "confidence_calibrated", "overall_health", "module_health", "health_ts", "accuracy",
    "performance_score", "size_multiplier", "size_reason", "capped_by", "atr", "vol_state", "tp1_rate",
    "tp2_rate", "tp3_rate", "learned_stop_atr", "exit_profile", "entry_ref", "stop_price", "tp1_price",
    "tp2_price", "tp3_price", "qty", "accepted", "submitted", "reason_code", "failed", "details",
    "health_drivers", "client_order_ids",
)  # fmt: skip


def _opt_list(a: np.ndarray) -> list[float | None]:
    """Floats with the missing and non-finite ones as None (``_num`` over an array)."""
    a = np.asarray(a, dtype=np.float64)
    return [None if x != x else x for x in np.where(np.isfinite(a), a, np.nan).tolist()]


_NESTED = "nested"  # a sentinel: the filter's details nested under "details"


def assemble(
    signals: Iterable[Signal] | SignalBatch,
    ctx: DecisionContext,
    filter_cfg: FilterSettings | None = None,
    sizing_cfg: SizingSettings | None = None,
    exit_cfg: ExitSettings | None = None,
) -> DecisionBatch:
    """One row per signal and the brackets of the accepted ones (see the module docstring)."""
    cols, brackets = assemble_columns(signals, ctx, filter_cfg, sizing_cfg, exit_cfg)
    n = len(cols["decision_id"])
    rows = [{k: v[i] for k, v in cols.items()} for i in range(n)]
    for r in rows:
        r["client_order_ids"] = list(r["client_order_ids"])
    return DecisionBatch(rows, brackets)


def assemble_columns(
    signals: Iterable[Signal] | SignalBatch,
    ctx: DecisionContext,
    filter_cfg: FilterSettings | None = None,
    sizing_cfg: SizingSettings | None = None,
    exit_cfg: ExitSettings | None = None,
) -> tuple[dict[str, list[Any]], list[PlannedBracket]]:
    """``assemble`` as columns (``DECISION_FIELDS``, one list entry per candidate, best first) and the
    brackets: the trade filter runs over the whole bar at once (``models.trade_filter.filter_batch``) and
    only the candidates it lets through are sized one after another, each using up a slot, buying power
    and gross exposure before the next. Rejected candidates never leave the arrays."""
    filter_cfg = filter_cfg or FilterSettings()
    sizing_cfg = sizing_cfg or SizingSettings()
    exit_cfg = exit_cfg or ExitSettings()
    given = None if isinstance(signals, SignalBatch) else list(signals)
    sb = signals if given is None else SignalBatch.of(given)
    n = len(sb)
    raw = np.asarray(sb.confidence_calibrated if ctx.use_calibration else sb.confidence_raw, dtype=np.float64)
    # Best confidence first, then by symbol (a missing or zero confidence ranks as -1, as ``or -1.0`` did).
    key = np.where(np.isfinite(raw) & (raw != 0), -raw, 1.0).tolist()
    order = sorted(range(n), key=lambda i: (key[i], sb.symbol[i]))
    idx = np.asarray(order, dtype=np.int64)

    def take(values: list[Any]) -> list[Any]:
        return [values[i] for i in order]

    symbol = take(sb.symbol)
    direction = sb.direction[idx].astype(np.int64)
    dir_list = direction.tolist()
    close = sb.close[idx].astype(np.float64).tolist()
    atr_list = _opt_list(sb.atr[idx])
    vol = take(sb.vol_state)
    conf = raw[idx]
    ts_iso = _iso(ctx.ts)
    prefix = f"{ctx.strategy}|{ctx.interval}|"
    common = _context_row(ctx)
    cols: dict[str, list[Any]] = {k: [common[k]] * n for k in DECISION_FIELDS if k in common}
    cols.update(
        decision_id=[f"{prefix}{s}|{ts_iso}" for s in symbol],
        symbol=symbol,
        side=[_BUY if d > 0 else _SELL if d < 0 else None for d in dir_list],
        direction=dir_list,
        consensus=[str(c) for c in take(sb.consensus)],
        voters=sb.voters[idx].astype(np.int64).tolist(),
        agree=sb.agree[idx].astype(np.int64).tolist(),
        contributors=[c or None for c in take(sb.contributors)],
        module_p_up=take(sb.module_p_up_json),
        confidence_raw=_opt_list(sb.confidence_raw[idx]),
        confidence_seed=_opt_list(sb.confidence_seed[idx]),
        confidence_calibrated=_opt_list(sb.confidence_calibrated[idx]),
        atr=atr_list,
        vol_state=vol,
        entry_ref=_opt_list(sb.close[idx]),
        client_order_ids=[()] * n,
    )
    cols = {k: cols[k] for k in DECISION_FIELDS}
    if n == 0:
        return cols, []

    fctx = FilterContext(
        market_open=ctx.market_open, overall_health=ctx.overall_health, module_health=ctx.module_health,
        open_position_symbols=ctx.open_position_symbols, pending_order_symbols=ctx.pending_order_symbols,
        open_positions=ctx.open_positions, start_of_day_equity=ctx.start_of_day_equity, day_pnl=ctx.day_pnl,
        last_exit_ts=ctx.last_exit_ts, now=ctx.ts, health_baselines=ctx.health_baselines,
        health_floor=ctx.health_floor, health_drivers=ctx.health_drivers,
    )  # fmt: skip
    short_off = (direction < 0) & (not ctx.allow_short)
    first = filter_batch(symbol, cols["consensus"], conf, ctx.source_module, ctx.ts, fctx, filter_cfg)
    # Candidates the bar-wide and per-symbol rules let through: only slots and working orders can still
    # refuse them, and those change as candidates are accepted, so they go one by one.
    through = np.flatnonzero(first.accepted & ~short_off).tolist()

    multiplier, mult_reason = performance_multiplier(ctx.accuracy, ctx.performance_score, sizing_cfg)
    open_positions = ctx.open_positions
    buying_power = float(ctx.buying_power)
    gross = float(ctx.gross_exposure)
    pending = set(ctx.pending_order_symbols)
    brackets: list[PlannedBracket] = []
    accepted = np.zeros(n, dtype=bool)
    shapes: dict[str | None, ProfileShape] = {}
    caps: SizeCaps | None = None
    # Candidate -> (reason code, failed, details) when the filter let it through (details None: the filter's).
    outcome: dict[int, tuple[str, str | None, str | None]] = {}
    reason_code, failed, details = cols["reason_code"], cols["failed"], cols["details"]
    for i in through:
        sym = symbol[i]
        if open_positions >= filter_cfg.max_open_positions:
            break  # every later candidate fails max_positions
        if sym in pending:
            continue
        d = dir_list[i]
        if d == 0:  # defensive: no side means nothing to trade
            outcome[i] = (Reason.weak_consensus.value, Reason.weak_consensus.value, _NESTED)
            continue
        side = Side.buy if d > 0 else Side.sell
        atr = atr_list[i]
        if atr is None or atr <= 0:
            raw_atr = given[order[i]].atr if given is not None else _opt(float(sb.atr[order[i]]))
            outcome[i] = (NO_ATR, NO_ATR, _JSON.encode({"atr": raw_atr}))
            continue
        price = close[i]
        try:
            if exit_cfg.adaptive:  # the profile's shape is the same for every candidate of a vol state
                shape = shapes.get(vol[i])
                if shape is None:
                    shape = shapes[vol[i]] = profile_shape(
                        ctx.hit_rates, ctx.learned_stop_atr, vol[i], exit_cfg
                    )
                profile = shape.at(atr)
            else:
                profile = adaptive_profile(atr, ctx.hit_rates, ctx.learned_stop_atr, vol[i], exit_cfg)
            levels = plan_levels(price, side, profile)
        except ValueError as exc:
            outcome[i] = (EXIT_PLAN_INVALID, EXIT_PLAN_INVALID, _JSON.encode({"error": str(exc)}))
            continue
        cols["exit_profile"][i] = profile.reason
        cols["stop_price"][i] = levels.stop
        cols["tp1_price"][i], cols["tp2_price"][i], cols["tp3_price"][i] = levels.tp1, levels.tp2, levels.tp3

        if caps is None:  # changes only when a candidate is accepted
            caps = SizeCaps.from_account(ctx.equity, gross, buying_power, sizing_cfg)
        size = position_size(ctx.equity, sizing_cfg.risk_per_trade, profile.stop, multiplier, price, caps)
        cols["size_multiplier"][i] = size.multiplier
        cols["size_reason"][i] = f"{mult_reason}; {size.reason}"
        cols["capped_by"][i] = ", ".join(size.capped_by) or None
        if size.rejected:
            outcome[i] = (SIZE_REJECTED, SIZE_REJECTED, _JSON.encode({"reason": size.reason}))
            continue

        did = cols["decision_id"][i]
        try:
            legs = split_quantity(size.shares, ctx.tp_weights)
            planned = [
                PlannedBracket(
                    did,
                    leg.leg,
                    Bracket(
                        symbol=sym,
                        side=side,
                        qty=leg.qty,
                        entry_ref=float(price),
                        take_profit=float(levels.take_profits[leg.leg - 1]),
                        stop=float(levels.stop),
                        client_order_id=client_order_id(ctx.strategy, sym, ctx.ts, leg.leg),
                        time_in_force=ctx.time_in_force,
                        tick=ctx.tick,
                    ),
                )
                for leg in legs
            ]
        except (InvalidBracket, ValueError) as exc:
            outcome[i] = (INVALID_BRACKET, INVALID_BRACKET, _JSON.encode({"error": str(exc)}))
            continue

        cols["qty"][i] = size.shares
        cols["accepted"][i] = True
        cols["client_order_ids"][i] = tuple(p.bracket.client_order_id for p in planned)
        accepted[i] = True
        outcome[i] = (ACCEPTED, None, None)
        brackets.extend(planned)
        open_positions += 1
        pending.add(sym)
        notional = size.shares * float(price)
        buying_power -= notional
        gross += notional
        caps = None

    # The filter's verdict for every candidate with the slots and working orders it actually saw.
    before = np.concatenate([[0], np.cumsum(accepted)[:-1]])
    seen = ctx.pending_order_symbols
    first_accept: dict[str, int] = {}
    for i in np.flatnonzero(accepted).tolist():
        first_accept.setdefault(symbol[i], i)
    working = np.fromiter(
        (s in seen or first_accept.get(s, n) < i for i, s in enumerate(symbol)), dtype=bool, count=n
    )
    final = first.with_slots(ctx.open_positions + before, working, filter_cfg)
    codes, fails, texts = final.reason_codes(), final.failed(), final.details_json()
    drivers = final.health_drivers
    cols["health_drivers"] = [drivers] * n
    short = np.flatnonzero(short_off).tolist()
    for i in range(n):
        got = outcome.get(i)
        if got is None:  # refused by the filter
            reason_code[i], failed[i], details[i] = codes[i], fails[i], texts[i]
        else:
            code, why, text = got
            if text is _NESTED:  # recorded as ``{"details": <the filter's details>}``
                text = f'{{"details": {texts[i]}}}'
            reason_code[i], failed[i], details[i] = code, why, text if text is not None else texts[i]
    for i in short:
        reason_code[i], failed[i], details[i] = SHORT_DISABLED, SHORT_DISABLED, "{}"
        cols["health_drivers"][i] = None
    return cols, brackets


ORDER_BATCH_COLUMNS = [
    "decision_id", "client_order_id", "symbol", "side", "leg", "qty", "decision_qty", "entry_ref",
    "take_profit", "stop", "confidence_raw", "confidence_calibrated", "max_notional",
]  # fmt: skip


def order_batch_columns(
    batch: DecisionBatch, ctx: DecisionContext, sizing_cfg: SizingSettings | None = None
) -> dict[str, np.ndarray]:
    """The batch the order gate validates, as columns: one row per bracket, with the limits it is
    checked against."""
    sizing_cfg = sizing_cfg or SizingSettings()
    by_id = {r["decision_id"]: r for r in batch.rows}
    rows = [(p, p.bracket, by_id[p.decision_id]) for p in batch.brackets]

    def col(values, dtype=object) -> np.ndarray:
        return np.array(list(values), dtype=dtype)

    def num(x) -> float:
        return np.nan if x is None else float(x)

    return {
        "decision_id": col(p.decision_id for p, _, _ in rows),
        "client_order_id": col(b.client_order_id for _, b, _ in rows),
        "symbol": col(b.symbol for _, b, _ in rows),
        "side": col(b.side.value for _, b, _ in rows),
        "leg": col((p.leg for p, _, _ in rows), np.int64),
        "qty": col((b.qty for _, b, _ in rows), np.int64),
        "decision_qty": col((d["qty"] for _, _, d in rows), np.int64),
        "entry_ref": col((b.entry_ref for _, b, _ in rows), np.float64),
        "take_profit": col((b.take_profit for _, b, _ in rows), np.float64),
        "stop": col((b.stop for _, b, _ in rows), np.float64),
        "confidence_raw": col((num(d["confidence_raw"]) for _, _, d in rows), np.float64),
        "confidence_calibrated": col((num(d["confidence_calibrated"]) for _, _, d in rows), np.float64),
        "max_notional": np.full(len(rows), ctx.equity * sizing_cfg.max_position_pct, dtype=np.float64),
    }


def order_batch_frame(batch: DecisionBatch, ctx: DecisionContext, sizing_cfg: SizingSettings | None = None):
    """``order_batch_columns`` as the frame the Great Expectations order gate validates."""
    return pd.DataFrame(order_batch_columns(batch, ctx, sizing_cfg), columns=ORDER_BATCH_COLUMNS)


def order_gate_derived(cols) -> dict[str, np.ndarray]:
    """Derived columns the orders suite checks: each bracket's price order for its side, notional vs cap."""
    side = np.asarray(cols["side"])
    sign = np.where(side == "sell", -1.0, 1.0)
    entry = np.asarray(cols["entry_ref"], dtype=np.float64)
    cap = np.asarray(cols["max_notional"], dtype=np.float64)
    notional = np.asarray(cols["decision_qty"], dtype=np.float64) * entry
    with np.errstate(divide="ignore", invalid="ignore"):
        to_cap = np.where(cap > 0, notional / np.where(cap > 0, cap, 1.0), np.inf)
    return {
        "tp_gap": sign * (np.asarray(cols["take_profit"], dtype=np.float64) - entry),
        "stop_gap": sign * (entry - np.asarray(cols["stop"], dtype=np.float64)),
        "notional_to_cap": to_cap,
    }


def order_gate_view(frame):
    """``order_gate_derived`` added to a frame (the Great Expectations path)."""
    return frame.assign(**order_gate_derived({c: frame[c].to_numpy() for c in frame.columns}))


# ------------------------------------------------------------------------------------------ open brackets


@dataclass(frozen=True)
class OpenBracket:
    """One bracket of an open position: its entry fill and its working stop leg."""

    entry_client_order_id: str
    decision_id: str | None
    leg: int | None
    symbol: str
    side: Side
    entry_price: float
    stop_order_id: str
    stop_price: float


@dataclass(frozen=True)
class StopMove:
    bracket: OpenBracket
    new_stop: float  # rounded to the tick, away from the entry (what the broker will hold)
    rule: str
    reason: str


def plan_stop_moves(
    brackets: Iterable[OpenBracket],
    *,
    tp1_filled: Collection[str],
    current: Mapping[str, float],
    overall_health: float | None,
    ensemble_health: float | None,
    alerts: Iterable[Any] = (),
    cfg: ExitSettings | None = None,
    tick: float = DEFAULT_TICK,
    overall_gate: float | None = None,
    ensemble_gate: float | None = None,
) -> list[StopMove]:
    """The stop moves for working stop legs (``tp1_filled``: decision ids whose TP1 bracket took profit).

    Breakeven uses the decision's average entry fill over its brackets; a move that rounds to the
    current stop is dropped.
    """
    cfg = cfg or ExitSettings()
    alerts = list(alerts)
    items = list(brackets)
    entries: dict[str, list[float]] = {}
    for b in items:
        entries.setdefault(b.decision_id or b.entry_client_order_id, []).append(b.entry_price)
    moves = []
    for b in items:
        price = current.get(b.symbol)
        if price is None or not math.isfinite(price):
            continue
        key = b.decision_id or b.entry_client_order_id
        entry = sum(entries[key]) / len(entries[key])
        upd = next_stop(
            side=b.side,
            entry=entry,
            current=price,
            active_stop=b.stop_price,
            tp1_filled=b.decision_id is not None and b.decision_id in tp1_filled,
            overall_health=overall_health,
            ensemble_health=ensemble_health,
            alerts=alerts,
            cfg=cfg,
            overall_gate=overall_gate,
            ensemble_gate=ensemble_gate,
        )
        if upd is None:
            continue
        rounded = float(round_exit(Decimal(str(upd.new_stop)), b.side, "stop_loss", tick))
        if not is_tighter(rounded, b.stop_price, b.side):
            continue
        moves.append(StopMove(b, rounded, upd.rule, upd.reason))
    return moves


# ------------------------------------------------------------------------------------------------ signals


def ensemble_signals(
    member_p_up: pd.DataFrame,
    features: pd.DataFrame,
    *,
    weights: Mapping[str, float] | None,
    calibrator: Any,
    seed_accuracy: float,
    min_edge: float,
    strong: float,
    weak: float,
    min_voters: int,
    module_detail: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Signal]:
    """Signals from the member modules' P(up) at one bar (index: symbol, one column per member).

    Consensus, direction, raw confidence and contributors come from ``combine`` with the ensemble
    champion's weights; the calibrated confidence is the ensemble champion's stored calibrator applied to
    that raw confidence, and the seed confidence the seed formula with the champion's recorded accuracy
    (``models.training.side_values``, the retrain's own path). ``features``: symbol, bar_close, atr_14
    and the volatility-state inputs.
    """
    feats = features.set_index("symbol")
    probas = member_p_up.reindex(feats.index)
    combined = combine(probas, weights, min_edge, strong, weak, min_voters)
    p_up = ensemble_p_up(combined).to_numpy(dtype="float64")
    _, seed, fitted = side_values(p_up, calibrator, seed_accuracy)
    no_call = combined["direction"].to_numpy() == 0
    seed = np.where(no_call, np.nan, seed)
    fitted = np.where(no_call, np.nan, fitted)
    states = vol_state(feats.reset_index()).to_numpy()
    detail = module_detail or {}
    direction = combined["direction"].to_numpy().astype(int).tolist()
    consensus = combined["consensus"].astype(str).tolist()
    voters = combined["voters"].to_numpy().astype(int).tolist()
    agree = combined["agree"].to_numpy().astype(int).tolist()
    contributors = combined["contributors"].astype(str).tolist()
    confidence = combined["confidence"].to_numpy(dtype="float64").tolist()
    close = feats["bar_close"].to_numpy(dtype="float64").tolist()
    atr = feats["atr_14"].to_numpy(dtype="float64", na_value=np.nan).tolist()
    members = list(probas.columns)
    out = []
    for i, sym in enumerate(map(str, feats.index)):
        votes = {m: detail.get(sym, {}).get(m) for m in members}
        out.append(
            Signal(
                symbol=sym,
                direction=direction[i],
                consensus=consensus[i],
                voters=voters[i],
                agree=agree[i],
                contributors=contributors[i],
                confidence_raw=confidence[i] if direction[i] != 0 else None,
                confidence_seed=_num(seed[i]),
                confidence_calibrated=_num(fitted[i]),
                close=close[i],
                atr=_num(atr[i]),
                vol_state=str(states[i]),
                module_p_up=votes,
                module_p_up_json=p_up_json(votes),
            )
        )
    return out
