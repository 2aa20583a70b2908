"""Training labels. These look forward by design, so they live apart from features and never feed them.

A label exists only where its whole horizon is observed (the next ``horizon`` bars of the same symbol and
interval): rows near the end of a series get NaN / <NA>, never a partially observed outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd
import talib

from models.features import KEY_COLUMNS
from qtrader.settings import SignalSettings

_SIGNAL = SignalSettings.model_fields  # the defaults' only home is qtrader/settings.py


@dataclass(frozen=True)
class BarrierProfile:
    """Exit profile in ATR multiples; defaults are SignalSettings' (the seed's exit profile, tp1_atr ...
    stop_atr; ``tasks.benchmark.exit_profile`` builds it from the configured ones). ``horizon`` is the
    number of bars after entry that are watched (exit_horizon_bars)."""

    tp1: float = _SIGNAL["tp1_atr"].default
    tp2: float = _SIGNAL["tp2_atr"].default
    tp3: float = _SIGNAL["tp3_atr"].default
    stop: float = _SIGNAL["stop_atr"].default
    horizon: int = _SIGNAL["exit_horizon_bars"].default
    atr_period: int = 14  # used only when no atr is passed in (matches features' atr_14)

    def __post_init__(self) -> None:
        if not 0 < self.tp1 < self.tp2 < self.tp3:
            raise ValueError(
                f"take-profits must satisfy 0 < tp1 < tp2 < tp3, got {self.tp1}, {self.tp2}, {self.tp3}"
            )
        if self.stop <= 0 or self.horizon < 1:
            raise ValueError(
                f"stop must be > 0 and horizon >= 1, got stop={self.stop}, horizon={self.horizon}"
            )


class Outcome(str, Enum):  # noqa: UP042 - the project convention (STYLE.md) is str, Enum
    TP3 = "tp3"
    TP2 = "tp2"
    TP1 = "tp1"
    STOP = "stop"
    TIMEOUT = "timeout"


SIDES = ("long", "short")


def label_columns(profile: BarrierProfile = BarrierProfile()) -> list[str]:
    """Ordered label columns make_labels returns after symbol, interval, ts."""
    per_side = ["outcome", "tp1", "tp2", "tp3", "stop", "r", "bars"]
    return [*(f"{s}_{c}" for s in SIDES for c in per_side), f"fwd_ret_{profile.horizon}", "label_up"]


def _series_ids(bars: pd.DataFrame) -> np.ndarray:
    """An integer per (symbol, interval) series; shifts must not cross from one series into the next."""
    return bars.groupby(["symbol", "interval"], sort=False).ngroup().to_numpy()


def _check_sorted(bars: pd.DataFrame, ids: np.ndarray) -> None:
    if len(ids) < 2:
        return
    ts = pd.to_datetime(bars["ts"], utc=True).dt.as_unit("ns").array.asi8
    same = ids[1:] == ids[:-1]
    if (np.diff(ts)[same] <= 0).any() or (len(np.unique(ids)) != 1 + np.count_nonzero(~same)):
        raise ValueError(
            "labels need bars grouped by (symbol, interval) and strictly increasing ts within each"
        )


def _lead(x: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """x[t + k] within the same series, NaN past its end."""
    out = np.full(len(x), np.nan)
    if k < len(x):
        same = ids[k:] == ids[:-k]
        out[:-k] = np.where(same, x[k:], np.nan)
    return out


def forward_return(bars: pd.DataFrame, horizon: int) -> pd.Series:
    """Log return from close t to close t+horizon; NaN in the last ``horizon`` rows of every series."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    ids = _series_ids(bars)
    _check_sorted(bars, ids)
    c = bars["close"].to_numpy(dtype=np.float64)
    return pd.Series(np.log(_lead(c, ids, horizon)) - np.log(c), index=bars.index, name=f"fwd_ret_{horizon}")


def _atr(bars: pd.DataFrame, ids: np.ndarray, period: int) -> np.ndarray:
    h, lo, c = (bars[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close"))
    out = np.full(len(bars), np.nan)
    cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(bars)], strict=True):
        out[s:e] = talib.ATR(h[s:e], lo[s:e], c[s:e], timeperiod=period)
    return out


