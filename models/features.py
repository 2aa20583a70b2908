"""Point-in-time features from gated OHLCV bars.

Every feature at bar t is a function of bars <= t only: TA-Lib indicators (causal by construction),
trailing windows computed on ``sliding_window_view`` (each value depends only on its own window, so it is
identical whatever row the series starts at), and the ASOF join of daily context. No centred windows, no
full-sample normalisation, no back-fill. ``docs/features.md`` documents every column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib
from numpy.lib.stride_tricks import sliding_window_view

from qtrader.calendar import get_calendar, interval_minutes

FEATURE_SET_VERSION = "v1"
KEY_COLUMNS = ["symbol", "interval", "ts"]

# Daily bars per year, and the regular session length used to annualise intraday bars.
TRADING_DAYS_PER_YEAR = 252
SESSION_MINUTES = 390

ATR_RANK_WINDOW = 252
# Row index from which every column is finite on a clean series: atr_14 starts at row 14 and its percentile
# rank needs 252 ATR values (14 + 251); the daily-context shift adds one more row.
FINITE_FROM_ROW = 14 + ATR_RANK_WINDOW - 1 + 1
# Rows of history a caller must feed before the first row it keeps so that values match a full-history run.
# The Wilder/EMA recursions (ATR, RSI, ADX/DI, MACD) forget their start at about (13/14)^n: after 400 bars
# the start difference is < 1e-13 relative (ATR 6e-14, ADX 1e-12 on its 0-100 scale), so the ATR values
# entering atr_pct_rank_252's 252-bar window are converged too; + 1 for the daily-context shift. Measured
# at 653 (docs/features.md): every column bit-identical except mfi_14, cci_20, stoch_k/d (TA-Lib running
# sums), which differ by < 1e-10 absolute. The contract tested is 1e-9 (relative or absolute).
WARMUP_BARS = 400 + ATR_RANK_WINDOW + 1

RETURN_HORIZONS = (1, 5, 10, 20)
RV_WINDOWS = (5, 20, 60)

# Daily columns copied onto every row as d_<name>, from the newest daily session closed at the row's ts.
DAILY_CONTEXT_SOURCES = [
    "ret_1",
    "ret_5",
    "ret_20",
    "rv_20",
    "natr_14",
    "rsi_14",
    "adx_14",
    "trend_slope_50",
    "sma_ratio_50_200",
    "atr_pct_rank_252",
]
DAILY_CONTEXT_COLUMNS = [f"d_{c}" for c in DAILY_CONTEXT_SOURCES]

PATTERN_FUNCTIONS: list[str] = list(talib.get_function_groups()["Pattern Recognition"])
PATTERN_COLUMNS = [f"cdl_{name[3:].lower()}" for name in PATTERN_FUNCTIONS]

FLOAT_COLUMNS = [
    *(f"ret_{k}" for k in RETURN_HORIZONS),
    "gap",
    "hl_range",
    "atr_14",
    "natr_14",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "bb_pctb_20",
    "bb_width_20",
    "obv_slope_20",
    "mfi_14",
    "cci_20",
    "willr_14",
    "stoch_k",
    "stoch_d",
    "sma_ratio_20_50",
    "sma_ratio_50_200",
    "trend_slope_50",
    *(f"rv_{w}" for w in RV_WINDOWS),
    "rv_ratio_5_20",
    "rv_ratio_20_60",
    "atr_pct_rank_252",
    "vol_of_vol_20",
    "clv",
    "clv_volume_imbalance_5",
    "clv_volume_imbalance_20",
    "up_volume_share_20",
    "volume_z_20",
    *DAILY_CONTEXT_COLUMNS,
]
_OWN_FLOAT_COLUMNS = [c for c in FLOAT_COLUMNS if c not in DAILY_CONTEXT_COLUMNS]
_FLOAT_INDEX = {c: i for i, c in enumerate(FLOAT_COLUMNS)}


def feature_columns() -> list[str]:
    """The ordered feature columns (after symbol, interval, ts); the same for every interval."""
    return [*FLOAT_COLUMNS, *PATTERN_COLUMNS]


def feature_dtypes() -> dict[str, str]:
    """numpy dtype of every output column, for declaring the warehouse table (float64 DOUBLE, int8 TINYINT)."""
    return {
        "symbol": "str",
        "interval": "str",
        "ts": "datetime64[ns, UTC]",
        **{c: "float64" for c in FLOAT_COLUMNS},
        **{c: "int8" for c in PATTERN_COLUMNS},
    }


def bars_per_year(interval: str) -> float:
    """Annualisation factor: 252 for 1d; 252 * 390 / minutes for intraday (6.5 h regular session)."""
    minutes = interval_minutes(interval)
    if minutes == 1440:
        return float(TRADING_DAYS_PER_YEAR)
    return TRADING_DAYS_PER_YEAR * SESSION_MINUTES / minutes


def warmup_start_index(first_new_index: int) -> int:
    """First row to load so features from ``first_new_index`` on equal a full-history run (within 1e-9).

    Load bars[warmup_start_index(i):], compute features, keep rows >= i.
    """
    return max(0, first_new_index - WARMUP_BARS)


# --------------------------------------------------------------------------------------------------
# trailing-window helpers: value at t from x[t-w+1..t] only, NaN until the window is full (or holds NaN)


def _windows(x: np.ndarray, w: int) -> np.ndarray | None:
    return sliding_window_view(x, w) if len(x) >= w else None


def _rolling(x: np.ndarray, w: int, fn) -> np.ndarray:
    out = np.full(len(x), np.nan)
    view = _windows(x, w)
    if view is not None:
        out[w - 1 :] = fn(view, axis=1)
    return out


def _rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    return _rolling(x, w, np.sum)


def _rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    return _rolling(x, w, np.mean)


def _rolling_std(x: np.ndarray, w: int, ddof: int = 0) -> np.ndarray:
    return _rolling(x, w, lambda v, axis: np.std(v, axis=axis, ddof=ddof))


def _rolling_pct_rank(x: np.ndarray, w: int) -> np.ndarray:
    """Rank of x[t] among x[t-w+1..t] scaled to [0, 1]: 0 = lowest in the window, 1 = highest (ties averaged)."""
    out = np.full(len(x), np.nan)
    view = _windows(x, w)
    if view is not None:
        cur = view[:, -1:]
        below = (view < cur).sum(axis=1)
        equal = (view == cur).sum(axis=1) - 1  # other values tied with the current one
        rank = (below + 0.5 * equal) / (w - 1)
        rank[np.isnan(view).any(axis=1)] = np.nan
        out[w - 1 :] = rank
    return out


def _safe_div(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    """num / den, with ``fill`` where den == 0 (a flat window carries no information, not infinity)."""
    out = np.divide(num, den, out=np.full(len(num), fill), where=den != 0)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if k < len(x):
        out[k:] = x[:-k]
    return out


# OLS slope of a cumulative sum y_j = y_0 + d_1 + ... + d_j over a window of n points is a fixed weighted
# sum of the increments: slope = sum_i d_i * sum_{j>=i} (j - mean(j)) / Sxx. Using it for OBV keeps the
# value independent of OBV's arbitrary starting level (so incremental runs agree exactly).
def _cumsum_slope_weights(n: int) -> np.ndarray:
    x = np.arange(n, dtype=np.float64)
    xc = x - x.mean()
    tail = np.cumsum(xc[::-1])[::-1]  # sum_{j>=i} xc_j
    return tail[1:] / np.sum(xc * xc)  # weights for d_1..d_{n-1}


def _ols_slope_weights(n: int) -> np.ndarray:
    """slope = weights @ y for y observed at x = 0..n-1."""
    xc = np.arange(n, dtype=np.float64) - (n - 1) / 2
    return xc / np.sum(xc * xc)


_OBV_SLOPE_20 = _cumsum_slope_weights(20)
_OLS_SLOPE_50 = _ols_slope_weights(50)


def _float_features(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, bpy: float
) -> dict:
    """Own-bar float features for one (symbol, interval) series; arrays are float64 and contiguous."""
    f: dict[str, np.ndarray] = {}
    logc = np.log(c)
    for k in RETURN_HORIZONS:
        f[f"ret_{k}"] = logc - _lag(logc, k)
    r1 = f["ret_1"]
    f["gap"] = np.log(o) - _lag(logc, 1)
    f["hl_range"] = np.log(h) - np.log(lo)

    atr = talib.ATR(h, lo, c, timeperiod=14)
    f["atr_14"] = atr
    f["natr_14"] = 100.0 * atr / c
    f["rsi_14"] = talib.RSI(c, timeperiod=14)
    macd, sig, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    f["macd"], f["macd_signal"], f["macd_hist"] = macd / c, sig / c, hist / c
    f["adx_14"] = talib.ADX(h, lo, c, timeperiod=14)
    f["plus_di_14"] = talib.PLUS_DI(h, lo, c, timeperiod=14)
    f["minus_di_14"] = talib.MINUS_DI(h, lo, c, timeperiod=14)

    # Bollinger(20, 2): two-pass window mean/std rather than TA-Lib's running sums, which lose digits on
    # low-variance intraday prices and drift with the series start.
    mid = _rolling_mean(c, 20)
    band = 2.0 * _rolling_std(c, 20)
    f["bb_pctb_20"] = _safe_div(c - (mid - band), 2.0 * band, 0.5)
    f["bb_width_20"] = 2.0 * band / mid

    signed_vol = np.sign(c - _lag(c, 1)) * v
    slope = _rolling(signed_vol, 19, lambda view, axis: view @ _OBV_SLOPE_20)  # increments d_{t-18..t}
    f["obv_slope_20"] = _safe_div(slope, _rolling_mean(v, 20), 0.0)

    f["mfi_14"] = talib.MFI(h, lo, c, v, timeperiod=14)
    f["cci_20"] = talib.CCI(h, lo, c, timeperiod=20)
    f["willr_14"] = talib.WILLR(h, lo, c, timeperiod=14)
    f["stoch_k"], f["stoch_d"] = talib.STOCH(
        h, lo, c, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0
    )
    # TA-Lib's running sums leave values like -1e-15 after a flat stretch: keep the documented [0, 100].
    for name in ("stoch_k", "stoch_d", "mfi_14"):
        np.clip(f[name], 0.0, 100.0, out=f[name])
    # SMAs and the OLS slope as per-window sums (same values as TA-Lib's SMA / LINEARREG_SLOPE up to
    # rounding) so they do not depend on where the series starts: TA-Lib keeps running totals.
    sma50 = _rolling_mean(c, 50)
    f["sma_ratio_20_50"] = mid / sma50
    f["sma_ratio_50_200"] = sma50 / _rolling_mean(c, 200)
    f["trend_slope_50"] = _rolling(logc, 50, lambda view, axis: view @ _OLS_SLOPE_50)

    r2 = r1 * r1
    for win in RV_WINDOWS:
        f[f"rv_{win}"] = np.sqrt(bpy * _rolling_mean(r2, win))
    f["rv_ratio_5_20"] = _safe_div(f["rv_5"], f["rv_20"], 1.0)
    f["rv_ratio_20_60"] = _safe_div(f["rv_20"], f["rv_60"], 1.0)
    f["atr_pct_rank_252"] = _rolling_pct_rank(atr, ATR_RANK_WINDOW)
    f["vol_of_vol_20"] = _safe_div(_rolling_std(f["rv_5"], 20, ddof=1), _rolling_mean(f["rv_5"], 20), 0.0)

    rng = h - lo
    clv = _safe_div((c - lo) - (h - c), rng, 0.0)
    f["clv"] = clv
    vol_sum = {win: _rolling_sum(v, win) for win in (5, 20)}
    for win in (5, 20):
        f[f"clv_volume_imbalance_{win}"] = _safe_div(_rolling_sum(clv * v, win), vol_sum[win], 0.0)
    up = c > _lag(c, 1)
    up_vol = np.where(up, v, 0.0)
    up_vol[0] = np.nan  # bar 0 has no previous close
    f["up_volume_share_20"] = _safe_div(_rolling_sum(up_vol, 20), vol_sum[20], 0.5)
    lv = np.log1p(v)
    f["volume_z_20"] = _safe_div(lv - _rolling_mean(lv, 20), _rolling_std(lv, 20), 0.0)
    return f


def _pattern_block(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    for j, name in enumerate(PATTERN_FUNCTIONS):
        # TA-Lib gives 0, +-100, +-200 (hikkake confirmations) and +-80 (engulfing/harami with an open equal to
        # the prior close): store round(x / 100), so -2..2 with the weak +-80 counted as +-1.
        out[j] = np.rint(getattr(talib, name)(o, h, lo, c) * 0.01)


def _check_series(ts: np.ndarray, prices: list[np.ndarray], volume: np.ndarray, label: str) -> None:
    # TA-Lib carries one NaN forward into every later value, and log returns need positive prices:
    # refuse rather than emit a silently poisoned series.
    if len(ts) > 1 and not (np.diff(ts) > 0).all():
        raise ValueError(f"{label}: ts must be strictly increasing (sort and dedupe bars first)")
    if not all((p > 0).all() and np.isfinite(p).all() for p in prices):
        raise ValueError(f"{label}: non-finite or non-positive prices; features need gated bars")
    if not (np.isfinite(volume).all() and (volume >= 0).all()):
        raise ValueError(f"{label}: non-finite or negative volume; features need gated bars")


def _compute_sorted(bars: pd.DataFrame, starts: np.ndarray, ends: np.ndarray) -> pd.DataFrame:
    """Features for bars already sorted by (symbol, interval, ts), one series per [start, end) slice."""
    n = len(bars)
    cols = {
        c: np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64))
        for c in ("open", "high", "low", "close", "volume")
    }
    ts = _ts_ns(bars["ts"])
    intervals = bars["interval"].to_numpy()
    symbols = bars["symbol"].to_numpy()
    floats = np.full((len(FLOAT_COLUMNS), n), np.nan)
    patterns = np.zeros((len(PATTERN_COLUMNS), n), dtype=np.int8)
    daily_src = [_FLOAT_INDEX[c] for c in DAILY_CONTEXT_SOURCES]
    daily_dst = [_FLOAT_INDEX[c] for c in DAILY_CONTEXT_COLUMNS]
    for s, e in zip(starts, ends, strict=True):
        o, h, lo, c, v = (cols[k][s:e] for k in ("open", "high", "low", "close", "volume"))
        interval = str(intervals[s])
        _check_series(ts[s:e], [o, h, lo, c], v, f"{symbols[s]} {interval}")
        feats = _float_features(o, h, lo, c, v, bars_per_year(interval))
        for name in _OWN_FLOAT_COLUMNS:
            floats[_FLOAT_INDEX[name], s:e] = feats[name]
        if interval_minutes(interval) == 1440:
            # Daily rows: the previous session's values, which is what the ASOF rule of add_daily_context
            # gives for a bar stamped at its session date 00:00 UTC.
            if e - s > 1:
                floats[daily_dst, s + 1 : e] = floats[daily_src, s : e - 1]
        block = patterns[:, s:e]
        _pattern_block(o, h, lo, c, block)
    keys = pd.DataFrame(
        {"symbol": bars["symbol"].array, "interval": bars["interval"].array, "ts": bars["ts"].array}
    )
    fl = pd.DataFrame(floats.T, columns=FLOAT_COLUMNS, copy=False)
    pa = pd.DataFrame(patterns.T, columns=PATTERN_COLUMNS, copy=False)
    return pd.concat([keys, fl, pa], axis=1)


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Features for ONE (symbol, interval) series sorted by ts: symbol, interval, ts + feature_columns().

    One row per input bar, in input order. Warm-up rows hold NaN in long-window columns. Intraday rows have
    NaN d_ columns until add_daily_context fills them.
    """
    if bars[["symbol", "interval"]].drop_duplicates().shape[0] > 1:
        raise ValueError("compute_features takes one (symbol, interval); use compute_features_many")
    bars = bars.reset_index(drop=True)
    return _compute_sorted(bars, np.array([0]), np.array([len(bars)])) if len(bars) else _empty()


