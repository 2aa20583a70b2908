import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from qtrader.calendar import expected_bars, in_session
from qtrader.settings import GateSettings
from sources.base import BAR_COLUMNS, FetchRequest, MarketDataSource, SourceError
from sources.synthetic import (
    EPOCH,
    Fault,
    FaultKind,
    Regime,
    SyntheticSource,
    close_zscore,
    parse_faults,
    planted_tilt,
)

NOW = pd.Timestamp("2025-06-30 22:00", tz="UTC")
YEAR = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-12-31", tz="UTC"))
# Thanksgiving week 2024: Thursday closed, Friday an early close (13:00 New York = 18:00 UTC).
THANKSGIVING = (pd.Timestamp("2024-11-25", tz="UTC"), pd.Timestamp("2024-11-29 23:59", tz="UTC"))
GATE = GateSettings()


def fetch(symbols, interval="1d", window=YEAR, **kwargs):
    src = SyntheticSource(now=NOW, **kwargs)
    return src.fetch(FetchRequest(list(symbols), interval, *window))


def of(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return bars[bars["symbol"] == symbol].reset_index(drop=True)


def log_returns(bars: pd.DataFrame) -> np.ndarray:
    return np.concatenate(
        [np.diff(np.log(g["close"].to_numpy())) for _, g in bars.groupby("symbol", sort=False)]
    )


# ------------------------------------------------------------------------------------- contract, determinism


def test_speaks_the_protocol_with_canonical_dtypes():
    src = SyntheticSource(now=NOW)
    assert isinstance(src, MarketDataSource) and src.name == "synthetic"
    bars = src.fetch(FetchRequest(["AAA", "BBB"], "1d", *YEAR)).bars
    assert list(bars.columns) == BAR_COLUMNS
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert all(bars[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume"])
    assert list(bars["symbol"].unique()) == ["AAA", "BBB"]  # request order, time ascending within
    assert all(g["ts"].is_monotonic_increasing for _, g in bars.groupby("symbol"))


def test_same_request_gives_identical_frames():
    a = fetch(["AAA", "BBB"], "5m", THANKSGIVING).bars
    b = fetch(["AAA", "BBB"], "5m", THANKSGIVING).bars
    assert_frame_equal(a, b, check_exact=True)
    assert not of(fetch(["AAA"], seed=8).bars, "AAA").equals(of(fetch(["AAA"]).bars, "AAA"))


@pytest.mark.parametrize("interval,window", [("1d", YEAR), ("5m", THANKSGIVING)])
def test_symbol_path_does_not_depend_on_the_other_symbols(interval, window):
    alone = fetch(["MSFT"], interval, window).bars
    crowd = fetch(["ZZZ", "MSFT", "AAPL", "X"], interval, window).bars
    assert_frame_equal(of(crowd, "MSFT"), alone, check_exact=True)


def test_sub_window_equals_slice_of_larger_window_daily():
    big = fetch(["AAA", "BBB"], "1d", (pd.Timestamp("2015-01-01", tz="UTC"), YEAR[1])).bars
    lo, hi = pd.Timestamp("2020-03-02", tz="UTC"), pd.Timestamp("2020-06-30", tz="UTC")
    small = fetch(["BBB"], "1d", (lo, hi)).bars
    expected = big[(big["symbol"] == "BBB") & big["ts"].between(lo, hi)].reset_index(drop=True)
    assert len(small) > 50
    assert_frame_equal(small, expected, check_exact=True)


def test_sub_window_equals_slice_of_larger_window_intraday():
    big = fetch(["AAA"], "5m", (pd.Timestamp("2024-11-18", tz="UTC"), THANKSGIVING[1])).bars
    lo, hi = pd.Timestamp("2024-11-26 16:02", tz="UTC"), pd.Timestamp("2024-11-27 15:00", tz="UTC")
    small = fetch(["AAA"], "5m", (lo, hi)).bars
    expected = big[big["ts"].between(lo, hi)].reset_index(drop=True)
    assert small["ts"].iloc[0] == pd.Timestamp("2024-11-26 16:05", tz="UTC")
    assert_frame_equal(small, expected, check_exact=True)


# --------------------------------------------------------------------------------------- calendar


def test_daily_bars_are_exactly_the_sessions():
    bars = fetch(["AAA"]).bars
    assert pd.DatetimeIndex(bars["ts"]).equals(expected_bars("1d", *YEAR))
    days = set(bars["ts"].dt.strftime("%Y-%m-%d"))
    assert "2024-07-04" not in days and "2024-11-28" not in days and "2024-12-25" not in days
    assert "2024-11-29" in days and "2024-07-03" in days
    assert (bars["ts"] == bars["ts"].dt.normalize()).all()


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "30m", "1h"])
def test_intraday_bars_fill_the_sessions_including_an_early_close(interval):
    bars = fetch(["AAA"], interval, THANKSGIVING).bars
    assert pd.DatetimeIndex(bars["ts"]).equals(expected_bars(interval, *THANKSGIVING))
    assert in_session(bars["ts"], interval).all()
    friday = bars[bars["ts"].dt.strftime("%Y-%m-%d") == "2024-11-29"]
    assert friday["ts"].iloc[0] == pd.Timestamp("2024-11-29 14:30", tz="UTC")
    if interval == "5m":
        assert friday["ts"].iloc[-1] == pd.Timestamp("2024-11-29 17:55", tz="UTC")
        assert len(bars) == 3 * 78 + 42
    assert (bars["ts"].dt.strftime("%Y-%m-%d") != "2024-11-28").all()


def test_window_end_defaults_to_now_and_never_passes_it():
    now = pd.Timestamp("2024-11-29 17:32", tz="UTC")  # during the early-close session
    src = SyntheticSource(now=now)
    daily = src.fetch(FetchRequest(["AAA"], "1d", pd.Timestamp("2024-11-01", tz="UTC"))).bars
    assert daily["ts"].iloc[-1] == pd.Timestamp("2024-11-27", tz="UTC")  # Friday not completed yet
    intraday = src.fetch(FetchRequest(["AAA"], "5m", pd.Timestamp("2024-11-29", tz="UTC"), NOW)).bars
    assert intraday["ts"].iloc[-1] == pd.Timestamp("2024-11-29 17:25", tz="UTC")  # last completed bar
    default = src.fetch(FetchRequest(["AAA"], "5m")).bars
    assert default["ts"].dt.normalize().nunique() == 20  # 20 sessions back by default
    assert default["ts"].iloc[-1] == pd.Timestamp("2024-11-29 17:25", tz="UTC")


def test_history_starts_at_the_epoch():
    res = fetch(["AAA"], "1d", (pd.Timestamp("1999-06-01", tz="UTC"), pd.Timestamp("2000-01-31", tz="UTC")))
    assert res.bars["ts"].iloc[0] == EPOCH.tz_localize("UTC")
    assert any("starts 2000-01-03" in n for n in res.notes)


# ------------------------------------------------------------------------------------------ realism


def test_ohlc_consistent_and_positive_on_clean_data():
    for interval, window in [("1d", (pd.Timestamp("2010-01-01", tz="UTC"), YEAR[1])), ("5m", THANKSGIVING)]:
        bars = fetch([f"S{i}" for i in range(20)], interval, window).bars
        px = bars[["open", "high", "low", "close"]]
        assert np.isfinite(px.to_numpy()).all() and (px > 0).all().all()
        assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
        assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
        assert (bars["volume"] > 0).all()


def test_per_symbol_price_and_volatility_differ():
    bars = fetch([f"S{i}" for i in range(30)], "1d").bars
    first = bars.groupby("symbol")["close"].first()
    vol = bars.groupby("symbol")["close"].apply(lambda c: np.diff(np.log(c)).std() * np.sqrt(252))
    assert first.max() / first.min() > 5
    assert vol.min() < 0.3 and vol.max() > 0.45


def test_intraday_volume_is_u_shaped():
    window = (pd.Timestamp("2024-09-03", tz="UTC"), pd.Timestamp("2024-10-31", tz="UTC"))
    bars = fetch(["AAA", "BBB", "CCC"], "5m", window).bars
    ny = bars["ts"].dt.tz_convert("America/New_York")
    minute = ny.dt.hour * 60 + ny.dt.minute
    first_30, last_30 = minute < 10 * 60, minute >= 15 * 60 + 30
    midday = (minute >= 12 * 60) & (minute < 13 * 60 + 30)
    assert bars.loc[first_30, "volume"].mean() > 1.5 * bars.loc[midday, "volume"].mean()
    assert bars.loc[last_30, "volume"].mean() > 1.3 * bars.loc[midday, "volume"].mean()


def test_volume_grows_with_the_size_of_the_move():
    bars = fetch([f"S{i}" for i in range(10)], "1d").bars
    corrs = [
        np.corrcoef(np.abs(np.diff(np.log(g["close"]))), np.log(g["volume"].to_numpy()[1:]))[0, 1]
        for _, g in bars.groupby("symbol")
    ]
    assert np.mean(corrs) > 0.2


def test_opens_gap_away_from_the_previous_close():
    daily = of(fetch(["AAA"]).bars, "AAA")
    assert (daily["open"].to_numpy()[1:] != daily["close"].to_numpy()[:-1]).all()
    bars = fetch(["AAA"], "5m", THANKSGIVING).bars
    day = bars["ts"].dt.normalize()
    first = day.ne(day.shift())
    gaps = np.log(bars["open"][first].to_numpy()[1:] / bars["close"].shift()[first].to_numpy()[1:])
    within = np.log(bars["open"][~first].to_numpy() / bars["close"].shift()[~first].to_numpy())
    assert (np.abs(gaps) > 1e-6).all() and np.allclose(within, 0)
    # Each session opens at its daily bar's open and ends near its daily close.
    daily = fetch(["AAA"], "1d", THANKSGIVING).bars
    by_day = bars.groupby(day)
    assert np.allclose(by_day["open"].first().to_numpy(), daily["open"].to_numpy())
    assert np.allclose(by_day["close"].last().to_numpy(), daily["close"].to_numpy(), rtol=0.03)


def test_daily_returns_have_fat_tails():
    bars = fetch(["AAA", "BBB"], "1d", (pd.Timestamp("2004-01-01", tz="UTC"), YEAR[1])).bars
    for _, g in bars.groupby("symbol"):
        r = np.diff(np.log(g["close"].to_numpy()))
        r = r - r.mean()
        assert (r**4).mean() / (r**2).mean() ** 2 > 4.0


def test_regimes_switch_and_move_volatility():
    src = SyntheticSource(now=NOW)
    window = (pd.Timestamp("2014-01-01", tz="UTC"), YEAR[1])
    seen = set()
    for sym in ["AAA", "BBB", "CCC"]:
        reg = src.regimes(sym, "1d", *window)
        bars = of(src.fetch(FetchRequest([sym], "1d", *window)).bars, sym)
        assert pd.DatetimeIndex(bars["ts"]).equals(reg.index)
        assert reg.nunique() > 1 and (reg != reg.shift()).sum() > 5
        seen |= set(reg)
        r = pd.Series(np.r_[np.nan, np.diff(np.log(bars["close"]))], index=reg.index)
        if (reg == "HIGH_VOLATILITY").sum() > 30 and (reg == "MEAN_REVERTING").sum() > 30:
            assert r[reg == "HIGH_VOLATILITY"].std() > 1.5 * r[reg == "MEAN_REVERTING"].std()
    assert seen == {r.value for r in Regime}
    intraday = src.regimes("AAA", "5m", *THANKSGIVING)
    assert len(intraday) == 3 * 78 + 42 and set(intraday) <= seen


def test_trend_moves_every_symbol_the_same_way_and_keeps_the_path_otherwise():
    window = (pd.Timestamp("2021-01-01", tz="UTC"), YEAR[1])
    symbols = [f"T{i:02d}" for i in range(20)]

    def growth(**kw) -> pd.Series:
        bars = fetch(symbols, "1d", window, **kw).bars
        return bars.groupby("symbol")["close"].agg(lambda c: c.iloc[-1] / c.iloc[0])

    flat, up, down = growth(), growth(trend=0.7), growth(trend=-0.7)
    # 4 years at ln 2 a year, damped in the mean-reverting regimes: far more than a doubling / halving
    assert (up > flat).all() and (down < flat).all()
    assert up.median() > 2 * flat.median() and down.median() < flat.median() / 2
    # the trend is a drift on the same shocks: a symbol's path still does not depend on the others
    alone = fetch(["T03"], "1d", window, trend=0.7).bars
    assert_frame_equal(alone, of(fetch(symbols, "1d", window, trend=0.7).bars, "T03"))
    with pytest.raises(ValueError):
        SyntheticSource(trend=float("nan"))


def test_market_regime_is_shared_by_every_symbol_and_independent_of_the_request():
    src = SyntheticSource(now=NOW, market_regime=True)
    regimes = pd.DataFrame({s: src.regimes(s, "1d", *YEAR) for s in ["AAA", "BBB", "CCC"]})
    assert (regimes.nunique(axis=1) == 1).all() and regimes["AAA"].nunique() > 1
    own = pd.DataFrame({s: SyntheticSource(now=NOW).regimes(s, "1d", *YEAR) for s in ["AAA", "BBB"]})
    assert (own["AAA"] != own["BBB"]).any()  # the default: one regime path per symbol
    both = src.fetch(FetchRequest(["AAA", "BBB"], "1d", *YEAR)).bars
    assert_frame_equal(src.fetch(FetchRequest(["BBB"], "1d", *YEAR)).bars, of(both, "BBB"))
    assert not of(both, "AAA")["close"].equals(of(both, "BBB")["close"])  # own shocks, shared regime


# ------------------------------------------------------------------------------------ planted component


def _tilt_vs_next_return(signal_strength: float) -> float:
    window = (pd.Timestamp("2012-01-01", tz="UTC"), YEAR[1])
    bars = fetch([f"P{i:02d}" for i in range(40)], "1d", window, signal_strength=signal_strength).bars
    tilt, nxt = [], []
    for _, g in bars.groupby("symbol", sort=False):
        close = g["close"].to_numpy()
        tilt.append(planted_tilt(close_zscore(close))[9:-1])  # state at t, from bars up to t
        nxt.append(np.diff(np.log(close))[9:])  # return from t to t + 1
    return float(np.corrcoef(np.concatenate(tilt), np.concatenate(nxt))[0, 1])


def test_planted_component_is_there_with_a_signal_and_absent_without():
    with_signal = _tilt_vs_next_return(0.12)  # ~130k pairs: the standard error of a correlation is ~0.003
    without = _tilt_vs_next_return(0.0)
    assert with_signal > 0.05
    assert abs(without) < 0.015


def test_zscore_matches_the_bollinger_definition():
    close = np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, 60)))
    z = close_zscore(close)
    window = np.log(close[20:30])
    assert z[29] == pytest.approx((window[-1] - window.mean()) / window.std())
    assert (z[:9] == 0).all()


