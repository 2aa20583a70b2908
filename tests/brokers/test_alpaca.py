"""Alpaca-specific behaviour: the request alpaca-py sends, rounding at the edge, keys and their secrecy."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from brokers.alpaca import AlpacaKeys, AlpacaPaperBroker, alpaca_keys_from_env_or_block
from brokers.base import BrokerError
from models.brackets import Bracket, EntryType
from qtrader.settings import Settings

KEY, SECRET = "PKTESTKEY1234567890", "s3cr3t-alpaca-secret-value"


@pytest.fixture
def fake(fake_alpaca):
    fake_alpaca.api_key, fake_alpaca.secret_key = KEY, SECRET
    fake_alpaca.set_price("AAPL", 190.0)
    return fake_alpaca


def test_requests_entry_then_oco_exit_and_edge_rounding(fake):
    broker = AlpacaPaperBroker(KEY, SECRET, fake.url, timeout_s=1.0)
    o = broker.submit_bracket(Bracket("AAPL", "buy", 7, 190.0, 193.123, 187.456, "qt-AAPL-x"))
    [entry] = fake.posted_orders()
    assert entry == {
        "symbol": "AAPL",
        "qty": 7,
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        # The bracket's id names the entry, followed by its exits (rounded away from the entry).
        "client_order_id": "qt-AAPL-x.tp193.13.sl187.45",
    }
    fake.fill(o.id, 190.0)
    broker.advance_to("2024-01-02T15:00:00Z")
    [_, exit_] = fake.posted_orders()
    assert exit_ == {
        "symbol": "AAPL",
        "qty": 7,
        "side": "sell",
        "type": "limit",
        "time_in_force": "day",
        "order_class": "oco",
        "client_order_id": "qt-AAPL-x.tp193.13.sl187.45.x",
        "take_profit": {"limit_price": 193.13},
        "stop_loss": {"stop_price": 187.45},
    }
    view = broker.get_order(o.id)
    assert view.client_order_id == "qt-AAPL-x"
    assert view.take_profit.client_order_id == "qt-AAPL-x.tp193.13.sl187.45.x"
    assert not view.stop_loss.client_order_id.startswith("qt-")  # a leg carries Alpaca's own id


def test_limit_entry_request(fake):
    broker = AlpacaPaperBroker(KEY, SECRET, fake.url, timeout_s=1.0)
    b = Bracket(
        "AAPL", "buy", 1, 190.0, 195.0, 185.0, "qt-l", entry_type=EntryType.limit, entry_limit=189.994
    )
    broker.submit_bracket(b)
    [body] = fake.posted_orders()
    assert body["type"] == "limit" and body["limit_price"] == 189.99


def test_keys_never_show_in_logs_repr_or_errors(fake, caplog):
    caplog.set_level(logging.DEBUG)
    broker = AlpacaPaperBroker(KEY, SECRET, fake.url, timeout_s=0.5)
    broker.submit_bracket(Bracket("AAPL", "buy", 1, 190.0, 195.0, 185.0, "qt-k"))
    broker.account()
    errors = []
    for kind in ("500", "reject", "hang"):
        fake.fail_next(kind)
        with pytest.raises(BrokerError) as info:
            broker.submit_bracket(Bracket("AAPL", "buy", 1, 190.0, 195.0, 185.0, f"qt-{kind}"))
        errors.append(f"{info.value!s} {info.value!r}")
    bad = AlpacaPaperBroker(KEY, "wrong-" + SECRET, fake.url, timeout_s=0.5)
    with pytest.raises(BrokerError, match="401") as info:
        bad.account()
    errors.append(str(info.value))
    text = caplog.text + repr(broker) + repr(bad) + str(vars(broker)) + " ".join(errors)
    assert "alpaca" in caplog.text.lower()  # something was logged
    assert KEY not in text and SECRET not in text
    keys = AlpacaKeys(KEY, SECRET, "environment")
    assert KEY not in repr(keys) and SECRET not in str(keys)


def test_missing_keys_are_refused():
    with pytest.raises(BrokerError, match="APCA_API_KEY_ID"):
        AlpacaPaperBroker("", "")


def test_keys_from_environment_settings_or_prefect_blocks():
    env = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    k = alpaca_keys_from_env_or_block(env=env, load_secret=lambda name: pytest.fail("blocks not needed"))
    assert (k.api_key, k.secret_key, k.source) == (KEY, SECRET, "environment")

    s = Settings(alpaca_api_key=SecretStr("a"), alpaca_secret_key=SecretStr("b"))
    k = alpaca_keys_from_env_or_block(env={}, settings=s, load_secret=lambda name: pytest.fail("not needed"))
    assert (k.api_key, k.secret_key, k.source) == ("a", "b", "settings")

    blocks = {"alpaca-api-key-id": "from-block", "alpaca-api-secret-key": "block-secret"}
    k = alpaca_keys_from_env_or_block(env={}, load_secret=blocks.__getitem__)
    assert (k.api_key, k.secret_key, k.source) == ("from-block", "block-secret", "prefect-secret-block")

    with pytest.raises(BrokerError, match="no Alpaca keys") as info:
        alpaca_keys_from_env_or_block(env={"APCA_API_KEY_ID": KEY}, load_secret={}.__getitem__)
    assert KEY not in str(info.value)


def test_from_settings(fake):
    s = Settings(alpaca={"url_override": fake.url, "timeout_s": 1.0})
    broker = AlpacaPaperBroker.from_settings(s, AlpacaKeys(KEY, SECRET))
    assert broker.account().status == "ACTIVE"