def compute_features_many(bars: pd.DataFrame) -> pd.DataFrame:
    """Features for many (symbol, interval) series; output sorted by symbol, interval, ts."""
    if bars.empty:
        return _empty()
    sym_codes, _ = pd.factorize(bars["symbol"], sort=True)
    int_codes, int_uniques = pd.factorize(bars["interval"], sort=True)
    ts = _ts_ns(bars["ts"])
    key = sym_codes.astype(np.int64) * len(int_uniques) + int_codes
    order = np.lexsort((ts, key))
    if not (order == np.arange(len(order))).all():
        bars = bars.take(order)
        key = key[order]
    bars = bars.reset_index(drop=True)
    cuts = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(bars)]])
    return _compute_sorted(bars, starts, ends)


def _ts_ns(ts: pd.Series) -> np.ndarray:
    """Timestamps as int64 UTC nanoseconds (for ordering checks)."""
    return pd.to_datetime(ts, utc=True).dt.as_unit("ns").array.asi8


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in feature_dtypes().items()})


def session_close_utc(dates: pd.Series, exchange: str = "XNYS") -> pd.Series:
    """The UTC close of each daily bar's session (daily ts = session date 00:00 UTC)."""
    sched = get_calendar(exchange).schedule
    day = pd.DatetimeIndex(dates).tz_convert("UTC").tz_localize(None).normalize()
    closes = sched["close"].reindex(day)
    if closes.isna().any():
        bad = day[np.asarray(closes.isna())][:3]
        raise ValueError(f"daily bars on dates that are not {exchange} sessions: {list(bad.date)}")
    return pd.Series(closes.array, index=dates.index).dt.as_unit("ns")


