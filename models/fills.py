"""The local paper broker's fill rules, vectorised over every working order for one bar.

Orders live in an ``OrderBook``: one numpy array per field, one row per order (an entry and its exit
legs share a ``group``, the bracket). ``step`` looks at one bar per symbol (open, high, low) and returns
which orders fill, at what price, and which are released or cancelled. Rules (buy entry; a sell mirrors):

- **Market entry**: fills at this bar's open (it was submitted at an earlier bar) + slippage (bps,
  against you). Only bars with ``ts > after`` (the order's submission time) are seen.
- **Exit legs** are *held* until their entry fills, then work from that same bar (after the open).
- **Take-profit** (a limit): fills when the high reaches the limit, at the limit; if the bar *opens*
  beyond it, at the open (a better price). Limit fills get no slippage.
- **Stop**: fills when the low reaches the stop, at the stop; if the bar opens through it (a gap), at the
  open. A triggered stop is a market order: slippage against you.
- **Both legs reachable in one bar**: unless the open already decides it (the open is beyond one leg),
  the **stop fills first**: a bar's high and low do not say which came first, and assuming the worse one
  keeps paper results honest (conservative).
- **OCO**: a leg that fills cancels its sibling(s); never both legs of one bracket fill.
- Commission per fill: ``qty x commission_per_share + notional x commission_bps``.

Money is settled exactly: fill prices are quantised to 0.0001 and every cash movement is a ``Decimal``
(``settle``); ``PaperBook`` applies fills to cash and positions and is what the local broker runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

MARKET, LIMIT, STOP = 0, 1, 2  # kind
ENTRY, TAKE_PROFIT, STOP_LOSS = 0, 1, 2  # role
HELD, WORKING, FILLED, CANCELED = 0, 1, 2, 3  # status

KIND_NAMES = {MARKET: "market", LIMIT: "limit", STOP: "stop"}
ROLE_NAMES = {ENTRY: "entry", TAKE_PROFIT: "take_profit", STOP_LOSS: "stop_loss"}
KIND_CODES = {v: k for k, v in KIND_NAMES.items()}
ROLE_CODES = {v: k for k, v in ROLE_NAMES.items()}

PRICE_Q = Decimal("0.0001")
AVG_Q = Decimal("0.000001")
NO_TS = np.iinfo(np.int64).min


@dataclass(frozen=True)
class FillCosts:
    slippage_bps: float = 0.0
    commission_per_share: float = 0.0
    commission_bps: float = 0.0


@dataclass
class OrderBook:
    """Structure of arrays: row i is one order. ``after`` is the submission time (ns since epoch, UTC)."""

    sym: np.ndarray  # int64 index into the bar arrays
    side: np.ndarray  # int8: +1 buy, -1 sell
    qty: np.ndarray  # int64, > 0
    kind: np.ndarray  # int8: MARKET | LIMIT | STOP
    role: np.ndarray  # int8: ENTRY | TAKE_PROFIT | STOP_LOSS
    limit: np.ndarray  # float64, NaN when none
    stop: np.ndarray  # float64, NaN when none
    group: np.ndarray  # int64 in 0..n_groups-1: the bracket
    status: np.ndarray  # int8: HELD | WORKING | FILLED | CANCELED
    after: np.ndarray  # int64 ns
    n_groups: int = 0

    def __post_init__(self) -> None:
        n = len(self.sym)
        for name in ("side", "qty", "kind", "role", "limit", "stop", "group", "status", "after"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"order book field {name} has {len(getattr(self, name))} rows, expected {n}")
        if n and (np.asarray(self.qty) <= 0).any():
            raise ValueError("order quantities must be > 0")
        if not self.n_groups:
            self.n_groups = int(self.group.max()) + 1 if n else 0

    def __len__(self) -> int:
        return len(self.sym)

    @classmethod
    def build(
        cls,
        sym,
        side,
        qty,
        kind,
        role,
        limit,
        stop,
        group,
        status,
        after=None,
    ) -> OrderBook:
        n = len(sym)
        return cls(
            np.asarray(sym, dtype=np.int64),
            np.asarray(side, dtype=np.int8),
            np.asarray(qty, dtype=np.int64),
            np.asarray(kind, dtype=np.int8),
            np.asarray(role, dtype=np.int8),
            np.asarray(limit, dtype=np.float64),
            np.asarray(stop, dtype=np.float64),
            np.asarray(group, dtype=np.int64),
            np.asarray(status, dtype=np.int8),
            np.full(n, NO_TS, dtype=np.int64) if after is None else np.asarray(after, dtype=np.int64),
        )


@dataclass(frozen=True)
class StepResult:
    fills: np.ndarray  # order indices, entries first, then exits
    price: np.ndarray  # float64 fill price per entry of ``fills`` (before quantisation)
    status: np.ndarray  # the new status array
    activated: np.ndarray  # exit legs released by their entry's fill
    canceled: np.ndarray  # OCO siblings cancelled by a fill


def trigger_prices(
    kind: np.ndarray,
    side: np.ndarray,
    limit: np.ndarray,
    stop: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    slippage_bps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(triggered, at_open, fill price) per order for one bar; NaN bars trigger nothing."""
    buy = side > 0
    is_lim = kind == LIMIT
    is_stop = kind == STOP
    is_mkt = kind == MARKET
    with np.errstate(invalid="ignore"):
        lim_trig = np.where(buy, lo <= limit, h >= limit)
        lim_open = np.where(buy, o <= limit, o >= limit)
        stop_trig = np.where(buy, h >= stop, lo <= stop)
        stop_open = np.where(buy, o >= stop, o <= stop)
    have = ~np.isnan(o)
    trig = have & (is_mkt | (is_lim & lim_trig) | (is_stop & stop_trig))
    at_open = have & (is_mkt | (is_lim & lim_open) | (is_stop & stop_open))
    raw = np.where(at_open, o, np.where(is_lim, limit, stop))
    slip = slippage_bps / 1e4
    price = np.where(is_lim, raw, raw * (1.0 + side * slip))
    return trig, at_open, price


