"""What the backtest's replay builds of each bar once instead of bar by bar gives the same values as the
per-bar code it replaced (the bar's market-open flag, its prices, the broker's bar arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brokers.simulated import BarBatch
from tasks.backtest import bar_prices, market_opens
from tasks.decide import market_open
from warehouse.backtest import History


@pytest.mark.parametrize(
    ("interval", "times"),
    [
        # sessions, a weekend, a holiday (2024-01-15) and a daily stamp off midnight
        ("1d", ["2024-01-11", "2024-01-12", "2024-01-13", "2024-01-15", "2024-01-16", "2024-01-16 14:30"]),
        # before the open, the first bar, the last bar of an early close (2024-11-29 closes 18:00), after
        # it, the last bar of a full session and the close
        ("1h", ["2024-11-29 13:30", "2024-11-29 14:30", "2024-11-29 17:00", "2024-11-29 18:00",
                "2024-12-02 20:30", "2024-12-02 21:00"]),
    ],
)  # fmt: skip
def test_market_opens_is_market_open_bar_by_bar(interval, times):
    idx = pd.DatetimeIndex(pd.to_datetime(times, utc=True, format="ISO8601"))
    want = {t: market_open(t, interval, "XNYS") for t in idx}
    assert len(set(want.values())) == 2  # both answers occur
    assert market_opens(idx, interval, "XNYS") == want


def test_bar_prices_are_the_per_bar_dict():
    feats = pd.DataFrame(
        {
            "symbol": pd.array(["B", "A", "C"], dtype="string[pyarrow]"),
            "bar_close": [10.5, np.nan, 7],
            "atr_14": [1.0, 2.0, 3.0],
        }
    )
    want = dict(zip(feats["symbol"].astype(str), feats["bar_close"].astype(float), strict=True))
    got = bar_prices(feats)
    assert list(got) == list(want) and all(type(k) is str for k in got)
    assert [type(v) for v in got.values()] == [float] * 3
    np.testing.assert_array_equal(list(got.values()), list(want.values()))


def test_history_batch_is_each_bar_times_frame_as_arrays():
    ts = pd.to_datetime(["2024-01-03", "2024-01-02", "2024-01-03", "2024-01-02", "2024-01-04"], utc=True)
    bars = pd.DataFrame(
        {
            "symbol": ["B", "A", "A", "B", "A"],
            "interval": "1d",
            "ts": ts,
            "open": [1.0, 2.0, 3.0, 4.0, 5.0],
            "high": [1.5, 2.5, 3.5, 4.5, 5.5],
            "low": [0.5, 1.5, 2.5, 3.5, 4.5],
            "close": [1.2, 2.2, 3.2, 4.2, 5.2],
        },
        index=[40, 10, 30, 20, 0],  # labels that are not positions, rows not in time order
    )
    history = History(bars, bars[["symbol", "interval", "ts"]])
    for t in history.times:
        got, want = history.batch(t), BarBatch.of(history.at(t)[0])
        for field in ("symbol", "ts", "open", "high", "low", "close"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
            assert getattr(got, field).dtype == getattr(want, field).dtype
    with pytest.raises(KeyError):
        history.batch(pd.Timestamp("2024-01-05", tz="UTC"))


def test_snapshot_prices_are_made_once_and_equal_bar_prices():
    from models import engine as me
    from tasks.backtest import Snapshot

    feats = pd.DataFrame({"symbol": ["A", "B"], "bar_close": [1.5, 2.5]})
    snap = Snapshot({}, me.HealthView(None, None, {}), None, feats)
    first = snap.bar_prices()
    assert first == bar_prices(feats) and snap.bar_prices() is first


@pytest.mark.parametrize(
    "values",
    [
        np.array(
            ["buy", None, np.nan, pd.NaT, pd.NA, "sell", pd.Timestamp("2024-01-02", tz="UTC")], dtype=object
        ),
        np.array(["2024-01-02", "NaT"], dtype="datetime64[ns]"),
        np.array([1, 2, 3], dtype=np.int64),
        np.array([True, False]),
        np.array([1.0, np.nan]),
        np.array([], dtype=object),
    ],
)
def test_order_gate_missing_is_pandas_isna_of_a_series(values):
    from expectations.frame_gate import _missing

    got = _missing(values)
    assert isinstance(got, np.ndarray) and got.dtype == bool
    np.testing.assert_array_equal(got, pd.isna(pd.Series(values)).to_numpy())


@pytest.mark.parametrize(
    "ts",
    [
        pd.Timestamp("2024-01-02 15:30:00.123456", tz="UTC"),
        pd.Timestamp("2024-01-02 15:30"),  # naive: read as UTC
        pd.Timestamp("2024-01-02 10:30", tz="America/New_York"),
        pd.Timestamp("2024-01-02 15:30", tz="UTC").to_pydatetime(),
        "2024-01-02T15:30:00+01:00",
        None,
    ],
)
def test_broker_times_as_datetimes_as_before(ts):
    from brokers.simulated import _py, utc

    got, want = _py(ts), None if ts is None else utc(ts).to_pydatetime()
    assert got == want and type(got) is type(want)
    assert getattr(got, "tzinfo", None) is getattr(want, "tzinfo", None)


def test_order_views_carry_the_enums_of_their_values():
    from decimal import Decimal

    from brokers.base import OrderRole, OrderStatus, OrderType
    from brokers.simulated import PaperOrder, SimulatedBroker
    from models.brackets import Side

    t = pd.Timestamp("2024-01-02", tz="UTC")
    for side in ("buy", "sell"):
        for role, kind in (
            ("entry", "market"),
            ("entry", "limit"),
            ("take_profit", "limit"),
            ("stop_loss", "stop"),
        ):
            for status in ("new", "held", "filled", "canceled", "replaced"):
                o = PaperOrder("id", "coid", None, "A", side, role, kind, 3, Decimal("1.5"), None, "day", status,
                               t, t.to_pydatetime(), t.to_pydatetime())  # fmt: skip
                view = SimulatedBroker._order(None, o)
                assert (view.side, view.type, view.role, view.status) == (
                    Side(side),
                    OrderType(kind),
                    OrderRole(role),
                    OrderStatus(status),
                )
                assert view.submitted_at == t.to_pydatetime()
