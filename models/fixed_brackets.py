"""Entry signals replayed with fixed-percentage brackets through the local broker's fill engine (pure).

This is the non-adaptive backtest used for parity with vectorbt (``tests/test_vectorbt_parity.py``) and
for the fill-engine benchmark (``benchmarks/backtest.py``). The fill rules are *not* re-implemented here:
every bar goes through ``models.fills.step``, as in ``brokers.local``, and fills are put on the ledger's
0.0001 grid with their commission as ``models.fills.settle`` does (``settle_many``: vectorised, falling
back to ``settle`` near a rounding half; the tests check it equals ``settle``). What this module adds is
the order flow of a live decision, done in bulk:

- A **signal** at bar ``t`` (symbol, ts, side) is decided at that bar's close. It becomes one bracket,
  submitted at ``ts[t]``: a MARKET entry plus a take-profit LIMIT and a STOP, one OCO group, the legs held
  until the entry fills. The entry therefore fills at the next bar's open (+ slippage), and the legs work
  from that same bar (after the open), as in the live broker.
- The **exit levels are priced from the signal bar's close**, not from the entry fill, because that is
  what live does: ``models.decision`` builds ``Bracket(entry_ref=close, take_profit, stop)`` and
  ``brokers.local`` stores the legs' prices at submission. For a buy: take-profit
  ``close x (1 + take_profit_pct)`` and stop ``close x (1 - stop_pct)`` (a sell mirrors), each rounded to
  the venue tick *away from the entry* like ``Bracket.edge_prices`` (``tick=None``: not rounded). A
  bracket whose rounded levels are not a tick beyond the close is refused (the live broker's check) and
  counted in ``attrs["skipped"]["rejected"]``.
- **One position per symbol**: a signal while the symbol has a working entry or an open position is
  ignored (counted in ``attrs["skipped"]["busy"]``), like vectorbt's default (no accumulation, opposite
  entries ignored). A symbol whose bracket closed on bar ``t`` takes a new signal at ``t``'s close.
- **Sizing**: a fixed quantity of whole shares per trade (vectorbt: ``size=qty``).

Input: bars as ``WideBars`` (arrays ``[T, N]`` of open/high/low/close, NaN where a symbol has no bar, and
a UTC time axis) or a long frame (symbol, ts, open, high, low, close), which is pivoted once. Signals as
a frame (symbol, ts, side: +1/-1 or 'buy'/'sell'; one per symbol and ts) or an int8 array ``[T, N]``
(+1, -1, 0). Wide arrays are the fast path: no pandas inside the bar loop.

Speed: the order book holds one slot of three rows (entry, take-profit, stop) per symbol, reused by the
symbol's next bracket once the current one has closed, so it never grows past ``3 x N`` rows. Each bar
steps only the open rows (working or held: finished brackets drop out), one ``step`` call for every
symbol at once, plus a few vectorised writes; fills are settled once, at the end.

``vectorbt_inputs`` and ``trades_from_vectorbt`` give the arguments that make vectorbt's
``Portfolio.from_signals`` replay the same work and read its trades back into this module's format;
``compare_trades`` and ``classify_differences`` match the two and name each known difference (none of
them imports vectorbt). The differences and the tolerance are in ``docs/backtest.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.brackets import SUB_DOLLAR_TICK
from models.fills import (
    CANCELED,
    ENTRY,
    HELD,
    LIMIT,
    MARKET,
    NO_TS,
    STOP,
    STOP_LOSS,
    TAKE_PROFIT,
    WORKING,
    FillCosts,
    OrderBook,
    money,
    settle,
    step,
)

TRADE_COLUMNS = [
    "symbol",
    "side",
    "qty",
    "signal_ts",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "exit_reason",
    "pnl",
    "commission",
    "take_profit_price",
    "stop_price",
]
OPEN_AT_END = "open_at_end"
_GRID_UNITS = 10_000  # prices are built in 0.0001 units, the ledger's grid
_TICK_EPS = 1e-9  # float noise tolerated at a tick boundary (as models.brackets does)


@dataclass(frozen=True)
class WideBars:
    """Bars as arrays ``[T, N]`` (NaN where a symbol has no bar) on a sorted UTC time axis ``ts``."""

    ts: pd.DatetimeIndex
    symbols: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(self.ts), len(self.symbols))
        for name in ("open", "high", "low", "close"):
            a = getattr(self, name)
            if a.shape != shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {shape} (ts x symbols)")
        if not self.ts.is_monotonic_increasing or self.ts.has_duplicates:
            raise ValueError("bar times must be strictly increasing")

    @classmethod
    def build(cls, ts, symbols, open_, high, low, close) -> WideBars:
        idx = pd.DatetimeIndex(ts)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (open_, high, low, close)]
        return cls(idx, np.asarray(symbols, dtype=object), *arrays)

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> WideBars:
        """Pivot a long frame (symbol, ts, open, high, low, close); missing bars become NaN."""
        missing = {"symbol", "ts", "open", "high", "low", "close"} - set(bars.columns)
        if missing:
            raise ValueError(f"bars need columns {sorted(missing)}")
        ts = pd.to_datetime(bars["ts"], utc=True)
        times, ti = np.unique(ts.to_numpy(), return_inverse=True)
        symbols, si = np.unique(bars["symbol"].to_numpy(dtype=object), return_inverse=True)
        if len(np.unique(ti.astype(np.int64) * len(symbols) + si)) != len(bars):
            raise ValueError("bars hold more than one row for a (symbol, ts)")
        out = []
        for col in ("open", "high", "low", "close"):
            a = np.full((len(times), len(symbols)), np.nan)
            a[ti, si] = bars[col].to_numpy(dtype=np.float64)
            out.append(a)
        return cls.build(times, symbols, *out)

    @property
    def ts_ns(self) -> np.ndarray:
        return self.ts.as_unit("ns").asi8


def random_walk_bars(
    n_bars: int,
    n_sym: int,
    seed: int,
    *,
    start: pd.Timestamp,
    freq: str = "B",
    price_range: tuple[float, float] = (5.0, 500.0),
    gap_scale: float = 1 / 3,
) -> WideBars:
    """Seeded daily bars for the parity test and the benchmark: log random walk closes (vol 1-3%/day),
    an overnight gap to each open (``gap_scale`` x vol), high/low beyond both."""
    rng = np.random.default_rng(seed)
    first = np.exp(rng.uniform(np.log(price_range[0]), np.log(price_range[1]), n_sym))
    vol = rng.uniform(0.01, 0.03, n_sym)
    close = first * np.exp(np.cumsum(rng.normal(0, 1, (n_bars, n_sym)) * vol, axis=0))
    prev = np.vstack([first[None], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 1, (n_bars, n_sym)) * vol * gap_scale)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 1, (n_bars, n_sym))) * vol / 2)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 1, (n_bars, n_sym))) * vol / 2)
    ts = pd.date_range(start, periods=n_bars, freq=freq)
    width = max(2, len(str(n_sym - 1)))
    return WideBars.build(ts, [f"S{i:0{width}d}" for i in range(n_sym)], open_, high, low, close)


def signal_array(bars: WideBars, entries: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Signals as int8 ``[T, N]``: +1 buy, -1 sell, 0 none."""
    shape = (len(bars.ts), len(bars.symbols))
    if isinstance(entries, np.ndarray):
        if entries.shape != shape:
            raise ValueError(f"signal array has shape {entries.shape}, expected {shape}")
        sig = entries.astype(np.int8)
        if not np.isin(sig, (-1, 0, 1)).all():
            raise ValueError("signal array values must be -1, 0 or +1")
        return sig
    missing = {"symbol", "ts", "side"} - set(entries.columns)
    if missing:
        raise ValueError(f"entries need columns {sorted(missing)}")
    side = entries["side"].map(lambda s: {"buy": 1, "sell": -1, 1: 1, -1: -1}.get(s, 0)).to_numpy()
    if (side == 0).any():
        bad = entries["side"][side == 0].iloc[0]
        raise ValueError(f"side must be +1/-1 or 'buy'/'sell', got {bad!r}")
    ts = pd.DatetimeIndex(pd.to_datetime(entries["ts"], utc=True))
    ti = bars.ts.get_indexer(ts)
    sym_index = {s: i for i, s in enumerate(bars.symbols.tolist())}
    si = np.array([sym_index.get(s, -1) for s in entries["symbol"].tolist()], dtype=np.int64)
    if (ti < 0).any() or (si < 0).any():
        k = int(np.flatnonzero((ti < 0) | (si < 0))[0])
        row = entries.iloc[k]
        raise ValueError(f"signal {row['symbol']} at {row['ts']} has no bar")
    sig = np.zeros(shape, dtype=np.int8)
    flat = ti * shape[1] + si
    if len(np.unique(flat)) != len(flat):
        raise ValueError("more than one signal for a (symbol, ts)")
    sig[ti, si] = side
    return sig


