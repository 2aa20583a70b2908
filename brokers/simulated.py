"""The simulated broker: a paper account held in memory, filled against the bars it is shown.

It is the local paper broker's engine (brokers/local.py adds the repository that persists it) and the
backtest's venue; both run exactly this code, as nautilus_trader runs one execution path against its
simulated exchange.

- The broker's clock is *market time*: the newest bar it has been shown (``on_bars``). An order submitted
  now fills from the next bar on; the injected ``clock`` (wall time) only stamps audit fields.
- Fill rules are ``models/fills.py``'s (market entry at the next open + slippage, take-profit at its
  limit, stop at its stop, gaps at the open, stop first when both could fill, OCO).
- Checks at submission mirror Alpaca's: a client order id seen before raises ``DuplicateOrder`` (with the
  existing order); the take-profit and stop must be a tick beyond the current price (the last close it
  was shown) on the right side; the entry's notional must fit the buying power (equity - gross position
  value - notional held by working entries; no leverage).
- Money is exact: a ``Decimal`` cash ledger (one deposit, then a trade and a commission entry per fill).
- ``changes()`` hands the repository what changed since the last ``mark_saved()``: new and updated
  orders, fills, ledger entries, positions and the market time. Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

import numpy as np
import pandas as pd

from brokers.base import (
    Account,
    AdvanceReport,
    DuplicateOrder,
    Fill,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRole,
    OrderStatus,
    OrderType,
    Position,
)
from models.brackets import (
    Bracket,
    EntryType,
    Side,
    child_client_order_id,
    round_exit,
    round_to_tick,
    tick_for,
)
from models.fills import (
    CANCELED,
    ENTRY,
    FILLED,
    HELD,
    LIMIT,
    MARKET,
    STOP,
    STOP_LOSS,
    TAKE_PROFIT,
    WORKING,
    FillCosts,
    OrderBook,
    PaperBook,
    PositionState,
    money,
)

NAMESPACE = uuid.UUID("6f1f7d0e-2b0c-4a55-9a6e-7c1f3b9d2e41")
WORKING_STATUSES = ("new", "held")
_STATUS_NAMES = {HELD: "held", WORKING: "new", FILLED: "filled", CANCELED: "canceled"}
_KIND = {"market": MARKET, "limit": LIMIT, "stop": STOP}
_ROLE = {"entry": ENTRY, "take_profit": TAKE_PROFIT, "stop_loss": STOP_LOSS}
# Alpaca's codes for the same refusals, so callers can treat both brokers alike.
CODE_DUPLICATE = 40010001
CODE_UNPROCESSABLE = 42210000
CODE_BUYING_POWER = 40310000


def _holds(o: PaperOrder) -> bool:
    return o.working and o.role == "entry" and o.reserve_price is not None


_NS_BYTES = NAMESPACE.bytes


def uid(*parts: str) -> str:
    """Deterministic ids (orders from their client order id, fills from their order): a re-run of the same
    bar rebuilds the same ids. ``str(uuid.uuid5(NAMESPACE, "/".join(parts)))``, without the UUID object
    (a test holds the two equal)."""
    h = bytearray(hashlib.sha1(_NS_BYTES + "/".join(parts).encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def utc(ts) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def _py(ts) -> datetime | None:
    if ts is None:
        return None
    if type(ts) is pd.Timestamp and ts.tzinfo is UTC:  # the broker's own times: no conversion to make
        return ts.to_pydatetime()
    return utc(ts).to_pydatetime()


# The enums of an Order's fields by value: a dict lookup instead of an Enum call (a view of every open
# order is made again whenever one of its bracket's orders changes; thousands per backtest mode).
_SIDE = {m.value: m for m in Side}
_TYPE = {m.value: m for m in OrderType}
_ORDER_ROLE = {m.value: m for m in OrderRole}
_STATUS = {m.value: m for m in OrderStatus}


@dataclass(frozen=True)
class BarBatch:
    """Bars as arrays (what the broker steps on): a DataFrame converts once with ``of``."""

    symbol: np.ndarray  # object
    ts: np.ndarray  # int64 ns since the epoch, UTC
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @classmethod
    def of(cls, bars: pd.DataFrame | BarBatch) -> BarBatch:
        if isinstance(bars, BarBatch):
            return bars
        ts = pd.to_datetime(bars["ts"], utc=True)
        return cls(
            bars["symbol"].to_numpy(dtype=object),
            ts.dt.as_unit("ns").array.asi8 if len(bars) else np.zeros(0, dtype=np.int64),
            *(bars[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")),
        )

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, rows: np.ndarray) -> BarBatch:
        return BarBatch(self.symbol[rows], self.ts[rows], self.open[rows], self.high[rows], self.low[rows],
                        self.close[rows])  # fmt: skip


class BarFeed(Protocol):
    def bars(self, symbols: list[str] | None, after, until) -> pd.DataFrame | BarBatch:
        """Bars (symbol, ts, open, high, low, close) with after < ts <= until; ``after`` None: each
        symbol's newest bar at or before ``until``."""
        ...


