"""Fixtures for the broker contract suite: the same test drives the local broker and the Alpaca one.

A ``Market`` wraps a broker with the few moves a test needs (set a price, fill an entry, reach a
take-profit or a stop). For the local broker these are bars written to its warehouse and an
``advance_to``; for Alpaca they are commands to the fake server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pandas as pd
import pytest

from brokers.alpaca import AlpacaPaperBroker
from brokers.base import Broker, Order
from tests.brokers.fake_alpaca import FakeAlpaca
from warehouse.db import insert_frame, transaction
from warehouse.paper import paper_broker

T0 = pd.Timestamp("2024-01-02 14:30", tz="UTC")
STEP = pd.Timedelta(minutes=5)
START_CASH = Decimal("100000")


def write_bars(path, rows: list[tuple], interval: str = "5m") -> None:
    """rows: (symbol, ts, open, high, low, close)."""
    frame = pd.DataFrame(rows, columns=["symbol", "ts", "open", "high", "low", "close"]).assign(
        interval=interval, volume=1e4, source="test", run_id="test", ingested_at=T0
    )
    with transaction(path) as con:
        insert_frame(con, "bars", frame, replace=True)


@pytest.fixture
def fake_alpaca():
    with FakeAlpaca(cash=START_CASH, hang_s=3.0) as fake:
        yield fake


@dataclass
class Market:
    kind: str
    broker: Broker
    fake: FakeAlpaca | None = None
    path: object = None
    k: int = 0
    last: dict[str, float] = field(default_factory=dict)

    def _bar(self, symbol: str, o: float, h: float, lo: float, c: float) -> None:
        self.k += 1
        ts = T0 + STEP * self.k
        write_bars(self.path, [(symbol, ts, o, h, lo, c)])
        self.broker.advance_to(ts)
        self.last[symbol] = c

    def set_price(self, symbol: str, price: float) -> None:
        if self.fake:
            self.fake.set_price(symbol, price)
        else:
            self._bar(symbol, price, price, price, price)

    def fill_entry(self, order: Order, price: float) -> None:
        if self.fake:
            self.fake.fill(order.id, price)
        else:
            self._bar(order.symbol, price, price, price, price)

    def hit_take_profit(self, order: Order) -> None:
        tp = float(order.take_profit.limit_price)
        if self.fake:
            self.fake.fill(order.take_profit.id, tp)
        else:
            p = self.last[order.symbol]
            self._bar(order.symbol, p, max(p, tp), min(p, tp), tp)

    def hit_stop(self, order: Order) -> None:
        sl = float(order.stop_loss.stop_price)
        if self.fake:
            self.fake.fill(order.stop_loss.id, sl)
        else:
            p = self.last[order.symbol]
            self._bar(order.symbol, p, max(p, sl), min(p, sl), sl)


@pytest.fixture(params=["local", "alpaca"])
def market(request, tmp_path):
    if request.param == "local":
        path = tmp_path / "warehouse.duckdb"
        broker = paper_broker(path, START_CASH, interval="5m")
        yield Market("local", broker, path=path)
    else:
        fake = request.getfixturevalue("fake_alpaca")
        broker = AlpacaPaperBroker(fake.api_key, fake.secret_key, url_override=fake.url, timeout_s=1.0)
        yield Market("alpaca", broker, fake=fake)