def _round_away(price: np.ndarray, up: np.ndarray, tick: float) -> np.ndarray:
    """``models.brackets.round_exit`` vectorised: up or down to the tick (0.0001 below $1), exact grid."""
    units = np.where(price >= 1.0, round(tick * _GRID_UNITS), round(min(tick, SUB_DOLLAR_TICK) * _GRID_UNITS))
    k = price / (units / _GRID_UNITS)
    k = np.where(up, np.ceil(k - _TICK_EPS), np.floor(k + _TICK_EPS))
    return k * units / _GRID_UNITS  # an integer number of grid units / 10^4: the nearest double


@dataclass(frozen=True)
class Levels:
    """Exit levels of signal cells (flat indices into ``[T, N]``): take-profit, stop, broker-acceptable."""

    cells: np.ndarray  # int64, row-major order (time first)
    take_profit: np.ndarray
    stop: np.ndarray
    ok: np.ndarray  # bool: the live broker would accept the bracket


def bracket_levels(
    close: np.ndarray, sig: np.ndarray, stop_pct: float, take_profit_pct: float, tick: float | None
) -> Levels:
    """Levels of every signal from its bar's close (the live ``entry_ref``), rounded away from the entry."""
    if not (0 < stop_pct < 1) or not (take_profit_pct > 0):
        raise ValueError("stop_pct must be in (0, 1) and take_profit_pct > 0")
    cells = np.flatnonzero(sig.ravel())
    ref = close.ravel()[cells]
    s = sig.ravel()[cells].astype(np.float64)
    with np.errstate(invalid="ignore"):
        has = np.isfinite(ref) & (ref > 0)
        tp = ref * (1.0 + s * take_profit_pct)
        sl = ref * (1.0 - s * stop_pct)
        if tick is None:
            return Levels(cells, tp, sl, has & (sl > 0))
        # models.brackets.Bracket: the planned levels at least one tick from the close.
        ok = has & (s * (tp - ref) >= tick - _TICK_EPS) & (s * (ref - sl) >= tick - _TICK_EPS)
        buy = s > 0
        tp = _round_away(tp, buy, tick)  # a buy's take-profit up and stop down; a sell mirrors
        sl = _round_away(sl, ~buy, tick)
        # brokers.local: the rounded levels a venue tick beyond the current price, on the ledger grid.
        base = _on_grid(ref)
        t = np.where(base >= 1.0, tick, min(tick, SUB_DOLLAR_TICK)) - _TICK_EPS
        ok &= (sl > 0) & (s * (tp - base) >= t) & (s * (base - sl) >= t)
    return Levels(cells, tp, sl, ok)