# ----------------------------------------------------------------------------------- reserved symbols


def test_reserved_symbols_fail_and_the_others_load():
    res = fetch(["AAA", "UNKNOWN_XYZ", "EMPTY1", "BBB", "not a ticker"])
    assert set(res.failures) == {"UNKNOWN_XYZ", "EMPTY1", "not a ticker"}
    assert "unknown symbol" in res.failures["UNKNOWN_XYZ"]
    assert "empty" in res.failures["EMPTY1"]
    assert list(res.bars["symbol"].unique()) == ["AAA", "BBB"]
    assert_frame_equal(of(res.bars, "BBB"), fetch(["BBB"]).bars, check_exact=True)


def test_bad_interval_is_a_source_error():
    with pytest.raises(SourceError, match="interval"):
        fetch(["AAA"], "7x")


# -------------------------------------------------------------------------------------------- faults


def defects(bars: pd.DataFrame, interval: str, window) -> set[str]:
    """Every fault kind whose defect shows in one symbol's bars (independent of the generator)."""
    daily = interval == "1d"
    found = set()
    px = bars[["open", "high", "low", "close"]]
    if px.isna().any().any():
        found.add("nan_price")
    if (px.fillna(1.0) <= 0).any().any():
        found.add("negative_price")
    if (bars["high"] < bars[["open", "close"]].max(axis=1)).any():
        found.add("high_below")
    if (bars["low"] > bars[["open", "close"]].min(axis=1)).any():
        found.add("low_above")
    if (bars["volume"] < 0).any():
        found.add("negative_volume")
    if bars["ts"].duplicated().any():
        found.add("duplicate_ts")
    if (bars["ts"].diff() < pd.Timedelta(0)).any():
        found.add("out_of_order")
    ok = in_session(bars["ts"], interval)
    if not ok.all():
        found.add("outside_session")
    series = bars[ok].drop_duplicates("ts").sort_values("ts")
    expected = expected_bars(interval, *window)
    pos = expected.get_indexer(series["ts"])
    if (np.diff(pos) - 1).max() > (GATE.max_gap_bars_daily if daily else GATE.max_gap_bars_intraday):
        found.add("gap")
    if len(expected) - 1 - pos[-1] > (GATE.max_stale_bars_daily if daily else GATE.max_stale_bars_intraday):
        found.add("stale")
    good = series[np.isfinite(series["close"]) & (series["close"] > 0)]
    limit = GATE.max_abs_return_daily if daily else GATE.max_abs_return_intraday
    if (good["close"].pct_change().abs() > limit).any():
        found.add("big_move")
    return found