@dataclass
class PaperOrder:
    """One order of the paper account (an entry or an exit leg), mutable as it works."""

    id: str
    client_order_id: str
    parent_id: str | None
    symbol: str
    side: str  # buy | sell
    role: str  # entry | take_profit | stop_loss
    type: str  # market | limit | stop
    qty: int
    limit_price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str
    status: str  # new | held | filled | canceled | replaced
    submitted_at: pd.Timestamp  # market time: the order sees bars after this one
    created_at: datetime
    updated_at: datetime
    reserve_price: Decimal | None = None  # entry: the market price at submission (buying power held)
    filled_qty: int = 0
    filled_avg_price: Decimal | None = None
    filled_at: pd.Timestamp | None = None
    canceled_at: pd.Timestamp | None = None
    replaces: str | None = None
    replaced_by: str | None = None

    @property
    def working(self) -> bool:
        return self.status in WORKING_STATUSES


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    ts: datetime
    kind: str  # deposit | trade | commission
    amount: Decimal
    order_id: str | None
    fill_id: str | None
    recorded_at: datetime


@dataclass(frozen=True)
class PaperFill:
    """A fill with its id (what the repository stores; ``Fill`` is what the protocol returns)."""

    fill_id: str
    fill: Fill
    recorded_at: datetime


@dataclass
class PaperState:
    """Everything the paper account is: the repository loads and saves exactly this."""

    account_id: str
    starting_cash: Decimal
    interval: str
    created_at: datetime
    market_ts: pd.Timestamp | None = None
    orders: dict[str, PaperOrder] = field(default_factory=dict)  # by id, in submission order
    fills: list[PaperFill] = field(default_factory=list)  # by bar time
    ledger: list[LedgerEntry] = field(default_factory=list)
    positions: dict[str, PositionState] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # the last close shown, per symbol
    updated_at: datetime | None = None

    @classmethod
    def opened(cls, account_id: str, starting_cash: Decimal, interval: str, now: datetime) -> PaperState:
        cash = money(Decimal(str(starting_cash)))
        state = cls(account_id, cash, interval, now, updated_at=now)
        state.ledger.append(LedgerEntry(f"deposit:{account_id}", now, "deposit", cash, None, None, now))
        return state


@dataclass(frozen=True)
class PaperChanges:
    """What changed since the last save: the repository writes these rows in one transaction."""

    account: PaperState
    new_orders: list[PaperOrder]
    updated_orders: list[PaperOrder]
    fills: list[PaperFill]
    ledger: list[LedgerEntry]
    positions: dict[str, PositionState]
    moved: bool = False  # the market time changed

    @property
    def empty(self) -> bool:
        return not (
            self.moved
            or self.new_orders
            or self.updated_orders
            or self.fills
            or self.ledger
            or self.positions
        )


