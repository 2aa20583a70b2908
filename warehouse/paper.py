"""The local paper account's repository and bar feed: the simulated broker's state in the warehouse.

The broker (brokers/simulated.py) keeps its state in memory; this module loads it (``load_state``) and
saves what changed (``save_changes``) inside the caller's transaction, so a decision bar's books, its
decisions and its orders land together or not at all. ``WarehouseBars`` feeds the broker the stored bars
it has not seen yet. The tables are migration 005's ``paper_*``.
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pandas as pd

from brokers.base import Fill, OrderRole
from brokers.simulated import LedgerEntry, PaperChanges, PaperFill, PaperOrder, PaperState, utc
from models.brackets import Side
from models.fills import PositionState
from warehouse.db import Warehouse, WarehouseLike

_ORDER_COLUMNS = [
    "id", "client_order_id", "parent_id", "symbol", "side", "role", "type", "qty", "limit_price", "stop_price",
    "time_in_force", "status", "filled_qty", "filled_avg_price", "reserve_price", "submitted_at", "filled_at",
    "canceled_at", "replaces", "replaced_by", "created_at", "updated_at",
]  # fmt: skip
_MONEY = ("limit_price", "stop_price", "filled_avg_price", "reserve_price")


def _ts(x) -> pd.Timestamp | None:
    return None if x is None or (not isinstance(x, pd.Timestamp) and pd.isna(x)) else utc(x)


def load_state(wh: WarehouseLike, account_id: str = "paper") -> PaperState | None:
    """The stored paper account (None: never opened), with marks = each symbol's last close at market time."""
    with Warehouse.of(wh).read() as con:
        acct = con.execute(
            "SELECT starting_cash, interval, market_ts, created_at, updated_at FROM paper_account "
            "WHERE account_id = ?",
            [account_id],
        ).fetchall()
        if not acct:
            return None
        starting, interval, mts, created, updated = acct[0]
        state = PaperState(account_id, starting, interval, created, _ts(mts), updated_at=updated)
        cols = ", ".join(_ORDER_COLUMNS)
        for r in con.execute(f"SELECT {cols} FROM paper_orders ORDER BY rowid").fetchall():
            row = dict(zip(_ORDER_COLUMNS, r, strict=True))
            for c in ("submitted_at", "filled_at", "canceled_at"):
                row[c] = _ts(row[c])
            row["qty"], row["filled_qty"] = int(row["qty"]), int(row["filled_qty"])
            state.orders[row["id"]] = PaperOrder(**row)
        for fid, oid, coid, sym, side, role, qty, price, comm, ts, rec in con.execute(
            "SELECT fill_id, order_id, client_order_id, symbol, side, role, qty, price, commission, bar_ts, "
            "recorded_at FROM paper_fills ORDER BY bar_ts, rowid"
        ).fetchall():
            fill = Fill(
                oid, coid, sym, Side(side), int(qty), price, comm, utc(ts).to_pydatetime(), OrderRole(role)
            )
            state.fills.append(PaperFill(fid, fill, rec))
        for eid, ts, kind, amount, oid, fid, rec in con.execute(
            "SELECT entry_id, ts, kind, amount, order_id, fill_id, recorded_at FROM paper_cash_ledger ORDER BY rowid"
        ).fetchall():
            state.ledger.append(LedgerEntry(eid, ts, kind, amount, oid, fid, rec))
        for sym, qty, avg in con.execute(
            "SELECT symbol, qty, CAST(avg_entry_price AS VARCHAR) FROM paper_positions"
        ).fetchall():
            state.positions[sym] = PositionState(int(qty), Decimal(avg))
        if mts is not None:
            for sym, close in con.execute(
                "SELECT symbol, arg_max(close, ts) FROM bars WHERE interval = ? AND ts <= ? GROUP BY symbol",
                [interval, mts],
            ).fetchall():
                state.marks[sym] = float(close)
    return state


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for c in _MONEY:  # exact: as text, cast in SQL
        if c in frame:
            frame[c] = [None if v is None else str(v) for v in frame[c]]
    return frame


