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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD * this estimates sigma for normal noise
DEFAULT_K = 3.0
DEFAULT_QUANTILE = 0.99
DEFAULT_WINDOW = 500  # trailing points
DEFAULT_MIN_HISTORY = 30  # fewer points: the metric's default threshold, flagged


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


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("latency_ms", Bound.upper, 1000.0, 1.0, 0.0, math.inf, "ms", "p95 predict latency", 0.05),
        MetricSpec(
            "error_rate", Bound.upper, 0.05, 0.002, 0.0, 1.0, "", "failed or NaN predictions / attempted"
        ),
        MetricSpec(
            "accuracy", Bound.lower, 0.50, 0.005, 0.0, 1.0, "", "recent accuracy of called predictions"
        ),
        MetricSpec(
            "psi", Bound.upper, 0.25, 0.01, 0.0, math.inf, "", "median feature PSI vs the training window"
        ),
        MetricSpec(
            "dq_failure_rate",
            Bound.upper,
            0.01,
            0.0005,
            0.0,
            1.0,
            "",
            "failing / checked rows of input gates",
        ),
        MetricSpec(
            "data_lag_bars", Bound.upper, 4.0, 1.0, 0.0, math.inf, "bars", "completed bars not yet ingested"
        ),
        MetricSpec(
            "prediction_lag_bars", Bound.upper, 4.0, 1.0, 0.0, math.inf, "bars", "predictions behind the data"
        ),
        MetricSpec("model_age_hours", Bound.upper, 3 * 168.0, 24.0, 0.0, math.inf, "h", "champion age"),
        # Seed 000 section 1.2: dynamic exits pause below 70.
        MetricSpec("health_score", Bound.lower, 70.0, 1.0, 0.0, 100.0, "", "module health score"),
        # Seed 000 section 1.1: stop 1.5 ATR, x1.3 in high volatility -> 1.95 ATR as the widest normal stop.
        MetricSpec(
            "stop_distance_atr", Bound.upper, 1.95, 0.05, 0.0, math.inf, "ATR", "exit planner stop distance"
        ),
    )
}


def metric_spec(metric: str) -> MetricSpec:
    try:
        return METRICS[metric]
    except KeyError:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}") from None


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
    spec: MetricSpec, n: int = 0, min_history: int = DEFAULT_MIN_HISTORY, window: int = DEFAULT_WINDOW
) -> LearnedThreshold:
    """The metric's documented default, flagged as such."""
    reason = f"default {spec.default:g}: history too short ({n} < {min_history} points)"
    return LearnedThreshold(
        spec.name, spec.bound, spec.default, "default", window, n, None, None, None, None, True, reason
    )


def learn_threshold(
    values: Sequence[float] | pd.Series,
    spec: MetricSpec | str,
    *,
    method: Method | str = Method.mad,
    k: float = DEFAULT_K,
    quantile: float = DEFAULT_QUANTILE,
    window: int = DEFAULT_WINDOW,
    min_history: int = DEFAULT_MIN_HISTORY,
    rel_min_spread: float | None = None,
) -> LearnedThreshold:
    """Learn ``spec``'s threshold from the trailing ``window`` finite values (oldest first).

    A Series indexed by timestamps records the window's first and last timestamp.
    """
    spec = metric_spec(spec) if isinstance(spec, str) else spec
    method = Method(method)
    if k <= 0 or not 0.5 < quantile < 1 or window < 1 or min_history < 1:
        raise ValueError("need k > 0, 0.5 < quantile < 1, window >= 1, min_history >= 1")
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype="float64"))
    series = series.astype("float64")
    series = series[np.isfinite(series.to_numpy())].iloc[-window:]
    n = len(series)
    if n < min_history:
        return default_threshold(spec, n, min_history, window)
    x = series.to_numpy()
    center = float(np.median(x))
    rel = spec.rel_min_spread if rel_min_spread is None else rel_min_spread
    floor = max(spec.min_spread, rel * abs(center))
    sign = 1.0 if spec.bound == Bound.upper else -1.0
    if method == Method.mad:
        spread = max(MAD_TO_SIGMA * float(np.median(np.abs(x - center))), floor)
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
    ts = series.index
    is_time = isinstance(ts, pd.DatetimeIndex)
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
        ts[0] if is_time else None,
        ts[-1] if is_time else None,
    )


def learn_all(
    history: pd.DataFrame,
    pairs: Iterable[tuple[str, str]] = (),
    *,
    method: Method | str = Method.mad,
    k: float = DEFAULT_K,
    quantile: float = DEFAULT_QUANTILE,
    window: int = DEFAULT_WINDOW,
    min_history: int = DEFAULT_MIN_HISTORY,
) -> list[tuple[str, LearnedThreshold]]:
    """A threshold for every (module, metric) in ``history`` (module, metric, ts, value) and in ``pairs``
    (pairs without history get their default, flagged). Metrics without a spec in METRICS are skipped."""
    keys = set(pairs)
    groups: dict[tuple[str, str], pd.DataFrame] = {}
    if len(history):
        groups = {(str(m), str(x)): g for (m, x), g in history.groupby(["module", "metric"], sort=False)}
        keys |= set(groups)
    out = []
    for module, metric in sorted(keys):
        if metric not in METRICS:
            continue
        g = groups.get((module, metric))
        series = (
            pd.Series(
                g["value"].to_numpy(dtype="float64"),
                index=pd.DatetimeIndex(pd.to_datetime(g["ts"], utc=True)),
            ).sort_index()
            if g is not None
            else pd.Series(dtype="float64")
        )
        out.append(
            (
                module,
                learn_threshold(
                    series,
                    metric,
                    method=method,
                    k=k,
                    quantile=quantile,
                    window=window,
                    min_history=min_history,
                ),
            )
        )
    return out
