"""Module health: eight component scores (0-100), the module score, the overall score, and PSI.

Every component is a plain function mapping one measurement to a score through a linear *ramp*:
100 at or better than its ``ok`` threshold, 0 at or worse than its ``bad`` threshold, linear between.
Measurements are made elsewhere (warehouse/health.py reads them); this module only decides.

| component | measurement | ok -> 100 | bad -> 0 |
|---|---|---|---|
| data_freshness | completed bars the exchange produced after the newest gated bar | 1 (daily) / 3 (intraday) | 4 / 12 |
| prediction_freshness | bars between the module's newest prediction and the newest gated bar | 1 / 3 | 4 / 12 |
| error_rate | (failed or non-finite predictions) / attempted, recent window | 0.01 | 0.10 |
| latency | p95 predict latency / the learned latency threshold | 1.0 | 2.0 |
| accuracy_drift | z of the drop: (baseline - recent) / sqrt(b (1 - b) / n) | 2.0 | 5.0 |
| feature_drift | median PSI of the module's input features (recent vs training window) | 0.10 | 0.25 |
| model_staleness | champion age / retrain schedule | 1.25 | 3.0 |
| dq_failure_rate | failing rows / checked rows of the module's input gates, recent window | 0.001 | 0.02 |

A component that cannot be measured (no benchmark yet, nothing validated) has score ``None`` and is left
out, its weight shared by the others. A missing *freshness* or *staleness* input (no bars, no prediction,
no champion) is not "unknown": it scores 0.

Module score: the weighted mean of the measured components, then capped at ``worst component +
CAP_MARGIN`` so one failed component cannot be averaged away (a component at 0 caps the module at 50,
below the trade gates of seed 000 section 2.1 (80) and 1.2 (70)). Overall score: the weighted mean of the
module scores (module weights, default 1 each).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from models.signals.columns import IMBALANCE, PATTERN_PREFIX, TREND, VOL_STRUCTURE
from qtrader.calendar import expected_bars, get_calendar, interval_minutes, is_daily, utc


class Component(StrEnum):
    data_freshness = "data_freshness"
    prediction_freshness = "prediction_freshness"
    error_rate = "error_rate"
    latency = "latency"
    accuracy_drift = "accuracy_drift"
    feature_drift = "feature_drift"
    model_staleness = "model_staleness"
    dq_failure_rate = "dq_failure_rate"


# Weights of the module score (they need not sum to 1; they are normalised over the measured components).
DEFAULT_WEIGHTS: dict[str, float] = {
    Component.data_freshness: 0.15,
    Component.prediction_freshness: 0.15,
    Component.error_rate: 0.15,
    Component.latency: 0.10,
    Component.accuracy_drift: 0.15,
    Component.feature_drift: 0.10,
    Component.model_staleness: 0.10,
    Component.dq_failure_rate: 0.10,
}
CAP_MARGIN = 50.0  # module score <= worst measured component + this

# Freshness, in bars of the module's interval (daily: sessions; intraday: bars of the interval).
DATA_LAG_OK_DAILY, DATA_LAG_BAD_DAILY = 1.0, 4.0
DATA_LAG_OK_INTRADAY, DATA_LAG_BAD_INTRADAY = 3.0, 12.0
PREDICTION_LAG_OK_DAILY, PREDICTION_LAG_BAD_DAILY = 1.0, 4.0
PREDICTION_LAG_OK_INTRADAY, PREDICTION_LAG_BAD_INTRADAY = 3.0, 12.0
ERROR_RATE_OK, ERROR_RATE_BAD = 0.01, 0.10
LATENCY_RATIO_OK, LATENCY_RATIO_BAD = 1.0, 2.0  # p95 latency / learned threshold
ACCURACY_DROP_Z_OK, ACCURACY_DROP_Z_BAD = 2.0, 5.0
PSI_OK, PSI_BAD = 0.10, 0.25  # the usual PSI bands: < 0.10 stable, > 0.25 a significant shift
STALENESS_RATIO_OK, STALENESS_RATIO_BAD = 1.25, 3.0  # champion age / retrain schedule
DQ_FAILURE_OK, DQ_FAILURE_BAD = 0.001, 0.02

PSI_BINS = 10
PSI_EPS = 1e-4  # floor of a bin's share, so an empty bin gives a large finite PSI instead of infinity
PSI_MIN_ROWS = 20  # fewer rows on either side: PSI is not computed (NaN)


@dataclass(frozen=True)
class ComponentScore:
    """One component: its score (None = not measured), the measurement and the thresholds it met."""

    name: str
    score: float | None
    value: float | None
    ok: float
    bad: float
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def ramp_score(value: float, ok: float, bad: float) -> float:
    """100 at ``ok`` or better, 0 at ``bad`` or worse, linear between.

    ``ok < bad`` means lower is better (latency, lags, rates); ``ok > bad`` means higher is better.
    """
    if ok == bad:
        raise ValueError(f"ramp needs ok != bad, got {ok}")
    if value is None or not math.isfinite(value):
        raise ValueError(f"ramp needs a finite value, got {value}")
    frac = (value - ok) / (bad - ok)  # 0 at ok, 1 at bad, whichever way round
    return float(100.0 * (1.0 - min(max(frac, 0.0), 1.0)))


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _scored(name: str, value: float | None, ok: float, bad: float, detail: str) -> ComponentScore:
    return ComponentScore(name, ramp_score(value, ok, bad), float(value), ok, bad, detail)


def freshness_thresholds(interval: str, kind: str = "data") -> tuple[float, float]:
    """(ok, bad) lag thresholds in bars for ``interval``; ``kind`` is ``data`` or ``prediction``."""
    daily = is_daily(interval)
    if kind == "data":
        return (
            (DATA_LAG_OK_DAILY, DATA_LAG_BAD_DAILY)
            if daily
            else (DATA_LAG_OK_INTRADAY, DATA_LAG_BAD_INTRADAY)
        )
    if kind == "prediction":
        return (
            (PREDICTION_LAG_OK_DAILY, PREDICTION_LAG_BAD_DAILY)
            if daily
            else (PREDICTION_LAG_OK_INTRADAY, PREDICTION_LAG_BAD_INTRADAY)
        )
    raise ValueError(f"kind must be data or prediction, got {kind!r}")


def data_freshness_score(
    missed_bars: float | None, *, ok: float = DATA_LAG_OK_DAILY, bad: float = DATA_LAG_BAD_DAILY
) -> ComponentScore:
    """Completed bars the exchange produced after the newest gated bar (``missed_bars``). None: no bars at all."""
    name = Component.data_freshness
    if not _finite(missed_bars):
        return ComponentScore(name, 0.0, None, ok, bad, "no gated bars")
    return _scored(name, missed_bars, ok, bad, f"{missed_bars:g} completed bars not in the warehouse")


def prediction_freshness_score(
    lag_bars: float | None, *, ok: float = PREDICTION_LAG_OK_DAILY, bad: float = PREDICTION_LAG_BAD_DAILY
) -> ComponentScore:
    """Bars between the newest prediction and the newest gated bar. None: the module never predicted.

    Measured against the data, not the clock, so stale data lowers data_freshness only.
    """
    name = Component.prediction_freshness
    if not _finite(lag_bars):
        return ComponentScore(name, 0.0, None, ok, bad, "no predictions")
    return _scored(name, lag_bars, ok, bad, f"predictions {lag_bars:g} bars behind the newest bar")


def error_rate_score(
    errors: float | None, attempted: float | None, *, ok: float = ERROR_RATE_OK, bad: float = ERROR_RATE_BAD
) -> ComponentScore:
    """Share of recent predictions that raised or came out non-finite. Nothing attempted: not measured."""
    name = Component.error_rate
    if not _finite(attempted) or attempted <= 0 or not _finite(errors):
        return ComponentScore(name, None, None, ok, bad, "no predictions in the window")
    rate = errors / attempted
    return _scored(name, rate, ok, bad, f"{errors:g} of {attempted:g} predictions failed or NaN")


def latency_score(
    latency_ms: float | None,
    threshold_ms: float | None,
    *,
    ok: float = LATENCY_RATIO_OK,
    bad: float = LATENCY_RATIO_BAD,
) -> ComponentScore:
    """p95 predict latency over the learned latency threshold (a ratio: 1 = at the threshold)."""
    name = Component.latency
    if not _finite(latency_ms) or not _finite(threshold_ms) or threshold_ms <= 0:
        return ComponentScore(name, None, None, ok, bad, "no latency measured")
    ratio = latency_ms / threshold_ms
    return _scored(name, ratio, ok, bad, f"p95 {latency_ms:.1f} ms vs threshold {threshold_ms:.1f} ms")


def accuracy_drop_z(baseline: float, recent: float, n: float) -> float:
    """z statistic of an accuracy drop: (baseline - recent) / sqrt(baseline (1 - baseline) / n)."""
    b = min(max(baseline, 1e-3), 1 - 1e-3)
    return (baseline - recent) / math.sqrt(b * (1 - b) / n)


def accuracy_drift_score(
    baseline: float | None,
    recent: float | None,
    n: float | None,
    *,
    ok: float = ACCURACY_DROP_Z_OK,
    bad: float = ACCURACY_DROP_Z_BAD,
) -> ComponentScore:
    """Recent accuracy against the module's own validation accuracy, as the z of the drop.

    A z rather than a raw difference: 3 points lost on 100 predictions is noise, on 5,000 it is not.
    An improvement (negative z) scores 100. Missing baseline, recent accuracy or n: not measured.
    """
    name = Component.accuracy_drift
    if not (_finite(baseline) and _finite(recent) and _finite(n)) or n <= 0:
        return ComponentScore(name, None, None, ok, bad, "no benchmark or no validation baseline")
    z = accuracy_drop_z(baseline, recent, n)
    return _scored(
        name, z, ok, bad, f"accuracy {recent:.3f} vs validation {baseline:.3f} (n={n:g}, z={z:.2f})"
    )


def feature_drift_score(
    psi_median: float | None,
    worst_feature: str | None = None,
    worst_psi: float | None = None,
    *,
    ok: float = PSI_OK,
    bad: float = PSI_BAD,
) -> ComponentScore:
    """The median PSI of the module's input features, recent rows against the training window.

    The median, not the maximum: a wide module (direction reads ~50 features) always has a few
    level-like features (atr_14, rv_60) far from a multi-year training window; the median says whether
    its inputs *as a whole* moved. The worst feature is named in the detail.
    """
    name = Component.feature_drift
    if not _finite(psi_median):
        return ComponentScore(name, None, None, ok, bad, "not enough feature rows for PSI")
    worst = f", worst {worst_feature} {worst_psi:.3f}" if worst_feature and _finite(worst_psi) else ""
    return _scored(name, psi_median, ok, bad, f"median PSI {psi_median:.3f}{worst}")


def model_staleness_score(
    age_hours: float | None,
    schedule_hours: float,
    *,
    ok: float = STALENESS_RATIO_OK,
    bad: float = STALENESS_RATIO_BAD,
) -> ComponentScore:
    """Champion age over the retrain schedule (1 = due now). None: no champion, scores 0."""
    name = Component.model_staleness
    if not _finite(age_hours):
        return ComponentScore(name, 0.0, None, ok, bad, "no champion model")
    ratio = age_hours / schedule_hours
    return _scored(
        name, ratio, ok, bad, f"champion {age_hours / 24:.1f} d old, retrain every {schedule_hours / 24:g} d"
    )


def dq_failure_score(
    failing: float | None, checked: float | None, *, ok: float = DQ_FAILURE_OK, bad: float = DQ_FAILURE_BAD
) -> ComponentScore:
    """Failing rows over checked rows in the recent data-quality verdicts of the module's input gates."""
    name = Component.dq_failure_rate
    if not _finite(checked) or checked <= 0 or not _finite(failing):
        return ComponentScore(name, None, None, ok, bad, "no data-quality verdicts in the window")
    rate = failing / checked
    return _scored(name, rate, ok, bad, f"{failing:g} of {checked:g} checked rows failed")


