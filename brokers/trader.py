"""The trader: one decision bar against a broker, the same code live and in a backtest.

Per bar: the broker sees the market up to the bar (``advance_to``: a simulated broker fills its working
orders, a real one has moved by itself), the account and the working brackets are read, the decision
engine (models/engine.py) decides on the inputs the caller built, the order gate checks the batch, stop
moves and new brackets go to the broker. ``BarOutcome`` carries every record the bar produced; the caller
stores them (live: one transaction per bar; backtest: once at the end).

The trader keeps what it needs between bars in ``TraderState`` (which bracket belongs to which decision,
the decisions whose TP1 took profit, each symbol's last exit, the equity at each bar for the start-of-day
figure). Live, the state is loaded from the warehouse; in a backtest it starts empty.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from brokers.base import (
    Account,
    Broker,
    Fill,
    Order,
    OrderRejected,
    OrderRole,
    OrderStatus,
    Position,
    submit_idempotent,
)
from models import decision as dm
from models import engine as me
from models.brackets import Side

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateVerdict:
    ok: bool
    failures: Mapping[str, int] = field(default_factory=dict)  # rule -> failing rows
    dq_results: pd.DataFrame | None = None


# The order gate: the batch as columns (models.decision.order_batch_columns) -> verdict.
OrderGate = Callable[[Mapping[str, Any]], GateVerdict]


@dataclass
class TraderState:
    """What the trader carries from bar to bar."""

    legs: dict[str, tuple[str, int]] = field(default_factory=dict)  # entry client order id -> (decision, leg)
    entry_of: dict[str, str] = field(default_factory=dict)  # order id (entry or leg) -> entry client order id
    tp1_filled: set[str] = field(default_factory=set)  # decision ids
    last_exit: dict[str, datetime] = field(default_factory=dict)  # symbol -> newest exit fill
    equity_ts: list[pd.Timestamp] = field(default_factory=list)  # account snapshots, oldest first
    equity: list[float] = field(default_factory=list)

    def learn_orders(self, orders: Iterable[Order]) -> None:
        for o in orders:
            self.entry_of[o.id] = o.client_order_id
            for leg in o.legs:
                self.entry_of[leg.id] = o.client_order_id

    def learn_fills(self, fills: Iterable[Fill]) -> None:
        for f in fills:
            if f.role is not None and f.role is not OrderRole.entry:
                prev = self.last_exit.get(f.symbol)
                if prev is None or f.ts > prev:
                    self.last_exit[f.symbol] = f.ts
            if f.role is OrderRole.take_profit:
                entry = self.entry_of.get(f.order_id)
                known = self.legs.get(entry) if entry is not None else None
                if known is not None and known[1] == 1:
                    self.tp1_filled.add(known[0])

    def snapshot(self, ts: pd.Timestamp, equity: float) -> None:
        self.equity_ts.append(ts)
        self.equity.append(equity)

    def start_of_day_equity(self, ts: pd.Timestamp) -> float | None:
        """The newest account snapshot before the bar's UTC day."""
        day = ts.tz_convert("UTC").normalize()
        i = bisect.bisect_left(self.equity_ts, day)
        return self.equity[i - 1] if i else None

    def last_exits(self, ts) -> dict[str, datetime]:
        t = pd.Timestamp(ts)
        return {s: x for s, x in self.last_exit.items() if pd.Timestamp(x) <= t}


@dataclass(frozen=True)
class BarMarket:
    """The bar as the decision sees it (the caller's inputs, not the broker's)."""

    ts: pd.Timestamp
    interval: str
    market_open: bool
    signals: Sequence[dm.Signal]
    prices: Mapping[str, float]
    health: me.HealthView
    model: me.ModelView


@dataclass(frozen=True)
class StopMoveDone:
    move: dm.StopMove
    new_order_id: str
    new_stop: float


@dataclass(frozen=True)
class SentBracket:
    planned: dm.PlannedBracket
    order: Order
    created: bool  # False: the broker already had this client order id