def replay(
    bars: WideBars | pd.DataFrame,
    entries: pd.DataFrame | np.ndarray,
    *,
    stop_pct: float,
    take_profit_pct: float,
    qty: int,
    costs: FillCosts = FillCosts(),
    tick: float | None = 0.01,
) -> pd.DataFrame:
    """Trades of ``entries`` under fixed brackets, one row per trade (``TRADE_COLUMNS``), by entry time.

    ``attrs["skipped"]``: signals not traded, by reason (busy, rejected, unfilled: no later bar).
    A position still open after the last bar is marked at its last close (``open_at_end``; ``exit_ts`` is
    the last bar time, ``pnl`` unrealised, ``commission`` the entry's only).
    """
    if isinstance(qty, bool) or not isinstance(qty, int | np.integer) or qty <= 0:
        raise ValueError(f"qty must be whole shares > 0, got {qty!r}")
    wb = bars if isinstance(bars, WideBars) else WideBars.from_frame(bars)
    sig = signal_array(wb, entries)
    lv = bracket_levels(wb.close, sig, stop_pct, take_profit_pct, tick)
    n_t, n_sym = sig.shape
    ts_ns = wb.ts_ns

    # Accepted signal cells in time order (row-major), as a CSR over bars.
    cells = lv.cells[lv.ok]
    c_bar, c_sym = np.divmod(cells, n_sym)
    c_side = sig.ravel()[cells].astype(np.int8)
    c_tp, c_sl = lv.take_profit[lv.ok], lv.stop[lv.ok]
    bar_start = np.searchsorted(c_bar, np.arange(n_t + 1))

    # One slot per symbol: rows 3s (entry), 3s+1 (take-profit), 3s+2 (stop); group s.
    book = OrderBook.build(
        np.repeat(np.arange(n_sym), 3),
        np.ones(3 * n_sym),
        np.full(3 * n_sym, int(qty)),
        np.tile([MARKET, LIMIT, STOP], n_sym),
        np.tile([ENTRY, TAKE_PROFIT, STOP_LOSS], n_sym),
        np.full(3 * n_sym, np.nan),
        np.full(3 * n_sym, np.nan),
        np.repeat(np.arange(n_sym), 3),
        np.full(3 * n_sym, CANCELED),
        np.full(3 * n_sym, NO_TS),
    )
    book.n_groups = n_sym
    slot_trade = np.full(n_sym, -1, dtype=np.int64)
    busy = np.zeros(n_sym, dtype=bool)
    n_busy = 0

    n_cells = len(cells)
    trade_cell = np.empty(n_cells, dtype=np.int64)  # trade id -> signal cell
    entry_bar = np.full(n_cells, -1, dtype=np.int64)
    exit_bar = np.full(n_cells, -1, dtype=np.int64)
    entry_raw = np.full(n_cells, np.nan)
    exit_raw = np.full(n_cells, np.nan)
    exit_role = np.zeros(n_cells, dtype=np.int8)
    n_trades = 0
    busy_skips = 0

    status = book.status  # written in place: the book keeps this array
    fields = ("sym", "side", "qty", "kind", "role", "limit", "stop", "group", "status", "after")
    for t in range(n_t):
        if n_busy:
            rows = np.flatnonzero(status <= WORKING)  # HELD or WORKING: the open rows only
            sub = OrderBook(*(getattr(book, f)[rows] for f in fields), n_groups=n_sym)
            res = step(sub, int(ts_ns[t]), wb.open[t], wb.high[t], wb.low[t], costs)
            status[rows] = res.status
            if len(res.fills):
                slot, role = np.divmod(rows[res.fills], 3)
                tid = slot_trade[slot]
                e = role == ENTRY
                entry_bar[tid[e]] = t
                entry_raw[tid[e]] = res.price[e]
                x = ~e
                if x.any():
                    exit_bar[tid[x]] = t
                    exit_raw[tid[x]] = res.price[x]
                    exit_role[tid[x]] = role[x]
                    busy[slot[x]] = False
                    n_busy -= int(x.sum())
        a, b = bar_start[t], bar_start[t + 1]
        if a == b:
            continue
        syms = c_sym[a:b]
        free = ~busy[syms]
        busy_skips += int((~free).sum())
        if not free.any():
            continue
        k = np.arange(a, b)[free]
        s = syms[free]
        ids = np.arange(n_trades, n_trades + len(k))
        n_trades += len(k)
        trade_cell[ids] = k
        slot_trade[s] = ids
        busy[s] = True
        n_busy += len(k)
        side = c_side[k]
        r0 = 3 * s
        book.side[r0], book.side[r0 + 1], book.side[r0 + 2] = side, -side, -side
        book.limit[r0 + 1] = c_tp[k]
        book.stop[r0 + 2] = c_sl[k]
        status[r0], status[r0 + 1], status[r0 + 2] = WORKING, HELD, HELD
        book.after[r0], book.after[r0 + 1], book.after[r0 + 2] = ts_ns[t], ts_ns[t], ts_ns[t]

    trade_cell, entry_bar, exit_bar = trade_cell[:n_trades], entry_bar[:n_trades], exit_bar[:n_trades]
    filled = entry_bar >= 0
    out = _trade_frame(
        wb,
        int(qty),
        costs,
        trade_cell[filled],
        c_bar,
        c_sym,
        c_side,
        c_tp,
        c_sl,
        entry_bar[filled],
        entry_raw[:n_trades][filled],
        exit_bar[filled],
        exit_raw[:n_trades][filled],
        exit_role[:n_trades][filled],
    )
    out.attrs["skipped"] = {
        "busy": busy_skips,
        "rejected": int((~lv.ok).sum()),
        "unfilled": int((~filled).sum()),
    }
    return out


