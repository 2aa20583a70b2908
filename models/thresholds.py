"""Adaptive thresholds: per (module, metric) bounds learned from the metric's own history.

Method (default ``mad``): over the trailing ``window`` points,
``center = median``, ``spread = max(1.4826 * MAD, min_spread, rel_min_spread * |center|)`` (floors per
metric in ``METRICS``) and
``threshold = center + k * spread`` for an upper bound (latency, error rate, stop distance, PSI, ...) or
``center - k * spread`` for a lower bound (accuracy, health score). 1.4826 * MAD estimates the standard
deviation of normal noise, so k = 3 puts the bound ~3 sigma away, and a burst of outliers moves neither
the median nor the MAD much. Method ``quantile``: the ``quantile`` (upper) or ``1 - quantile`` (lower)
empirical quantile, pushed at least ``min_spread`` away from the median.

The spread floor matters: a metric that has been constant (latency always 12 ms) has MAD 0, and a bound
at exactly 12 ms would fire on the first jitter.

With fewer than ``min_history`` points the metric's documented default is used and the result says so
(``is_default`` and ``reason``). Results are clipped to the metric's domain (rates in [0, 1], ...).

Every number (k, window, defaults, spread floors) comes from Settings: ``metric_specs(settings)`` builds
each metric's spec, its default taken from the setting that defines it (the health score's from the
exit planner's seed gate, the stop distance's from the exit profile, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD * this estimates sigma for normal noise (a constant)


class Bound(StrEnum):
    upper = "upper"  # breached when the metric rises above the threshold
    lower = "lower"  # breached when the metric falls below it


class Method(StrEnum):
    mad = "mad"
    quantile = "quantile"


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is bounded: its direction, default threshold, spread floor and valid range."""

    name: str
    bound: Bound
    default: float
    min_spread: float
    lo: float = -math.inf
    hi: float = math.inf
    unit: str = ""
    description: str = ""
    rel_min_spread: float = 0.0  # spread floor as a share of |median| (ratio-scale metrics such as latency)


# What a metric is, not how it is tuned: its direction, domain, unit and meaning.
METRICS: dict[str, tuple[Bound, float, float, str, str]] = {
    "latency_ms": (Bound.upper, 0.0, math.inf, "ms", "p95 predict latency"),
    "error_rate": (Bound.upper, 0.0, 1.0, "", "failed or NaN predictions / attempted"),
    "accuracy": (Bound.lower, 0.0, 1.0, "", "recent accuracy of called predictions"),
    "out_of_range": (Bound.upper, 0.0, 1.0, "", "share of recent inputs outside the training range"),
    "dq_failure_rate": (Bound.upper, 0.0, 1.0, "", "failing / checked rows of input gates"),
    "data_lag_bars": (Bound.upper, 0.0, math.inf, "bars", "completed bars not yet ingested"),
    "prediction_lag_bars": (Bound.upper, 0.0, math.inf, "bars", "outputs behind the data"),
    "model_age_hours": (Bound.upper, 0.0, math.inf, "h", "hours since the champion was last confirmed"),
    "health_score": (Bound.lower, 0.0, 100.0, "", "module health score"),
    "stop_distance_atr": (Bound.upper, 0.0, math.inf, "ATR", "exit planner stop distance"),
}


def metric_specs(settings) -> dict[str, MetricSpec]:
    """Every metric's spec from ``settings`` (a Settings): defaults from the settings that define them."""
    h, t, x = settings.health, settings.thresholds, settings.exits
    defaults = {
        "latency_ms": t.default_latency_ms,
        "error_rate": t.default_error_rate,
        "accuracy": settings.retrain.seed_accuracy_prior,  # a coin flip
        "out_of_range": h.drift_bad,
        "dq_failure_rate": t.default_dq_failure_rate,
        "data_lag_bars": h.data_lag_bad_daily,
        "prediction_lag_bars": h.prediction_lag_bad_daily,
        "model_age_hours": h.staleness_ratio_bad * h.retrain_schedule_hours_daily,
        # Seed 000 section 1.2: dynamic exits pause below 70.
        "health_score": x.min_overall_health,
        # Seed 000 section 1.1: the stop in a high-volatility regime is the widest normal stop.
        "stop_distance_atr": x.stop_atr * x.high_vol_stop_mult,
    }
    return {
        name: MetricSpec(
            name,
            bound,
            float(defaults[name]),
            float(t.min_spread[name]),
            lo,
            hi,
            unit,
            description,
            t.latency_rel_min_spread if name == "latency_ms" else 0.0,
        )
        for name, (bound, lo, hi, unit, description) in METRICS.items()
    }


@dataclass(frozen=True)
class LearnedThreshold:
    """A threshold and how it was obtained (``is_default``: history too short, ``reason`` says why)."""

    metric: str
    bound: Bound
    value: float
    method: str
    window: int
    n: int
    center: float | None
    spread: float | None
    k: float | None
    quantile: float | None
    is_default: bool
    reason: str
    window_start: pd.Timestamp | None = None
    window_end: pd.Timestamp | None = None

    def breached(self, value: float) -> bool:
        """Is ``value`` beyond the threshold (strictly)?"""
        return value > self.value if self.bound == Bound.upper else value < self.value

    def as_dict(self) -> dict:
        out = asdict(self)
        out["bound"] = self.bound.value
        return out


