"""Predictive alerts: a robust trend toward a threshold gives the hours left before it is breached.

For one (module, metric) series and its learned threshold:

1. Take the recent points (no older than ``lookback_hours`` (24), at most ``max_points`` (300)); a trend
   needs ``min_points`` (8).
2. Fit a Theil-Sen line ``value = level + slope * hours_from_now`` (the median of pairwise slopes: a few
   outliers do not move it) with the ``confidence`` (95%) interval of the slope from scipy's
   ``theilslopes`` (Kendall's tau based), widened for serially correlated residuals: with r the
   bias-corrected lag-1 autocorrelation of the residuals, half-widths x sqrt((1 + r) / (1 - r)) (the
   effective sample size n (1 - r) / (1 + r) of Santer et al., 2000).
3. **Breached**: the median of the last ``breach_points`` (3) values is beyond the threshold
   -> time to threshold 0, severity critical. One spike, or a single observation, is not a breach.
4. **Trending toward it**: the whole slope interval is on the threshold's side (``slope_low > 0`` for an
   upper bound, ``slope_high < 0`` for a lower one). Then
   ``time_to_threshold_hours = (threshold - level) / slope``, ``level`` being the fitted value now.
   Flat within noise or trending away: no estimate, no alert. Two guards against extrapolating noise:
   no estimate beyond ``max_extrapolation`` (2) x the fitted span, and no alert unless the slow end of the
   interval also reaches the threshold within ``confirm_hours`` (36).
5. **Severity** by hours left: critical below ``critical_hours`` (4: the exit planner tightens stops,
   seed 000 section 1.3), warning below ``warning_hours`` (24), otherwise no alert.

False alarms (tests/models/test_alerts.py): stationary noise, threshold learned from 200 earlier points
(median + 3 x 1.4826 MAD), 200 seeds, evaluated at 60, 15 and 5 minute sampling. Stated bound: 1% of
evaluations (the test's ``FALSE_ALARM_BOUND``). Measured with 20 evaluations per seed (12,000): i.i.d. noise
0.017% (2 alerts), AR(1) noise with lag-1 correlation 0.5: 0.25% (30; worst 0.55% at hourly sampling).

Time to threshold: exact on a noiseless ramp; within 10% on a noisy ramp (noise sd 2.5% of the distance
to the threshold, irregular sampling, 100 seeds).

Resolution (``reconcile``): an open alert resolves when the value is back within the threshold and the
trend no longer reaches it within ``resolve_hours`` (36 = 1.5 x the warning horizon, so an alert
hovering near 24 h does not flap). A metric with no recent points keeps its alert open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy.stats import theilslopes

from models.thresholds import Bound, LearnedThreshold, MetricSpec, default_threshold
from qtrader.calendar import utc

# Every number of the rules above is a field of AlertSettings (qtrader/settings.py), passed as ``cfg``.


class AlertSeverity(StrEnum):
    critical = "critical"
    warning = "warning"


@dataclass(frozen=True)
class TrendFit:
    """Theil-Sen fit over hours relative to ``now``: ``level`` is the fitted value at now."""

    slope_per_hour: float
    slope_low: float
    slope_high: float
    level: float
    n: int
    span_hours: float
    autocorrelation: float = 0.0  # lag-1, of the residuals (widens the interval)


@dataclass(frozen=True)
class Evaluation:
    """One (module, metric) checked against its threshold; ``severity`` None means no alert."""

    module: str
    metric: str
    bound: str
    threshold: float
    current: float | None
    level: float | None
    slope_per_hour: float | None
    slope_low: float | None
    slope_high: float | None
    n: int
    time_to_threshold_hours: float | None
    severity: AlertSeverity | None
    reason: str

    @property
    def breached(self) -> bool:
        return self.time_to_threshold_hours == 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["severity"] = self.severity.value if self.severity else None
        return out


def severity_for(hours: float | None, critical_hours: float, warning_hours: float) -> AlertSeverity | None:
    if hours is None or not math.isfinite(hours):
        return None
    if hours < critical_hours:
        return AlertSeverity.critical
    if hours < warning_hours:
        return AlertSeverity.warning
    return None


def _hours(ts: Sequence | pd.Series | pd.DatetimeIndex, now: pd.Timestamp) -> np.ndarray:
    if len(ts) == 0:
        return np.empty(0)
    if isinstance(ts, np.ndarray) and ts.dtype.kind == "i":  # nanoseconds since the epoch, UTC
        ns = ts
    else:
        ns = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).as_unit("ns").asi8
    return (ns - utc(now).value) / 3.6e12


def recent_points(
    ts: Sequence | pd.Series | pd.DatetimeIndex,
    values: Sequence[float] | pd.Series,
    now: pd.Timestamp,
    *,
    max_points: int,
    lookback_hours: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(hours from now, values) of the finite points in the lookback, at or before now, oldest first."""
    h = _hours(ts, now)
    y = np.asarray(values, dtype="float64")
    if len(h) != len(y):
        raise ValueError(f"ts and values differ in length: {len(h)} != {len(y)}")
    keep = np.isfinite(y) & (h <= 0) & (h >= -lookback_hours)
    order = np.argsort(h[keep], kind="stable")
    h, y = h[keep][order], y[keep][order]
    return h[-max_points:], y[-max_points:]


