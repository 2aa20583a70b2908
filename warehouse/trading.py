"""Reads and writes of the trading records: order_records, exit_adjustments and broker snapshots.

The local paper broker keeps its own books (paper_* tables, brokers/local.py); these tables are the
decision flow's view of whichever broker is configured, and what reconciliation repairs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pandas as pd

from brokers.base import Order
from brokers.reconcile import ActionKind, OrderRecord, ReconcilePlan, bracket_state
from warehouse.db import Warehouse, WarehouseLike, connect, within

# One order_records row per submitted bracket; a re-run's row already recorded is kept as it is.
_SUBMISSION = (
    "INSERT INTO order_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'submitted', NULL, ?, ?) "
    "ON CONFLICT DO NOTHING"
)


def _submission_row(order: Order, broker, strategy, leg, bar_ts, recorded_at) -> list:
    tp, sl = order.take_profit, order.stop_loss
    return [
        order.client_order_id, broker, order.id, strategy, order.symbol, order.side.value, order.qty, leg,
        bar_ts, tp.limit_price if tp else None, sl.stop_price if sl else None, bracket_state(order),
        recorded_at, recorded_at,
    ]  # fmt: skip


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
    with within(wh) as con:
        n = con.execute(
            _SUBMISSION + " RETURNING client_order_id",
            _submission_row(order, broker, strategy, leg, bar_ts, recorded_at),
        ).fetchall()
    return bool(n)


def record_submissions(
    wh: WarehouseLike,
    broker: str,
    orders: list[tuple[Order, str | None]],
    *,
    strategy: str | None,
    bar_ts: datetime | None,
    recorded_at: datetime,
) -> None:
    """``record_submission`` for a bar's brackets at once: (order, leg) each, one prepared statement."""
    if orders:
        with within(wh) as con:
            con.executemany(
                _SUBMISSION,
                [_submission_row(o, broker, strategy, leg, bar_ts, recorded_at) for o, leg in orders],
            )


def load_order_records(wh: WarehouseLike, broker: str) -> list[OrderRecord]:
    if not Warehouse.of(wh).exists():
        return []  # no warehouse yet: nothing was ever recorded
    with connect(wh, read_only=True) as con:
        rows = con.execute(
            "SELECT client_order_id, symbol, status, broker_order_id, origin FROM order_records "
            "WHERE broker = ? ORDER BY client_order_id",
            [broker],
        ).fetchall()
    return [OrderRecord(*r) for r in rows]


def apply_reconciliation(
    wh: WarehouseLike,
    broker: str,
    plan: ReconcilePlan,
    *,
    ts: datetime,
    recorded_at: datetime,
) -> dict[str, int]:
    """Apply a reconciliation plan and store the broker's positions and account, in one transaction."""
    counts = {k.value: 0 for k in ActionKind}
    with within(wh) as con:
        for a in plan.actions:
            counts[a.kind.value] += 1
            o = a.broker_order
            if a.kind is ActionKind.adopt and o is not None:
                tp, sl = o.take_profit, o.stop_loss
                con.execute(
                    "INSERT INTO order_records VALUES (?, ?, ?, NULL, ?, ?, ?, NULL, NULL, ?, ?, ?, 'adopted', ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    [
                        o.client_order_id, broker, o.id, o.symbol, o.side.value, o.qty,
                        tp.limit_price if tp else None, sl.stop_price if sl else None, a.status, a.detail,
                        recorded_at, recorded_at,
                    ],
                )  # fmt: skip
            else:
                con.execute(
                    "UPDATE order_records SET status = ?, broker_order_id = coalesce(?, broker_order_id), "
                    "note = ?, updated_at = ? WHERE client_order_id = ?",
                    [a.status, o.id if o else None, a.detail, recorded_at, a.client_order_id],
                )
        if plan.account is not None:
            acc = plan.account
            con.execute(
                "INSERT OR REPLACE INTO account_snapshots VALUES (?, ?, ?, ?, ?, ?)",
                [broker, ts, acc.cash, acc.equity, acc.buying_power, recorded_at],
            )
        for p in plan.positions:
            con.execute(
                "INSERT OR REPLACE INTO position_snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                [broker, ts, p.symbol, p.qty, p.avg_entry_price, p.market_value, recorded_at],
            )
    return counts


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