def _last_close(close: np.ndarray) -> np.ndarray:
    """Each symbol's last non-NaN close (NaN if none)."""
    ok = ~np.isnan(close)
    last = close.shape[0] - 1 - np.argmax(ok[::-1], axis=0)
    out = close[last, np.arange(close.shape[1])]
    return np.where(ok.any(axis=0), out, np.nan)


def _on_grid(x: np.ndarray) -> np.ndarray:
    """``float(models.fills.money(v))`` for each element: half-even to 0.0001.

    numpy rounds the binary value, ``money`` its shortest decimal form; they differ only within float
    noise of a half, and those elements go through ``money`` itself.
    """
    y = x * _GRID_UNITS
    out = np.rint(y) / _GRID_UNITS
    near = np.abs(np.abs(y - np.floor(y)) - 0.5) <= np.maximum(1e-6, 64 * np.spacing(np.abs(y)))
    for i in np.flatnonzero(near & np.isfinite(y)).tolist():
        out[i] = float(money(float(x[i])))
    return out


def settle_many(
    side: np.ndarray, qty: int, raw: np.ndarray, costs: FillCosts
) -> tuple[np.ndarray, np.ndarray]:
    """(price, commission) of each fill, equal to ``models.fills.settle`` (checked in the parity tests).

    Vectorised because a replay settles tens of thousands of fills; an element within float noise of a
    rounding half is settled by ``settle`` itself.
    """
    price = _on_grid(raw)
    exact = qty * costs.commission_per_share + price * qty * costs.commission_bps / 1e4
    y = exact * _GRID_UNITS
    commission = np.rint(y) / _GRID_UNITS
    near = np.abs(np.abs(y - np.floor(y)) - 0.5) <= np.maximum(1e-6, 64 * np.spacing(np.abs(y)))
    for i in np.flatnonzero(near & np.isfinite(y)).tolist():
        st = settle(int(side[i]), qty, float(raw[i]), costs)
        price[i], commission[i] = float(st.price), float(st.commission)
    return price, commission


