"""YFinanceSource against a fake Yahoo at the HTTP layer: the real yfinance parsing runs, nothing leaves."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import yfinance as yf

from sources.base import BAR_COLUMNS, FetchRequest, MarketDataSource, SourceError, TransientSourceError
from sources.yfinance_source import UNKNOWN_SYMBOL, YFinanceSource
from tests.sources.fake_yahoo import DATA_DIR, FakeYahoo, UnexpectedRequest

NOW = pd.Timestamp("2024-03-12 00:00", tz="UTC")
DAILY = FetchRequest(
    ["AAPL", "MSFT", "BHP.AX"],
    "1d",
    pd.Timestamp("2024-01-02", tz="UTC"),
    pd.Timestamp("2024-01-05", tz="UTC"),
)


@pytest.fixture(scope="session")
def yf_cache_dir(tmp_path_factory):
    # yfinance's time-zone and cookie caches are sqlite files under $HOME by default. Their managers are
    # module-level and keep the first database they open, so point them at one temporary folder for the
    # whole test session, before any download.
    path = tmp_path_factory.mktemp("yfinance-cache")
    yf.set_tz_cache_location(str(path))
    return path


@pytest.fixture
def fake(yf_cache_dir, monkeypatch):
    f = FakeYahoo()

    def refuse(*args, **kwargs):
        msg = f"network access attempted outside the fake: {args[1:]} {kwargs.get('url', '')}"
        f.unexpected.append(msg)
        raise UnexpectedRequest(msg)

    # Belt and braces: the fake adapter never opens sockets, and curl_cffi (yfinance's default transport)
    # must not be used at all.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    import curl_cffi.requests

    monkeypatch.setattr(curl_cffi.requests.Session, "request", refuse)
    yield f
    assert f.unexpected == [], f.unexpected


class SleepRecorder:
    """The injected sleep: records delays and can heal the fake, so the retry round succeeds."""

    def __init__(self, fake: FakeYahoo | None = None, heal: list[str] | None = None):
        self.calls: list[float] = []
        self.marks: list[int] = []
        self.fake, self.heal = fake, heal or []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.fake is not None:
            self.marks.append(len(self.fake.bar_requests()))
            for s in self.heal:
                self.fake.heal(s)


def source(fake: FakeYahoo, sleep=None, **kw) -> YFinanceSource:
    return YFinanceSource(session=fake.session(), sleep=sleep or SleepRecorder(), now=NOW, **kw)


def rows(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return bars[bars["symbol"] == symbol].reset_index(drop=True)


def utc_days(*days: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(d, tz="UTC") for d in days]


def add_msft(fake: FakeYahoo) -> None:
    fake.add_daily(
        "MSFT",
        [
            ("2024-01-02", 373.86, 375.90, 366.77, 370.87, 370.87, 25258600),
            # Yahoo sometimes sends a row of nulls for a day: it must reach the gate.
            ("2024-01-03", None, None, None, None, None, None),
            ("2024-01-04", 370.67, 373.10, 367.17, 367.94, 367.94, 20901500),
            ("2024-01-05", 368.97, 372.06, 366.50, 367.75, 367.75, 20987000),
        ],
    )


def test_is_a_market_data_source():
    assert isinstance(YFinanceSource(session=None), MarketDataSource)
    assert YFinanceSource.name == "yfinance"


def test_daily_batch_of_three(fake):
    fake.add_recorded("AAPL", DATA_DIR / "chart_AAPL_1d_2024-01-02_2024-01-05.json")
    add_msft(fake)
    # Sydney: the 10:00 open is the previous day in UTC; the bar still belongs to the local session date.
    # No bar on 2024-01-04, so the joined frame has an all-NaN BHP.AX row there that must not show up.
    fake.add_daily(
        "BHP.AX",
        [
            ("2024-01-02", 50.0, 51.0, 49.0, 50.5, 25.25, 1000),
            ("2024-01-03", 51.0, 52.0, 50.0, 51.5, 25.75, 2000),
            ("2024-01-05", 52.0, 53.0, 51.0, 52.5, 52.5, 3000),
        ],
        tz="Australia/Sydney",
        open_time="10:00",
    )

    res = source(fake).fetch(DAILY)

    assert res.failures == {}
    assert list(res.bars.columns) == BAR_COLUMNS
    assert str(res.bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert set(res.bars["interval"]) == {"1d"}

    aapl = rows(res.bars, "AAPL")
    assert list(aapl["ts"]) == utc_days("2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05")
    # auto_adjust: every price scaled by adjclose/close; close becomes the adjusted close.
    factor = 184.532990 / 185.64
    assert aapl.loc[0, "close"] == pytest.approx(184.532990)
    assert aapl.loc[0, "open"] == pytest.approx(187.15 * factor)
    assert aapl.loc[0, "high"] == pytest.approx(188.44 * factor)
    assert aapl.loc[0, "low"] == pytest.approx(183.89 * factor)
    assert aapl.loc[0, "volume"] == 82488700

    msft = rows(res.bars, "MSFT")
    assert list(msft["ts"]) == utc_days("2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05")
    assert msft.loc[1, ["open", "high", "low", "close"]].isna().all()  # Yahoo's null row kept
    assert msft.loc[2, "close"] == pytest.approx(367.94)

    bhp = rows(res.bars, "BHP.AX")
    assert list(bhp["ts"]) == utc_days("2024-01-02", "2024-01-03", "2024-01-05")
    assert bhp["close"].tolist() == pytest.approx([25.25, 25.75, 52.5])
    assert bhp.loc[0, "open"] == pytest.approx(25.0)

    # One bars request per symbol, for Yahoo's exclusive end the day after the inclusive request end.
    reqs = fake.bar_requests()
    assert sorted(s for s, _ in reqs) == ["AAPL", "BHP.AX", "MSFT"]
    p = dict(reqs)["MSFT"]
    assert p["interval"] == "1d"
    assert int(p["period2"]) == int(pd.Timestamp("2024-01-06", tz="America/New_York").timestamp())


def test_batches_of_batch_size(fake):
    add_msft(fake)
    fake.add_recorded("AAPL", DATA_DIR / "chart_AAPL_1d_2024-01-02_2024-01-05.json")
    calls: list[list[str]] = []
    real = yf.download

    def spy(tickers, **kw):
        calls.append(list(tickers))
        return real(tickers, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(yf, "download", spy)
        res = source(fake, batch_size=1).fetch(FetchRequest(["AAPL", "msft"], "1d", DAILY.start, DAILY.end))
    assert calls == [["AAPL"], ["MSFT"]]
    assert list(dict.fromkeys(res.bars["symbol"])) == ["AAPL", "MSFT"]


def test_intraday_5m_stamped_at_bar_start_in_utc(fake):
    bars = []
    for day in ("2024-03-08", "2024-03-11"):  # EST, then EDT after the 10 March switch
        for i, minute in enumerate(("09:30", "09:35", "09:40")):
            p = 100.0 + i
            bars.append((f"{day} {minute}", p, p + 0.5, p - 0.5, p + 0.25, 1000 * (i + 1)))
    # Yahoo sometimes returns a bar after the close although none was asked for: yfinance drops it using
    # meta.tradingPeriods.
    bars.append(("2024-03-11 16:00", 1.0, 1.0, 1.0, 1.0, 5))
    fake.add_intraday("AAPL", "5m", bars)

    req = FetchRequest(
        ["AAPL"], "5m", pd.Timestamp("2024-03-08 14:30", tz="UTC"), pd.Timestamp("2024-03-11 20:00", tz="UTC")
    )
    res = source(fake).fetch(req)

    assert res.failures == {}
    got = rows(res.bars, "AAPL")
    assert list(got["ts"]) == [
        pd.Timestamp(t, tz="UTC")
        for t in (
            "2024-03-08 14:30", "2024-03-08 14:35", "2024-03-08 14:40",
            "2024-03-11 13:30", "2024-03-11 13:35", "2024-03-11 13:40",
        )
    ]  # fmt: skip
    assert got["open"].tolist() == [100.0, 101.0, 102.0] * 2
    assert got["volume"].tolist() == [1000.0, 2000.0, 3000.0] * 2
    assert set(got["interval"]) == {"5m"}
    ((sym, params),) = fake.bar_requests()
    assert params["interval"] == "5m"
    assert int(params["period1"]) == int(req.start.timestamp())


def test_1h_maps_to_yahoo_60m(fake):
    fake.add_intraday(
        "AAPL",
        "60m",
        [("2024-03-11 09:30", 1.0, 2.0, 0.5, 1.5, 10), ("2024-03-11 10:30", 1.5, 2.5, 1.0, 2.0, 20)],
    )
    req = FetchRequest(
        ["AAPL"], "1h", pd.Timestamp("2024-03-11", tz="UTC"), pd.Timestamp("2024-03-11 23:00", tz="UTC")
    )
    res = source(fake).fetch(req)
    assert res.failures == {}
    assert list(res.bars["ts"]) == [
        pd.Timestamp("2024-03-11 13:30", tz="UTC"),
        pd.Timestamp("2024-03-11 14:30", tz="UTC"),
    ]
    assert set(res.bars["interval"]) == {"1h"}
    assert fake.bar_requests()[0][1]["interval"] == "60m"


def test_unknown_ticker_reported_others_load(fake):
    fake.add_recorded("AAPL", DATA_DIR / "chart_AAPL_1d_2024-01-02_2024-01-05.json")
    add_msft(fake)
    sleep = SleepRecorder()
    res = source(fake, sleep=sleep).fetch(
        FetchRequest(["AAPL", "NOPE", "MSFT"], "1d", DAILY.start, DAILY.end)
    )

    assert res.failures == {"NOPE": UNKNOWN_SYMBOL}
    assert sorted(set(res.bars["symbol"])) == ["AAPL", "MSFT"]
    assert len(res.bars) == 8
    assert sleep.calls == []  # a missing symbol is not worth retrying
    # The fake really answered Yahoo's 404 for it.
    assert any(p.endswith("/NOPE") and h == "query2.finance.yahoo.com" for _, h, p, _ in fake.log)


def test_empty_answer_reported_for_all(fake):
    add_msft(fake)
    fake.add_recorded("AAPL", DATA_DIR / "chart_AAPL_1d_2024-01-02_2024-01-05.json")
    fake.recorded["AAPL"] = {
        "chart": {
            "result": [
                {
                    "meta": fake.recorded["AAPL"]["chart"]["result"][0]["meta"],
                    "indicators": {"quote": [{}], "adjclose": [{}]},
                }
            ],
            "error": None,
        }
    }
    req = FetchRequest(
        ["AAPL", "MSFT"], "1d", pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-02", tz="UTC")
    )
    sleep = SleepRecorder()

    res = source(fake, sleep=sleep).fetch(req)

    assert res.bars.empty and list(res.bars.columns) == BAR_COLUMNS
    assert res.failures == {
        "AAPL": "empty download for window 2024-02-01..2024-02-02",
        "MSFT": "empty download for window 2024-02-01..2024-02-02",
    }
    assert sleep.calls == []


def test_all_nan_ticker_is_a_failure(fake):
    add_msft(fake)
    fake.add_daily(
        "NANS",
        [("2024-01-02", None, None, None, None, None, 100), ("2024-01-03", None, None, None, None, None, 0)],
    )
    res = source(fake).fetch(FetchRequest(["MSFT", "NANS"], "1d", DAILY.start, DAILY.end))
    assert res.failures == {
        "NANS": "empty download for window 2024-01-02..2024-01-05: all 2 rows have NaN prices"
    }
    assert set(res.bars["symbol"]) == {"MSFT"}


@pytest.mark.parametrize("kind", ["500", "conn"])
def test_transient_error_retried_then_succeeds(fake, kind):
    fake.add_recorded("AAPL", DATA_DIR / "chart_AAPL_1d_2024-01-02_2024-01-05.json")
    add_msft(fake)
    fake.fail("MSFT", kind)
    sleep = SleepRecorder(fake, heal=["MSFT"])

    res = source(fake, sleep=sleep, retries=3, retry_delays_s=[1.0, 2.0, 4.0]).fetch(
        FetchRequest(["AAPL", "MSFT"], "1d", DAILY.start, DAILY.end)
    )

    assert sleep.calls == [1.0]
    assert res.failures == {}
    assert sorted(set(res.bars["symbol"])) == ["AAPL", "MSFT"]
    assert len(rows(res.bars, "MSFT")) == 4
    # Only the failed ticker was downloaded again.
    assert {s for s, _ in fake.bar_requests()[sleep.marks[0] :]} == {"MSFT"}
    assert any("retry 1/3 after 1 s" in n and "MSFT" in n for n in res.notes)


def test_transient_error_that_persists_is_reported(fake):
    fake.add_recorded("AAPL", DATA_DIR / "chart_AAPL_1d_2024-01-02_2024-01-05.json")
    add_msft(fake)
    fake.fail("MSFT", "conn")
    sleep = SleepRecorder()

    res = source(fake, sleep=sleep, retries=3, retry_delays_s=[1.0, 2.0, 4.0]).fetch(
        FetchRequest(["AAPL", "MSFT"], "1d", DAILY.start, DAILY.end)
    )

    assert sleep.calls == [1.0, 2.0, 4.0]
    assert set(res.bars["symbol"]) == {"AAPL"}
    reason = res.failures["MSFT"]
    assert reason.startswith("transient error from Yahoo: ConnectionError")
    assert reason.endswith("(still failing after 3 retries)")
    assert "\n" not in reason


def test_whole_fetch_failing_transiently_raises(fake):
    add_msft(fake)
    fake.fail("MSFT", "429")
    sleep = SleepRecorder()
    with pytest.raises(TransientSourceError, match="HTTP 429"):
        source(fake, sleep=sleep, retries=2, retry_delays_s=[0.5]).fetch(
            FetchRequest(["MSFT"], "1d", DAILY.start, DAILY.end)
        )
    assert sleep.calls == [0.5, 0.5]  # the last delay repeats when the list is shorter than retries


def test_5m_window_beyond_60_days_is_clipped(fake):
    fake.add_intraday("AAPL", "5m", [("2024-03-11 09:30", 1.0, 2.0, 0.5, 1.5, 10)])
    req = FetchRequest(
        ["AAPL"], "5m", pd.Timestamp("2023-11-01", tz="UTC"), pd.Timestamp("2024-03-11 20:00", tz="UTC")
    )

    res = source(fake).fetch(req)

    assert res.failures == {}
    assert len(res.bars) == 1
    clipped_to = NOW - pd.Timedelta(days=60) + pd.Timedelta(hours=1)
    (note,) = [n for n in res.notes if "clipped" in n]
    assert "last 60 days" in note and "2023-11-01 00:00Z" in note and f"{clipped_to:%Y-%m-%d %H:%M}Z" in note
    ((_, params),) = fake.bar_requests()
    assert int(params["period1"]) == int(clipped_to.timestamp())


def test_1m_window_clipped_to_7_days_per_request(fake):
    fake.add_intraday("AAPL", "1m", [("2024-03-11 09:30", 1.0, 2.0, 0.5, 1.5, 10)])
    req = FetchRequest(
        ["AAPL"], "1m", pd.Timestamp("2024-02-20", tz="UTC"), pd.Timestamp("2024-03-11 20:00", tz="UTC")
    )
    res = source(fake).fetch(req)
    assert len(res.bars) == 1
    assert any("at most 7 days per request" in n for n in res.notes)
    ((_, params),) = fake.bar_requests()
    assert int(params["period1"]) == int((req.end - pd.Timedelta(days=7) + pd.Timedelta(hours=1)).timestamp())


def test_window_entirely_beyond_the_limit_asks_nothing(fake):
    req = FetchRequest(
        ["AAPL"], "5m", pd.Timestamp("2023-06-01", tz="UTC"), pd.Timestamp("2023-06-02", tz="UTC")
    )
    res = source(fake).fetch(req)
    assert res.bars.empty
    assert "older than Yahoo keeps 5m bars" in res.failures["AAPL"]
    assert fake.log == []


def test_bad_requests_fail_fast(fake):
    with pytest.raises(SourceError, match="no '4h' bars"):
        source(fake).fetch(FetchRequest(["AAPL"], "4h"))
    with pytest.raises(SourceError, match="explicit symbols"):
        source(fake).fetch(FetchRequest(None, "1d"))


def test_join_artefact_rows_dropped_but_partial_nan_kept(fake):
    # MSFT has a null row on 01-03; BHP has no 01-04 row at all (join artefact) and a NaN close on 01-02.
    add_msft(fake)
    fake.add_daily(
        "BHP", [("2024-01-02", 1.0, 1.0, 1.0, None, None, 10), ("2024-01-03", 1.0, 1.0, 1.0, 1.0, 1.0, 10)]
    )
    res = source(fake).fetch(FetchRequest(["MSFT", "BHP"], "1d", DAILY.start, DAILY.end))
    bhp = rows(res.bars, "BHP")
    assert list(bhp["ts"]) == utc_days("2024-01-02", "2024-01-03")
    assert np.isnan(bhp.loc[0, "close"])
    assert len(rows(res.bars, "MSFT")) == 4
