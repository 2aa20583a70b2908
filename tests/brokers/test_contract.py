"""One contract, two brokers: the local paper broker and Alpaca paper (alpaca-py against a fake server)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from brokers.alpaca import AlpacaPaperBroker
from brokers.base import (
    Broker,
    BrokerUnavailable,
    DuplicateOrder,
    OrderNotFound,
    OrderRejected,
    OrderRole,
    OrderStatus,
    OrderType,
    submit_idempotent,
)
from models.brackets import Bracket, Side
from tests.brokers.conftest import START_CASH

# A stop leg works as `new` at the local broker; Alpaca keeps a working stop `held` until it triggers
# (only the take-profit goes `new` when the entry fills).
WORKING_STOP = (OrderStatus.new, OrderStatus.held)


def _bracket(cid="qt-AAA-1", symbol="AAA", side="buy", qty=10, ref=100.0, tp=105.0, sl=95.0) -> Bracket:
    return Bracket(symbol, side, qty, ref, tp, sl, cid)


@pytest.fixture
def priced(market):
    market.set_price("AAA", 100.0)
    return market


def test_protocol(market):
    assert isinstance(market.broker, Broker)


def test_submit_bracket_lists_it_with_its_legs(priced):
    b = priced.broker
    o = b.submit_bracket(_bracket())
    assert o.is_open and o.role is OrderRole.entry and o.type is OrderType.market
    assert (o.symbol, o.side, o.qty, o.client_order_id) == ("AAA", Side.buy, 10, "qt-AAA-1")
    tp, sl = o.take_profit, o.stop_loss
    assert (tp.type, tp.side, tp.limit_price, tp.status) == (
        OrderType.limit,
        Side.sell,
        Decimal("105"),
        OrderStatus.held,
    )
    assert (sl.type, sl.side, sl.stop_price, sl.status) == (
        OrderType.stop,
        Side.sell,
        Decimal("95"),
        OrderStatus.held,
    )
    assert tp.parent_id == sl.parent_id == o.id
    listed = b.get_orders("open")
    assert [x.id for x in listed] == [o.id]
    assert {leg.id for leg in listed[0].legs} == {tp.id, sl.id}
    assert b.get_orders("closed") == []
    assert b.get_order_by_client_id("qt-AAA-1").id == o.id
    assert b.get_order(o.id).legs == listed[0].legs
    assert b.get_order_by_client_id("nope") is None
    with pytest.raises(OrderNotFound):
        b.get_order("00000000-0000-0000-0000-00000000dead")


def test_duplicate_client_order_id_raises_with_the_existing_order(priced):
    b = priced.broker
    first = b.submit_bracket(_bracket())
    with pytest.raises(DuplicateOrder) as info:
        b.submit_bracket(_bracket(qty=5))
    assert info.value.existing is not None and info.value.existing.id == first.id
    assert "client_order_id" in str(info.value)
    again = submit_idempotent(b, _bracket())
    assert (again.order.id, again.created) == (first.id, False)
    assert [o.id for o in b.get_orders("all")] == [first.id]


def test_rejected_orders_raise_with_the_brokers_message(priced):
    # (A bracket's exits against the current price are checked where the exits are made: by the local
    # broker at submission, tests/brokers/test_local.py; Alpaca places them as OCO orders later.)
    b = priced.broker
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        b.submit_bracket(_bracket(qty=5_000))
    assert b.get_orders("all") == []
    assert b.account().cash == START_CASH


def test_replace_stop(priced):
    b = priced.broker
    o = b.submit_bracket(_bracket())
    priced.fill_entry(o, 100.0)
    old = b.get_order(o.id).stop_loss
    assert old.status in WORKING_STOP  # released by the entry's fill
    new = b.replace_stop(old.id, 98.0)
    assert new.id != old.id and new.replaces == old.id
    assert new.stop_price == Decimal("98") and new.role is OrderRole.stop_loss and new.is_open
    assert b.get_order(old.id).status is OrderStatus.replaced
    assert b.get_order(o.id).stop_loss.id == new.id
    with pytest.raises(OrderRejected, match="not replaceable|cannot replace order"):
        b.replace_stop(old.id, 99.0)
    # The new stop is live: reaching it closes the position and cancels the take-profit.
    priced.hit_stop(b.get_order(o.id))
    done = b.get_order(o.id)
    assert done.stop_loss.status is OrderStatus.filled and done.stop_loss.filled_avg_price == Decimal("98")
    assert done.take_profit.status is OrderStatus.canceled
    assert b.positions() == []


def test_cancel(priced):
    b = priced.broker
    o = b.submit_bracket(_bracket())
    b.cancel(o.id)
    gone = b.get_order(o.id)
    assert gone.status is OrderStatus.canceled
    assert all(leg.status is OrderStatus.canceled for leg in gone.legs)
    assert b.get_orders("open") == []
    assert [x.id for x in b.get_orders("closed")] == [o.id]
    with pytest.raises(OrderRejected, match="not cancelable"):
        b.cancel(o.id)
    with pytest.raises(OrderNotFound):
        b.cancel("00000000-0000-0000-0000-00000000dead")


def test_cancelling_an_exit_leg_cancels_its_sibling(priced):
    b = priced.broker
    o = b.submit_bracket(_bracket())
    priced.fill_entry(o, 100.0)
    b.cancel(b.get_order(o.id).take_profit.id)
    after = b.get_order(o.id)
    assert after.take_profit.status is OrderStatus.canceled and after.stop_loss.status is OrderStatus.canceled
    assert [p.qty for p in b.positions()] == [10]  # the position stays, unprotected


def test_positions_account_and_fills_after_a_round_trip(priced):
    b = priced.broker
    assert b.account().cash == START_CASH
    o = b.submit_bracket(_bracket())
    priced.fill_entry(o, 100.0)
    [pos] = b.positions()
    assert (pos.symbol, pos.qty, pos.avg_entry_price, pos.side) == ("AAA", 10, Decimal("100"), "long")
    acct = b.account()
    assert acct.cash == START_CASH - 1000
    assert acct.equity == START_CASH
    assert acct.buying_power == START_CASH - 1000
    entry = b.get_order(o.id)
    assert (
        entry.status is OrderStatus.filled
        and entry.filled_qty == 10
        and entry.filled_avg_price == Decimal("100")
    )
    assert entry.take_profit.status is OrderStatus.new and entry.stop_loss.status in WORKING_STOP

    priced.hit_take_profit(entry)
    assert b.positions() == []
    assert b.account().cash == START_CASH + 50
    closed = b.get_order(o.id)
    assert closed.take_profit.status is OrderStatus.filled and closed.stop_loss.status is OrderStatus.canceled
    assert b.get_orders("open") == [] and [x.id for x in b.get_orders("closed")] == [o.id]
    fills = b.fills()
    assert [(f.role, f.side, f.qty, f.price) for f in fills] == [
        (OrderRole.entry, Side.buy, 10, Decimal("100")),
        (OrderRole.take_profit, Side.sell, 10, Decimal("105")),
    ]
    assert b.fills(since=fills[-1].ts) == fills[-1:]


def test_a_short_bracket(priced):
    b = priced.broker
    o = b.submit_bracket(_bracket(side="sell", tp=95.0, sl=105.0))
    assert o.take_profit.side is Side.buy and o.take_profit.limit_price == Decimal("95")
    priced.fill_entry(o, 100.0)
    [pos] = b.positions()
    assert (pos.qty, pos.side) == (-10, "short")
    assert b.account().cash == START_CASH + 1000
    priced.hit_stop(b.get_order(o.id))
    assert b.positions() == [] and b.account().cash == START_CASH - 50


# --- Alpaca only: transport failures ---------------------------------------------------------------------


@pytest.fixture
def alpaca(fake_alpaca):
    fake_alpaca.set_price("AAA", 100.0)
    return AlpacaPaperBroker(fake_alpaca.api_key, fake_alpaca.secret_key, fake_alpaca.url, timeout_s=0.5)


def test_alpaca_5xx_is_unavailable(alpaca, fake_alpaca):
    fake_alpaca.fail_next("500")
    with pytest.raises(BrokerUnavailable, match="500"):
        alpaca.account()
    assert alpaca.account().cash == START_CASH  # transient: the next call works


def test_alpaca_timeout_is_unavailable(alpaca, fake_alpaca):
    fake_alpaca.fail_next("hang")
    t = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="in time"):
        alpaca.get_orders()
    assert time.monotonic() - t < 2.5


def test_alpaca_connection_refused_is_unavailable(fake_alpaca):
    broker = AlpacaPaperBroker("k", "s", "http://127.0.0.1:9", timeout_s=0.5)
    with pytest.raises(BrokerUnavailable, match="connect"):
        broker.account()


def test_alpaca_rejection_422(alpaca, fake_alpaca):
    fake_alpaca.fail_next("reject", method="POST")
    with pytest.raises(OrderRejected, match="rejected by the fake") as info:
        alpaca.submit_bracket(_bracket())
    assert info.value.code == 42210000
    assert not isinstance(info.value, DuplicateOrder)


def test_alpaca_submit_timeout_then_retry_is_a_duplicate_not_a_second_order(alpaca, fake_alpaca):
    # The order arrives but the answer never does: the retry hits the duplicate id and finds it.
    fake_alpaca.fail_next("hang_after", method="POST")
    with pytest.raises(BrokerUnavailable):
        alpaca.submit_bracket(_bracket())
    again = submit_idempotent(alpaca, _bracket())
    assert again.created is False and again.order.client_order_id == "qt-AAA-1"
    # One entry at Alpaca (its client order id is the bracket's followed by the exit plan).
    assert len([o for o in fake_alpaca.orders.values() if o["client_order_id"].startswith("qt-AAA-1.")]) == 1
