from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Account, Order, OrderRole, OrderStatus, OrderType, Position, submit_idempotent
from brokers.reconcile import MISSING, ActionKind, OrderRecord, bracket_state, reconcile
from models.brackets import Bracket, Side, client_order_id
from tests.brokers.conftest import T0, write_bars
from warehouse.db import connect
from warehouse.paper import paper_broker
from warehouse.trading import apply_reconciliation, load_order_records, record_submission

NOW = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)


def _order(cid, status=OrderStatus.new, tp=OrderStatus.held, sl=OrderStatus.held) -> Order:
    legs = (
        Order(f"{cid}-tp", f"{cid}.tp", "AAA", Side.sell, 10, OrderType.limit, OrderRole.take_profit, tp,
              limit_price=Decimal("105"), parent_id=cid),
        Order(f"{cid}-sl", f"{cid}.sl", "AAA", Side.sell, 10, OrderType.stop, OrderRole.stop_loss, sl,
              stop_price=Decimal("95"), parent_id=cid),
    )  # fmt: skip
    return Order(cid, cid, "AAA", Side.buy, 10, OrderType.market, OrderRole.entry, status, legs=legs)


def test_bracket_state():
    assert bracket_state(_order("a")) == "new"
    assert bracket_state(_order("a", OrderStatus.filled, OrderStatus.new, OrderStatus.new)) == "position_open"
    assert (
        bracket_state(_order("a", OrderStatus.filled, OrderStatus.filled, OrderStatus.canceled))
        == "closed_take_profit"
    )
    assert (
        bracket_state(_order("a", OrderStatus.filled, OrderStatus.canceled, OrderStatus.filled))
        == "closed_stop_loss"
    )
    assert (
        bracket_state(_order("a", OrderStatus.canceled, OrderStatus.canceled, OrderStatus.canceled))
        == "canceled"
    )


def test_reconcile_adopts_marks_and_updates():
    broker = [
        _order("unknown"),  # the broker has it, the warehouse does not
        _order("moved", OrderStatus.filled, OrderStatus.new, OrderStatus.new),
        _order("same"),
    ]
    local = [
        OrderRecord("moved", "AAA", "new", "moved"),
        OrderRecord("same", "AAA", "new", "same"),
        OrderRecord("lost", "AAA", "accepted", None),  # never reached the broker
        OrderRecord("old", "AAA", "closed_take_profit", "old"),  # aged out of the broker's list: leave it
        OrderRecord("gone", "AAA", MISSING, None),  # already marked
    ]
    pos = (Position("AAA", 10, Decimal("100")),)
    acct = Account(Decimal("99000"), Decimal("100000"), Decimal("99000"))
    plan = reconcile(broker, local, pos, acct)
    assert [(a.kind, a.client_order_id, a.status) for a in plan.actions] == [
        (ActionKind.update, "moved", "position_open"),
        (ActionKind.adopt, "unknown", "new"),
        (ActionKind.mark_missing, "lost", MISSING),
    ]
    assert plan.positions == pos and plan.account == acct
    assert [a.client_order_id for a in plan.of("adopt")] == ["unknown"]


def crash_bracket() -> Bracket:
    return Bracket("AAA", "buy", 10, 100.0, 105.0, 95.0, client_order_id("crash", "AAA", T0, "tp1"))


def next_run(broker, path, name: str, brackets: list[Bracket]):
    """What a decision run does first: reconcile, then submit only what nobody knows yet."""
    plan = reconcile(
        broker.get_orders("all"), load_order_records(path, name), broker.positions(), broker.account()
    )
    apply_reconciliation(path, name, plan, ts=NOW, recorded_at=NOW)
    known = {r.client_order_id for r in load_order_records(path, name)}
    sent = []
    for b in brackets:
        if b.client_order_id in known:
            continue
        res = submit_idempotent(broker, b)
        if res.created:
            record_submission(path, name, res.order, strategy="crash", leg="tp1", bar_ts=T0, recorded_at=NOW)
            sent.append(res.order)
    return plan, sent