def _trade_frame(
    wb, qty, costs, cell, c_bar, c_sym, c_side, c_tp, c_sl, e_bar, e_raw, x_bar, x_raw, x_role
) -> pd.DataFrame:
    sym, side = c_sym[cell], c_side[cell].astype(np.int64)
    is_open = x_bar < 0
    entry_price, entry_comm = settle_many(side, qty, e_raw, costs)
    exit_price, exit_comm = settle_many(-side, qty, np.where(is_open, np.nan, x_raw), costs)
    exit_comm = np.where(is_open, 0.0, exit_comm)
    exit_price = np.where(is_open, _on_grid(_last_close(wb.close)[sym]), exit_price)  # the mark
    commission = entry_comm + exit_comm
    pnl = side * qty * (exit_price - entry_price) - commission
    last = len(wb.ts) - 1
    reason = np.where(
        is_open, OPEN_AT_END, np.where(x_role == TAKE_PROFIT, "take_profit", "stop_loss")
    ).astype(object)
    frame = pd.DataFrame(
        {
            "symbol": wb.symbols[sym],
            "side": np.where(side > 0, "buy", "sell").astype(object),
            "qty": np.full(len(cell), qty, dtype=np.int64),
            "signal_ts": wb.ts[c_bar[cell]],
            "entry_ts": wb.ts[e_bar],
            "entry_price": entry_price,
            "exit_ts": wb.ts[np.where(is_open, last, x_bar)],
            "exit_price": exit_price,
            "exit_reason": reason,
            "pnl": pnl,
            "commission": commission,
            "take_profit_price": c_tp[cell],
            "stop_price": c_sl[cell],
        },
        columns=TRADE_COLUMNS,
    )
    return frame.sort_values(["entry_ts", "symbol"], kind="stable", ignore_index=True)