@dataclass
class BarPlan:
    """A decided bar before anything was sent: the decisions, their brackets and the stop moves."""

    ts: pd.Timestamp
    result: me.BarResult
    stepped: int
    fills: list[Fill]
    orders: list[Order]  # the working brackets after the broker saw the bar
    positions: list[Position]
    account: Account
    gate_failures: dict[str, int]
    dq_results: list[pd.DataFrame]
    planned: int  # brackets the engine planned, before the order gate


@dataclass
class BarOutcome:
    ts: pd.Timestamp
    result: me.BarResult
    stepped: int
    fills: list[Fill]
    orders: list[Order]  # the working brackets after the broker saw the bar, before this bar's orders
    positions: list[Position]
    account: Account
    stop_moves: list[StopMoveDone]
    sent: list[SentBracket]
    gate_failures: dict[str, int]
    dq_results: list[pd.DataFrame]
    planned: int = 0  # brackets the engine planned, before the order gate and the broker
    refused: dict[str, str] = field(default_factory=dict)  # decision id -> why the broker refused it
    created: set[str] = field(default_factory=set)  # decisions with a bracket sent now

    @property
    def submitted(self) -> int:
        return sum(s.created for s in self.sent)

    @property
    def already(self) -> int:
        return sum(not s.created for s in self.sent)


def _f(x) -> float:
    return float(x) if x is not None else 0.0


def open_brackets(orders: Iterable[Order], legs: Mapping[str, tuple[str, int]]) -> list[dm.OpenBracket]:
    """Filled entries whose stop leg still works (the ones whose stop the engine may move)."""
    out = []
    for o in orders:
        if o.role is not OrderRole.entry or o.status is not OrderStatus.filled:
            continue
        sl = o.stop_loss
        if sl is None or sl.status not in (OrderStatus.new, OrderStatus.held) or sl.stop_price is None:
            continue
        did, leg = legs.get(o.client_order_id, (None, None))
        out.append(
            dm.OpenBracket(o.client_order_id, did, leg, o.symbol, Side(o.side), float(o.filled_avg_price),
                           sl.id, float(sl.stop_price))
        )  # fmt: skip
    return out


