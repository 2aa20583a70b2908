import numpy as np
import pandas as pd
import pytest
import talib

from models.features import (
    DAILY_CONTEXT_COLUMNS,
    DAILY_CONTEXT_SOURCES,
    FINITE_FROM_ROW,
    FLOAT_COLUMNS,
    KEY_COLUMNS,
    PATTERN_COLUMNS,
    WARMUP_BARS,
    add_daily_context,
    bars_per_year,
    compute_features,
    compute_features_many,
    feature_columns,
    feature_dtypes,
    session_close_utc,
    warmup_start_index,
)
from qtrader.calendar import expected_bars, get_calendar, interval_minutes, sessions

OWN_FLOATS = [c for c in FLOAT_COLUMNS if c not in DAILY_CONTEXT_COLUMNS]


def random_walk_bars(
    n: int,
    seed: int = 0,
    symbol: str = "AAA",
    interval: str = "1d",
    start: str = "2012-01-03",
    price: float = 100.0,
    vol: float | None = None,
) -> pd.DataFrame:
    """n consecutive exchange bars of a geometric random walk with consistent OHLC and positive volume."""
    rng = np.random.default_rng(seed)
    vol = vol if vol is not None else (0.015 if interval == "1d" else 0.002)
    per_session = 1.0 if interval == "1d" else 390 / interval_minutes(interval)
    days = int(n / per_session * 1.6) + 30  # calendar days holding n bars, weekends and holidays included
    ts = expected_bars(interval, start, pd.Timestamp(start) + pd.Timedelta(days=days))[:n]
    assert len(ts) == n
    c = price * np.exp(np.cumsum(rng.normal(0, vol, n)))
    o = np.r_[price, c[:-1]] * np.exp(rng.normal(0, vol / 4, n))
    hi = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, vol / 2, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, vol / 2, n)))
    v = rng.lognormal(12, 0.5, n).round()
    return pd.DataFrame(
        {
            "symbol": symbol,
            "interval": interval,
            "ts": ts,
            "open": o,
            "high": hi,
            "low": lo,
            "close": c,
            "volume": v,
        }
    )


