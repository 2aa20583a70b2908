"""The three-target exit plan under Alpaca's rules: the trader (brokers/trader.py) against the strict fake.

A decision's legs reach the broker as separate brackets (one take-profit each, the same stop). Alpaca
refuses the second one (its buy against the first one's open sell legs is a potential wash trade), so the
adapter sends each leg as a plain entry and, once the symbol's entries are done, one OCO exit per leg
(docs/trading.md section 7).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pandas as pd
import pytest

from brokers.alpaca import AlpacaPaperBroker
from brokers.base import BrokerUnavailable, OrderRejected, OrderRole, OrderStatus, submit_idempotent
from brokers.reconcile import bracket_state
from brokers.trader import BarMarket, GateVerdict, Recorder, Trader
from models import decision as dm
from models import engine as me
from models.brackets import Bracket, EntryType
from qtrader.settings import Settings
from tests.brokers.fake_alpaca import FakeAlpaca

T0 = pd.Timestamp("2024-01-02 14:30", tz="UTC")
STEP = pd.Timedelta(minutes=5)
HEALTH = me.HealthView(T0, 90.0, {"ensemble": 90.0, "regime": 90.0})
MODEL = me.ModelView("ensemble", 1, "none", accuracy=0.65, performance_score=60.0)


def _broker(fake: FakeAlpaca, **kw) -> AlpacaPaperBroker:
    return AlpacaPaperBroker(fake.api_key, fake.secret_key, fake.url, timeout_s=2.0, **kw)


def _bar(k: int, signals=()) -> BarMarket:
    return BarMarket(T0 + STEP * k, "5m", True, list(signals), {"AAA": 100.0}, HEALTH, MODEL)


def _signal(close=100.0, atr=2.0) -> dm.Signal:
    return dm.Signal("AAA", 1, "UNANIMOUS", 3, 3, "regime,selector,direction", 0.7, 0.7, 0.7, close, atr,
                     "NORMAL", {"regime": {"p_up": 0.6}})  # fmt: skip


def _slice(fake: FakeAlpaca, coid: str) -> dict:
    """The fake's entry order of the slice whose bracket had client order id ``coid``."""
    [o] = [o for o in fake.orders.values() if o["client_order_id"].startswith(coid + ".")]
    return o