class SimulatedBroker:
    """The ``Broker`` protocol over a ``PaperState`` in memory (module docstring)."""

    name = "local"

    def __init__(
        self,
        state: PaperState,
        costs: FillCosts = FillCosts(),
        *,
        tick: float = 0.01,
        clock: Callable[[], datetime] | None = None,
        feed: BarFeed | None = None,
    ) -> None:
        self.state = state
        self.feed = feed
        self.costs = costs
        self.tick = tick
        self.clock = clock or (lambda: datetime.now(UTC))
        self._cash = sum((e.amount for e in state.ledger), Decimal(0))
        self._by_coid = {o.client_order_id: o.id for o in state.orders.values()}
        self._legs: dict[str, list[str]] = {}
        for o in state.orders.values():
            if o.parent_id is not None:
                self._legs.setdefault(o.parent_id, []).append(o.id)
        self._working = [o.id for o in state.orders.values() if o.working]
        # Buying power held by working entries (qty x the price at submission), kept as orders come and go.
        self._reserved = sum(
            (o.qty * o.reserve_price for o in state.orders.values() if _holds(o)), Decimal(0)
        )
        self._fill_ts = [f.fill.ts for f in state.fills]
        self._mark_times: dict[str, int] = {}  # ns of each mark's bar (an account with no market time)
        self._views: dict[str, Order] = {}  # entry id -> its nested Order, until the bracket changes
        self._held: tuple[Decimal, Decimal] | None = None  # _held_value, until marks or positions move
        self.mark_saved()

    @classmethod
    def new(
        cls,
        starting_cash: Decimal | float | str = Decimal("100000"),
        costs: FillCosts = FillCosts(),
        *,
        interval: str = "5m",
        tick: float = 0.01,
        clock: Callable[[], datetime] | None = None,
        account_id: str = "paper",
        feed: BarFeed | None = None,
    ) -> SimulatedBroker:
        now = (clock or (lambda: datetime.now(UTC)))()
        state = PaperState.opened(account_id, Decimal(str(starting_cash)), interval, now)
        broker = cls(state, costs, tick=tick, clock=clock, feed=feed)
        broker._saved_ledger = 0  # the deposit is new: the first save writes it
        return broker

    @property
    def interval(self) -> str:
        return self.state.interval

    def __repr__(self) -> str:
        return f"SimulatedBroker(interval={self.interval!r}, orders={len(self.state.orders)})"

    # -- change tracking (for the repository) ---------------------------------------------------------------

    def mark_saved(self) -> None:
        self._saved_orders = len(self.state.orders)
        self._saved_fills = len(self.state.fills)
        self._saved_ledger = len(self.state.ledger)
        self._dirty_orders: set[str] = set()
        self._dirty_positions: set[str] = set()
        self._saved_market_ts = self.state.market_ts

    def commit(self, con=None) -> PaperChanges:
        """A simulated broker with no repository (a backtest) keeps everything in memory: the changes are
        marked saved and returned."""
        changes = self.changes()
        self.mark_saved()
        return changes

    def reload(self) -> None:
        """Nothing was saved anywhere to go back to: the state in memory is all there is."""

    def changes(self) -> PaperChanges:
        orders = list(self.state.orders.values())
        new = orders[self._saved_orders :]
        new_ids = {o.id for o in new}
        updated = [self.state.orders[i] for i in self._dirty_orders if i not in new_ids]
        return PaperChanges(
            self.state,
            new,
            sorted(updated, key=lambda o: o.id),
            self.state.fills[self._saved_fills :],
            self.state.ledger[self._saved_ledger :],
            {s: self.state.positions[s] for s in sorted(self._dirty_positions)},
            self.state.market_ts != self._saved_market_ts,
        )

    def _touch(self, o: PaperOrder, now: datetime) -> None:
        o.updated_at = now
        self._dirty_orders.add(o.id)
        self._views.pop(o.parent_id or o.id, None)

    # -- reads -----------------------------------------------------------------------------------------------

    def _order(self, o: PaperOrder, legs: tuple[Order, ...] = ()) -> Order:
        return Order(
            id=o.id,
            client_order_id=o.client_order_id,
            symbol=o.symbol,
            side=_SIDE[o.side],
            qty=int(o.qty),
            type=_TYPE[o.type],
            role=_ORDER_ROLE[o.role],
            status=_STATUS[o.status],
            limit_price=o.limit_price,
            stop_price=o.stop_price,
            filled_qty=int(o.filled_qty),
            filled_avg_price=o.filled_avg_price,
            parent_id=o.parent_id,
            submitted_at=_py(o.submitted_at),
            filled_at=_py(o.filled_at),
            replaces=o.replaces,
            replaced_by=o.replaced_by,
            legs=legs,
        )

    def _nested(self, o: PaperOrder) -> Order:
        """An entry with its current legs (take-profit first), or a leg alone as itself."""
        if o.parent_id is not None:
            return self._order(o)
        view = self._views.get(o.id)
        if view is None:
            view = self._views[o.id] = self._build_nested(o)
        return view

    def _build_nested(self, o: PaperOrder) -> Order:
        kids = [
            self.state.orders[i]
            for i in self._legs.get(o.id, ())
            if self.state.orders[i].status != "replaced"
        ]
        kids.sort(key=lambda k: k.role != "take_profit")
        return self._order(o, tuple(self._order(k) for k in kids))

    def _entries(self) -> list[PaperOrder]:
        entries = [o for o in self.state.orders.values() if o.parent_id is None]
        return sorted(entries, key=lambda o: (o.submitted_at, o.client_order_id))

    def _bracket_open(self, entry: PaperOrder) -> bool:
        return entry.working or any(self.state.orders[i].working for i in self._legs.get(entry.id, ()))

    def get_orders(self, status: str = "open") -> list[Order]:
        if status not in ("open", "closed", "all"):
            raise ValueError(f"status must be open, closed or all, got {status!r}")
        if status == "open":  # only the brackets with a working part: cheap however long the history
            ids = {self.state.orders[i].parent_id or i for i in self._working}
            entries = sorted(
                (self.state.orders[i] for i in ids), key=lambda o: (o.submitted_at, o.client_order_id)
            )
            return [self._nested(o) for o in entries]
        entries = self._entries()
        if status == "closed":
            entries = [o for o in entries if not self._bracket_open(o)]
        return [self._nested(o) for o in entries]

    def get_order(self, order_id: str) -> Order:
        o = self.state.orders.get(order_id)
        if o is None:
            raise OrderNotFound(f"order {order_id} not found")
        return self._nested(o)

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        i = self._by_coid.get(client_order_id)
        return None if i is None else self._nested(self.state.orders[i])

    def _mark(self, symbol: str, pos: PositionState) -> Decimal:
        mark = self.state.marks.get(symbol)
        return money(mark) if mark is not None else pos.avg_price

    def positions(self) -> list[Position]:
        out = []
        for sym in sorted(self.state.positions):
            pos = self.state.positions[sym]
            if pos.qty == 0:
                continue
            mark = self.state.marks.get(sym)
            mark = money(mark) if mark is not None else None
            out.append(
                Position(
                    sym, int(pos.qty), pos.avg_price, None if mark is None else money(pos.qty * mark), mark
                )
            )
        return out

    def _held_value(self) -> tuple[Decimal, Decimal] | None:
        """The positions' net and gross market value, kept until a bar moves the marks or the positions
        (every submission of a bar reads it). None when a position has no mark: its average price may
        carry more digits than the ledger's grid, and the sum is then made in the ledger's order."""
        if self._held is None:
            net = gross = Decimal(0)
            marks = self.state.marks
            for sym, pos in self.state.positions.items():
                if pos.qty:
                    if sym not in marks:
                        return None
                    mark = self._mark(sym, pos)
                    net += pos.qty * mark
                    gross += abs(pos.qty) * mark
            self._held = (net, gross)
        return self._held

    def _balances(self) -> Account:
        held = self._held_value()
        if held is not None:  # marks on the 0.0001 grid: exact sums, in any order
            equity, gross = self._cash + held[0], held[1]
        else:
            equity, gross = self._cash, Decimal(0)
            for sym, pos in self.state.positions.items():
                if pos.qty:
                    mark = self._mark(sym, pos)
                    equity += pos.qty * mark
                    gross += abs(pos.qty) * mark
        reserved = self._reserved
        bp = max(Decimal(0), equity - gross - reserved)
        return Account(cash=money(self._cash), equity=money(equity), buying_power=money(bp))

    def account(self) -> Account:
        return self._balances()

    def fills(self, since: datetime | None = None) -> list[Fill]:
        start = 0 if since is None else bisect.bisect_left(self._fill_ts, utc(since).to_pydatetime())
        return [f.fill for f in self.state.fills[start:]]

    def market_ts(self) -> datetime | None:
        return _py(self.state.market_ts)

    def watched_symbols(self) -> set[str]:
        """Symbols whose bars the broker needs: working orders and open positions."""
        return {self.state.orders[i].symbol for i in self._working} | {
            s for s, p in self.state.positions.items() if p.qty != 0
        }

    def _unwork(self, ids, *, working_before: bool = False) -> None:
        """Orders leave the working set (call before their status changes, or with ``working_before``
        when it changed already): the entries among them release their reserved buying power."""
        ids = set(ids)
        for i in ids:
            o = self.state.orders[i]
            if o.role == "entry" and o.reserve_price is not None and (working_before or o.working):
                self._reserved -= o.qty * o.reserve_price
        self._working = [i for i in self._working if i not in ids]

    def _working_orders(self) -> Iterable[PaperOrder]:
        return (self.state.orders[i] for i in self._working)

    # -- writes ----------------------------------------------------------------------------------------------

    def submit_bracket(self, bracket: Bracket) -> Order:
        return self.submit_brackets([bracket])[0]

    def _check(self, b: Bracket, base: Decimal) -> None:
        """Alpaca's bracket price rule against the current price ``base``."""
        tick = Decimal(str(tick_for(float(base), self.tick)))
        tp, sl = b.edge_prices()
        s = b.side.sign
        rel, sign = (">=", "+") if s > 0 else ("<=", "-")
        if s * (tp - base) < tick:
            raise OrderRejected(
                f"take_profit.limit_price must be {rel} base_price {sign} {tick}", code=CODE_UNPROCESSABLE
            )
        rel, sign = ("<=", "-") if s > 0 else (">=", "+")
        if s * (base - sl) < tick:
            raise OrderRejected(
                f"stop_loss.stop_price must be {rel} base_price {sign} {tick}", code=CODE_UNPROCESSABLE
            )

    def submit_brackets(self, brackets: Sequence[Bracket]) -> list[Order]:
        """Brackets as one batch: all are accepted, or none (the first refusal raises)."""
        brackets = list(brackets)
        now = self.clock()
        coids = [b.client_order_id for b in brackets]
        if len(set(coids)) != len(coids):
            raise DuplicateOrder(
                "client_order_id must be unique (repeated in one batch)", code=CODE_DUPLICATE
            )
        for c in coids:
            if c in self._by_coid:
                o = self.state.orders[self._by_coid[c]]
                existing = self.state.orders[o.parent_id] if o.parent_id else o
                raise DuplicateOrder(
                    "client_order_id must be unique", existing=self._nested(existing), code=CODE_DUPLICATE
                )
        buying_power = self._balances().buying_power
        mts = self.state.market_ts
        rows: list[PaperOrder] = []
        for b in brackets:
            mark = self.state.marks.get(b.symbol)
            if mark is None:
                raise OrderRejected(f"asset {b.symbol} has no price", code=CODE_UNPROCESSABLE)
            base = money(mark)
            self._check(b, base)
            need = b.qty * base
            if need > buying_power:
                raise OrderRejected("insufficient buying power", code=CODE_BUYING_POWER)
            buying_power -= need
            submitted = mts if mts is not None else pd.Timestamp(self._mark_times[b.symbol], tz="UTC")
            tp, sl = b.edge_prices()
            entry_id = uid("order", b.client_order_id)
            kids = b.child_client_order_ids
            exit_side = b.exit_side.value
            entry_limit = round_to_tick(b.entry_limit, self.tick) if b.entry_type is EntryType.limit else None
            tif = b.time_in_force
            rows += [
                PaperOrder(entry_id, b.client_order_id, None, b.symbol, b.side.value, "entry", b.entry_type.value,
                           b.qty, entry_limit, None, tif, "new", submitted, now, now, reserve_price=base),
                PaperOrder(uid("order", kids["take_profit"]), kids["take_profit"], entry_id, b.symbol, exit_side,
                           "take_profit", "limit", b.qty, tp, None, tif, "held", submitted, now, now),
                PaperOrder(uid("order", kids["stop_loss"]), kids["stop_loss"], entry_id, b.symbol, exit_side,
                           "stop_loss", "stop", b.qty, None, sl, tif, "held", submitted, now, now),
            ]  # fmt: skip
        for o in rows:
            self._add(o)
        return [self._nested(self.state.orders[uid("order", c)]) for c in coids]

    def _add(self, o: PaperOrder) -> None:
        self._views.pop(o.parent_id or o.id, None)
        self.state.orders[o.id] = o
        self._by_coid[o.client_order_id] = o.id
        if o.parent_id is not None:
            self._legs.setdefault(o.parent_id, []).append(o.id)
        if o.working:
            self._working.append(o.id)
            if _holds(o):
                self._reserved += o.qty * o.reserve_price

    def replace_stop(self, order_id: str, new_stop: float | Decimal) -> Order:
        now = self.clock()
        old = self.state.orders.get(order_id)
        if old is None:
            raise OrderNotFound(f"order {order_id} not found")
        if old.role != "stop_loss":
            raise OrderRejected(f"order {order_id} is not a stop-loss leg", code=CODE_UNPROCESSABLE)
        if not old.working:
            raise OrderRejected(f"order is not replaceable (status {old.status})", code=CODE_UNPROCESSABLE)
        price = round_exit(new_stop, Side(old.side).opposite, "stop_loss", self.tick)
        if price <= 0:
            raise OrderRejected("stop_price must be > 0", code=CODE_UNPROCESSABLE)
        mts = self.state.market_ts
        submitted = max(old.submitted_at, mts) if mts is not None else old.submitted_at
        new = replace(
            old, id=uid("replace", old.id), client_order_id=child_client_order_id(old.client_order_id, "r"),
            stop_price=price, replaces=old.id, replaced_by=None, submitted_at=submitted, created_at=now,
            updated_at=now, filled_qty=0, filled_avg_price=None, filled_at=None, canceled_at=None,
        )  # fmt: skip
        old.status, old.replaced_by = "replaced", new.id
        self._touch(old, now)
        self._unwork([old.id])
        self._add(new)
        return self._order(new)

    def cancel(self, order_id: str) -> None:
        now = self.clock()
        o = self.state.orders.get(order_id)
        if o is None:
            raise OrderNotFound(f"order {order_id} not found")
        if not o.working:
            raise OrderRejected(f"order is not cancelable (status {o.status})", code=CODE_UNPROCESSABLE)
        if o.role == "entry":
            targets = [o, *(self.state.orders[i] for i in self._legs.get(o.id, ()))]
        else:
            targets = [self.state.orders[i] for i in self._legs.get(o.parent_id, ())]
        for t in targets:
            if t.working:
                self._unwork([t.id])
                t.status, t.canceled_at = "canceled", self.state.market_ts
                self._touch(t, now)

    # -- the market ------------------------------------------------------------------------------------------

    def on_bars(self, bars: pd.DataFrame | BarBatch, until=None) -> AdvanceReport:
        """Show the broker the bars (symbol, ts, open, high, low, close) newer than its market time, then
        move market time to ``until`` (default: the newest bar). Working orders step bar time by bar time;
        every bar's close becomes its symbol's mark."""
        batch = BarBatch.of(bars)
        mts = self.state.market_ts
        report = AdvanceReport(0, [], None)
        if len(batch):
            keep = batch.ts > (mts.value if mts is not None else np.iinfo(np.int64).min)
            if not keep.all():
                batch = batch.take(keep)
            if len(batch):
                report = self._step(batch)
                self._update_marks(batch)
        newest = (
            utc(until)
            if until is not None
            else (pd.Timestamp(int(batch.ts.max()), tz="UTC") if len(batch) else None)
        )
        if newest is not None and (mts is None or newest > mts):
            self.state.market_ts = newest
            self.state.updated_at = self.clock()
        mts = self.state.market_ts
        return AdvanceReport(report.bars, report.fills, _py(mts))

    def _update_marks(self, batch: BarBatch) -> None:
        """Each symbol's newest close becomes its mark (kept as a float; money() where money is made)."""
        order = np.argsort(batch.ts, kind="stable") if (np.diff(batch.ts) < 0).any() else slice(None)
        marks, times = self.state.marks, self._mark_times
        self._held = None
        for sym, close, t in zip(batch.symbol[order].tolist(), batch.close[order].tolist(), batch.ts[order].tolist(),
                                 strict=True):  # fmt: skip
            if close == close:  # not NaN
                marks[sym] = close
                times[sym] = t

    def _step(self, bars: BarBatch) -> AdvanceReport:
        """Step the working orders through ``bars`` bar time by bar time (models/fills.py's rules)."""
        working = [self.state.orders[i] for i in self._working]
        if not working:
            return AdvanceReport(0, [], None)
        watched = {o.symbol for o in working}
        rows = np.fromiter((s in watched for s in bars.symbol.tolist()), dtype=bool, count=len(bars))
        bars = bars.take(rows)  # only the symbols with working orders can fill
        if not len(bars):
            return AdvanceReport(0, [], None)
        bar_ns = bars.ts
        bar_symbols = bars.symbol
        o_all, h_all, l_all = bars.open, bars.high, bars.low
        order_symbols = np.array([o.symbol for o in working], dtype=object)
        symbols, codes = np.unique(np.concatenate([order_symbols, bar_symbols]), return_inverse=True)
        n = len(working)
        brackets = np.array([o.parent_id or o.id for o in working], dtype=object)
        book = OrderBook.build(
            codes[:n],
            [1 if o.side == "buy" else -1 for o in working],
            [o.qty for o in working],
            [_KIND[o.type] for o in working],
            [_ROLE[o.role] for o in working],
            [float(o.limit_price) if o.limit_price is not None else np.nan for o in working],
            [float(o.stop_price) if o.stop_price is not None else np.nan for o in working],
            np.unique(brackets, return_inverse=True)[1],
            [HELD if o.status == "held" else WORKING for o in working],
            [o.submitted_at.value // 1000 * 1000 for o in working],  # DuckDB keeps microseconds
        )
        bar_codes = codes[n:]
        index = {s: i for i, s in enumerate(symbols.tolist())}
        positions = {index[s]: p for s, p in self.state.positions.items() if s in index}
        paper = PaperBook(book, Decimal(0), self.costs, positions)  # cash: this step's movements only
        start_status = book.status.copy()
        event_ts: list[pd.Timestamp | None] = [None] * n
        fill_price: list[Decimal | None] = [None] * n
        fills: list[Fill] = []
        touched: set[int] = set()
        nsym = len(symbols)
        times = np.unique(bar_ns)
        for tn in times.tolist():
            t = pd.Timestamp(tn, tz="UTC")
            sel = bar_ns == tn
            at = bar_codes[sel]
            o, h, lo = np.full(nsym, np.nan), np.full(nsym, np.nan), np.full(nsym, np.nan)
            o[at], h[at], lo[at] = o_all[sel], h_all[sel], l_all[sel]
            res, book_fills = paper.advance(tn, o, h, lo)
            for i in res.canceled.tolist():
                event_ts[i] = t
            for f in book_fills:
                i = f.index
                event_ts[i], fill_price[i] = t, f.settlement.price
                touched.add(f.sym)
                w = working[i]
                fills.append(
                    Fill(w.id, w.client_order_id, str(symbols[f.sym]), Side.buy if f.side > 0 else Side.sell,
                         f.qty, f.settlement.price, f.settlement.commission, t.to_pydatetime(), _ORDER_ROLE[w.role])
                )  # fmt: skip
        now = self.clock()
        self._apply(working, book, start_status, event_ts, fill_price, now)
        self._record_fills(fills, now)
        if touched:
            self._held = None
        for s in sorted(touched):
            sym = str(symbols[s])
            self.state.positions[sym] = paper.positions[s]
            self._dirty_positions.add(sym)
        return AdvanceReport(len(times), fills, None)

    def _apply(self, working, book: OrderBook, start_status, event_ts, fill_price, now) -> None:
        changed = np.flatnonzero(book.status != start_status)
        done_ids = set()
        for i in changed.tolist():
            o = working[i]
            status = int(book.status[i])
            o.status = _STATUS_NAMES[status]
            if status == FILLED:
                o.filled_qty, o.filled_avg_price, o.filled_at = o.qty, fill_price[i], event_ts[i]
            else:
                o.filled_qty = 0
            if status == CANCELED:
                o.canceled_at = event_ts[i]
            self._touch(o, now)
            if status in (FILLED, CANCELED):
                done_ids.add(o.id)
        if done_ids:
            self._unwork(done_ids, working_before=True)

    def _record_fills(self, fills: list[Fill], now: datetime) -> None:
        for f in fills:
            fid = uid("fill", f.order_id)
            self.state.fills.append(PaperFill(fid, f, now))
            self._fill_ts.append(f.ts)
            trade = -f.side.sign * f.qty * f.price
            self.state.ledger.append(LedgerEntry(f"{fid}:trade", f.ts, "trade", trade, f.order_id, fid, now))
            self._cash += trade
            if f.commission != 0:
                self.state.ledger.append(
                    LedgerEntry(f"{fid}:commission", f.ts, "commission", -f.commission, f.order_id, fid, now)
                )
                self._cash -= f.commission

    def advance_to(self, ts) -> AdvanceReport:
        """Show the broker every bar of its feed after its market time up to ``ts`` (all symbols: their
        closes are the marks it prices orders and positions with)."""
        until = utc(ts)
        mts = self.state.market_ts
        if mts is not None and until <= mts:
            return AdvanceReport(0, [], mts.to_pydatetime())
        if self.feed is None:
            raise RuntimeError("this simulated broker has no bar feed: show it bars with on_bars()")
        if mts is None:  # a new account: working orders see bars after their submission; marks the newest
            pending = [o.submitted_at for o in self._working_orders()]
            after = min(pending) if pending else None
        else:
            after = mts
        bars = self._feed_bars(after, until)
        return self.on_bars(bars, until=until)

    def _feed_bars(self, after, until) -> pd.DataFrame:
        return self.feed.bars(None, after, until)