class Trader:
    """Runs the decision engine against one broker, bar after bar (module docstring)."""

    def __init__(
        self,
        broker: Broker,
        cfg: me.EngineConfig,
        gate: OrderGate,
        state: TraderState | None = None,
        *,
        sizing=None,
    ) -> None:
        self.broker = broker
        self.cfg = cfg
        self.gate = gate
        self.state = state or TraderState()

    def advance(self, ts: pd.Timestamp) -> tuple[int, list[Fill]]:
        """The broker sees the market up to ``ts`` (also on bars the decision refuses to trade)."""
        report = self.broker.advance_to(ts)
        self.state.learn_fills(report.fills)
        return report.bars, list(report.fills)

    def step(self, bar: BarMarket) -> BarOutcome:
        """One bar: plan it, then carry the plan to the broker."""
        return self.execute(self.plan(bar))

    def plan(self, bar: BarMarket) -> BarPlan:
        """The broker sees the bar; the engine decides; the order gate checks the batch. Nothing is sent:
        the live flow stores the plan before the first order leaves (docs/trading.md, "Crash recovery")."""
        ts = bar.ts
        stepped, fills = self.advance(ts)
        orders = self.broker.get_orders("open")
        positions, account = self.broker.positions(), self.broker.account()
        self.state.learn_orders(orders)
        equity = _f(account.equity)
        sod = self.state.start_of_day_equity(ts)
        self.state.snapshot(ts, equity)

        view = me.AccountView(
            equity=equity,
            buying_power=_f(account.buying_power),
            gross_exposure=sum(abs(_f(p.market_value)) for p in positions),
            open_position_symbols=frozenset(p.symbol for p in positions if p.qty != 0),
            pending_order_symbols=frozenset(
                o.symbol for o in orders if o.role is OrderRole.entry and o.is_open
            ),
            start_of_day_equity=sod,
            last_exit_ts=self.state.last_exits(ts),
        )
        inputs = me.BarInputs(
            ts=ts.to_pydatetime(),
            interval=bar.interval,
            market_open=bar.market_open,
            signals=bar.signals,
            prices=bar.prices,
            health=bar.health,
            model=bar.model,
            account=view,
            open_brackets=open_brackets(orders, self.state.legs),
            tp1_filled=self.state.tp1_filled,
        )
        result = me.decide(inputs, self.cfg)
        failures: dict[str, int] = {}
        dq: list[pd.DataFrame] = []
        planned = len(result.brackets)
        if result.brackets:
            verdict = self.gate(dm.order_batch_columns(result.batch(), result.context, self.cfg.sizing))
            if verdict.dq_results is not None:
                dq.append(verdict.dq_results)
            failures = {r: n for r, n in verdict.failures.items() if n}
            if not verdict.ok:
                result = me.block(result, dm.ORDER_GATE_FAILED, ", ".join(sorted(failures)))
        return BarPlan(ts, result, stepped, fills, orders, positions, account, failures, dq, planned)

    def execute(self, plan: BarPlan, *, after_order: Callable[[int], None] | None = None) -> BarOutcome:
        """The plan's stop moves, then its brackets, to the broker (each bracket unless the broker already
        has its client order id: safe to run again after a crash). ``after_order(n)``: called after the
        n-th order reached the broker (the fault hook of the crash tests)."""
        moved = self._move_stops(plan.result.stop_moves, after_order)
        sent, refused, created = self._submit(plan.result.brackets, after_order, len(moved))
        result = plan.result
        for did, why in refused.items():
            result = me.refuse(result, did, dm.BROKER_REJECTED, why)
        if created:
            result = me.mark_submitted(result, created)
        return BarOutcome(
            plan.ts, result, plan.stepped, plan.fills, plan.orders, plan.positions, plan.account, moved, sent,
            plan.gate_failures, plan.dq_results, plan.planned, refused, created,
        )  # fmt: skip

    def _move_stops(
        self, moves: Sequence[dm.StopMove], after_order: Callable[[int], None] | None = None
    ) -> list[StopMoveDone]:
        done = []
        for mv in moves:
            try:
                new = self.broker.replace_stop(mv.bracket.stop_order_id, mv.new_stop)
            except OrderRejected as exc:
                new = self._replaced_already(mv)
                if new is None:
                    log.warning("stop move %s refused: %s", mv.bracket.entry_client_order_id, exc)
                    continue
            self.state.entry_of[new.id] = mv.bracket.entry_client_order_id
            done.append(StopMoveDone(mv, new.id, float(new.stop_price or mv.new_stop)))
            if after_order is not None:
                after_order(len(done))
        return done

    def _replaced_already(self, mv: dm.StopMove) -> Order | None:
        """A stop the broker replaced before (a run that crashed after moving it): its replacement, when
        that is the planned stop."""
        old = self.broker.get_order(mv.bracket.stop_order_id)
        if old.status is not OrderStatus.replaced or not old.replaced_by:
            return None
        new = self.broker.get_order(old.replaced_by)
        return new if new.stop_price is not None and float(new.stop_price) == float(mv.new_stop) else None

    def _submit(
        self,
        brackets: Sequence[dm.PlannedBracket],
        after_order: Callable[[int], None] | None = None,
        done: int = 0,
    ) -> tuple[list[SentBracket], dict[str, str], set[str]]:
        """Submit unless the broker already knows the client order id, leg by leg in the batch's order.
        Returns what went (or was found), the decisions the broker refused (with why), and the decisions
        with at least one bracket sent now."""
        refused: dict[str, str] = {}
        created: set[str] = set()
        sent: list[SentBracket] = []
        for p in brackets:
            if p.decision_id in refused:
                continue
            try:
                res = submit_idempotent(self.broker, p.bracket)
            except OrderRejected as exc:
                refused[p.decision_id] = f"{exc.code}: {exc.message}"
                continue
            self.state.legs[p.bracket.client_order_id] = (p.decision_id, p.leg)
            self.state.learn_orders([res.order])
            if res.created:
                created.add(p.decision_id)
            sent.append(SentBracket(p, res.order, res.created))
            if after_order is not None:
                after_order(done + len(sent))
        return sent, refused, created