def step(
    book: OrderBook,
    ts_ns: int,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    costs: FillCosts = FillCosts(),
) -> StepResult:
    """Apply one bar (arrays indexed by symbol; NaN where a symbol has no bar) to every order."""
    n = len(book)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return StepResult(empty, np.zeros(0), book.status.copy(), empty, empty)
    o, h, lo = open_[book.sym], high[book.sym], low[book.sym]
    trig, at_open, price = trigger_prices(
        book.kind, book.side, book.limit, book.stop, o, h, lo, costs.slippage_bps
    )
    status = book.status
    is_exit = book.role != ENTRY
    live = (status == WORKING) & (book.after < ts_ns)

    entry_fill = live & ~is_exit & trig
    g_entry = np.zeros(book.n_groups, dtype=bool)
    g_entry[book.group[entry_fill]] = True
    activated = (status == HELD) & is_exit & g_entry[book.group]

    cand = ((live & is_exit) | activated) & trig
    # Who wins inside a bracket: decided at the open (0), else the stop (1) before the take-profit (2).
    rank = np.where(at_open, 0, np.where(book.kind == STOP, 1, 2)).astype(np.int8)
    best = np.full(book.n_groups, 3, dtype=np.int8)
    np.minimum.at(best, book.group[cand], rank[cand])
    win = cand & (rank == best[book.group])
    counts = np.bincount(book.group[win], minlength=book.n_groups)
    if (counts > 1).any():  # only an invalid bracket gets here; keep one winner, the stop first
        for g in np.flatnonzero(counts > 1):
            idx = np.flatnonzero(win & (book.group == g))
            keep = idx[np.argmin(np.where(book.kind[idx] == STOP, 0, 1))]
            win[idx] = False
            win[keep] = True

    g_exit = np.zeros(book.n_groups, dtype=bool)
    g_exit[book.group[win]] = True
    canceled = is_exit & g_exit[book.group] & ~win & ((status == WORKING) | (status == HELD))

    new = status.copy()
    new[activated] = WORKING
    new[entry_fill] = FILLED
    new[win] = FILLED
    new[canceled] = CANCELED
    fills = np.concatenate([np.flatnonzero(entry_fill), np.flatnonzero(win)])
    return StepResult(fills, price[fills], new, np.flatnonzero(activated), np.flatnonzero(canceled))