@dataclass(frozen=True)
class ModuleHealth:
    """A module's score and the components behind it; ``lost`` is the points each component cost."""

    module: str
    score: float | None
    components: tuple[ComponentScore, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    capped_by: str | None = None

    @property
    def lost(self) -> dict[str, float]:
        """Points below 100 attributed to each measured component (weight share x shortfall)."""
        measured = [c for c in self.components if c.score is not None and self.weights.get(c.name, 0) > 0]
        total = sum(self.weights[c.name] for c in measured)
        if not total:
            return {}
        return {c.name: self.weights[c.name] / total * (100.0 - c.score) for c in measured}

    def movers(self, min_points: float = 0.5) -> list[tuple[str, float, str]]:
        """The components that moved the score, biggest first: (name, points lost, detail)."""
        details = {c.name: c.detail for c in self.components}
        lost = sorted(self.lost.items(), key=lambda kv: -kv[1])
        return [(name, pts, details[name]) for name, pts in lost if pts >= min_points]

    def components_json(self) -> dict:
        lost = self.lost
        return {
            c.name: {**c.as_dict(), "weight": self.weights.get(c.name, 0.0), "lost": lost.get(c.name)}
            for c in self.components
        } | {"_capped_by": self.capped_by}


def module_score(
    module: str,
    components: Sequence[ComponentScore],
    weights: Mapping[str, float] | None = None,
    *,
    cap_margin: float = CAP_MARGIN,
) -> ModuleHealth:
    """Weighted mean of the measured components, capped at the worst one + ``cap_margin``.

    None when no component with a positive weight was measured.
    """
    weights = {str(k): float(v) for k, v in (weights or DEFAULT_WEIGHTS).items()}
    unknown = sorted({c.name for c in components} - set(weights))
    if unknown:
        raise KeyError(f"no weight for components {unknown}")
    if any(w < 0 for w in weights.values()):
        raise ValueError("health weights must be >= 0")
    measured = [c for c in components if c.score is not None and weights[c.name] > 0]
    if not measured:
        return ModuleHealth(module, None, tuple(components), weights)
    total = sum(weights[c.name] for c in measured)
    mean = sum(weights[c.name] * c.score for c in measured) / total
    worst = min(measured, key=lambda c: c.score)
    cap = worst.score + cap_margin
    capped_by = worst.name if cap < mean else None
    return ModuleHealth(module, round(min(mean, cap), 4), tuple(components), weights, capped_by)


def overall_score(
    module_scores: Mapping[str, float | None], module_weights: Mapping[str, float] | None = None
) -> float | None:
    """Weighted mean of the module scores that exist (module weight default 1)."""
    module_weights = module_weights or {}
    pairs = [(module_weights.get(m, 1.0), s) for m, s in module_scores.items() if _finite(s)]
    pairs = [(w, s) for w, s in pairs if w > 0]
    if not pairs:
        return None
    return round(sum(w * s for w, s in pairs) / sum(w for w, _ in pairs), 4)


# ---------------------------------------------------------------------------------------------- measurements


def missed_bars(
    interval: str, newest_ts: pd.Timestamp | None, now: pd.Timestamp, exchange: str = "XNYS"
) -> float | None:
    """Completed bars (end <= now) the exchange produced after ``newest_ts``. None when there is no bar.

    Daily: sessions after the newest bar's date whose close is at or before ``now``. Intraday: bars that
    start after the newest bar and end at or before ``now``.
    """
    if newest_ts is None or pd.isna(newest_ts):
        return None
    newest, now = utc(newest_ts), utc(now)
    if newest >= now:
        return 0.0
    if is_daily(interval):
        cal = get_calendar(exchange)
        start = newest.tz_localize(None).normalize() + pd.Timedelta(days=1)
        end = min(now.tz_localize(None).normalize(), cal.last_session)
        if start > end:
            return 0.0
        sess = cal.sessions_in_range(start, end)
        closes = cal.schedule.loc[sess, "close"]
        return float((closes <= now).sum())
    step = pd.Timedelta(minutes=interval_minutes(interval))
    if now - step <= newest:
        return 0.0
    return float(len(expected_bars(interval, newest + pd.Timedelta(seconds=1), now - step, exchange)))


def lag_bars(
    interval: str, older_ts: pd.Timestamp | None, newer_ts: pd.Timestamp | None, exchange: str = "XNYS"
) -> float | None:
    """Expected bars in (older_ts, newer_ts]: how far a series stamped ``older_ts`` trails one at ``newer_ts``."""
    if older_ts is None or pd.isna(older_ts):
        return None
    if newer_ts is None or pd.isna(newer_ts):
        return 0.0
    older, newer = utc(older_ts), utc(newer_ts)
    if older >= newer:
        return 0.0
    if is_daily(interval):
        start = older.normalize() + pd.Timedelta(days=1)
        return float(len(expected_bars(interval, start, newer, exchange)))
    return float(len(expected_bars(interval, older + pd.Timedelta(seconds=1), newer, exchange)))


# ---------------------------------------------------------------------------------------------- drift (PSI)


def psi(
    expected: object, actual: object, bins: int = PSI_BINS, eps: float = PSI_EPS, min_rows: int = PSI_MIN_ROWS
) -> float:
    """Population stability index of ``actual`` against ``expected``: sum (a - e) ln(a / e) over bins.

    Bins: deciles of ``expected`` (``bins`` quantile bins, duplicates merged); a feature with at most
    ``bins`` distinct values (a candlestick flag) gets one bin per value. Shares are floored at ``eps``.
    Non-finite values are dropped; fewer than ``min_rows`` on either side gives NaN.
    Bands: < 0.10 stable, 0.10-0.25 moderate, > 0.25 significant shift.
    """
    e = np.asarray(expected, dtype="float64").ravel()
    a = np.asarray(actual, dtype="float64").ravel()
    e, a = e[np.isfinite(e)], a[np.isfinite(a)]
    if len(e) < min_rows or len(a) < min_rows:
        return float("nan")
    uniq = np.unique(e)
    if len(uniq) <= bins:
        cats = np.union1d(uniq, np.unique(a))
        pe = np.searchsorted(cats, e)
        pa = np.searchsorted(cats, a)
        n_bins = len(cats)
    else:
        edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
        pe = np.searchsorted(edges, e, side="right")
        pa = np.searchsorted(edges, a, side="right")
        n_bins = len(edges) + 1
    se = np.maximum(np.bincount(pe, minlength=n_bins) / len(e), eps)
    sa = np.maximum(np.bincount(pa, minlength=n_bins) / len(a), eps)
    return float(np.sum((sa - se) * np.log(sa / se)))


def feature_psi(train: pd.DataFrame, recent: pd.DataFrame, columns: Iterable[str], **kwargs) -> pd.Series:
    """PSI per column, largest first (NaN last)."""
    cols = [c for c in columns if c in train.columns and c in recent.columns]
    values = {
        c: psi(
            train[c].to_numpy(dtype="float64", na_value=np.nan),
            recent[c].to_numpy(dtype="float64", na_value=np.nan),
            **kwargs,
        )
        for c in cols
    }
    return pd.Series(values, dtype="float64").sort_values(ascending=False, na_position="last")


_SELECTOR_INPUTS = ("ret_20", "trend_slope_50", "bb_pctb_20", "rsi_14", "adx_14")
_REGIME_RULE_INPUTS = ("adx_14", "trend_slope_50")


def drift_columns(module: str, available: Iterable[str]) -> list[str]:
    """The feature columns whose drift matters to ``module`` (its inputs, per docs/modules.md).

    ``direction`` and ``ensemble`` read every feature: all continuous features (candlestick flags are
    left to ``patterns``, whose inputs they are).
    """
    available = list(available)
    groups: dict[str, tuple[str, ...]] = {
        "volatility": VOL_STRUCTURE,
        "regime": TREND,
        "selector": _SELECTOR_INPUTS,
        "imbalance": IMBALANCE,
    }
    if module in groups:
        return [c for c in groups[module] if c in available]
    if module == "patterns":
        return [c for c in available if c.startswith(PATTERN_PREFIX)] + [
            c for c in _REGIME_RULE_INPUTS if c in available
        ]
    return [c for c in available if not c.startswith(PATTERN_PREFIX)]


# ---------------------------------------------------------------------------------------------- assessment

# The metric each component's raw measurement is recorded as (metric_history, thresholds, alerts).
METRIC_OF_COMPONENT: dict[str, str] = {
    Component.data_freshness: "data_lag_bars",
    Component.prediction_freshness: "prediction_lag_bars",
    Component.error_rate: "error_rate",
    Component.latency: "latency_ms",
    Component.accuracy_drift: "accuracy",
    Component.feature_drift: "psi",
    Component.model_staleness: "model_age_hours",
    Component.dq_failure_rate: "dq_failure_rate",
}
HEALTH_METRIC = "health_score"
OVERALL = "overall"  # the module name of the overall row


@dataclass(frozen=True)
class IntervalMeasurements:
    """What was measured for one module on one bar interval (None: could not be measured).

    ``*_at`` are the event times of measurements that come from a stored fact (the predictions batch,
    the benchmark row); the others are as of the health run.
    """

    interval: str
    data_lag_bars: float | None = None
    prediction_lag_bars: float | None = None
    prediction_errors: float | None = None
    predictions_attempted: float | None = None
    latency_p95_ms: float | None = None
    latency_at: pd.Timestamp | None = None
    accuracy_baseline: float | None = None
    accuracy_recent: float | None = None
    accuracy_n: float | None = None
    accuracy_at: pd.Timestamp | None = None
    psi_median: float | None = None
    psi_max: float | None = None
    psi_feature: str | None = None  # the feature with psi_max
    model_age_hours: float | None = None
    dq_failing: float | None = None
    dq_checked: float | None = None

    def raw(self, metric: str) -> tuple[float | None, pd.Timestamp | None]:
        """(value, event time or None) of a metric of METRIC_OF_COMPONENT."""
        ratio = {
            "error_rate": (self.prediction_errors, self.predictions_attempted),
            "dq_failure_rate": (self.dq_failing, self.dq_checked),
        }
        if metric in ratio:
            num, den = ratio[metric]
            return (num / den if _finite(num) and _finite(den) and den > 0 else None), None
        value, at = {
            "data_lag_bars": (self.data_lag_bars, None),
            "prediction_lag_bars": (self.prediction_lag_bars, None),
            "latency_ms": (self.latency_p95_ms, self.latency_at),
            "accuracy": (self.accuracy_recent, self.accuracy_at),
            "psi": (self.psi_median, None),
            "model_age_hours": (self.model_age_hours, None),
        }[metric]
        return (float(value) if _finite(value) else None), at


def interval_components(
    m: IntervalMeasurements, cfg, latency_threshold_ms: float | None
) -> list[ComponentScore]:
    """The eight component scores of one interval's measurements, thresholds from ``cfg`` (HealthSettings)."""
    daily = is_daily(m.interval)
    data_ok, data_bad = (
        (cfg.data_lag_ok_daily, cfg.data_lag_bad_daily)
        if daily
        else (cfg.data_lag_ok_intraday, cfg.data_lag_bad_intraday)
    )
    pred_ok, pred_bad = (
        (cfg.prediction_lag_ok_daily, cfg.prediction_lag_bad_daily)
        if daily
        else (cfg.prediction_lag_ok_intraday, cfg.prediction_lag_bad_intraday)
    )
    schedule = cfg.retrain_schedule_hours_daily if daily else cfg.retrain_schedule_hours_intraday
    return [
        data_freshness_score(m.data_lag_bars, ok=data_ok, bad=data_bad),
        prediction_freshness_score(m.prediction_lag_bars, ok=pred_ok, bad=pred_bad),
        error_rate_score(
            m.prediction_errors, m.predictions_attempted, ok=cfg.error_rate_ok, bad=cfg.error_rate_bad
        ),
        latency_score(
            m.latency_p95_ms, latency_threshold_ms, ok=cfg.latency_ratio_ok, bad=cfg.latency_ratio_bad
        ),
        accuracy_drift_score(
            m.accuracy_baseline,
            m.accuracy_recent,
            m.accuracy_n,
            ok=cfg.accuracy_drop_z_ok,
            bad=cfg.accuracy_drop_z_bad,
        ),
        feature_drift_score(m.psi_median, m.psi_feature, m.psi_max, ok=cfg.psi_ok, bad=cfg.psi_bad),
        model_staleness_score(
            m.model_age_hours, schedule, ok=cfg.staleness_ratio_ok, bad=cfg.staleness_ratio_bad
        ),
        dq_failure_score(m.dq_failing, m.dq_checked, ok=cfg.dq_failure_ok, bad=cfg.dq_failure_bad),
    ]


@dataclass(frozen=True)
class ModuleAssessment:
    """A module's health and the metric points it contributes to metric_history: {metric: (value, at)}."""

    health: ModuleHealth
    metrics: dict[str, tuple[float, pd.Timestamp | None]]


def assess_module(
    module: str, measurements: Sequence[IntervalMeasurements], cfg, latency_threshold_ms: float | None = None
) -> ModuleAssessment:
    """Score a module over its intervals: each component is taken from the interval where it is worst
    (a module is as healthy as its worst market), its detail prefixed with the interval."""
    if not measurements:
        raise ValueError(f"{module}: no interval measured")
    chosen: dict[str, ComponentScore] = {}
    metrics: dict[str, tuple[float, pd.Timestamp | None]] = {}
    for m in measurements:
        for comp in interval_components(m, cfg, latency_threshold_ms):
            comp = ComponentScore(
                comp.name, comp.score, comp.value, comp.ok, comp.bad, f"[{m.interval}] {comp.detail}"
            )
            best = chosen.get(comp.name)
            worse = best is None or (
                comp.score is not None and (best.score is None or comp.score < best.score)
            )
            if worse:
                chosen[comp.name] = comp
                value, at = m.raw(METRIC_OF_COMPONENT[comp.name])
                if value is not None:
                    metrics[METRIC_OF_COMPONENT[comp.name]] = (value, at)
                else:
                    metrics.pop(METRIC_OF_COMPONENT[comp.name], None)
    health = module_score(module, [chosen[c] for c in Component], cfg.weights, cap_margin=cfg.cap_margin)
    if health.score is not None:
        metrics[HEALTH_METRIC] = (health.score, None)
    return ModuleAssessment(health, metrics)


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class HealthInputs:
    """What the health flow read from the warehouse (warehouse/health.py fills it; plain frames).

    - ``champions``: module, interval, version, trained_at, train_start, train_end, feature_set_version,
      metrics (dict or JSON text: the validation metrics)
    - ``newest_bars``: {interval: newest gated bar ts}
    - ``predictions``: module, interval, newest_ts (newest predicted bar), run_id, predicted_at, rows,
      bad (non-finite or out-of-range probabilities), quarantined, latency_p95_ms (of the newest run)
    - ``failed_runs``: module, interval, failed (recent retrain runs that registered nothing for it)
    - ``benchmarks``: module, interval, accuracy, n, coverage, computed_at (the configured window)
    - ``features``: {(interval, train_start, train_end): (training-window rows, recent rows)}
    - ``dq``: {interval: (failing rows, checked rows)} of the critical verdicts of recent input runs
    """

    modules: list[str]
    default_intervals: list[str]
    champions: pd.DataFrame
    newest_bars: dict[str, pd.Timestamp]
    predictions: pd.DataFrame
    failed_runs: pd.DataFrame
    benchmarks: pd.DataFrame
    features: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]]
    dq: dict[str, tuple[float, float]]


