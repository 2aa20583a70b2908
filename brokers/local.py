"""The local paper broker: an account persisted in the warehouse, filled against the warehouse's bars.

- Starting cash is deposited once, when the account is first opened; cash is the sum of an exact
  DECIMAL ledger (``paper_cash_ledger``).
- Orders see only bars after their submission time. The broker's clock is *market time*: the last bar
  it was advanced to (``advance_to`` / ``advance``); an order submitted now fills from the next bar on.
  The injected ``clock`` (wall time) only stamps audit columns.
- Fill rules are ``models/fills.py``'s (market entry at the next open + slippage, take-profit at its
  limit, stop at its stop, gaps at the open, stop first when both could fill, OCO).
- Checks at submission mirror Alpaca's: a client order id seen before raises ``DuplicateOrder`` (with
  the existing order); the take-profit and stop must be a tick beyond the current price on the right
  side; the entry's notional must fit the buying power (equity - gross position value - notional held
  by working entries; no leverage).
- Every operation is one warehouse transaction (``warehouse.db.transaction``); a locked warehouse past
  the policy's deadline raises ``BrokerUnavailable``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from brokers.base import (
    Account,
    BrokerUnavailable,
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
from warehouse.db import LockPolicy, WarehouseBusy, transaction

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f1f7d0e-2b0c-4a55-9a6e-7c1f3b9d2e41")
_STATUS_NAMES = {HELD: "held", WORKING: "new", FILLED: "filled", CANCELED: "canceled"}
_ORDER_COLUMNS = (
    "id, client_order_id, parent_id, symbol, side, role, type, qty, limit_price, stop_price, status, "
    "filled_qty, filled_avg_price, submitted_at, filled_at, replaces, replaced_by"
)
# Alpaca's codes for the same refusals, so callers can treat both brokers alike.
CODE_DUPLICATE = 40010001
CODE_UNPROCESSABLE = 42210000
CODE_BUYING_POWER = 40310000


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _utc(ts) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def _py(ts) -> datetime | None:
    if ts is None or (not isinstance(ts, datetime) and pd.isna(ts)):
        return None
    return _utc(ts).to_pydatetime()


def _ns(ts) -> int:
    return int(_utc(ts).as_unit("ns").value)


@dataclass(frozen=True)
class AdvanceReport:
    bars: int  # distinct bar times stepped
    fills: list[Fill]
    market_ts: datetime | None


class LocalPaperBroker:
    name = "local"

    def __init__(
        self,
        warehouse_path: str | Path,
        starting_cash: Decimal | float | str = Decimal("100000"),
        slippage_bps: float = 0.0,
        commission_per_share: float = 0.0,
        commission_bps: float = 0.0,
        *,
        interval: str = "5m",
        tick: float = 0.01,
        clock: Callable[[], datetime] | None = None,
        policy: LockPolicy | None = None,
        account_id: str = "paper",
    ) -> None:
        self.path = Path(warehouse_path)
        self.starting_cash = money(Decimal(str(starting_cash)))
        self.costs = FillCosts(float(slippage_bps), float(commission_per_share), float(commission_bps))
        self.interval = interval
        self.tick = tick
        self.clock = clock or (lambda: datetime.now(UTC))
        self.policy = policy
        self.account_id = account_id
        self._ensure_account()

    @classmethod
    def from_settings(cls, settings, *, clock: Callable[[], datetime] | None = None) -> LocalPaperBroker:
        p = settings.paper
        return cls(
            settings.warehouse,
            p.starting_cash,
            p.slippage_bps,
            p.commission_per_share,
            p.commission_bps,
            interval=p.interval,
            tick=settings.orders.tick,
            clock=clock,
            policy=LockPolicy.from_settings(settings),
        )

    def __repr__(self) -> str:
        return f"LocalPaperBroker({str(self.path)!r}, interval={self.interval!r})"

    # -- plumbing ------------------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            with transaction(self.path, policy=self.policy) as con:
                yield con
        except WarehouseBusy as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def _ensure_account(self) -> None:
        now = self.clock()
        with self._tx() as con:
            row = con.execute(
                "SELECT starting_cash FROM paper_account WHERE account_id = ?", [self.account_id]
            ).fetchall()
            if row:
                if row[0][0] != self.starting_cash:
                    log.info("paper account exists with starting cash %s; keeping it", row[0][0])
                return
            con.execute(
                "INSERT INTO paper_account VALUES (?, ?, ?, NULL, ?, ?)",
                [self.account_id, self.starting_cash, self.interval, now, now],
            )
            con.execute(
                "INSERT INTO paper_cash_ledger VALUES (?, ?, 'deposit', ?, NULL, NULL, ?)",
                [f"deposit:{self.account_id}", now, self.starting_cash, now],
            )

    @staticmethod
    def _market_ts(con) -> pd.Timestamp | None:
        row = con.execute("SELECT max(market_ts) FROM paper_account").fetchall()
        return None if not row or row[0][0] is None else _utc(row[0][0])

    def _set_market_ts(self, con, ts: pd.Timestamp) -> None:
        con.execute(
            "UPDATE paper_account SET market_ts = greatest(coalesce(market_ts, ?), ?), updated_at = ? "
            "WHERE account_id = ?",
            [ts, ts, self.clock(), self.account_id],
        )

    @staticmethod
    def _cash(con) -> Decimal:
        return con.execute("SELECT coalesce(sum(amount), 0) FROM paper_cash_ledger").fetchall()[0][0]

    def _marked_positions(self, con) -> list[tuple[str, int, Decimal, Decimal | None]]:
        """(symbol, qty, avg entry, mark) of open positions; the mark is the last close at market time."""
        mts = self._market_ts(con)
        return con.execute(
            "WITH pos AS (SELECT symbol, qty, avg_entry_price FROM paper_positions WHERE qty <> 0), "
            "marks AS (SELECT symbol, arg_max(close, ts) AS close FROM bars WHERE interval = ? "
            "AND (? IS NULL OR ts <= ?) AND symbol IN (SELECT symbol FROM pos) GROUP BY symbol) "
            "SELECT pos.symbol, pos.qty, pos.avg_entry_price, marks.close FROM pos LEFT JOIN marks USING (symbol) "
            "ORDER BY pos.symbol",
            [self.interval, mts, mts],
        ).fetchall()

    def _balances(self, con) -> Account:
        cash = self._cash(con)
        equity = cash
        gross = Decimal(0)
        for _, qty, avg, close in self._marked_positions(con):
            mark = money(close) if close is not None else avg
            equity += qty * mark
            gross += abs(qty) * mark
        reserved = con.execute(
            "SELECT coalesce(sum(qty * reserve_price), 0) FROM paper_orders "
            "WHERE role = 'entry' AND status IN ('new', 'held')"
        ).fetchall()[0][0]
        bp = max(Decimal(0), equity - gross - reserved)
        return Account(cash=money(cash), equity=money(equity), buying_power=money(bp))

    # -- reads -----------------------------------------------------------------------------------------------

    @staticmethod
    def _row_to_order(r: tuple, legs: tuple[Order, ...] = ()) -> Order:
        (
            oid,
            coid,
            parent,
            symbol,
            side,
            role,
            typ,
            qty,
            lim,
            stp,
            status,
            fqty,
            favg,
            sub,
            filled,
            rep,
            repby,
        ) = r
        return Order(
            id=oid,
            client_order_id=coid,
            symbol=symbol,
            side=Side(side),
            qty=int(qty),
            type=OrderType(typ),
            role=OrderRole(role),
            status=OrderStatus(status),
            limit_price=lim,
            stop_price=stp,
            filled_qty=int(fqty),
            filled_avg_price=favg,
            parent_id=parent,
            submitted_at=_py(sub),
            filled_at=_py(filled),
            replaces=rep,
            replaced_by=repby,
            legs=legs,
        )

    def _nested(self, rows: list[tuple]) -> list[Order]:
        legs: dict[str, list[Order]] = {}
        entries = []
        for r in rows:
            if r[2] is None:
                entries.append(r)
            elif r[10] != "replaced":
                legs.setdefault(r[2], []).append(self._row_to_order(r))
        out = []
        for r in entries:
            kids = sorted(legs.get(r[0], []), key=lambda o: o.role != OrderRole.take_profit)
            out.append(self._row_to_order(r, tuple(kids)))
        return out

    def _load(self, con, where: str, params: list) -> list[Order]:
        """Orders matching ``where`` (entries nested with their current legs; a leg alone as itself)."""
        rows = con.execute(f"SELECT {_ORDER_COLUMNS} FROM paper_orders WHERE {where}", params).fetchall()
        out = []
        for r in rows:
            if r[2] is None:
                kids = con.execute(
                    f"SELECT {_ORDER_COLUMNS} FROM paper_orders WHERE parent_id = ? AND status <> 'replaced'",
                    [r[0]],
                ).fetchall()
                out.append(self._nested([r, *kids])[0])
            else:
                out.append(self._row_to_order(r))
        return out

    def get_orders(self, status: str = "open") -> list[Order]:
        if status not in ("open", "closed", "all"):
            raise ValueError(f"status must be open, closed or all, got {status!r}")
        with self._tx() as con:
            rows = con.execute(
                f"SELECT {_ORDER_COLUMNS} FROM paper_orders ORDER BY submitted_at, client_order_id"
            ).fetchall()
        orders = self._nested(rows)
        if status == "open":
            return [o for o in orders if o.bracket_open]
        if status == "closed":
            return [o for o in orders if not o.bracket_open]
        return orders

    def get_order(self, order_id: str) -> Order:
        with self._tx() as con:
            found = self._load(con, "id = ?", [order_id])
        if not found:
            raise OrderNotFound(f"order {order_id} not found")
        return found[0]

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        with self._tx() as con:
            found = self._load(con, "client_order_id = ?", [client_order_id])
        return found[0] if found else None

    def positions(self) -> list[Position]:
        with self._tx() as con:
            rows = self._marked_positions(con)
        out = []
        for sym, qty, avg, close in rows:
            mark = money(close) if close is not None else None
            out.append(Position(sym, int(qty), avg, None if mark is None else money(qty * mark), mark))
        return out

    def account(self) -> Account:
        with self._tx() as con:
            return self._balances(con)

    def fills(self, since: datetime | None = None) -> list[Fill]:
        with self._tx() as con:
            rows = con.execute(
                "SELECT order_id, client_order_id, symbol, side, qty, price, commission, bar_ts, role "
                "FROM paper_fills WHERE (? IS NULL OR bar_ts >= ?) ORDER BY bar_ts, recorded_at, fill_id",
                [since, since],
            ).fetchall()
        return [
            Fill(oid, coid, sym, Side(side), int(qty), price, comm, _py(ts), OrderRole(role))
            for oid, coid, sym, side, qty, price, comm, ts, role in rows
        ]

    def market_ts(self) -> datetime | None:
        with self._tx() as con:
            ts = self._market_ts(con)
        return None if ts is None else ts.to_pydatetime()

    # -- writes ----------------------------------------------------------------------------------------------

    def submit_bracket(self, bracket: Bracket) -> Order:
        return self.submit_brackets([bracket])[0]

    def submit_brackets(self, brackets: list[Bracket]) -> list[Order]:
        """Brackets in one transaction: all are accepted, or none (the first refusal raises)."""
        now = self.clock()
        with self._tx() as con:
            return self._submit(con, list(brackets), now)

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

    def _submit(self, con, brackets: list[Bracket], now: datetime) -> list[Order]:
        coids = [b.client_order_id for b in brackets]
        if len(set(coids)) != len(coids):
            raise DuplicateOrder(
                "client_order_id must be unique (repeated in one batch)", code=CODE_DUPLICATE
            )
        taken = con.execute(
            "SELECT coalesce(parent_id, id) FROM paper_orders WHERE list_contains(?, client_order_id) LIMIT 1",
            [coids],
        ).fetchall()
        if taken:
            existing = self._load(con, "id = ?", [taken[0][0]])[0]
            raise DuplicateOrder("client_order_id must be unique", existing=existing, code=CODE_DUPLICATE)
        mts = self._market_ts(con)
        prices = {
            sym: (money(close), _utc(ts))
            for sym, close, ts in con.execute(
                "SELECT symbol, arg_max(close, ts), max(ts) FROM bars WHERE interval = ? "
                "AND (? IS NULL OR ts <= ?) AND list_contains(?, symbol) GROUP BY symbol",
                [self.interval, mts, mts, sorted({b.symbol for b in brackets})],
            ).fetchall()
        }
        buying_power = self._balances(con).buying_power
        rows = []
        for b in brackets:
            if b.symbol not in prices:
                raise OrderRejected(
                    f"asset {b.symbol} has no price in the warehouse", code=CODE_UNPROCESSABLE
                )
            base, base_ts = prices[b.symbol]
            self._check(b, base)
            need = b.qty * base
            if need > buying_power:
                raise OrderRejected("insufficient buying power", code=CODE_BUYING_POWER)
            buying_power -= need
            submitted = mts if mts is not None else base_ts
            tp, sl = b.edge_prices()
            entry_id = _uid("order", b.client_order_id)
            kids = b.child_client_order_ids
            exit_side = b.exit_side.value
            entry_limit = round_to_tick(b.entry_limit, self.tick) if b.entry_type is EntryType.limit else None
            rows += [
                (entry_id, b.client_order_id, None, b.symbol, b.side.value, "entry", b.entry_type.value, b.qty,
                 entry_limit, None, b.time_in_force, "new", base, submitted),
                (_uid("order", kids["take_profit"]), kids["take_profit"], entry_id, b.symbol, exit_side,
                 "take_profit", "limit", b.qty, tp, None, b.time_in_force, "held", None, submitted),
                (_uid("order", kids["stop_loss"]), kids["stop_loss"], entry_id, b.symbol, exit_side,
                 "stop_loss", "stop", b.qty, None, sl, b.time_in_force, "held", None, submitted),
            ]  # fmt: skip
        cols = ["id", "client_order_id", "parent_id", "symbol", "side", "role", "type", "qty", "limit_price",
                "stop_price", "time_in_force", "status", "reserve_price", "submitted_at"]  # fmt: skip
        frame = pd.DataFrame(rows, columns=cols)
        for c in ("limit_price", "stop_price", "reserve_price"):  # exact: as text, cast in SQL
            frame[c] = [None if v is None else str(v) for v in frame[c]]
        frame["submitted_at"] = pd.to_datetime(frame["submitted_at"], utc=True)
        self._bulk(
            con,
            "paper_new_orders",
            frame,
            (
                "INSERT INTO paper_orders (id, client_order_id, parent_id, symbol, side, role, type, qty, "
                "limit_price, stop_price, time_in_force, status, reserve_price, submitted_at, created_at, "
                "updated_at) SELECT id, client_order_id, parent_id, symbol, side, role, type, qty, "
                "CAST(limit_price AS DECIMAL(18,4)), CAST(stop_price AS DECIMAL(18,4)), time_in_force, status, "
                "CAST(reserve_price AS DECIMAL(18,4)), submitted_at, ?, ? FROM paper_new_orders",
                [now, now],
            ),
        )
        ids = [_uid("order", c) for c in coids]
        rows = con.execute(
            f"SELECT {_ORDER_COLUMNS} FROM paper_orders WHERE list_contains(?, coalesce(parent_id, id))",
            [ids],
        ).fetchall()
        by_id = {o.id: o for o in self._nested(rows)}
        return [by_id[i] for i in ids]

    def replace_stop(self, order_id: str, new_stop: float | Decimal) -> Order:
        now = self.clock()
        with self._tx() as con:
            found = con.execute(
                f"SELECT {_ORDER_COLUMNS}, time_in_force FROM paper_orders WHERE id = ?", [order_id]
            ).fetchall()
            if not found:
                raise OrderNotFound(f"order {order_id} not found")
            old = self._row_to_order(found[0][:-1])
            if old.role is not OrderRole.stop_loss:
                raise OrderRejected(f"order {order_id} is not a stop-loss leg", code=CODE_UNPROCESSABLE)
            if old.status not in (OrderStatus.new, OrderStatus.held):
                raise OrderRejected(
                    f"order is not replaceable (status {old.status})", code=CODE_UNPROCESSABLE
                )
            price = round_exit(new_stop, old.side.opposite, "stop_loss", self.tick)
            if price <= 0:
                raise OrderRejected("stop_price must be > 0", code=CODE_UNPROCESSABLE)
            new_id = _uid("replace", old.id)
            new_coid = child_client_order_id(old.client_order_id, "r")
            mts = self._market_ts(con)
            submitted = max(_utc(old.submitted_at), mts) if mts is not None else _utc(old.submitted_at)
            con.execute(
                "INSERT INTO paper_orders (id, client_order_id, parent_id, symbol, side, role, type, qty, "
                "limit_price, stop_price, time_in_force, status, replaces, submitted_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'stop_loss', 'stop', ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                [new_id, new_coid, old.parent_id, old.symbol, old.side.value, old.qty, price, found[0][-1],
                 old.status.value, old.id, submitted, now, now],
            )  # fmt: skip
            con.execute(
                "UPDATE paper_orders SET status = 'replaced', replaced_by = ?, updated_at = ? WHERE id = ?",
                [new_id, now, old.id],
            )
            return self._load(con, "id = ?", [new_id])[0]

    def cancel(self, order_id: str) -> None:
        now = self.clock()
        with self._tx() as con:
            found = self._load(con, "id = ?", [order_id])
            if not found:
                raise OrderNotFound(f"order {order_id} not found")
            o = found[0]
            if not o.is_open:
                raise OrderRejected(f"order is not cancelable (status {o.status})", code=CODE_UNPROCESSABLE)
            mts = self._market_ts(con)
            if o.role is OrderRole.entry:
                ids = [o.id, *(leg.id for leg in o.legs if leg.is_open)]
            else:
                sibs = con.execute(
                    "SELECT id FROM paper_orders WHERE parent_id = ? AND status IN ('new', 'held')",
                    [o.parent_id],
                ).fetchall()
                ids = [r[0] for r in sibs]
            con.execute(
                "UPDATE paper_orders SET status = 'canceled', canceled_at = ?, updated_at = ? "
                "WHERE list_contains(?, id)",
                [mts, now, ids],
            )

    # -- the market ------------------------------------------------------------------------------------------

    def advance_to(self, ts) -> AdvanceReport:
        """Step through the warehouse's bars after the broker's market time, up to and including ``ts``."""
        until = _utc(ts)
        with self._tx() as con:
            mts = self._market_ts(con)
            syms = [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT symbol FROM paper_orders WHERE status IN ('new', 'held') "
                    "UNION SELECT symbol FROM paper_positions WHERE qty <> 0"
                ).fetchall()
            ]
            bars = pd.DataFrame(columns=["symbol", "ts", "open", "high", "low", "close"])
            if syms:
                lower = mts
                if lower is None:
                    first = con.execute(
                        "SELECT min(submitted_at) FROM paper_orders WHERE status IN ('new', 'held')"
                    ).fetchall()[0][0]
                    lower = _utc(first) if first is not None else until
                bars = con.execute(
                    "SELECT symbol, ts, open, high, low, close FROM bars WHERE interval = ? AND ts > ? "
                    "AND ts <= ? AND list_contains(?, symbol) ORDER BY ts, symbol",
                    [self.interval, lower, until, syms],
                ).df()
            report = self._run(con, bars, mts)
            self._set_market_ts(con, until)
            return AdvanceReport(report.bars, report.fills, until.to_pydatetime())

    def advance(self, bars: pd.DataFrame) -> AdvanceReport:
        """Step through the given bars (symbol, ts, open, high, low, close) newer than the market time.

        Marks for equity still come from the warehouse's bars, so these should be bars it holds.
        """
        with self._tx() as con:
            mts = self._market_ts(con)
            report = self._run(con, bars, mts)
            if len(bars):
                newest = _utc(pd.to_datetime(bars["ts"], utc=True).max())
                self._set_market_ts(con, newest)
                mts = newest if mts is None else max(mts, newest)
        return AdvanceReport(report.bars, report.fills, None if mts is None else mts.to_pydatetime())

    def _run(self, con, bars: pd.DataFrame, mts: pd.Timestamp | None) -> AdvanceReport:
        """Load the working orders, step them through ``bars`` bar time by bar time, write the outcome.

        Kept to a handful of statements (each costs a few ms in DuckDB): one read of the working orders,
        one of the positions, then one bulk write per table that changed.
        """
        if len(bars) == 0:
            return AdvanceReport(0, [], None)
        bar_ns = pd.to_datetime(bars["ts"], utc=True).dt.as_unit("ns").array.asi8
        keep = bar_ns > (_ns(mts) if mts is not None else np.iinfo(np.int64).min)
        if not keep.any():
            return AdvanceReport(0, [], None)
        bar_ns = bar_ns[keep]
        bar_symbols = bars["symbol"].to_numpy(dtype=object)[keep]
        o_all, h_all, l_all = (bars[c].to_numpy(dtype=np.float64)[keep] for c in ("open", "high", "low"))
        r = con.execute(
            "SELECT id, client_order_id, coalesce(parent_id, id) AS bracket, symbol, side, role, type, qty, "
            "coalesce(limit_price, 'NaN'::DOUBLE)::DOUBLE AS limit_price, "
            "coalesce(stop_price, 'NaN'::DOUBLE)::DOUBLE AS stop_price, status, "
            "epoch_us(submitted_at) AS after_us FROM paper_orders WHERE status IN ('new', 'held')"
        ).fetchnumpy()
        if len(r["id"]) == 0:
            return AdvanceReport(0, [], None)
        symbols, codes = np.unique(
            np.concatenate([r["symbol"].astype(object), bar_symbols]), return_inverse=True
        )
        n = len(r["id"])
        side = np.where(r["side"] == "buy", 1, -1)
        book = OrderBook.build(
            codes[:n],
            side,
            r["qty"],
            np.select([r["type"] == "market", r["type"] == "limit"], [MARKET, LIMIT], STOP),
            np.select([r["role"] == "entry", r["role"] == "take_profit"], [ENTRY, TAKE_PROFIT], STOP_LOSS),
            r["limit_price"],
            r["stop_price"],
            np.unique(r["bracket"], return_inverse=True)[1],
            np.where(r["status"] == "held", HELD, WORKING),
            r["after_us"].astype(np.int64) * 1000,
        )
        bar_codes = codes[n:]
        positions = {
            int(k): PositionState(int(q), Decimal(a))
            for k, q, a in zip(*self._position_rows(con, symbols), strict=True)
        }
        paper = PaperBook(book, Decimal(0), self.costs, positions)  # cash: this run's movements only
        start_status = book.status.copy()
        event_ts = np.full(n, None, dtype=object)
        fill_price = np.full(n, None, dtype=object)
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
            event_ts[res.canceled] = t
            for f in book_fills:
                i = f.index
                event_ts[i], fill_price[i] = t, f.settlement.price
                touched.add(f.sym)
                fills.append(
                    Fill(r["id"][i], r["client_order_id"][i], symbols[f.sym], Side.buy if f.side > 0 else Side.sell,
                         f.qty, f.settlement.price, f.settlement.commission, t.to_pydatetime(), OrderRole(r["role"][i]))
                )  # fmt: skip
        now = self.clock()
        self._write_orders(con, r["id"], book, start_status, event_ts, fill_price, now)
        self._write_fills(con, fills, now)
        self._write_positions(con, symbols, paper, touched, now)
        return AdvanceReport(len(times), fills, None)

    @staticmethod
    def _position_rows(con, symbols: np.ndarray) -> tuple[list[int], list[int], list[str]]:
        """(symbol code, qty, avg entry as text) of stored positions among ``symbols``."""
        rows = con.execute(
            "SELECT symbol, qty, CAST(avg_entry_price AS VARCHAR) FROM paper_positions WHERE qty <> 0"
        ).fetchall()
        index = {s: i for i, s in enumerate(symbols.tolist())}
        rows = [(index[s], q, a) for s, q, a in rows if s in index]
        return ([x[0] for x in rows], [x[1] for x in rows], [x[2] for x in rows])

    @staticmethod
    def _bulk(con, name: str, frame: pd.DataFrame, *statements: tuple[str, list]) -> None:
        con.register(name, frame)
        try:
            for sql, params in statements:
                con.execute(sql, params)
        finally:
            con.unregister(name)

    def _write_orders(self, con, ids, book: OrderBook, start_status, event_ts, fill_price, now) -> None:
        changed = np.flatnonzero(book.status != start_status)
        if not len(changed):
            return
        status = book.status[changed]
        done = status == FILLED
        upd = pd.DataFrame(
            {
                "id": ids[changed],
                "status": [_STATUS_NAMES[int(s)] for s in status],
                "filled_qty": np.where(done, book.qty[changed], 0),
                # Exact prices travel as text and are cast in SQL.
                "filled_avg_price": [None if fill_price[i] is None else str(fill_price[i]) for i in changed],
                "filled_at": pd.to_datetime(
                    [event_ts[i] if d else None for i, d in zip(changed, done, strict=True)], utc=True
                ),
                "canceled_at": pd.to_datetime(
                    [event_ts[i] if s == CANCELED else None for i, s in zip(changed, status, strict=True)],
                    utc=True,
                ),
            }
        )
        self._bulk(
            con,
            "paper_order_updates",
            upd,
            (
                "UPDATE paper_orders SET status = u.status, filled_qty = u.filled_qty, "
                "filled_avg_price = CAST(u.filled_avg_price AS DECIMAL(18,4)), "
                "filled_at = coalesce(u.filled_at, paper_orders.filled_at), "
                "canceled_at = coalesce(u.canceled_at, paper_orders.canceled_at), updated_at = ? "
                "FROM paper_order_updates u WHERE paper_orders.id = u.id",
                [now],
            ),
        )

    def _write_fills(self, con, fills: list[Fill], now) -> None:
        if not fills:
            return
        fid = [_uid("fill", f.order_id) for f in fills]
        frame = pd.DataFrame(
            {
                "fill_id": fid,
                "order_id": [f.order_id for f in fills],
                "client_order_id": [f.client_order_id for f in fills],
                "symbol": [f.symbol for f in fills],
                "side": [f.side.value for f in fills],
                "role": [f.role.value for f in fills],
                "qty": [f.qty for f in fills],
                "price": [str(f.price) for f in fills],
                "commission": [str(f.commission) for f in fills],
                "trade": [str(-f.side.sign * f.qty * f.price) for f in fills],
                "bar_ts": pd.to_datetime([f.ts for f in fills], utc=True),
            }
        )
        self._bulk(
            con,
            "paper_fill_rows",
            frame,
            (
                "INSERT INTO paper_fills SELECT fill_id, order_id, client_order_id, symbol, side, role, qty, "
                "CAST(price AS DECIMAL(18,4)), CAST(commission AS DECIMAL(18,4)), bar_ts, ? FROM paper_fill_rows",
                [now],
            ),
            (
                "INSERT INTO paper_cash_ledger "
                "SELECT fill_id || ':trade', bar_ts, 'trade', CAST(trade AS DECIMAL(18,4)), order_id, fill_id, ? "
                "FROM paper_fill_rows UNION ALL "
                "SELECT fill_id || ':commission', bar_ts, 'commission', -CAST(commission AS DECIMAL(18,4)), order_id, "
                "fill_id, ? FROM paper_fill_rows WHERE CAST(commission AS DECIMAL(18,4)) <> 0",
                [now, now],
            ),
        )

    def _write_positions(self, con, symbols: np.ndarray, paper: PaperBook, touched: set[int], now) -> None:
        if not touched:
            return
        keep = sorted(touched)
        frame = pd.DataFrame(
            {
                "symbol": [symbols[s] for s in keep],
                "qty": [paper.positions[s].qty for s in keep],
                "avg": [str(paper.positions[s].avg_price) for s in keep],
            }
        )
        self._bulk(
            con,
            "paper_position_rows",
            frame,
            (
                "INSERT OR REPLACE INTO paper_positions "
                "SELECT symbol, qty, CAST(avg AS DECIMAL(18,6)), ? FROM paper_position_rows",
                [now],
            ),
        )