def decision_order_rows(outcome: BarOutcome, broker: str, recorded_at) -> list[dict[str, Any]]:
    """``decision_orders`` rows of the brackets sent (or found at the broker) this bar."""
    rows = []
    for s in outcome.sent:
        b, p = s.planned.bracket, s.planned
        rows.append(
            {"client_order_id": b.client_order_id, "decision_id": p.decision_id, "leg": p.leg, "symbol": b.symbol,
             "side": b.side.value, "qty": b.qty, "entry_ref": b.entry_ref, "take_profit": b.take_profit,
             "stop_price": b.stop, "broker": broker, "broker_order_id": s.order.id, "recorded_at": recorded_at}
        )  # fmt: skip
    return rows


def fill_rows(
    broker: str, fills: Iterable[Fill], entry_of: Mapping[str, str], recorded_at
) -> list[dict[str, Any]]:
    """``broker_fills`` rows, each tied to its bracket's entry."""
    return [
        {
            "fill_key": f"{broker}|{f.order_id}|{pd.Timestamp(f.ts).isoformat()}|{f.qty}",
            "broker": broker,
            "order_id": f.order_id,
            "client_order_id": f.client_order_id,
            "entry_client_order_id": entry_of.get(f.order_id),
            "symbol": f.symbol,
            "side": f.side.value,
            "role": f.role.value if f.role is not None else None,
            "qty": int(f.qty),
            "price": str(f.price),
            "commission": str(f.commission),
            "ts": pd.Timestamp(f.ts),
            "recorded_at": recorded_at,
        }
        for f in fills
    ]


def stop_move_rows(outcome: BarOutcome, broker: str, recorded_at) -> list[dict[str, Any]]:
    """``exit_adjustments`` rows of the stop moves made this bar."""
    return [
        {
            "replaced_order_id": d.move.bracket.stop_order_id,
            "new_order_id": d.new_order_id,
            "ts": outcome.ts,
            "broker": broker,
            "symbol": d.move.bracket.symbol,
            "client_order_id": d.move.bracket.entry_client_order_id,
            "old_stop": d.move.bracket.stop_price,
            "new_stop": d.new_stop,
            "rule": d.move.rule,
            "reason": d.move.reason,
            "recorded_at": recorded_at,
        }
        for d in outcome.stop_moves
    ]


def _values(array) -> list[Any]:
    """A packed chunk's values as Python objects again (missing: None where the chunk kept None, NaN where
    inference made it NaN, which inference of the whole column reads alike)."""
    return pd.Series(array, copy=False).astype(object).tolist()