def _lookup(frame: pd.DataFrame, module: str, interval: str) -> pd.Series | None:
    if frame is None or frame.empty:
        return None
    rows = frame[(frame["module"] == module) & (frame["interval"] == interval)]
    return None if rows.empty else rows.iloc[0]


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ts(x) -> pd.Timestamp | None:
    return None if x is None or pd.isna(x) else utc(x)


def _metrics(value) -> dict:
    if isinstance(value, str):
        return json.loads(value)
    return dict(value) if value is not None else {}


def measure(
    inputs: HealthInputs, now: pd.Timestamp, *, psi_bins: int = PSI_BINS, exchange: str = "XNYS"
) -> dict[str, list[IntervalMeasurements]]:
    """Per module, the measurements of each of its intervals (those with a champion, else the defaults)."""
    now = utc(now)
    out: dict[str, list[IntervalMeasurements]] = {}
    for module in inputs.modules:
        champ_rows = (
            inputs.champions[inputs.champions["module"] == module]
            if len(inputs.champions)
            else inputs.champions
        )
        intervals = (
            sorted(champ_rows["interval"].unique()) if len(champ_rows) else list(inputs.default_intervals)
        )
        out[module] = [_measure_one(inputs, module, iv, now, psi_bins, exchange) for iv in intervals]
    return out