FAULT_CASES = [("1d", YEAR), ("5m", THANKSGIVING)]


@pytest.fixture(scope="module")
def clean():
    return {iv: fetch(["AAA", "BBB", "CCC"], iv, window).bars for iv, window in FAULT_CASES}


@pytest.mark.parametrize("interval,window", FAULT_CASES)
def test_clean_data_has_no_defects(clean, interval, window):
    for sym in ["AAA", "BBB", "CCC"]:
        assert defects(of(clean[interval], sym), interval, window) == set()


@pytest.mark.parametrize("kind", list(FaultKind))
@pytest.mark.parametrize("interval,window", FAULT_CASES)
def test_each_fault_makes_exactly_its_defect_on_its_symbol(clean, kind, interval, window):
    res = fetch(["AAA", "BBB", "CCC"], interval, window, faults=[Fault(kind, "BBB")])
    assert defects(of(res.bars, "BBB"), interval, window) == {kind.value}
    for sym in ["AAA", "CCC"]:
        assert_frame_equal(of(res.bars, sym), of(clean[interval], sym), check_exact=True)
    assert list(res.bars["symbol"].unique()) == ["AAA", "BBB", "CCC"]
    assert any(kind.value in note and "BBB" in note for note in res.notes)


def test_fault_positions_are_deterministic():
    faults = [Fault(FaultKind.OUT_OF_ORDER, "BBB", n=2), Fault(FaultKind.GAP, "BBB")]
    first, again = (fetch(["BBB"], "5m", THANKSGIVING, faults=faults) for _ in range(2))
    assert_frame_equal(first.bars, again.bars, check_exact=True)
    assert first.notes == again.notes