def lag1_autocorrelation(residuals: np.ndarray, cap: float) -> float:
    """Bias-corrected lag-1 autocorrelation of ``residuals`` in [0, cap] (0 when undefined)."""
    r = np.asarray(residuals, dtype="float64") - np.mean(residuals)
    denom = float(np.dot(r, r))
    if len(r) < 3 or denom <= 0:
        return 0.0
    raw = np.dot(r[1:], r[:-1]) / denom
    corrected = raw + (1 + 4 * raw) / len(r)  # the estimate is biased low in short series (Kendall, 1954)
    return float(min(max(corrected, 0.0), cap))


def fit_trend(
    hours: np.ndarray, values: np.ndarray, confidence: float, max_autocorrelation: float
) -> TrendFit | None:
    """Theil-Sen slope per hour with its confidence interval; None with < 3 points or no time spread.

    The interval is widened for serially correlated residuals (lag-1 autocorrelation r): an effective
    sample size n (1 - r) / (1 + r) (Santer et al., 2000) scales its half-widths by sqrt((1 + r) / (1 - r)).
    """
    if len(hours) < 3 or np.ptp(hours) <= 0:
        return None
    res = theilslopes(values, hours, alpha=confidence)
    r1 = lag1_autocorrelation(values - (res.intercept + res.slope * hours), max_autocorrelation)
    widen = math.sqrt((1 + r1) / (1 - r1))
    return TrendFit(
        float(res.slope),
        float(res.slope - widen * (res.slope - res.low_slope)),
        float(res.slope + widen * (res.high_slope - res.slope)),
        float(res.intercept),
        len(hours),
        float(np.ptp(hours)),
        r1,
    )


def time_to_threshold(fit: TrendFit, threshold: float, bound: Bound | str) -> float | None:
    """Hours until the fitted line crosses ``threshold``; 0 if past it; None if not significantly heading there."""
    bound = Bound(bound)
    toward = fit.slope_low > 0 if bound == Bound.upper else fit.slope_high < 0
    gap = threshold - fit.level
    if (bound == Bound.upper and gap <= 0) or (bound == Bound.lower and gap >= 0):
        return 0.0
    if not toward or fit.slope_per_hour == 0:
        return None
    return float(gap / fit.slope_per_hour)


def evaluate(
    module: str,
    metric: str,
    ts: Sequence | pd.Series | pd.DatetimeIndex,
    values: Sequence[float] | pd.Series,
    threshold: float,
    bound: Bound | str,
    now: pd.Timestamp,
    cfg,
) -> Evaluation:
    """Check one metric series against its threshold (see the module docstring for the rules)."""
    bound = Bound(bound)
    breach_points, min_points = cfg.breach_points, cfg.min_points
    max_extrapolation, confirm_hours = cfg.max_extrapolation, cfg.confirm_hours
    h, y = recent_points(ts, values, now, max_points=cfg.max_points, lookback_hours=cfg.lookback_hours)
    current = float(y[-1]) if len(y) else None

    def result(level, fit, tth, severity, reason) -> Evaluation:
        return Evaluation(
            module, metric, bound.value, float(threshold), current, level,
            fit.slope_per_hour if fit else None, fit.slope_low if fit else None, fit.slope_high if fit else None,
            len(y), tth, severity, reason,
        )  # fmt: skip

    if len(y) == 0:
        return result(None, None, None, None, "no recent points")
    recent_level = float(np.median(y[-breach_points:]))
    # A breach needs breach_points points: one observation (a first benchmark, one slow batch) is not one.
    past = len(y) >= breach_points and (
        recent_level > threshold if bound == Bound.upper else recent_level < threshold
    )
    fit = fit_trend(h, y, cfg.confidence, cfg.max_autocorrelation) if len(y) >= min_points else None
    side = "above" if bound == Bound.upper else "below"
    if past:
        return result(
            recent_level, fit, 0.0, AlertSeverity.critical,
            f"{metric} {recent_level:.4g} is {side} its threshold {threshold:.4g} (median of the last {breach_points})",
        )  # fmt: skip
    if fit is None:
        return result(recent_level, None, None, None, f"{len(y)} recent points < {min_points}: no trend fit")
    tth = time_to_threshold(fit, threshold, bound)
    if tth is None:
        return result(
            fit.level,
            fit,
            None,
            None,
            f"no significant trend toward {threshold:.4g} (slope {fit.slope_per_hour:.4g}/h)",
        )
    if tth == 0.0:  # the fitted level is past it but the last points are not: let the points decide
        return result(
            fit.level, fit, None, None, f"fitted level past {threshold:.4g} but recent points are not"
        )
    if tth > max_extrapolation * fit.span_hours:
        return result(
            fit.level, fit, None, None,
            f"trend reaches {threshold:.4g} in {tth:.1f} h, beyond {max_extrapolation:g} x the {fit.span_hours:.1f} h fitted",
        )  # fmt: skip
    slow = fit.slope_low if bound == Bound.upper else fit.slope_high  # the interval's end nearest zero
    slow_tth = (threshold - fit.level) / slow
    if slow_tth >= confirm_hours:
        return result(
            fit.level, fit, tth, None,
            f"trend reaches {threshold:.4g} in {tth:.1f} h, but only in {slow_tth:.0f} h at the slow end of its interval",
        )  # fmt: skip
    severity = severity_for(tth, cfg.critical_hours, cfg.warning_hours)
    reason = (
        f"{metric} trending {'up' if fit.slope_per_hour > 0 else 'down'} {fit.slope_per_hour:.4g}/h "
        f"(CI {fit.slope_low:.4g}..{fit.slope_high:.4g}) from {fit.level:.4g}: {side} {threshold:.4g} in {tth:.1f} h"
    )
    return result(fit.level, fit, tth, severity, reason)