def _measure_one(
    inputs: HealthInputs, module: str, interval: str, now: pd.Timestamp, psi_bins: int, exchange: str
) -> IntervalMeasurements:
    newest_bar = inputs.newest_bars.get(interval)
    champ = _lookup(inputs.champions, module, interval)
    pred = _lookup(inputs.predictions, module, interval)
    bench = _lookup(inputs.benchmarks, module, interval)
    failed = _lookup(inputs.failed_runs, module, interval)

    # Errors: rows of the newest predict run that failed, plus each recent retrain run that raised for the
    # module counted as a run whose every prediction failed.
    rows = (_num(pred["rows"]) or 0.0) + (_num(pred["quarantined"]) or 0.0) if pred is not None else 0.0
    errors = (_num(pred["bad"]) or 0.0) + (_num(pred["quarantined"]) or 0.0) if pred is not None else 0.0
    n_failed = _num(failed["failed"]) or 0.0 if failed is not None else 0.0
    per_run = max(rows, 1.0)
    attempted = rows + n_failed * per_run
    errors += n_failed * per_run

    baseline = _num(_metrics(champ["metrics"]).get("accuracy")) if champ is not None else None
    acc_n = None
    if bench is not None and _num(bench["n"]) is not None:
        coverage = _num(bench.get("coverage"))
        acc_n = _num(bench["n"]) * (coverage if coverage is not None else 1.0)

    psi_median = psi_max = psi_feature = None
    if champ is not None:
        key = (interval, _ts(champ["train_start"]), _ts(champ["train_end"]))
        frames = inputs.features.get(key)
        if frames is not None:
            train, recent = frames
            cols = drift_columns(module, [c for c in train.columns if c not in ("symbol", "interval", "ts")])
            per_feature = feature_psi(train, recent, cols, bins=psi_bins).dropna()
            if len(per_feature):
                psi_median = float(per_feature.median())
                psi_max, psi_feature = float(per_feature.iloc[0]), str(per_feature.index[0])

    dq = inputs.dq.get(interval)
    return IntervalMeasurements(
        interval=interval,
        data_lag_bars=missed_bars(interval, newest_bar, now, exchange),
        prediction_lag_bars=lag_bars(interval, pred["newest_ts"], newest_bar, exchange)
        if pred is not None
        else None,
        prediction_errors=errors if attempted > 0 else None,
        predictions_attempted=attempted if attempted > 0 else None,
        latency_p95_ms=_num(pred["latency_p95_ms"]) if pred is not None else None,
        latency_at=_ts(pred["predicted_at"]) if pred is not None else None,
        accuracy_baseline=baseline,
        accuracy_recent=_num(bench["accuracy"]) if bench is not None else None,
        accuracy_n=acc_n,
        accuracy_at=_ts(bench["computed_at"]) if bench is not None else None,
        psi_median=psi_median,
        psi_max=psi_max,
        psi_feature=psi_feature,
        model_age_hours=(now - utc(champ["trained_at"])).total_seconds() / 3600
        if champ is not None
        else None,
        dq_failing=dq[0] if dq else None,
        dq_checked=dq[1] if dq else None,
    )