def add_daily_context(
    intraday_features: pd.DataFrame, daily_features: pd.DataFrame, exchange: str = "XNYS"
) -> pd.DataFrame:
    """Fill the d_ columns of ``intraday_features`` point in time from ``daily_features``.

    Each row gets the daily values of the newest session of its symbol whose close (from the exchange
    calendar) is at or before the row's ts (the bar start). Rows keep their order; d_ columns are replaced.
    Applied to daily rows the same rule yields the previous session's values, as compute_features does.
    """
    intervals = daily_features["interval"].unique() if len(daily_features) else []
    if any(interval_minutes(str(i)) != 1440 for i in intervals):
        raise ValueError(f"daily_features must hold daily bars only, got intervals {list(intervals)}")
    out = intraday_features.copy()
    left = pd.DataFrame(
        {
            "symbol": out["symbol"].astype(str).array,
            "ts": pd.to_datetime(out["ts"], utc=True).dt.as_unit("ns").array,
            "_pos": np.arange(len(out)),
        }
    )
    right = pd.DataFrame(
        {
            "symbol": daily_features["symbol"].astype(str).array,
            "_available_at": session_close_utc(
                pd.to_datetime(daily_features["ts"], utc=True), exchange
            ).array,
            **{f"d_{c}": daily_features[c].to_numpy(dtype=np.float64) for c in DAILY_CONTEXT_SOURCES},
        }
    )
    merged = pd.merge_asof(
        left.sort_values("ts", kind="stable"),
        right.sort_values("_available_at", kind="stable"),
        left_on="ts",
        right_on="_available_at",
        by="symbol",
        direction="backward",
        allow_exact_matches=True,  # a session that closed exactly at the bar start is known at that start
    ).sort_values("_pos", kind="stable")
    for col in DAILY_CONTEXT_COLUMNS:
        out[col] = merged[col].to_numpy(dtype=np.float64)
    return out