def test_fault_size_and_position_are_controllable(clean):
    base = of(clean["1d"], "BBB")
    gap = of(fetch(["BBB"], faults=[Fault("gap", "bbb", n=7, at=100)]).bars, "BBB")
    assert len(gap) == len(base) - 7
    assert gap["ts"].iloc[100] == base["ts"].iloc[107]
    stale = of(fetch(["BBB"], faults=[Fault(FaultKind.STALE, "BBB", n=8)]).bars, "BBB")
    assert_frame_equal(stale, base.iloc[:-8], check_exact=True)
    nan = of(fetch(["BBB"], faults=[Fault(FaultKind.NAN_PRICE, "BBB", n=3, at=10)]).bars, "BBB")
    assert list(np.flatnonzero(nan["close"].isna())) == [10, 12, 14]
    move = of(fetch(["BBB"], faults=[Fault(FaultKind.BIG_MOVE, "BBB", at=50)]).bars, "BBB")
    assert move["close"].iloc[50] / move["close"].iloc[49] == pytest.approx(
        3 * base["close"].iloc[50] / base["close"].iloc[49]
    )


def test_outside_session_daily_bar_is_on_a_weekend(clean):
    bars = of(fetch(["BBB"], faults=[Fault(FaultKind.OUTSIDE_SESSION, "BBB")]).bars, "BBB")
    extra = bars[~in_session(bars["ts"], "1d")]
    assert len(extra) == 1 and extra["ts"].iloc[0].weekday() == 5
    assert bars["ts"].is_monotonic_increasing


def test_a_fault_on_an_absent_symbol_changes_nothing(clean):
    res = fetch(["AAA", "BBB", "CCC"], faults=[Fault(FaultKind.NAN_PRICE, "MSFT")])
    assert_frame_equal(res.bars, clean["1d"], check_exact=True)


def test_parse_faults():
    assert parse_faults(["nan_price:MSFT", "stale:tsla:8"]) == [
        Fault(FaultKind.NAN_PRICE, "MSFT"),
        Fault(FaultKind.STALE, "TSLA", n=8),
    ]
    assert parse_faults(["gap:X"])[0].count == 20 and parse_faults(["big_move:X"])[0].count == 1
    for bad in ["nan_price", "melt:MSFT", "gap:MSFT:0", "gap:MSFT:x", "a:b:c:d"]:
        with pytest.raises(SourceError):
            parse_faults([bad])