@dataclass(frozen=True)
class AlertChanges:
    """What one evaluation round does to the alerts table."""

    opened: list[Evaluation]
    updated: list[tuple[str, Evaluation]]  # (alert_id, evaluation): still open, new values
    resolved: list[tuple[str, str]]  # (alert_id, reason)


def reconcile(
    open_alerts: Mapping[tuple[str, str], str],
    evaluations: Sequence[Evaluation],
    *,
    resolve_hours: float,
) -> AlertChanges:
    """Open, update or resolve alerts. ``open_alerts`` maps (module, metric) -> alert_id of open alerts.

    An evaluation with a severity opens an alert (or updates the open one). An open alert whose new
    evaluation has no severity stays open (updated, with its previous severity kept by the caller's row)
    while the trend still reaches the threshold within ``resolve_hours``; it resolves once it does not.
    An open alert with no new points at all is left untouched.
    """
    opened, updated, resolved = [], [], []
    for ev in evaluations:
        key = (ev.module, ev.metric)
        alert_id = open_alerts.get(key)
        if ev.severity is not None:
            if alert_id:
                updated.append((alert_id, ev))
            else:
                opened.append(ev)
            continue
        if alert_id is None or ev.n == 0:
            continue
        tth = ev.time_to_threshold_hours
        if tth is not None and tth < resolve_hours:
            updated.append((alert_id, ev))
        else:
            resolved.append((alert_id, f"cleared: {ev.reason}"))
    return AlertChanges(opened, updated, resolved)


def evaluate_series(
    series: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    thresholds: Mapping[tuple[str, str], LearnedThreshold],
    open_alerts: Mapping[tuple[str, str], str],
    now: pd.Timestamp,
    cfg,
    specs: Mapping[str, MetricSpec],
) -> tuple[list[Evaluation], AlertChanges]:
    """``evaluate_all`` on series already split: {(module, metric): (ts as UTC nanoseconds, values)}."""
    keys = set(open_alerts) | {k for k in series if k[1] in set(cfg.metrics)}
    empty = (np.empty(0, dtype=np.int64), np.empty(0))
    evaluations = []
    for module, metric in sorted(keys):
        if metric not in specs:
            continue
        t = thresholds.get((module, metric)) or default_threshold(specs[metric])
        ts, values = series.get((module, metric), empty)
        evaluations.append(evaluate(module, metric, ts, values, t.value, t.bound, now, cfg))
    return evaluations, reconcile(open_alerts, evaluations, resolve_hours=cfg.resolve_hours)


def evaluate_all(
    points: pd.DataFrame,
    thresholds: Mapping[tuple[str, str], LearnedThreshold],
    open_alerts: Mapping[tuple[str, str], str],
    now: pd.Timestamp,
    cfg,
    specs: Mapping[str, MetricSpec],
) -> tuple[list[Evaluation], AlertChanges]:
    """Evaluate every (module, metric) of ``points`` (module, metric, ts, value) whose metric is in
    ``cfg.metrics`` (AlertSettings), plus those with an open alert, and reconcile with the open alerts.

    A pair without a learned threshold uses its metric's default threshold (``specs``: metric_specs).
    """
    series = {}
    if len(points):
        frame = points.assign(ts=pd.to_datetime(points["ts"], utc=True))
        for (m, x), g in frame.groupby(["module", "metric"], sort=False):
            series[(str(m), str(x))] = (
                pd.DatetimeIndex(g["ts"]).as_unit("ns").asi8,
                g["value"].to_numpy(dtype="float64"),
            )
    return evaluate_series(series, thresholds, open_alerts, now, cfg, specs)
