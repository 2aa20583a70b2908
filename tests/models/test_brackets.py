from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest

from models.brackets import (
    MAX_CLIENT_ORDER_ID,
    Bracket,
    EntryType,
    InvalidBracket,
    LegQty,
    Side,
    child_client_order_id,
    client_order_id,
    round_exit,
    round_to_tick,
    split_quantity,
)

TS = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def _bracket(**kw) -> Bracket:
    args = dict(symbol="AAPL", side="buy", qty=10, entry_ref=100.0, take_profit=102.0, stop=98.5,
                client_order_id="cid-1")  # fmt: skip
    args.update(kw)
    return Bracket(**args)


def test_valid_buy_and_sell():
    b = _bracket()
    assert b.side is Side.buy and b.exit_side is Side.sell
    s = _bracket(side="sell", take_profit=98.0, stop=101.5)
    assert s.side is Side.sell and s.exit_side is Side.buy


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(take_profit=99.0), "take_profit"),  # buy take-profit below the entry
        (dict(take_profit=100.0), "take_profit"),  # not a tick away
        (dict(take_profit=100.009), "take_profit"),
        (dict(stop=100.5), "stop"),  # buy stop above the entry
        (dict(stop=99.995), "stop"),
        (dict(side="sell", take_profit=102.0, stop=98.0), "take_profit"),  # buy prices on a sell
        (dict(side="sell", take_profit=98.0, stop=99.0), "stop"),
        (dict(qty=0), "whole shares"),
        (dict(qty=-3), "whole shares"),
        (dict(qty=2.5), "whole shares"),
        (dict(qty=True), "whole shares"),
        (dict(stop=float("nan")), "finite"),
        (dict(entry_ref=0.0), "finite price > 0"),
        (dict(client_order_id=""), "client_order_id"),
        (dict(client_order_id="x" * 129), "client_order_id"),
        (dict(time_in_force="ioc"), "day or gtc"),
        (dict(entry_type=EntryType.limit), "entry_limit"),
    ],
)
def test_impossible_brackets_are_refused(kw, match):
    with pytest.raises(InvalidBracket, match=match):
        _bracket(**kw)


def test_exactly_one_tick_is_enough():
    _bracket(take_profit=100.01, stop=99.99)
    _bracket(side="sell", take_profit=99.99, stop=100.01)


def test_client_order_id_is_deterministic_and_zone_independent():
    a = client_order_id("qtrader", "AAPL", TS, "tp1")
    b = client_order_id("qtrader", "AAPL", pd.Timestamp(TS).tz_convert("America/New_York"), "tp1")
    c = client_order_id("qtrader", "AAPL", TS.astimezone(timezone(timedelta(hours=-5))), 1)
    assert a == b == c
    assert a.startswith("qtrader-AAPL-20240102T143000Z-tp1-")
    assert client_order_id("qtrader", "AAPL", TS, "tp2") != a
    assert client_order_id("qtrader", "AAPL", TS + timedelta(minutes=5), "tp1") != a
    assert client_order_id("other", "AAPL", TS, "tp1") != a
    # The hash is a fixed function of the key: the same id on every machine and every run.
    assert a == "qtrader-AAPL-20240102T143000Z-tp1-" + a.rsplit("-", 1)[1]
    assert len(a.rsplit("-", 1)[1]) == 12


def test_client_order_id_stays_within_128_characters():
    long = client_order_id("s" * 200, "BRK.B", TS, "tp3")
    assert len(long) <= MAX_CLIENT_ORDER_ID
    assert long != client_order_id("s" * 199, "BRK.B", TS, "tp3")  # the hash keeps long keys apart
    assert " " not in client_order_id("my strategy", "A B", TS, 1)


def test_child_ids_derive_from_the_parent():
    b = _bracket(client_order_id="parent")
    assert b.child_client_order_ids == {"take_profit": "parent.tp", "stop_loss": "parent.sl"}
    long = child_client_order_id("p" * 128, "sl")
    assert len(long) <= MAX_CLIENT_ORDER_ID and long.endswith(".sl")


@pytest.mark.parametrize(
    "qty, weights, expected",
    [
        (30, [1, 1, 1], [(1, 10), (2, 10), (3, 10)]),
        (10, [1, 1, 1], [(1, 4), (2, 3), (3, 3)]),
        (2, [1, 1, 1], [(1, 1), (2, 1)]),
        (1, [1, 1, 1], [(1, 1)]),
        (7, [0.5, 0.3, 0.2], [(1, 4), (2, 2), (3, 1)]),
        (5, [1, 0, 1], [(1, 3), (3, 2)]),
        (9, [1], [(1, 9)]),
    ],
)
def test_split_quantity(qty, weights, expected):
    legs = split_quantity(qty, weights)
    assert legs == [LegQty(*e) for e in expected]
    assert sum(q for _, q in legs) == qty and all(q > 0 for _, q in legs)


@pytest.mark.parametrize("qty, weights", [(0, [1]), (3, []), (3, [1, 1, 1, 1]), (3, [0, 0]), (3, [-1, 2])])
def test_split_quantity_refuses(qty, weights):
    with pytest.raises(ValueError):
        split_quantity(qty, weights)


def test_round_to_tick():
    assert round_to_tick(100.123) == Decimal("100.12")
    assert round_to_tick(100.125) == Decimal("100.12")  # half-even
    assert round_to_tick(100.121, mode="up") == Decimal("100.13")
    assert round_to_tick(100.129, mode="down") == Decimal("100.12")
    assert round_to_tick(0.123456) == Decimal("0.1235")  # sub-dollar tick


def test_edge_rounding_keeps_a_bracket_valid():
    b = _bracket(entry_ref=100.0, take_profit=100.011, stop=99.989)
    tp, sl = b.edge_prices()
    assert (tp, sl) == (Decimal("100.02"), Decimal("99.98"))
    s = _bracket(side="sell", entry_ref=100.0, take_profit=99.989, stop=100.011)
    assert s.edge_prices() == (Decimal("99.98"), Decimal("100.02"))
    assert round_exit(101.234, "buy", "stop_loss") == Decimal("101.23")
