"""Local paper broker specifics beyond the contract: market time, idempotent advancing, persistence."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pandas as pd
import pytest

from brokers.base import BrokerUnavailable, OrderRejected, OrderStatus
from brokers.local import LocalPaperBroker
from models.brackets import Bracket, EntryType
from tests.brokers.conftest import STEP, T0, write_bars
from warehouse.db import LockPolicy, Warehouse, connect
from warehouse.paper import paper_broker


def _b(cid="c1", **kw):
    args = dict(
        symbol="AAA", side="buy", qty=10, entry_ref=100.0, take_profit=105.0, stop=95.0, client_order_id=cid
    )
    args.update(kw)
    return Bracket(**args)


@pytest.fixture
def broker(warehouse_path):
    write_bars(warehouse_path, [("AAA", T0, 99, 100, 98, 100), ("BBB", T0, 50, 50, 50, 50)])
    b = paper_broker(warehouse_path, Decimal("100000"), slippage_bps=0, interval="5m")
    b.advance_to(T0)
    return b


def test_exits_on_the_wrong_side_of_the_market_are_refused_with_alpacas_wording(broker):
    # Valid against its own reference (90) but the market is at 100: the take-profit is below it.
    with pytest.raises(OrderRejected, match="take_profit.limit_price must be >= base_price") as info:
        broker.submit_bracket(_b(entry_ref=90.0, take_profit=95.0, stop=85.0))
    assert info.value.code == 42210000
    with pytest.raises(OrderRejected, match="stop_loss.stop_price must be <= base_price"):
        broker.submit_bracket(_b(entry_ref=110.0, take_profit=115.0, stop=100.5))
    assert broker.get_orders("all") == []


def test_an_order_fills_at_the_next_bar_not_the_decision_bar(broker, warehouse_path):
    o = broker.submit_bracket(_b())
    assert o.submitted_at == T0
    assert broker.advance_to(T0).fills == []  # the decision bar again: nothing
    write_bars(warehouse_path, [("AAA", T0 + STEP, 101, 101.5, 100.5, 101)])
    rep = broker.advance_to(T0 + STEP)
    assert [(f.price, f.ts) for f in rep.fills] == [(Decimal("101.0000"), T0 + STEP)]


def test_advancing_the_same_bar_twice_fills_once(broker, warehouse_path):
    broker.submit_bracket(_b())
    write_bars(warehouse_path, [("AAA", T0 + STEP, 101, 106, 100.5, 105)])
    assert len(broker.advance_to(T0 + STEP).fills) == 2  # entry at the open, then the take-profit
    assert broker.advance_to(T0 + STEP).fills == []
    bars = pd.DataFrame(
        [("AAA", T0 + STEP, 101, 106, 100.5, 105)], columns=["symbol", "ts", "open", "high", "low", "close"]
    )
    assert broker.on_bars(bars).fills == []
    assert len(broker.fills()) == 2
    assert broker.account().cash == Decimal("100000") + 10 * (105 - 101)


def test_several_bars_in_one_advance(broker, warehouse_path):
    broker.submit_bracket(_b())
    write_bars(
        warehouse_path, [("AAA", T0 + STEP, 100, 100.5, 99.5, 100), ("AAA", T0 + 2 * STEP, 100, 100, 94, 95)]
    )
    rep = broker.advance_to(T0 + 2 * STEP)
    assert rep.bars == 2
    assert [(f.role.value, f.price) for f in rep.fills] == [
        ("entry", Decimal("100.0000")),
        ("stop_loss", Decimal("95.0000")),
    ]
    assert broker.market_ts() == T0 + 2 * STEP


def test_limit_entry(broker, warehouse_path):
    broker.submit_bracket(
        _b(entry_type=EntryType.limit, entry_limit=99.0, take_profit=104.0, stop=96.0, entry_ref=99.0)
    )
    write_bars(warehouse_path, [("AAA", T0 + STEP, 100, 101, 99.5, 100.5)])
    assert broker.advance_to(T0 + STEP).fills == []  # never traded down to 99
    write_bars(warehouse_path, [("AAA", T0 + 2 * STEP, 100, 100.2, 98.5, 99)])
    assert [f.price for f in broker.advance_to(T0 + 2 * STEP).fills] == [Decimal("99.0000")]


def test_batch_submission_is_all_or_nothing(broker):
    with pytest.raises(OrderRejected, match="no price"):
        broker.submit_brackets([_b("ok"), _b("bad", symbol="ZZZ")])
    assert broker.get_orders("all") == []
    orders = broker.submit_brackets(
        [_b("a"), _b("b", symbol="BBB", entry_ref=50.0, take_profit=52.0, stop=48.0)]
    )
    assert [o.client_order_id for o in orders] == ["a", "b"]


def test_open_entries_hold_buying_power(broker):
    broker.submit_bracket(_b("big", qty=900))  # 90,000 held
    assert broker.account().buying_power == Decimal("10000.0000")
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        broker.submit_bracket(_b("more", qty=101))


def test_state_survives_a_new_broker_object_and_cash_is_deposited_once(broker, warehouse_path):
    o = broker.submit_bracket(_b())
    again = paper_broker(warehouse_path, Decimal("5"), interval="5m")
    assert again.account().cash == Decimal("100000")
    assert again.get_order(o.id).status is OrderStatus.new
    with connect(warehouse_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM paper_cash_ledger WHERE kind = 'deposit'").fetchall() == [
            (1,)
        ]


def test_a_locked_warehouse_is_unavailable(broker, warehouse_path):
    quick = paper_broker(
        Warehouse(warehouse_path, LockPolicy(timeout_s=0.3, backoff_initial_s=0.05)), interval="5m"
    )
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(5)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(warehouse_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(BrokerUnavailable, match="locked"):
            quick.submit_bracket(_b())
        assert quick.get_orders("all") == []  # what could not be saved is not kept in memory either
    finally:
        proc.kill()
        proc.wait()


def test_make_broker_from_settings(warehouse_path):
    from qtrader.settings import Settings
    from tasks.resources import make_broker

    broker = make_broker(
        Settings(warehouse=warehouse_path, paper={"starting_cash": "2500", "slippage_bps": 3}),
        Warehouse(warehouse_path),
    )
    assert isinstance(broker, LocalPaperBroker)
    assert broker.account().cash == Decimal("2500") and broker.costs.slippage_bps == 3


def test_uid_is_uuid5_of_the_joined_parts():
    import random
    import uuid

    from brokers.simulated import NAMESPACE, uid

    rng = random.Random(0)
    for _ in range(500):
        parts = [
            "".join(rng.choice("abcÄ|/-:0189 ") for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 3))
        ]
        assert uid(*parts) == str(uuid.uuid5(NAMESPACE, "/".join(parts)))