# --- exact settlement --------------------------------------------------------------------------------


def money(x: float | Decimal) -> Decimal:
    """A price or amount on the ledger's 0.0001 grid (half-even)."""
    d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
    return d.quantize(PRICE_Q, rounding=ROUND_HALF_EVEN)


def commission_for(qty: int, price: Decimal, costs: FillCosts) -> Decimal:
    per_share = Decimal(repr(costs.commission_per_share)) * qty
    bps = price * qty * Decimal(repr(costs.commission_bps)) / Decimal(10000)
    return money(per_share + bps)


@dataclass(frozen=True)
class Settlement:
    price: Decimal
    commission: Decimal
    cash_delta: Decimal  # -(side x qty x price) - commission


def settle(side: int, qty: int, price: float | Decimal, costs: FillCosts) -> Settlement:
    p = money(price)
    c = commission_for(qty, p, costs)
    return Settlement(p, c, -(int(side) * qty * p) - c)


@dataclass(frozen=True)
class PositionState:
    qty: int = 0  # signed: < 0 short
    avg_price: Decimal = Decimal(0)


def apply_fill(pos: PositionState, side: int, qty: int, price: Decimal) -> PositionState:
    """Average-cost position after one fill (adding averages in; reducing keeps the average)."""
    signed = int(side) * qty
    new_qty = pos.qty + signed
    if new_qty == 0:
        return PositionState(0, Decimal(0))
    if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
        avg = (pos.avg_price * abs(pos.qty) + price * qty) / abs(new_qty)
        return PositionState(new_qty, avg.quantize(AVG_Q, rounding=ROUND_HALF_EVEN))
    if (pos.qty > 0) == (new_qty > 0):
        return PositionState(new_qty, pos.avg_price)
    return PositionState(new_qty, price)  # crossed through zero: the remainder opened at this price


@dataclass(frozen=True)
class BookFill:
    index: int  # row in the order book
    sym: int
    side: int
    qty: int
    role: int
    group: int
    settlement: Settlement


@dataclass
class PaperBook:
    """Orders, positions (by symbol index) and cash: the state ``advance`` steps bar by bar."""

    orders: OrderBook
    cash: Decimal
    costs: FillCosts = FillCosts()
    positions: dict[int, PositionState] = field(default_factory=dict)

    def advance(
        self, ts_ns: int, open_: np.ndarray, high: np.ndarray, low: np.ndarray
    ) -> tuple[StepResult, list[BookFill]]:
        res = step(self.orders, ts_ns, open_, high, low, self.costs)
        self.orders.status = res.status
        out: list[BookFill] = []
        ob = self.orders
        for i, px in zip(res.fills.tolist(), res.price.tolist(), strict=True):
            side, qty, sym = int(ob.side[i]), int(ob.qty[i]), int(ob.sym[i])
            s = settle(side, qty, px, self.costs)
            self.cash += s.cash_delta
            self.positions[sym] = apply_fill(self.positions.get(sym, PositionState()), side, qty, s.price)
            out.append(BookFill(i, sym, side, qty, int(ob.role[i]), int(ob.group[i]), s))
        return res, out

    def equity(self, marks: dict[int, Decimal] | np.ndarray) -> Decimal:
        total = self.cash
        for sym, pos in self.positions.items():
            if pos.qty:
                total += pos.qty * money(marks[sym])
        return total
