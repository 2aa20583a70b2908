"""Reads and writes of the trading records: order_records, exit_adjustments and broker snapshots.

The local paper broker keeps its own books (paper_* tables, brokers/local.py); these tables are the
decision flow's view of whichever broker is configured, and what reconciliation repairs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import duckdb
import pandas as pd

from brokers.base import Order
from brokers.reconcile import ActionKind, OrderRecord, ReconcilePlan, bracket_state
from warehouse.db import Warehouse, WarehouseLike, connect, within

# One order_records row per submitted bracket; a re-run's row already recorded is kept as it is.
_SUBMISSION = (
    "INSERT INTO order_records SELECT client_order_id, ?, broker_order_id, ?, symbol, side, qty, leg, ?, "
    "CAST(take_profit AS DECIMAL(18,4)), CAST(stop_price AS DECIMAL(18,4)), status, 'submitted', NULL, ?, ? "
    "FROM incoming_submissions ON CONFLICT DO NOTHING RETURNING client_order_id"
)
_SUBMISSION_COLUMNS = ["client_order_id", "broker_order_id", "symbol", "side", "qty", "leg", "take_profit",
                       "stop_price", "status"]  # fmt: skip


def _submission_row(order: Order, leg: str | None) -> tuple:
    tp, sl = order.take_profit, order.stop_loss
    return (order.client_order_id, order.id, order.symbol, order.side.value, order.qty, leg,
            _text(tp.limit_price if tp else None), _text(sl.stop_price if sl else None),
            bracket_state(order))  # fmt: skip


def record_submission(
    wh: WarehouseLike,
    broker: str,
    order: Order,
    *,
    strategy: str | None,
    leg: str | None,
    bar_ts: datetime | None,
    recorded_at: datetime,
) -> bool:
    """Record a bracket the flow just submitted. Returns False when it was already recorded (a re-run)."""
    return bool(record_submissions(wh, broker, [(order, leg)], strategy=strategy, bar_ts=bar_ts,
                                   recorded_at=recorded_at))  # fmt: skip


def record_submissions(
    wh: WarehouseLike,
    broker: str,
    orders: list[tuple[Order, str | None]],
    *,
    strategy: str | None,
    bar_ts: datetime | None,
    recorded_at: datetime,
) -> int:
    """Record a bar's submitted brackets, (order, leg) each, in one statement; how many were new (a
    re-run's rows already recorded are kept, and so is the first of an id given twice)."""
    first: dict[str, tuple] = {}
    for o, leg in orders:
        first.setdefault(o.client_order_id, _submission_row(o, leg))
    if not first:
        return 0
    frame = pd.DataFrame(list(first.values()), columns=_SUBMISSION_COLUMNS)
    with within(wh) as con:
        con.register("incoming_submissions", frame)
        try:
            n = con.execute(_SUBMISSION, [broker, strategy, bar_ts, recorded_at, recorded_at]).fetchall()
        finally:
            con.unregister("incoming_submissions")
    return len(n)


def _text(v) -> str | None:
    """A money value as exact text for a DECIMAL cast in SQL (None stays NULL)."""
    return None if v is None else str(v)


_ORDER_RECORDS = (
    "SELECT client_order_id, symbol, status, broker_order_id, origin FROM order_records "
    "WHERE broker = ? ORDER BY client_order_id"
)


def load_order_records(wh: WarehouseLike | duckdb.DuckDBPyConnection, broker: str) -> list[OrderRecord]:
    """The broker's order records; ``wh`` may be the caller's open transaction (a decision bar's)."""
    if isinstance(wh, duckdb.DuckDBPyConnection):
        return [OrderRecord(*r) for r in wh.execute(_ORDER_RECORDS, [broker]).fetchall()]
    if not Warehouse.of(wh).exists():
        return []  # no warehouse yet: nothing was ever recorded
    with connect(wh, read_only=True) as con:
        rows = con.execute(_ORDER_RECORDS, [broker]).fetchall()
    return [OrderRecord(*r) for r in rows]