def replace_after(bars: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Same bars up to row t, an unrelated random path (other level, other volatility) after it."""
    out = bars.copy()
    m = len(bars) - t - 1
    if m <= 0:
        return out
    new = random_walk_bars(len(bars), seed=seed, interval=bars["interval"].iloc[0], price=57.0, vol=0.04)
    for col in ["open", "high", "low", "close", "volume"]:
        out.loc[out.index[t + 1 :], col] = new[col].to_numpy()[-m:]
    return out


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Bit-identical values, NaN in the same places."""
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


@pytest.fixture(scope="module")
def daily():
    return random_walk_bars(1200, seed=1)


@pytest.fixture(scope="module")
def daily_features(daily):
    return compute_features(daily)


# ------------------------------------------------------------------------------------------ layout


def test_columns_layout(daily_features):
    cols = feature_columns()
    assert len(cols) == len(set(cols))
    assert list(daily_features.columns) == [*KEY_COLUMNS, *cols]
    assert {c: str(t) for c, t in daily_features.dtypes.items()} == feature_dtypes()
    names = talib.get_function_groups()["Pattern Recognition"]
    assert len(names) == 61 and len(PATTERN_COLUMNS) == 61
    assert {f"cdl_{n[3:].lower()}" for n in names} == set(PATTERN_COLUMNS) <= set(cols)
    assert {"cdl_doji", "cdl_3whitesoldiers", "cdl_engulfing"} <= set(cols)
    for c in [
        "ret_1",
        "ret_20",
        "atr_14",
        "natr_14",
        "macd_hist",
        "obv_slope_20",
        "trend_slope_50",
        "rv_60",
        "atr_pct_rank_252",
        "vol_of_vol_20",
        "clv_volume_imbalance_20",
        "up_volume_share_20",
        "d_adx_14",
    ]:
        assert c in cols
    assert len(daily_features) == 1200


def test_patterns_are_small_ints(daily_features):
    pats = daily_features[PATTERN_COLUMNS]
    assert (pats.dtypes == np.int8).all()
    assert pats.abs().max().max() <= 2
    assert pats.abs().sum().sum() > 0


def _flat_bars(n: int, price: float = 100.0) -> list[tuple[float, float, float, float]]:
    # Small white candles with a normal range, so TA-Lib's trailing body/range averages are defined.
    return [(price, price + 1.0, price - 1.0, price + 0.5)] * n


def _ohlc_frame(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    ts = expected_bars("1d", "2020-01-02", "2021-06-30")[: len(rows)]
    o, h, lo, c = (np.array(x, dtype=float) for x in zip(*rows, strict=True))
    return pd.DataFrame(
        {
            "symbol": "HND",
            "interval": "1d",
            "ts": ts,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": 1e6,
        }
    )


def test_hand_made_doji_and_engulfing():
    rows = _flat_bars(30)
    rows.append((100.0, 102.0, 98.0, 100.0))  # doji: open == close, long shadows
    rows += _flat_bars(5)
    rows.append((101.0, 101.5, 98.5, 99.0))  # black candle
    rows.append((98.5, 102.0, 98.0, 101.5))  # white body engulfing the black one
    f = compute_features(_ohlc_frame(rows))
    assert f["cdl_doji"].iloc[30] == 1
    assert f["cdl_doji"].iloc[29] == 0
    assert f["cdl_engulfing"].iloc[-1] == 1
    assert (f["cdl_engulfing"].iloc[:30] == 0).all()
    # Bearish mirror: a black body engulfing a white one.
    rows2 = [*_flat_bars(30), (99.0, 101.5, 98.5, 101.0), (101.5, 102.0, 98.0, 98.5)]
    assert compute_features(_ohlc_frame(rows2))["cdl_engulfing"].iloc[-1] == -1


# ------------------------------------------------------------------------------------ no look-ahead


@pytest.mark.parametrize("interval", ["1d", "5m"])
def test_no_lookahead_replacing_the_future(interval):
    bars = random_walk_bars(700, seed=3, interval=interval)
    full = compute_features(bars)
    for i, t in enumerate([0, 25, 264, 266, 400, 698]):
        changed = compute_features(replace_after(bars, t, seed=100 + i))
        assert_same_rows(full.iloc[: t + 1], changed.iloc[: t + 1])
        if t < 600:  # the test has power: later rows do move
            later = full[OWN_FLOATS].iloc[t + 1 :].to_numpy()
            assert not np.allclose(later, changed[OWN_FLOATS].iloc[t + 1 :].to_numpy(), equal_nan=True)


def test_no_lookahead_truncation_equals_prefix(daily, daily_features):
    # A feature at t computed from bars[: t + 1] alone is the same number: nothing after t is read.
    for t in [10, 300, 777]:
        assert_same_rows(daily_features.iloc[: t + 1], compute_features(daily.iloc[: t + 1]))


# ---------------------------------------------------------------------------------- daily context


def _context_case():
    daily = pd.concat([random_walk_bars(330, seed=5, symbol=s, start="2022-09-01") for s in ("AAA", "BBB")])
    last = daily["ts"].max()
    days = sessions(last - pd.Timedelta(days=20), last)[-6:]
    intraday = pd.concat(
        [
            random_walk_bars(78 * len(days), seed=6 + i, symbol=s, interval="5m", start=str(days[0].date()))
            for i, s in enumerate(("AAA", "BBB"))
        ]
    )
    return daily, intraday


def test_daily_context_no_lookahead():
    daily, intraday = _context_case()
    intra_f = compute_features_many(intraday)
    base = add_daily_context(intra_f, compute_features_many(daily))
    assert base[DAILY_CONTEXT_COLUMNS].notna().all().all()
    closes = session_close_utc(daily["ts"])
    cuts = [intra_f["ts"].iloc[i] for i in (0, 40, 77, 78, 200, 300, len(intra_f) // 2 - 1)]
    for j, cut in enumerate(cuts):
        after = (closes > cut).to_numpy()  # sessions not yet closed when the cut bar starts
        assert after.any()
        changed = daily.copy()
        rng = np.random.default_rng(j)
        scale = np.exp(rng.normal(0, 0.2, after.sum()))
        for col in ["open", "high", "low", "close"]:
            changed.loc[after, col] = changed.loc[after, col].to_numpy() * scale * 1.3
        changed.loc[after, "volume"] = rng.lognormal(15, 1, after.sum()).round()
        ctx = add_daily_context(intra_f, compute_features_many(changed))
        known = (intra_f["ts"] <= cut).to_numpy()
        assert_same_rows(base.loc[known], ctx.loc[known])
        # and the change is visible once those sessions have closed
        if cut < intra_f["ts"].max():
            assert not np.allclose(
                base.loc[~known, DAILY_CONTEXT_COLUMNS], ctx.loc[~known, DAILY_CONTEXT_COLUMNS]
            )


def test_daily_context_asof_rule():
    daily = random_walk_bars(400, seed=8, start="2022-06-01")
    dfeat = compute_features(daily)
    sched = get_calendar("XNYS").schedule
    early = pd.Timestamp("2023-11-24")  # day after Thanksgiving: 13:00 New York close
    assert early in dfeat["ts"].dt.tz_localize(None).values
    prev = sched.index[sched.index.get_loc(early) - 1]
    nxt = sched.index[sched.index.get_loc(early) + 1]
    o, c = sched.loc[early, "open"], sched.loc[early, "close"]
    assert c.hour == 18  # 13:00 EST in UTC
    ts = [o, c - pd.Timedelta(minutes=5), c, c + pd.Timedelta(hours=1), sched.loc[nxt, "open"]]
    expect_day = [prev, prev, early, early, early]
    rows = pd.DataFrame({"symbol": "AAA", "interval": "5m", "ts": pd.DatetimeIndex(ts).as_unit("ns")})
    rows = pd.concat([rows, rows.assign(symbol="ZZZ")], ignore_index=True)  # no daily bars for ZZZ
    got = add_daily_context(rows, dfeat)
    by_day = dfeat.set_index(dfeat["ts"].dt.tz_localize(None))
    for i, day in enumerate(expect_day):
        want = by_day.loc[day, DAILY_CONTEXT_SOURCES].to_numpy(dtype=float)
        np.testing.assert_array_equal(got.loc[i, DAILY_CONTEXT_COLUMNS].to_numpy(dtype=float), want)
    assert got.loc[5:, DAILY_CONTEXT_COLUMNS].isna().all().all()
    assert list(got.columns[:4]) == ["symbol", "interval", "ts", *DAILY_CONTEXT_COLUMNS[:1]]


def test_daily_rows_carry_previous_session(daily_features):
    f = daily_features
    for src, dst in zip(DAILY_CONTEXT_SOURCES, DAILY_CONTEXT_COLUMNS, strict=True):
        np.testing.assert_array_equal(f[dst].to_numpy()[1:], f[src].to_numpy()[:-1])
        assert np.isnan(f[dst].iloc[0])
    # The ASOF rule applied to daily rows (stamped 00:00 UTC) gives the same thing.
    again = add_daily_context(f, f)
    assert_same_rows(again, f)


def test_intraday_rows_have_no_context_until_joined():
    f = compute_features(random_walk_bars(200, seed=2, interval="5m"))
    assert f[DAILY_CONTEXT_COLUMNS].isna().all().all()


# ------------------------------------------------------------------------------- warm-up, increments


def test_finite_after_warmup(daily_features):
    f = daily_features
    vals = f[FLOAT_COLUMNS].to_numpy()
    assert np.isfinite(vals[FINITE_FROM_ROW:]).all()
    assert not np.isfinite(vals[FINITE_FROM_ROW - 1]).all()  # FINITE_FROM_ROW is tight
    assert FINITE_FROM_ROW <= WARMUP_BARS


def test_finite_after_warmup_intraday():
    f = compute_features(random_walk_bars(500, seed=4, interval="5m"))
    assert np.isfinite(f[OWN_FLOATS].to_numpy()[FINITE_FROM_ROW - 1 :]).all()


@pytest.mark.parametrize("interval", ["1d", "5m"])
def test_incremental_matches_full_history(interval):
    bars = random_walk_bars(WARMUP_BARS + 400, seed=9, interval=interval)
    full = compute_features(bars)
    for k in [1, 17, 150, 390]:
        part = compute_features(bars.iloc[k:])
        keep = np.arange(len(part)) >= WARMUP_BARS
        a, b = full.iloc[k:].loc[keep], part.loc[keep]
        np.testing.assert_allclose(
            b[FLOAT_COLUMNS].to_numpy(), a[FLOAT_COLUMNS].to_numpy(), rtol=1e-9, atol=1e-9
        )
        np.testing.assert_array_equal(b[PATTERN_COLUMNS].to_numpy(), a[PATTERN_COLUMNS].to_numpy())
        np.testing.assert_array_equal(b["ts"].to_numpy(), a["ts"].to_numpy())


def test_warmup_start_index():
    assert warmup_start_index(0) == 0
    assert warmup_start_index(10) == 0
    assert warmup_start_index(WARMUP_BARS + 5) == 5


# ------------------------------------------------------------------------------------ value checks


def _with_degenerate_bars(bars: pd.DataFrame) -> pd.DataFrame:
    # Flat bars (h == l == o == c) and zero-volume bars after the warm-up must not produce inf/NaN.
    out = bars.copy()
    idx = out.index[700:730]
    px = out.loc[idx[0], "close"]
    out.loc[idx, ["open", "high", "low", "close"]] = px
    out.loc[idx, "volume"] = 0.0
    return out


@pytest.mark.parametrize("degenerate", [False, True])
def test_bounded_ranges(daily, degenerate):
    bars = _with_degenerate_bars(daily) if degenerate else daily
    f = compute_features(bars).iloc[FINITE_FROM_ROW:]
    assert np.isfinite(f[FLOAT_COLUMNS].to_numpy()).all()
    for col in ["rsi_14", "mfi_14", "stoch_k", "stoch_d", "adx_14", "plus_di_14", "minus_di_14"]:
        assert f[col].between(0, 100).all(), col
    assert f["willr_14"].between(-100, 0).all()
    assert f["atr_pct_rank_252"].between(0, 1).all()
    assert f["atr_pct_rank_252"].min() == 0 and f["atr_pct_rank_252"].max() == 1
    for col in ["clv", "clv_volume_imbalance_5", "clv_volume_imbalance_20"]:
        assert f[col].between(-1, 1).all(), col
    assert f["up_volume_share_20"].between(0, 1).all()
    assert (f[["atr_14", "natr_14", "rv_5", "rv_20", "rv_60", "bb_width_20", "hl_range"]] >= 0).all().all()


def test_formulas_spot_checks(daily, daily_features):
    f, b = daily_features, daily
    c, v = b["close"].to_numpy(), b["volume"].to_numpy()
    t = 900
    r = np.diff(np.log(c))
    assert f["ret_5"].iloc[t] == pytest.approx(np.log(c[t] / c[t - 5]), rel=1e-12)
    assert f["rv_20"].iloc[t] == pytest.approx(np.sqrt(252 * np.mean(r[t - 20 : t] ** 2)), rel=1e-12)
    atr = talib.ATR(b["high"].to_numpy(), b["low"].to_numpy(), c, 14)
    assert f["natr_14"].iloc[t] == pytest.approx(100 * atr[t] / c[t], rel=1e-12)
    window = atr[t - 251 : t + 1]
    assert f["atr_pct_rank_252"].iloc[t] == pytest.approx((window < atr[t]).sum() / 251)
    # obv_slope_20 is TA-Lib's OLS slope of OBV over 20 bars, per unit of mean volume
    ref = talib.LINEARREG_SLOPE(talib.OBV(c, v), 20) / talib.SMA(v, 20)
    np.testing.assert_allclose(f["obv_slope_20"].to_numpy()[19:], ref[19:], rtol=1e-9, atol=1e-12)
    slope = talib.LINEARREG_SLOPE(np.log(c), 50)
    np.testing.assert_allclose(f["trend_slope_50"].to_numpy()[49:], slope[49:], rtol=1e-6, atol=1e-12)
    sma = {n: talib.SMA(c, n) for n in (20, 50, 200)}
    np.testing.assert_allclose(f["sma_ratio_50_200"].to_numpy()[199:], (sma[50] / sma[200])[199:], rtol=1e-12)
    np.testing.assert_allclose(f["sma_ratio_20_50"].to_numpy()[49:], (sma[20] / sma[50])[49:], rtol=1e-12)
    up, mid, low = talib.BBANDS(c, 20, 2, 2)
    np.testing.assert_allclose(f["bb_pctb_20"].to_numpy()[19:], ((c - low) / (up - low))[19:], rtol=1e-8)
    assert bars_per_year("1d") == 252 and bars_per_year("5m") == 252 * 78 and bars_per_year("1h") == 252 * 6.5


def test_many_equals_one_at_a_time():
    parts = [random_walk_bars(300, seed=i, symbol=s) for i, s in enumerate(["MSFT", "AAPL", "IBM"])]
    parts.append(random_walk_bars(300, seed=7, symbol="AAPL", interval="5m"))
    shuffled = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=0)
    many = compute_features_many(shuffled)
    assert list(many.columns) == [*KEY_COLUMNS, *feature_columns()]
    assert many[["symbol", "interval"]].drop_duplicates().values.tolist() == [
        ["AAPL", "1d"],
        ["AAPL", "5m"],
        ["IBM", "1d"],
        ["MSFT", "1d"],
    ]
    for part in parts:
        sym, itv = part["symbol"].iloc[0], part["interval"].iloc[0]
        got = many[(many["symbol"] == sym) & (many["interval"] == itv)]
        assert_same_rows(got, compute_features(part))


def test_rejects_bad_input(daily):
    with pytest.raises(ValueError, match="non-finite"):
        compute_features(daily.assign(close=daily["close"].where(daily.index != 50)))
    with pytest.raises(ValueError, match="non-positive"):
        compute_features(daily.assign(low=daily["low"].where(daily.index != 50, 0.0)))
    with pytest.raises(ValueError, match="negative volume"):
        compute_features(daily.assign(volume=-daily["volume"]))
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_features(daily.iloc[::-1])
    with pytest.raises(ValueError, match="one \\(symbol, interval\\)"):
        compute_features(pd.concat([daily, daily.assign(symbol="B")]))
    with pytest.raises(ValueError, match="daily bars only"):
        add_daily_context(daily, daily.assign(interval="5m"))


def test_empty_and_short_input():
    empty = compute_features_many(random_walk_bars(5).iloc[:0])
    assert list(empty.columns) == [*KEY_COLUMNS, *feature_columns()] and empty.empty
    for n in (1, 2, 19):
        short = compute_features(random_walk_bars(n))
        assert len(short) == n and short["atr_pct_rank_252"].isna().all()
