"""The fake Alpaca server keeps Alpaca's documented (and user-reported) order rules.

Driven with alpaca-py's own ``TradingClient`` (or plain ``requests`` where a header matters), so each
rule is checked on the wire the way the adapter meets it. docs/trading.md says which rule was verified
against Alpaca's documentation and which only against reports.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)

from tests.brokers.fake_alpaca import FakeAlpaca

WASH = "potential wash trade detected. use complex orders"


@pytest.fixture
def client(fake_alpaca) -> TradingClient:
    fake_alpaca.set_price("AAA", 100.0)
    c = TradingClient(fake_alpaca.api_key, fake_alpaca.secret_key, paper=True, url_override=fake_alpaca.url)
    return c


def bracket(cid: str, qty: int = 10, side: str = "buy", tp: float = 105.0, sl: float = 95.0):
    return MarketOrderRequest(
        symbol="AAA", qty=qty, side=OrderSide(side), time_in_force=TimeInForce.DAY,
        order_class=OrderClass.BRACKET, client_order_id=cid,
        take_profit=TakeProfitRequest(limit_price=tp), stop_loss=StopLossRequest(stop_price=sl),
    )  # fmt: skip


def market(cid: str, qty: int = 10, side: str = "buy"):
    return MarketOrderRequest(symbol="AAA", qty=qty, side=OrderSide(side), time_in_force=TimeInForce.DAY,
                              client_order_id=cid)  # fmt: skip


def oco(cid: str, qty: int = 10, side: str = "sell", tp: float = 105.0, sl: float = 95.0):
    return LimitOrderRequest(
        symbol="AAA", qty=qty, side=OrderSide(side), time_in_force=TimeInForce.DAY, order_class=OrderClass.OCO,
        client_order_id=cid, take_profit=TakeProfitRequest(limit_price=tp), stop_loss=StopLossRequest(stop_price=sl),
    )  # fmt: skip


def refused(fn, *args) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args)
    return info.value


def test_second_bracket_against_the_first_ones_open_legs_is_a_wash_trade(client, fake_alpaca):
    # Three brackets for three take-profit levels: the first one's legs are open sells (held) when the
    # second one's buy arrives.
    client.submit_order(bracket("leg-1"))
    err = refused(client.submit_order, bracket("leg-2", tp=108.0))
    assert (err.status_code, err.code, err.message) == (422, 42210000, WASH)
    # Any order opposite to an open order in the symbol, not only brackets.
    fake_alpaca.set_price("BBB", 50.0)
    client.submit_order(
        MarketOrderRequest(symbol="BBB", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )
    err = refused(
        client.submit_order,
        MarketOrderRequest(symbol="BBB", qty=1, side=OrderSide.SELL, time_in_force=TimeInForce.DAY),
    )
    assert (err.status_code, err.code) == (422, 42210000)
    # The same side is fine.
    client.submit_order(
        MarketOrderRequest(symbol="BBB", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )


def test_a_bracket_on_a_symbol_already_held_is_refused(client, fake_alpaca):
    first = client.submit_order(market("entry"))
    fake_alpaca.fill(str(first.id), 100.0)
    err = refused(client.submit_order, bracket("again"))
    assert (err.status_code, err.code, err.message) == (422, 42210000, "bracket orders must be entry orders")


def test_a_brackets_exits_must_be_a_tick_beyond_the_price(client):
    err = refused(client.submit_order, bracket("low-tp", tp=100.0))
    assert (err.code, err.message) == (42210000, "take_profit.limit_price must be >= base_price + 0.01")
    err = refused(client.submit_order, bracket("high-sl", sl=99.995))
    assert err.message == "stop_loss.stop_price must be <= base_price - 0.01"


def test_bracket_legs_get_alpacas_ids_and_the_client_order_id_names_the_parent(client, fake_alpaca):
    o = client.submit_order(bracket("parent-1"))
    assert o.client_order_id == "parent-1"
    legs = o.legs
    assert len(legs) == 2 and all(leg.client_order_id != "parent-1" for leg in legs)
    assert all(not leg.client_order_id.startswith("parent-1") for leg in legs)
    # A used id stays used after a cancel; and 128 characters at most.
    client.cancel_order_by_id(o.id)
    err = refused(client.submit_order, market("parent-1"))
    assert (err.status_code, err.message) == (422, "client_order_id must be unique")
    err = refused(client.submit_order, market("x" * 129))
    assert err.status_code == 422 and "128" in err.message
    client.submit_order(market("y" * 128))


def test_after_the_entry_fills_the_take_profit_works_and_the_stop_is_held(client, fake_alpaca):
    # Alpaca keeps a bracket's stop leg `held` until it triggers; the take-profit goes `new`.
    o = client.submit_order(bracket("b"))
    fake_alpaca.fill(str(o.id), 100.0)
    tp, sl = client.get_order_by_id(o.id, GetOrderByIdRequest(nested=True)).legs
    assert (tp.type.value, tp.status.value) == ("limit", "new")
    assert (sl.type.value, sl.status.value) == ("stop", "held")


def test_replace_is_refused_while_the_order_is_accepted_or_pending(client, fake_alpaca):
    entry = client.submit_order(market("e", qty=5))
    err = refused(client.replace_order_by_id, entry.id, ReplaceOrderRequest(qty=6))
    assert (err.status_code, err.message) == (422, "cannot replace order in accepted status")
    fake_alpaca.fill(str(entry.id), 100.0)
    exit_ = client.submit_order(oco("x", qty=5))
    stop = exit_.legs[0]
    fake_alpaca.set_status(str(stop.id), "pending_replace")
    err = refused(client.replace_order_by_id, stop.id, ReplaceOrderRequest(stop_price=96.0))
    assert (err.status_code, err.message) == (422, "cannot replace order in pending_replace status")
    fake_alpaca.set_status(str(stop.id), "held")
    new = client.replace_order_by_id(stop.id, ReplaceOrderRequest(stop_price=96.0))
    assert Decimal(new.stop_price) == 96 and str(new.replaces) == str(stop.id)


def test_oco_is_an_exit_for_the_quantity_held(client, fake_alpaca):
    err = refused(client.submit_order, oco("nothing-held"))
    assert err.status_code == 403 and "insufficient qty available" in err.message
    entry = client.submit_order(market("e", qty=10))
    fake_alpaca.fill(str(entry.id), 100.0)
    a = client.submit_order(oco("x1", qty=4, tp=102.0))
    b = client.submit_order(oco("x2", qty=6, tp=105.0))  # a second OCO on the same side: not a wash trade
    err = refused(client.submit_order, oco("x3", qty=1))
    assert err.message == "insufficient qty available for order (requested: 1, available: 0)"
    assert (a.type.value, a.status.value, a.order_class.value) == ("limit", "new", "oco")
    assert [(leg.type.value, leg.status.value) for leg in a.legs] == [("stop", "held")]
    # The take-profit fills: its stop is canceled. Cancelling a stop cancels its take-profit.
    fake_alpaca.fill(str(a.id), 102.0)
    assert client.get_order_by_id(a.legs[0].id).status.value == "canceled"
    client.cancel_order_by_id(b.legs[0].id)
    assert client.get_order_by_id(b.id).status.value == "canceled"
    assert fake_alpaca.positions["AAA"][0] == 6


def test_rate_limit_answers_429_with_alpacas_headers(fake_alpaca):
    fake_alpaca.rate_limit = 3
    headers = {"APCA-API-KEY-ID": fake_alpaca.api_key, "APCA-API-SECRET-KEY": fake_alpaca.secret_key}
    answers = [requests.get(f"{fake_alpaca.url}/v2/account", headers=headers, timeout=2) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-Ratelimit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["X-Ratelimit-Limit"] == "3" for r in answers)
    assert int(answers[-1].headers["X-Ratelimit-Reset"]) > 0
    assert answers[-1].json()["message"] == "rate limit exceeded"
    fake_alpaca.rate_window_s = 0.0  # the window is over: counting starts again
    assert requests.get(f"{fake_alpaca.url}/v2/account", headers=headers, timeout=2).status_code == 200


def test_pattern_day_trader_protection_under_25k(client):
    with FakeAlpaca(cash=Decimal("20000")) as fake:
        fake.set_price("AAA", 100.0)
        c = TradingClient(fake.api_key, fake.secret_key, paper=True, url_override=fake.url)
        day = fake.clock().date()
        # Three round trips today: the fourth day trade would make the account a pattern day trader.
        for k in range(3):
            o = c.submit_order(market(f"in-{k}", qty=1))
            fake.fill(str(o.id), 100.0)
            o = c.submit_order(market(f"out-{k}", qty=1, side="sell"))
            fake.fill(str(o.id), 100.0)
        assert fake.day_trades == [day, day, day]
        assert c.get_account().daytrade_count == 3
        # A bracket is a buy and a sell that may both fill today: refused.
        err = refused(c.submit_order, bracket("b"))
        assert (err.status_code, err.code) == (403, 40310100)
        assert err.message == "trade denied due to pattern day trading protection"
        # So is closing a position opened today.
        o = c.submit_order(market("in-3", qty=1))
        fake.fill(str(o.id), 100.0)
        err = refused(c.submit_order, market("out-3", qty=1, side="sell"))
        assert (err.status_code, err.code) == (403, 40310100)
        # Day trades older than five business days no longer count.
        fake.day_trades = [date(2023, 12, 1)] * 3
        c.submit_order(market("out-4", qty=1, side="sell"))
    # With $25k or more the rule does not apply.
    client.submit_order(bracket("rich"))