def _crash(kind: str, target: str, env: dict | None = None) -> None:
    script = Path(__file__).with_name("_crash_submit.py")
    proc = subprocess.run(
        [sys.executable, str(script), kind, target], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("submitted"), proc.stdout + proc.stderr


def _records(path):
    with connect(path, read_only=True) as con:
        return con.execute("SELECT client_order_id, origin, status FROM order_records").fetchall()


@pytest.mark.slow
def test_crash_between_submit_and_record_local(warehouse_path):
    write_bars(warehouse_path, [("AAA", T0, 100, 100, 100, 100)])
    paper_broker(warehouse_path, interval="5m").advance_to(T0)
    _crash("local", str(warehouse_path))
    assert _records(warehouse_path) == []  # the crashed run recorded nothing

    broker = paper_broker(warehouse_path, interval="5m")
    plan, sent = next_run(broker, warehouse_path, "local", [crash_bracket()])
    assert [(a.kind, a.client_order_id) for a in plan.actions] == [
        (ActionKind.adopt, crash_bracket().client_order_id)
    ]
    assert sent == []
    assert _records(warehouse_path) == [(crash_bracket().client_order_id, "adopted", "new")]
    assert len(broker.get_orders("all")) == 1
    # And a third run is quiet: nothing adopted, nothing sent.
    plan, sent = next_run(broker, warehouse_path, "local", [crash_bracket()])
    assert plan.actions == () and sent == []
    with connect(warehouse_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM paper_orders").fetchall() == [(3,)]
        assert con.execute("SELECT count(*) FROM account_snapshots").fetchall() == [(1,)]


@pytest.mark.slow
def test_crash_between_submit_and_record_alpaca(fake_alpaca, warehouse_path):
    fake_alpaca.set_price("AAA", 100.0)
    env = {"APCA_API_KEY_ID": fake_alpaca.api_key, "APCA_API_SECRET_KEY": fake_alpaca.secret_key}
    _crash("alpaca", fake_alpaca.url, env)
    assert len(fake_alpaca.posted_orders()) == 1

    from brokers.alpaca import AlpacaPaperBroker

    broker = AlpacaPaperBroker(fake_alpaca.api_key, fake_alpaca.secret_key, fake_alpaca.url, timeout_s=2.0)
    plan, sent = next_run(broker, warehouse_path, "alpaca", [crash_bracket()])
    assert [a.kind for a in plan.actions] == [ActionKind.adopt] and sent == []
    assert len(fake_alpaca.posted_orders()) == 1  # nothing new went out
    assert _records(warehouse_path) == [(crash_bracket().client_order_id, "adopted", "accepted")]


def test_a_record_the_broker_never_got_is_marked(warehouse_path):
    write_bars(warehouse_path, [("AAA", T0, 100, 100, 100, 100)])
    broker = paper_broker(warehouse_path, interval="5m")
    ghost = Order("x", "ghost", "AAA", Side.buy, 10, OrderType.market, OrderRole.entry, OrderStatus.accepted)
    assert record_submission(
        warehouse_path, "local", ghost, strategy="s", leg="tp1", bar_ts=T0, recorded_at=NOW
    )
    assert not record_submission(
        warehouse_path, "local", ghost, strategy="s", leg="tp1", bar_ts=T0, recorded_at=NOW
    )
    plan, sent = next_run(broker, warehouse_path, "local", [])
    assert [(a.kind, a.client_order_id) for a in plan.actions] == [(ActionKind.mark_missing, "ghost")]
    assert _records(warehouse_path) == [("ghost", "submitted", MISSING)]


def test_a_bars_submissions_recorded_at_once_are_the_rows_recorded_one_by_one(tmp_path):
    """store_outcome records a bar's brackets with one statement (record_submissions): the same rows as
    record_submission per order, and a re-run keeps the rows already there."""
    from warehouse.trading import record_submissions

    orders = [(_order("c1"), "tp1"), (_order("c2", OrderStatus.filled, OrderStatus.new), "tp2")]
    one, bulk = tmp_path / "one.duckdb", tmp_path / "bulk.duckdb"
    for o, leg in orders:
        record_submission(one, "local", o, strategy="s", leg=leg, bar_ts=T0, recorded_at=NOW)
    record_submissions(bulk, "local", orders, strategy="s", bar_ts=T0, recorded_at=NOW)
    record_submissions(bulk, "local", orders[:1], strategy="other", bar_ts=T0, recorded_at=NOW)
    sql = "SELECT * FROM order_records ORDER BY client_order_id"
    with connect(one, read_only=True) as a, connect(bulk, read_only=True) as b:
        assert a.execute(sql).fetchall() == b.execute(sql).fetchall()


def test_a_reconciliation_stores_every_row_kind_in_bulk(warehouse_path):
    """Adopted, updated and missing orders and the snapshots, each kind one statement: the rows the
    per-order statements stored (ids kept when the broker gives none, exact DECIMAL rounding)."""
    from warehouse.trading import record_submissions

    sent = _order("moved")
    record_submissions(warehouse_path, "local", [(sent, "tp1"), (_order("lost"), "tp2")], strategy="s",
                       bar_ts=T0, recorded_at=NOW)  # fmt: skip
    broker = [_order("unknown"), _order("moved", OrderStatus.filled, OrderStatus.new, OrderStatus.new)]
    pos = (
        Position("AAA", 10, Decimal("100.12345650"), None),
        Position("BBB", -5, Decimal("7.5"), Decimal("-37.5")),
    )
    acct = Account(Decimal("99000.00005"), Decimal("100000"), Decimal("99000"))
    plan = reconcile(broker, load_order_records(warehouse_path, "local"), pos, acct)
    counts = apply_reconciliation(warehouse_path, "local", plan, ts=NOW, recorded_at=NOW)
    assert counts == {"adopt": 1, "mark_missing": 1, "update": 1}
    with connect(warehouse_path, read_only=True) as con:
        records = con.execute(
            "SELECT client_order_id, broker_order_id, leg, take_profit, stop_price, status, origin, note "
            "FROM order_records ORDER BY client_order_id"
        ).fetchall()
        positions = con.execute(
            "SELECT symbol, qty, avg_entry_price, market_value FROM position_snapshots ORDER BY symbol"
        ).fetchall()
        account = con.execute("SELECT cash, equity, buying_power FROM account_snapshots").fetchall()
    assert records == [
        ("lost", "lost", "tp2", Decimal("105.0000"), Decimal("95.0000"), MISSING, "submitted",
         "was new; unknown to the broker"),
        ("moved", "moved", "tp1", Decimal("105.0000"), Decimal("95.0000"), "position_open", "submitted",
         "new -> position_open"),
        ("unknown", "unknown", None, Decimal("105.0000"), Decimal("95.0000"), "new", "adopted",
         "the broker has it, the warehouse did not"),
    ]  # fmt: skip
    assert positions == [
        ("AAA", 10, Decimal("100.123457"), None),
        ("BBB", -5, Decimal("7.500000"), Decimal("-37.5000")),
    ]
    assert account == [(Decimal("99000.0001"), Decimal("100000.0000"), Decimal("99000.0000"))]