def apply_reconciliation(
    wh: WarehouseLike,
    broker: str,
    plan: ReconcilePlan,
    *,
    ts: datetime,
    recorded_at: datetime,
) -> dict[str, int]:
    """Apply a reconciliation plan and store the broker's positions and account, in one transaction: a
    statement per kind of row (adopted, updated, the account, positions), not one per order or position.
    ``reconcile`` names each client order id at most once, so the rows of one statement never collide."""
    counts = {k.value: 0 for k in ActionKind}
    adopted, updated = [], []
    for a in plan.actions:
        counts[a.kind.value] += 1
        o = a.broker_order
        if a.kind is ActionKind.adopt and o is not None:
            tp, sl = o.take_profit, o.stop_loss
            adopted.append((o.client_order_id, o.id, o.symbol, o.side.value, o.qty,
                            _text(tp.limit_price if tp else None), _text(sl.stop_price if sl else None),
                            a.status, a.detail))  # fmt: skip
        else:
            updated.append((a.client_order_id, a.status, o.id if o else None, a.detail))
    with within(wh) as con:
        if adopted:
            frame = pd.DataFrame(adopted, columns=["client_order_id", "broker_order_id", "symbol", "side", "qty",
                                                   "take_profit", "stop_price", "status", "note"])  # fmt: skip
            _from_frame(
                con, "incoming_adopted", frame,
                "INSERT INTO order_records SELECT client_order_id, ?, broker_order_id, NULL, symbol, side, qty, "
                "NULL, NULL, CAST(take_profit AS DECIMAL(18,4)), CAST(stop_price AS DECIMAL(18,4)), status, "
                "'adopted', note, ?, ? FROM incoming_adopted ON CONFLICT DO NOTHING",
                [broker, recorded_at, recorded_at],
            )  # fmt: skip
        if updated:
            frame = pd.DataFrame(updated, columns=["client_order_id", "status", "broker_order_id", "note"])
            _from_frame(
                con, "incoming_updates", frame,
                "UPDATE order_records SET status = u.status, broker_order_id = coalesce(CAST(u.broker_order_id "
                "AS VARCHAR), "
                "order_records.broker_order_id), note = u.note, updated_at = ? FROM incoming_updates u "
                "WHERE order_records.client_order_id = u.client_order_id",
                [recorded_at],
            )  # fmt: skip
        if plan.account is not None:
            acc = plan.account
            con.execute(
                "INSERT OR REPLACE INTO account_snapshots VALUES (?, ?, ?, ?, ?, ?)",
                [broker, ts, acc.cash, acc.equity, acc.buying_power, recorded_at],
            )
        if plan.positions:
            frame = pd.DataFrame(
                [(p.symbol, p.qty, _text(p.avg_entry_price), _text(p.market_value)) for p in plan.positions],
                columns=["symbol", "qty", "avg_entry_price", "market_value"],
            )
            _from_frame(
                con, "incoming_positions", frame,
                "INSERT OR REPLACE INTO position_snapshots SELECT ?, ?, symbol, qty, "
                "CAST(avg_entry_price AS DECIMAL(18,6)), CAST(market_value AS DECIMAL(18,4)), ? "
                "FROM incoming_positions",
                [broker, ts, recorded_at],
            )  # fmt: skip
    return counts


def _from_frame(con, view: str, frame: pd.DataFrame, sql: str, params: list) -> None:
    """Run one statement over ``frame`` registered as ``view`` (our own name; values bound or in the frame)."""
    con.register(view, frame)
    try:
        con.execute(sql, params)
    finally:
        con.unregister(view)


def record_exit_adjustment(
    wh: WarehouseLike,
    *,
    broker: str,
    ts: datetime,
    symbol: str,
    client_order_id: str | None,
    replaced_order_id: str,
    new_order_id: str,
    old_stop: Decimal | float,
    new_stop: Decimal | float,
    rule: str,
    reason: str,
    recorded_at: datetime,
) -> bool:
    """One stop move. Returns False when that order's replacement was already recorded."""
    with within(wh) as con:
        n = con.execute(
            "INSERT INTO exit_adjustments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING replaced_order_id",
            [
                replaced_order_id, new_order_id, ts, broker, symbol, client_order_id,
                Decimal(str(old_stop)), Decimal(str(new_stop)), rule, reason, recorded_at,
            ],
        ).fetchall()  # fmt: skip
    return bool(n)


EXIT_ADJUSTMENT_COLUMNS = [
    "replaced_order_id", "new_order_id", "ts", "broker", "symbol", "client_order_id", "old_stop", "new_stop",
    "rule", "reason", "recorded_at",
]  # fmt: skip


def record_exit_adjustments(wh, rows: list[dict]) -> int:
    """Several stop moves at once (``record_exit_adjustment``'s rows); an order replaced before is kept."""
    if not rows:
        return 0
    frame = pd.DataFrame(rows, columns=EXIT_ADJUSTMENT_COLUMNS)
    for c in ("old_stop", "new_stop"):
        frame[c] = [str(Decimal(str(v))) for v in frame[c]]
    with within(wh) as con:
        con.register("incoming_adjustments", frame)
        try:
            n = con.execute(
                "INSERT OR IGNORE INTO exit_adjustments BY NAME SELECT * REPLACE (CAST(old_stop AS DECIMAL(18,4)) "
                "AS old_stop, CAST(new_stop AS DECIMAL(18,4)) AS new_stop) FROM incoming_adjustments "
                "RETURNING replaced_order_id"
            ).fetchall()
        finally:
            con.unregister("incoming_adjustments")
    return len(n)