# --- vectorbt parity helpers (no vectorbt import) ----------------------------------------------------


def vectorbt_inputs(
    bars: WideBars,
    entries: pd.DataFrame | np.ndarray,
    *,
    stop_pct: float,
    take_profit_pct: float,
    qty: int,
    costs: FillCosts = FillCosts(),
    tick: float | None = 0.01,
    split_open: bool = False,
) -> dict:
    """Keyword arguments for ``vbt.Portfolio.from_signals`` that replay the same work.

    - signals shifted one bar forward (a signal at ``t``'s close trades at ``t+1``) as long/short entries,
      filled at the open (``price=-inf`` is vectorbt's "open"), ``upon_opposite_entry='ignore'``;
    - the replay's levels (from the signal close, tick-rounded) given as ``sl_stop`` / ``tp_stop`` per
      element at the entry bar, relative to a reference price passed as ``val_price`` there, with
      ``stop_entry_price=ValPrice``; reference and fractions are chosen so that vectorbt's
      ``price x (1 -/+ stop)`` gives each level to the last bit (a level touched exactly by a bar's
      low or high then triggers in both engines) whenever the upper level is at most twice the lower
      one; wider brackets may be 1 ulp off;
    - ``stop_exit_price=StopMarket`` (slippage on stop exits), ``slippage``, ``fees`` (commission_bps),
      ``fixed_fees`` (commission_per_share x qty); ``size=qty`` shares, unlimited cash.

    Signals the replay would refuse (``bracket_levels(...).ok`` false) are dropped here too.

    ``split_open``: each bar becomes two rows, the open alone (open = high = low = close) and then the
    whole bar. vectorbt executes one order per row, so this lets a stop fill in the entry's own bar after
    the open, and lets the open decide a gap before the bar's range is looked at: the live rules. Used to
    show that those two known differences are the only ones (``docs/backtest.md``).
    """
    sig = signal_array(bars, entries)
    lv = bracket_levels(bars.close, sig, stop_pct, take_profit_pct, tick)
    n_t, n_sym = sig.shape
    keep = lv.ok & (lv.cells < (n_t - 1) * n_sym)  # a signal on the last bar never fills
    cells = lv.cells[keep] + n_sym  # the entry bar: one bar after the signal
    side = sig.ravel()[lv.cells[keep]].astype(np.float64)
    tp, sl = lv.take_profit[keep], lv.stop[keep]
    lower, upper = np.minimum(tp, sl), np.maximum(tp, sl)
    # The stops' reference price P (vectorbt's ValPrice): a power of two between the levels when there is
    # one, else the upper level; then P x (1 - f) and P x (1 + g) give both levels exactly.
    p = 2.0 ** np.floor(np.log2(upper))
    p = np.where(p >= lower, p, upper)
    down = 1.0 - _exact_factor(lower, p)  # the level below P: P x (1 - down)
    up = upper / p - 1.0  # the level above (or at) P: P x (1 + up)
    flat = n_t * n_sym
    entries, short_entries = np.zeros(flat, dtype=bool), np.zeros(flat, dtype=bool)
    entries[cells[side > 0]] = True
    short_entries[cells[side < 0]] = True
    val_price = np.full(flat, -np.inf)  # elsewhere: the previous close
    sl_stop, tp_stop = np.full(flat, np.nan), np.full(flat, np.nan)
    val_price[cells] = p
    sl_stop[cells] = np.where(side > 0, down, up)  # long: stop below; short: stop above
    tp_stop[cells] = np.where(side > 0, up, down)
    shape = (n_t, n_sym)
    entries, short_entries = entries.reshape(shape), short_entries.reshape(shape)
    val_price, sl_stop, tp_stop = val_price.reshape(shape), sl_stop.reshape(shape), tp_stop.reshape(shape)
    ohlc = [bars.open, bars.high, bars.low, bars.close]
    if split_open:
        ohlc = [_interleave(bars.open, a) for a in ohlc]
        none = np.zeros_like(entries)
        entries, short_entries = _interleave(entries, none), _interleave(short_entries, none)
        nan = np.full_like(sl_stop, np.nan)
        sl_stop, tp_stop = _interleave(sl_stop, nan), _interleave(tp_stop, nan)
        val_price = _interleave(val_price, np.full_like(val_price, -np.inf))
    return {
        "open": ohlc[0],
        "high": ohlc[1],
        "low": ohlc[2],
        "close": ohlc[3],
        "entries": entries,
        "short_entries": short_entries,
        "price": -np.inf,
        "val_price": val_price,
        "size": float(qty),
        "sl_stop": sl_stop,
        "tp_stop": tp_stop,
        "stop_entry_price": "valprice",
        "stop_exit_price": "stopmarket",
        "upon_opposite_entry": "ignore",
        "slippage": costs.slippage_bps / 1e4,
        "fees": costs.commission_bps / 1e4,
        "fixed_fees": costs.commission_per_share * qty,
        "init_cash": np.inf,
    }