def test_three_legs_enter_take_profit_one_move_to_breakeven_and_exit(fake_alpaca):
    fake = fake_alpaca
    fake.set_price("AAA", 100.0)
    broker = _broker(fake)
    trader = Trader(
        broker, me.EngineConfig.from_settings(Settings(), broker.name), lambda cols: GateVerdict(True)
    )
    rec = Recorder(broker.name)

    # Bar 1: one decision, three legs (34/33/33 shares; TP 102/105/108; stop 97).
    out = trader.step(_bar(1, [_signal()]))
    rec.bar(out, trader, "run")
    assert [d.reason_code for d in out.result.decisions] == ["accepted"]
    assert out.submitted == 3 and [s.order.qty for s in out.sent] == [34, 33, 33]
    coids = [s.planned.bracket.client_order_id for s in out.sent]
    assert [o.client_order_id for o in broker.get_orders("open")] == coids
    # The market fills the three entries by itself.
    for c in coids:
        fake.fill(_slice(fake, c)["id"], 100.2)

    # Bar 2: the broker sees the fills and places one OCO exit per leg.
    out = trader.step(_bar(2))
    rec.bar(out, trader, "run")
    assert [(f.role, f.qty) for f in out.fills] == [
        (OrderRole.entry, 34),
        (OrderRole.entry, 33),
        (OrderRole.entry, 33),
    ]
    ocos = [b for b in fake.posted_orders() if b.get("order_class") == "oco"]
    assert [
        (b["side"], b["qty"], b["take_profit"]["limit_price"], b["stop_loss"]["stop_price"]) for b in ocos
    ] == [
        ("sell", 34, 102.0, 97.0),
        ("sell", 33, 105.0, 97.0),
        ("sell", 33, 108.0, 97.0),
    ]
    slices = {o.client_order_id: o for o in broker.get_orders("open")}
    assert all(slices[c].take_profit.status is OrderStatus.new for c in coids)
    assert all(slices[c].stop_loss.status is OrderStatus.held for c in coids)
    assert out.stop_moves == [] and [p.qty for p in broker.positions()] == [100]

    # TP1 is reached.
    fake.fill(slices[coids[0]].take_profit.id, 102.0)

    # Bar 3: TP1's fill moves the other two stops to breakeven (the entries' average fill).
    out = trader.step(_bar(3))
    rec.bar(out, trader, "run")
    assert [(f.role, f.qty, f.price) for f in out.fills] == [(OrderRole.take_profit, 34, Decimal("102"))]
    assert [(d.move.bracket.entry_client_order_id, d.new_stop, d.move.rule) for d in out.stop_moves] == [
        (coids[1], 100.2, "breakeven_after_tp1"),
        (coids[2], 100.2, "breakeven_after_tp1"),
    ]
    slices = {o.client_order_id: o for o in broker.get_orders("open")}
    assert set(slices) == {coids[1], coids[2]}
    assert all(slices[c].stop_loss.stop_price == Decimal("100.2") for c in coids[1:])

    # TP2 fills; the third leg is stopped out at breakeven.
    fake.fill(slices[coids[1]].take_profit.id, 105.0)
    fake.fill(slices[coids[2]].stop_loss.id, 100.2)

    out = trader.step(_bar(4))
    rec.bar(out, trader, "run")
    assert broker.positions() == [] and broker.get_orders("open") == []
    done = {o.client_order_id: bracket_state(o) for o in broker.get_orders("all")}
    assert done == {
        coids[0]: "closed_take_profit",
        coids[1]: "closed_take_profit",
        coids[2]: "closed_stop_loss",
    }
    fills = rec.frames()["fills"]
    assert fills["entry_client_order_id"].tolist() == [*coids, coids[0], coids[1], coids[2]]
    assert fills["role"].tolist() == ["entry"] * 3 + ["take_profit", "take_profit", "stop_loss"]
    assert broker.account().cash == Decimal("100000") + 34 * Decimal("1.8") + 33 * Decimal("4.8")


def test_exits_wait_until_every_entry_of_the_symbol_is_done(fake_alpaca):
    # Limit entries fill at different times: an exit (a sell) placed while another entry (a buy) is open
    # would be a wash trade, so the adapter waits.
    fake_alpaca.set_price("AAA", 100.0)
    broker = _broker(fake_alpaca)
    legs = [Bracket("AAA", "buy", 5, 100.0, 100.0 + k, 97.0, f"qt-AAA-{k}", entry_type=EntryType.limit,
                    entry_limit=100.0) for k in (1, 2)]  # fmt: skip
    first, second = (broker.submit_bracket(b) for b in legs)
    fake_alpaca.fill(first.id, 100.0)
    assert [f.order_id for f in broker.advance_to(T0).fills] == [first.id]
    assert not [b for b in fake_alpaca.posted_orders() if b.get("order_class") == "oco"]
    assert broker.get_order(first.id).stop_loss.status is OrderStatus.held  # planned, not placed
    fake_alpaca.fill(second.id, 100.0)
    assert [f.order_id for f in broker.advance_to(T0 + STEP).fills] == [second.id]
    assert len([b for b in fake_alpaca.posted_orders() if b.get("order_class") == "oco"]) == 2
    assert {o.take_profit.limit_price for o in broker.get_orders("open")} == {Decimal("101"), Decimal("102")}


def test_a_restarted_process_recovers_the_plan_from_alpacas_orders(fake_alpaca):
    fake_alpaca.set_price("AAA", 100.0)
    first = _broker(fake_alpaca)
    o = first.submit_bracket(Bracket("AAA", "buy", 10, 100.0, 104.0, 96.5, "qt-AAA-r"))
    fake_alpaca.fill(o.id, 100.0)
    again = _broker(fake_alpaca)  # nothing in memory: the plan comes from the orders' client order ids
    again.advance_to(T0)
    view = again.get_order_by_client_id("qt-AAA-r")
    assert (view.take_profit.limit_price, view.stop_loss.stop_price) == (Decimal("104"), Decimal("96.5"))
    assert view.take_profit.status is OrderStatus.new and first.get_order(o.id) == view
    assert (
        submit_idempotent(again, Bracket("AAA", "buy", 10, 100.0, 104.0, 96.5, "qt-AAA-r")).created is False
    )