def _side(
    sign: float,
    bars: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ids: np.ndarray,
    atr: np.ndarray,
    known: np.ndarray,
    p: BarrierProfile,
) -> dict[str, object]:
    """Barrier outcome for one side: sign=+1 long, -1 short.

    Prices are mirrored by ``sign`` so one code path serves both sides: for a long the favourable extreme
    of a bar is its high and the adverse one its low; for a short, -low and -high.
    """
    o, h, lo, c = bars
    n = len(c)
    never = p.horizon + 1
    risk = p.stop * atr
    entry = sign * c
    tp_levels = [entry + m * atr for m in (p.tp1, p.tp2, p.tp3)]  # mirrored space
    stop_level = entry - risk
    first_tp = [np.full(n, never, dtype=np.int16) for _ in tp_levels]
    first_stop = np.full(n, never, dtype=np.int16)
    stop_fill = np.full(n, np.nan)
    fav_src, adv_src = (h, lo) if sign > 0 else (lo, h)
    for k in range(1, p.horizon + 1):  # vectorised over rows; leads built per k to keep memory flat
        fav, adv = sign * _lead(fav_src, ids, k), sign * _lead(adv_src, ids, k)
        hit_stop = (adv <= stop_level) & (first_stop == never)
        first_stop[hit_stop] = k
        # A bar that opens through the stop fills at its open (gap risk), else at the stop.
        opn = sign * _lead(o, ids, k)
        stop_fill[hit_stop] = np.minimum(opn, stop_level)[hit_stop]
        for level, first in zip(tp_levels, first_tp, strict=True):
            first[(fav >= level) & (first == never)] = k
    # Same bar touching a TP and the stop: the stop counts first (conservative), hence strict <.
    reached = [(first < first_stop) & (first <= p.horizon) for first in first_tp]
    stopped = (first_stop <= p.horizon) & (first_stop <= first_tp[0])
    outcome = np.full(n, Outcome.TIMEOUT.value, dtype=object)
    outcome[reached[0]] = Outcome.TP1.value
    outcome[reached[1]] = Outcome.TP2.value
    outcome[reached[2]] = Outcome.TP3.value
    outcome[stopped] = Outcome.STOP.value
    outcome[~known] = None
    # One-shot exit at the first barrier touched (TP1 is the nearest TP), in R = stop distance.
    r = (sign * _lead(c, ids, p.horizon) - entry) / risk  # timeout: exit at close t+horizon
    r = np.where(reached[0], p.tp1 / p.stop, r)
    r = np.where(stopped, (stop_fill - entry) / risk, r)
    r[~known] = np.nan
    exit_bar = np.where(reached[0], first_tp[0], np.where(stopped, first_stop, p.horizon)).astype(np.float64)
    exit_bar[~known] = np.nan
    return {
        "outcome": pd.array(outcome, dtype="str"),
        "tp1": pd.arrays.BooleanArray(reached[0], ~known),
        "tp2": pd.arrays.BooleanArray(reached[1], ~known),
        "tp3": pd.arrays.BooleanArray(reached[2], ~known),
        "stop": pd.arrays.BooleanArray(stopped, ~known),
        "r": r,
        "bars": exit_bar,
    }


def triple_barrier(
    bars: pd.DataFrame, profile: BarrierProfile = BarrierProfile(), atr: np.ndarray | pd.Series | None = None
) -> pd.DataFrame:
    """Long and short barrier outcomes for every bar (index aligned with ``bars``).

    Entry at close t, barriers at close t +- multiple * ATR(t) (``atr``, e.g. features' atr_14, aligned by
    position with ``bars``; or ATR over ``profile.atr_period`` computed here), watched over bars
    t+1..t+horizon using their high and low.
    Columns per side: <side>_outcome (tp3/tp2/tp1/stop/timeout: highest TP reached before the stop or the
    horizon; stop if the stop came before any TP), <side>_tp1/_tp2/_tp3 (reached before the stop),
    <side>_stop (stop before any TP), <side>_r (R of a one-shot exit at the first barrier), <side>_bars
    (bars from entry to that exit; horizon on timeout).
    """
    ids = _series_ids(bars)
    _check_sorted(bars, ids)
    o, h, lo, c = (bars[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    a = _atr(bars, ids, profile.atr_period) if atr is None else np.asarray(atr, dtype=np.float64)
    if len(a) != len(bars):
        raise ValueError(f"atr has {len(a)} values for {len(bars)} bars")
    known = np.isfinite(_lead(c, ids, profile.horizon)) & np.isfinite(a) & (a > 0)
    out: dict[str, object] = {}
    for side, sign in (("long", 1.0), ("short", -1.0)):
        for name, values in _side(sign, (o, h, lo, c), ids, a, known, profile).items():
            out[f"{side}_{name}"] = values
    return pd.DataFrame(out, index=bars.index)


def make_labels(
    bars: pd.DataFrame, profile: BarrierProfile = BarrierProfile(), atr: np.ndarray | pd.Series | None = None
) -> pd.DataFrame:
    """symbol, interval, ts + label_columns(profile): barrier outcomes, forward return and its sign."""
    barriers = triple_barrier(bars, profile, atr)
    fwd = forward_return(bars, profile.horizon)
    up = np.where(fwd.isna(), np.nan, (fwd > 0).astype(np.float64))
    out = pd.concat([bars[KEY_COLUMNS], barriers], axis=1)
    out[fwd.name] = fwd.to_numpy()
    out["label_up"] = up
    return out[[*KEY_COLUMNS, *label_columns(profile)]]