def default_threshold(
    spec: MetricSpec, n: int = 0, min_history: int = 0, window: int = 0
) -> LearnedThreshold:
    """The metric's documented default, flagged as such."""
    reason = f"default {spec.default:g}: history too short ({n} < {min_history} points)"
    return LearnedThreshold(
        spec.name, spec.bound, spec.default, "default", window, n, None, None, None, None, True, reason
    )


def sorted_median(x: np.ndarray) -> float:
    """``np.median`` of finite values: the middle sorted value, or numpy's mean of the two middle ones
    ((a + b) / 2), the same float without its partition and dispatch (a timeline learns thousands); a
    zero median among signed zeros is numpy's own."""
    s = np.sort(x)
    h = len(s) // 2
    m = float(s[h]) if len(s) % 2 else float((s[h - 1] + s[h]) / 2)
    if m == 0.0 and np.signbit(s).any():  # which zero (0.0 or -0.0) numpy's partition lands on
        return float(np.median(x))
    return m


def learn_threshold(values: Sequence[float] | pd.Series, spec: MetricSpec, cfg) -> LearnedThreshold:
    """Learn ``spec``'s threshold from the trailing ``cfg.window`` finite values (oldest first).

    ``cfg``: ThresholdSettings (method, k, quantile, window, min_history). A Series indexed by timestamps
    records the window's first and last timestamp.
    """
    method, k, quantile = Method(cfg.method), cfg.k, cfg.quantile
    window, min_history = cfg.window, cfg.min_history
    if k <= 0 or not 0.5 < quantile < 1 or window < 1 or min_history < 1:
        raise ValueError("need k > 0, 0.5 < quantile < 1, window >= 1, min_history >= 1")
    if isinstance(values, pd.Series):
        x_all = values.to_numpy(dtype="float64")
        stamps = values.index if isinstance(values.index, pd.DatetimeIndex) else None
    else:
        x_all, stamps = np.asarray(values, dtype="float64"), None
    keep = np.flatnonzero(np.isfinite(x_all))[-window:]
    x = x_all[keep]
    n = len(x)
    if n < min_history:
        return default_threshold(spec, n, min_history, window)
    center = sorted_median(x)
    floor = max(spec.min_spread, spec.rel_min_spread * abs(center))
    sign = 1.0 if spec.bound == Bound.upper else -1.0
    if method == Method.mad:
        spread = max(MAD_TO_SIGMA * sorted_median(np.abs(x - center)), floor)
        value = center + sign * k * spread
        how = f"median {center:.4g} {'+' if sign > 0 else '-'} {k:g} x {spread:.4g} (1.4826 MAD, floored)"
        k_used, q_used = k, None
    else:
        q = quantile if spec.bound == Bound.upper else 1 - quantile
        value = float(np.quantile(x, q))
        value = max(value, center + floor) if sign > 0 else min(value, center - floor)
        spread = abs(value - center)
        how = f"q{q:.3g} of the window, >= {floor:.4g} from the median {center:.4g}"
        k_used, q_used = None, quantile
    value = float(min(max(value, spec.lo), spec.hi))
    return LearnedThreshold(
        spec.name,
        spec.bound,
        value,
        method.value,
        window,
        n,
        center,
        spread,
        k_used,
        q_used,
        False,
        f"learned from {n} points: {how}",
        stamps[keep[0]] if stamps is not None else None,
        stamps[keep[-1]] if stamps is not None else None,
    )


def learn_all(
    history: pd.DataFrame,
    pairs: Iterable[tuple[str, str]],
    specs: Mapping[str, MetricSpec],
    cfg,
) -> list[tuple[str, LearnedThreshold]]:
    """A threshold for every (module, metric) in ``history`` (module, metric, ts, value) and in ``pairs``
    (pairs without history get their default, flagged). Metrics without a spec are skipped.

    ``specs``: ``metric_specs(settings)``; ``cfg``: ThresholdSettings.
    """
    keys = set(pairs)
    groups: dict[tuple[str, str], pd.Series] = {}
    if len(history):
        ordered = history.assign(ts=pd.to_datetime(history["ts"], utc=True)).sort_values("ts", kind="stable")
        for (m, x), g in ordered.groupby(["module", "metric"], sort=False):
            groups[(str(m), str(x))] = pd.Series(
                g["value"].to_numpy(dtype="float64"), index=pd.DatetimeIndex(g["ts"])
            )
        keys |= set(groups)
    empty = pd.Series(dtype="float64")
    return [
        (module, learn_threshold(groups.get((module, metric), empty), specs[metric], cfg))
        for module, metric in sorted(keys)
        if metric in specs
    ]