def test_replace_stop_refused_while_pending_is_an_order_rejected(fake_alpaca):
    fake_alpaca.set_price("AAA", 100.0)
    broker = _broker(fake_alpaca)
    o = broker.submit_bracket(Bracket("AAA", "buy", 10, 100.0, 104.0, 96.0, "qt-AAA-p"))
    fake_alpaca.fill(o.id, 100.0)
    broker.advance_to(T0)
    stop = broker.get_order(o.id).stop_loss
    fake_alpaca.set_status(stop.id, "pending_replace")
    with pytest.raises(OrderRejected, match="cannot replace order in pending_replace status"):
        broker.replace_stop(stop.id, 99.0)
    fake_alpaca.set_status(stop.id, "held")
    new = broker.replace_stop(stop.id, 99.0)
    assert new.stop_price == Decimal("99") and new.replaces == stop.id and new.parent_id == o.id


def test_rate_limit_exhausted_is_a_clear_transient_error():
    with FakeAlpaca(rate_limit=2) as fake:
        broker = _broker(fake, rate_limit_retries=2, rate_limit_wait_s=0.01)
        broker.account()
        broker.account()
        t = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=r"rate limit .*429.*resets at \d\d:\d\d:\d\d UTC"):
            broker.positions()
        assert time.monotonic() - t < 1.0  # not alpaca-py's default 3 x 3 s
        assert [p for m, p, _ in fake.requests].count("/v2/positions") == 3  # the first try and 2 retries


def test_pattern_day_trader_protection_is_a_clear_rejection_before_anything_is_sent():
    with FakeAlpaca(cash=Decimal("20000")) as fake:
        fake.set_price("AAA", 100.0)
        today = fake.clock().date()
        fake.day_trades = [today, today, today]
        broker = _broker(fake)
        with pytest.raises(OrderRejected, match="pattern day trading protection") as info:
            broker.submit_bracket(Bracket("AAA", "buy", 10, 100.0, 104.0, 96.0, "qt-AAA-pdt"))
        assert info.value.code == 40310100
        # Nothing went out: an entry whose exits Alpaca would refuse today would be left unprotected.
        assert fake.posted_orders() == []


def test_an_exit_alpaca_refuses_leaves_the_plan_visible_and_is_logged(caplog):
    with FakeAlpaca(cash=Decimal("20000")) as fake:
        fake.set_price("AAA", 100.0)
        broker = _broker(fake)
        o = broker.submit_bracket(Bracket("AAA", "buy", 10, 100.0, 104.0, 96.0, "qt-AAA-late"))
        fake.fill(o.id, 100.0)
        today = fake.clock().date()
        fake.day_trades = [today, today, today]  # reached between the entry and its exit
        caplog.set_level(logging.ERROR, logger="brokers.alpaca")
        broker.advance_to(T0)
        assert "exits of qt-AAA-late not placed" in caplog.text and "pattern day trading" in caplog.text
        view = broker.get_order(o.id)
        assert view.stop_loss.status is OrderStatus.held and view.stop_loss.stop_price == Decimal("96")
        with pytest.raises(OrderRejected, match="not placed"):
            broker.replace_stop(view.stop_loss.id, 99.0)
        fake.day_trades = []
        broker.advance_to(T0 + STEP)  # the next bar tries again
        assert broker.get_order(o.id).take_profit.status is OrderStatus.new


def test_client_order_id_too_long_for_the_plan_is_refused_before_sending(fake_alpaca):
    fake_alpaca.set_price("AAA", 100.0)
    broker = _broker(fake_alpaca)
    with pytest.raises(OrderRejected, match="client_order_id"):
        broker.submit_bracket(Bracket("AAA", "buy", 1, 100.0, 104.0, 96.0, "c" * 120))
    assert fake_alpaca.posted_orders() == []