class Recorder:
    """Everything a run of bars produced, kept in memory: the rows of the warehouse's trading tables.

    ``spill``: given, each chunk of ``chunk_rows`` decisions is handed to it as a frame and dropped, and
    ``frames()["decisions"]`` holds only the rows after the last chunk: a long replay's millions of
    rejected candidates go to its results file as they are made instead of staying in memory.
    """

    def __init__(self, broker: str, spill: Callable[[pd.DataFrame], None] | None = None) -> None:
        self.broker = broker
        self.spill = spill
        self.decisions: dict[str, list[Any]] = {k: [] for k in (*dm.DECISION_FIELDS, "run_id", "decided_at")}
        self.orders: list[dict[str, Any]] = []
        self.fill_rows: list[dict[str, Any]] = []
        self.stops: list[dict[str, Any]] = []
        self.accounts: list[dict[str, Any]] = []
        self.positions: list[dict[str, Any]] = []
        self.sent: list[tuple[SentBracket, pd.Timestamp]] = []

    def fills(self, fills: Iterable[Fill], trader: Trader, t: pd.Timestamp) -> None:
        self.fill_rows += fill_rows(self.broker, fills, trader.state.entry_of, t)

    def bar(self, outcome: BarOutcome, trader: Trader, run_id: str) -> None:
        t = outcome.ts
        self.fills(outcome.fills, trader, t)
        a = outcome.account
        self.accounts.append({"broker": self.broker, "ts": t, "cash": a.cash, "equity": a.equity,
                              "buying_power": a.buying_power, "recorded_at": t})  # fmt: skip
        self.positions += [
            {"broker": self.broker, "ts": t, "symbol": p.symbol, "qty": p.qty, "avg_entry_price": p.avg_entry_price,
             "market_value": p.market_value, "recorded_at": t}
            for p in outcome.positions
        ]  # fmt: skip
        self.stops += stop_move_rows(outcome, self.broker, t)
        self.orders += decision_order_rows(outcome, self.broker, t)
        self.sent += [(s, t) for s in outcome.sent]
        table = outcome.result.decisions
        for k, col in table.columns.items():
            self.decisions[k] += col
        self.decisions["run_id"] += [run_id] * len(table)
        self.decisions["decided_at"] += [t] * len(table)
        if len(self.decisions["decision_id"]) >= self.chunk_rows:
            self._pack()

    # Decisions are packed into pandas arrays every ``chunk_rows`` rows (each chunk's dtype inferred as
    # ``pd.DataFrame`` of rows would), so a long replay keeps compact columns instead of a Python object per
    # value; ``_decision_frame`` joins the chunks.
    chunk_rows = 100_000

    def _pack(self) -> None:
        if not self.decisions["decision_id"]:
            return
        if self.spill is not None:
            self.spill(self._take_rows())
            return
        chunks = self.__dict__.setdefault("_chunks", {k: [] for k in self.decisions})
        for k, col in self.decisions.items():
            if k == "client_order_ids":
                col = [",".join(c) if c else None for c in col]
            chunks[k].append(pd.Series(col).array)
            self.decisions[k] = []

    def _take_rows(self) -> pd.DataFrame:
        """The decisions not yet packed or spilled, as ``pd.DataFrame`` of their rows; forgets them."""
        cols = {k: [",".join(c) if c else None for c in col] if k == "client_order_ids" else col
                for k, col in self.decisions.items()}  # fmt: skip
        self.decisions = {k: [] for k in self.decisions}
        return pd.DataFrame(cols) if cols["decision_id"] else pd.DataFrame([])

    def _decision_frame(self) -> pd.DataFrame:
        """The decisions rows as one frame, exactly what ``pd.DataFrame`` of the rows gives: a column whose
        chunks share a dtype is their concatenation, else its values are inferred again as a whole (say a
        float column whose first chunk was all None). Ends the recording of decisions (with ``spill``: the rows
        after the last spilled chunk)."""
        if self.spill is not None:
            return self._take_rows()
        self._pack()
        chunks = self.__dict__.pop("_chunks", None)
        if not chunks:
            return pd.DataFrame([])
        out: dict[str, pd.Series] = {}
        for k in list(chunks):
            parts = chunks.pop(k)
            if len(parts) == 1:
                out[k] = pd.Series(parts[0], copy=False)
            elif len({str(p.dtype) for p in parts}) == 1:
                out[k] = pd.concat([pd.Series(p, copy=False) for p in parts], ignore_index=True)
            else:
                out[k] = pd.Series([x for p in parts for x in _values(p)])
            del parts
        return pd.DataFrame(out, copy=False)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            "decisions": self._decision_frame(),
            "orders": pd.DataFrame(self.orders),
            "fills": pd.DataFrame(self.fill_rows),
            "stops": pd.DataFrame(self.stops),
            "accounts": pd.DataFrame(self.accounts),
            "positions": pd.DataFrame(self.positions),
        }


# What a replay asks of each bar: the market the decision sees, or why the bar is refused.
MarketAt = Callable[[pd.Timestamp], "BarMarket | list[str]"]


def replay(
    trader: Trader,
    times: Sequence[pd.Timestamp],
    market_at: MarketAt,
    recorder: Recorder,
    run_id: str,
    *,
    on_bar: Callable[[int, pd.Timestamp, BarOutcome | None], None] | None = None,
) -> int:
    """Bar after bar through the trader; a refused bar only moves the broker. Returns the refused bars."""
    refused = 0
    for i, t in enumerate(times):
        market = market_at(t)
        if isinstance(market, list):
            refused += 1
            recorder.fills(trader.advance(t)[1], trader, t)
            if on_bar is not None:
                on_bar(i, t, None)
            continue
        outcome = trader.step(market)
        recorder.bar(outcome, trader, run_id)
        if on_bar is not None:
            on_bar(i, t, outcome)
    return refused