def _exact_factor(level: np.ndarray, p: np.ndarray) -> np.ndarray:
    """x with ``p * x == level`` in float arithmetic, looked for within 3 ulps of ``level / p``."""
    x0 = level / p
    out = x0.copy()
    found = p * x0 == level
    for direction in (np.inf, -np.inf):
        x = x0
        for _ in range(3):
            x = np.nextafter(x, direction)
            hit = ~found & (p * x == level)
            out[hit], found = x[hit], found | hit
    return out


def _interleave(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    out = np.empty((2 * first.shape[0], *first.shape[1:]), dtype=first.dtype)
    out[0::2], out[1::2] = first, second
    return out


def trades_from_vectorbt(records: np.ndarray, bars: WideBars, inputs: dict) -> pd.DataFrame:
    """vectorbt's ``exit_trades.records`` in this module's trade format (prices not quantised).

    vectorbt does not record which stop closed a trade: a closed trade is a take-profit when it exited on
    the profitable side of the reference close (its stop is below it for a long), else a stop-loss.
    """
    col, e_idx, x_idx = records["col"], records["entry_idx"], records["exit_idx"]
    split = inputs["close"].shape[0] == 2 * len(bars.ts)  # rows are (open, bar) pairs
    e_bar, x_bar = (e_idx // 2, x_idx // 2) if split else (e_idx, x_idx)
    side = np.where(records["direction"] == 0, 1, -1)
    ref = inputs["close"][e_idx - 1, col]  # the signal bar's close
    p = inputs["val_price"][e_idx, col]  # the stops' reference
    is_open = records["status"] == 0
    reason = np.where(
        is_open,
        OPEN_AT_END,
        np.where(side * (records["exit_price"] - ref) > 0, "take_profit", "stop_loss"),
    ).astype(object)
    frame = pd.DataFrame(
        {
            "symbol": bars.symbols[col],
            "side": np.where(side > 0, "buy", "sell").astype(object),
            "qty": records["size"].astype(np.int64),
            "signal_ts": bars.ts[e_bar - 1],
            "entry_ts": bars.ts[e_bar],
            "entry_price": records["entry_price"],
            "exit_ts": bars.ts[x_bar],
            "exit_price": records["exit_price"],
            "exit_reason": reason,
            "pnl": records["pnl"],
            "commission": records["entry_fees"] + records["exit_fees"],
            "take_profit_price": p * (1 + side * inputs["tp_stop"][e_idx, col]),
            "stop_price": p * (1 - side * inputs["sl_stop"][e_idx, col]),
        },
        columns=TRADE_COLUMNS,
    )
    return frame.sort_values(["entry_ts", "symbol"], kind="stable", ignore_index=True)


def compare_trades(ours: pd.DataFrame, theirs: pd.DataFrame, price_tol: float = 1e-4) -> pd.DataFrame:
    """Outer join on (symbol, entry_ts): ``match`` is True where both have the trade with the same side,
    exit time, exit reason, and entry/exit prices within ``price_tol``; pnl and commission within
    ``price_tol x qty x 2``."""
    keys = ["symbol", "entry_ts"]
    m = ours.merge(theirs, on=keys, how="outer", suffixes=("", "_vbt"), indicator=True)
    both = m["_merge"] == "both"
    tol = price_tol * m["qty"].fillna(m["qty_vbt"]).astype(float) * 2
    same = (
        both
        & (m["side"] == m["side_vbt"])
        & (m["exit_ts"] == m["exit_ts_vbt"])
        & (m["exit_reason"] == m["exit_reason_vbt"])
        & ((m["entry_price"] - m["entry_price_vbt"]).abs() <= price_tol)
        & ((m["exit_price"] - m["exit_price_vbt"]).abs() <= price_tol)
        & ((m["pnl"] - m["pnl_vbt"]).abs() <= tol)
        & ((m["commission"] - m["commission_vbt"]).abs() <= tol)
    )
    return m.assign(match=same.to_numpy())


def _label(r: dict, bars: WideBars, slippage: float, tol: float, t_index: dict, s_index: dict) -> str:
    """What one row of ``compare_trades`` is, looked at on its own."""
    if r["match"]:
        return "match"
    if r["_merge"] != "both":
        return "unexplained"
    side = 1 if r["side"] == "buy" else -1
    x, s = t_index[r["exit_ts"]], s_index[r["symbol"]]
    if abs(r["entry_price"] - r["entry_price_vbt"]) > tol:
        return "unexplained"
    later = r["exit_ts_vbt"] > r["entry_ts"] or r["exit_reason_vbt"] == OPEN_AT_END  # the last bar
    if r["exit_ts"] == r["entry_ts"] and r["exit_reason"] != OPEN_AT_END and later:
        return "same_bar_exit"
    reached = side * (r["stop_price"] - (bars.low[x, s] if side > 0 else bars.high[x, s])) >= 0
    if (
        (r["exit_reason"], r["exit_reason_vbt"]) == ("take_profit", "stop_loss")
        and r["exit_ts"] == r["exit_ts_vbt"]
        and abs(r["exit_price"] - bars.open[x, s]) <= tol  # the open decided it
        and reached
    ):
        return "entry_bar_gap" if x == t_index[r["entry_ts"]] else "gap_beyond_take_profit"
    if (
        r["exit_reason"] == r["exit_reason_vbt"] == "take_profit"
        and r["exit_ts"] == r["exit_ts_vbt"]
        and abs(r["exit_price"] * (1 - side * slippage) - r["exit_price_vbt"]) <= tol
    ):
        return "take_profit_slippage"
    return "unexplained"


def classify_differences(
    m: pd.DataFrame, bars: WideBars, slippage: float = 0.0, price_tol: float = 1e-4
) -> pd.Series:
    """Label each row of ``compare_trades``: match, a known difference, cascade, or unexplained.

    After a difference in timing (``same_bar_exit``), one side may still be in a position when the other
    takes the symbol's next signal: such a one-sided trade is a ``cascade``. A trade both sides take
    (same symbol and entry bar) puts them in step again and is judged on its own.
    """
    t_index = {ts: i for i, ts in enumerate(bars.ts)}
    s_index = {s: i for i, s in enumerate(bars.symbols.tolist())}
    order = m.sort_values(["symbol", "entry_ts"], kind="stable").index
    labels = pd.Series("unexplained", index=m.index, dtype=object)
    symbol, diverged = None, False
    for i, r in zip(order, m.loc[order].to_dict("records"), strict=True):
        if r["symbol"] != symbol:
            symbol, diverged = r["symbol"], False
        label = _label(r, bars, slippage, price_tol, t_index, s_index)
        if r["_merge"] == "both":  # both were flat at the signal: in step again
            diverged = label == "same_bar_exit"
        elif diverged:
            label = "cascade"
        labels[i] = label
    return labels