def _order_rows(orders: list[PaperOrder]) -> pd.DataFrame:
    rows = [{c: getattr(o, c) for c in _ORDER_COLUMNS} for o in orders]
    frame = _frame(rows, _ORDER_COLUMNS)
    for c in ("submitted_at", "filled_at", "canceled_at", "created_at", "updated_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame


_CAST = ", ".join(f"CAST({c} AS DECIMAL(18,4)) AS {c}" if c in _MONEY else c for c in _ORDER_COLUMNS)


def save_changes(con: duckdb.DuckDBPyConnection, changes: PaperChanges) -> dict[str, int]:
    """Write what changed in the paper account, inside the caller's transaction."""
    a = changes.account
    con.execute(
        "INSERT INTO paper_account VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET "
        "market_ts = excluded.market_ts, updated_at = excluded.updated_at",
        [a.account_id, a.starting_cash, a.interval, a.market_ts, a.created_at, a.updated_at or a.created_at],
    )
    if changes.new_orders:
        _register(con, "paper_new_orders", _order_rows(changes.new_orders))
        con.execute(f"INSERT INTO paper_orders BY NAME SELECT {_CAST} FROM paper_new_orders")
        con.unregister("paper_new_orders")
    if changes.updated_orders:
        _register(con, "paper_order_updates", _order_rows(changes.updated_orders))
        con.execute(
            "UPDATE paper_orders SET status = u.status, filled_qty = u.filled_qty, "
            "filled_avg_price = CAST(u.filled_avg_price AS DECIMAL(18,4)), filled_at = u.filled_at, "
            "canceled_at = u.canceled_at, replaced_by = u.replaced_by, updated_at = u.updated_at "
            "FROM paper_order_updates u WHERE paper_orders.id = u.id"
        )
        con.unregister("paper_order_updates")
    if changes.fills:
        fills = pd.DataFrame(
            {
                "fill_id": [f.fill_id for f in changes.fills],
                "order_id": [f.fill.order_id for f in changes.fills],
                "client_order_id": [f.fill.client_order_id for f in changes.fills],
                "symbol": [f.fill.symbol for f in changes.fills],
                "side": [f.fill.side.value for f in changes.fills],
                "role": [f.fill.role.value for f in changes.fills],
                "qty": [f.fill.qty for f in changes.fills],
                "price": [str(f.fill.price) for f in changes.fills],
                "commission": [str(f.fill.commission) for f in changes.fills],
                "bar_ts": pd.to_datetime([f.fill.ts for f in changes.fills], utc=True),
                "recorded_at": pd.to_datetime([f.recorded_at for f in changes.fills], utc=True),
            }
        )
        _register(con, "paper_fill_rows", fills)
        con.execute(
            "INSERT INTO paper_fills SELECT fill_id, order_id, client_order_id, symbol, side, role, qty, "
            "CAST(price AS DECIMAL(18,4)), CAST(commission AS DECIMAL(18,4)), bar_ts, recorded_at FROM paper_fill_rows"
        )
        con.unregister("paper_fill_rows")
    if changes.ledger:
        ledger = pd.DataFrame(
            {
                "entry_id": [e.entry_id for e in changes.ledger],
                "ts": pd.to_datetime([e.ts for e in changes.ledger], utc=True),
                "kind": [e.kind for e in changes.ledger],
                "amount": [str(e.amount) for e in changes.ledger],
                "order_id": [e.order_id for e in changes.ledger],
                "fill_id": [e.fill_id for e in changes.ledger],
                "recorded_at": pd.to_datetime([e.recorded_at for e in changes.ledger], utc=True),
            }
        )
        _register(con, "paper_ledger_rows", ledger)
        con.execute(
            "INSERT INTO paper_cash_ledger SELECT entry_id, ts, kind, CAST(amount AS DECIMAL(18,4)), order_id, "
            "fill_id, recorded_at FROM paper_ledger_rows"
        )
        con.unregister("paper_ledger_rows")
    if changes.positions:
        now = a.updated_at or a.created_at
        pos = pd.DataFrame(
            {
                "symbol": list(changes.positions),
                "qty": [p.qty for p in changes.positions.values()],
                "avg": [str(p.avg_price) for p in changes.positions.values()],
            }
        )
        _register(con, "paper_position_rows", pos)
        con.execute(
            "INSERT OR REPLACE INTO paper_positions SELECT symbol, qty, CAST(avg AS DECIMAL(18,6)), ? "
            "FROM paper_position_rows",
            [now],
        )
        con.unregister("paper_position_rows")
    return {
        "orders": len(changes.new_orders),
        "order_updates": len(changes.updated_orders),
        "fills": len(changes.fills),
        "ledger": len(changes.ledger),
        "positions": len(changes.positions),
    }


def _register(con, name: str, frame: pd.DataFrame) -> None:
    con.register(name, frame)


class WarehouseStore:
    """``brokers.local.PaperStore`` over a warehouse: load once, save the changes in one transaction."""

    def __init__(self, wh: WarehouseLike) -> None:
        self.wh = Warehouse.of(wh)

    def load(self, account_id: str) -> PaperState | None:
        if not self.wh.exists():
            return None
        return load_state(self.wh, account_id)

    def save(self, changes: PaperChanges, con: duckdb.DuckDBPyConnection | None = None) -> None:
        if con is not None:
            save_changes(con, changes)
            return
        with self.wh.transaction() as tx:
            save_changes(tx, changes)


class WarehouseBars:
    """``brokers.local.BarFeed`` over a warehouse: the stored bars of some symbols in (after, until]."""

    def __init__(self, wh: WarehouseLike, interval: str) -> None:
        self.wh = Warehouse.of(wh)
        self.interval = interval

    def bars(self, symbols: list[str] | None, after, until) -> pd.DataFrame:
        if after is None:
            with self.wh.read() as con:
                return con.execute(
                    "SELECT symbol, max(ts) AS ts, arg_max(open, ts) AS open, arg_max(high, ts) AS high, "
                    "arg_max(low, ts) AS low, arg_max(close, ts) AS close FROM bars WHERE interval = ? "
                    "AND ts <= ? AND (? OR list_contains(?, symbol)) GROUP BY symbol ORDER BY symbol",
                    [self.interval, until, symbols is None, symbols or []],
                ).df()
        with self.wh.read() as con:
            return con.execute(
                "SELECT symbol, ts, open, high, low, close FROM bars WHERE interval = ? AND ts > ? AND ts <= ? "
                "AND (? OR list_contains(?, symbol)) ORDER BY ts, symbol",
                [self.interval, after, until, symbols is None, symbols or []],
            ).df()


def paper_broker(
    wh: WarehouseLike,
    starting_cash: Decimal | float | str = Decimal("100000"),
    slippage_bps: float = 0.0,
    commission_per_share: float = 0.0,
    commission_bps: float = 0.0,
    *,
    interval: str = "5m",
    tick: float = 0.01,
    clock=None,
    account_id: str = "paper",
    autocommit: bool = True,
):
    """The local paper broker of a warehouse: its account loaded (or opened), its bars fed from it."""
    from brokers.local import LocalPaperBroker
    from models.fills import FillCosts

    wh = Warehouse.of(wh)
    return LocalPaperBroker(
        WarehouseStore(wh),
        WarehouseBars(wh, interval),
        starting_cash,
        FillCosts(float(slippage_bps), float(commission_per_share), float(commission_bps)),
        interval=interval,
        tick=tick,
        clock=clock,
        account_id=account_id,
        autocommit=autocommit,
    )
