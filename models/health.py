"""Module health: eight component scores (0-100), the module score, the overall score, and the gate.

Every component is a plain function mapping one measurement to a score through a linear *ramp*:
100 at or better than its ``ok`` threshold, 0 at or worse than its ``bad`` threshold, linear between.
Measurements are made from frames (``measure``: warehouse/health.py reads them, models/health_timeline.py
holds them in memory); this module only decides. Every threshold is a field of ``HealthSettings``.

| component | measurement |
|---|---|
| data_freshness | completed bars the exchange produced after the newest gated bar |
| prediction_freshness | bars between the newest bar the module produced an output for and the newest gated bar (a module combined from others, the ensemble, has an output wherever enough of its members do) |
| error_rate | (failed or non-finite predictions) / attempted, newest predict run and recent retrains |
| latency | p95 predict latency / the learned latency threshold |
| accuracy_drift | z of the drop from validation accuracy to recent accuracy (both samples' noise) |
| feature_drift | share of the module's recent input values outside its training window's central range, beyond the share expected (scale-free inputs only) |
| model_staleness | age of the champion's last confirmation (the newest retrain that evaluated it and kept it, or its training) / retrain schedule |
| dq_failure_rate | failing rows / checked rows of the module's input gates, recent runs |

A component that cannot be measured (no benchmark yet, nothing validated) has score ``None`` and is left
out, its weight shared by the others. A missing *freshness* or *staleness* input (no bars, no prediction,
no champion) is not "unknown": it scores 0.

Module score: the weighted mean of the measured components, then capped at ``worst component +
cap_margin`` so one failed component cannot be averaged away. Overall score: the weighted mean of the
module scores. The gate (``gate_value``) compares a score with the module's own learned baseline, the
seed's fixed gate before there is one, never above the seed's gate and never below the kill-switch floor
``cap_margin + kill_switch_margin``: a component at (or within ``kill_switch_margin`` of) 0 always blocks.
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


def freshness_thresholds(interval: str, kind: str, cfg) -> tuple[float, float]:
    """(ok, bad) lag thresholds in bars for ``interval``; ``kind`` is ``data`` or ``prediction``."""
    family = "daily" if is_daily(interval) else "intraday"
    if kind not in ("data", "prediction"):
        raise ValueError(f"kind must be data or prediction, got {kind!r}")
    return getattr(cfg, f"{kind}_lag_ok_{family}"), getattr(cfg, f"{kind}_lag_bad_{family}")


def data_freshness_score(missed_bars: float | None, *, ok: float, bad: float) -> ComponentScore:
    """Completed bars the exchange produced after the newest gated bar (``missed_bars``). None: no bars at all."""
    name = Component.data_freshness
    if not _finite(missed_bars):
        return ComponentScore(name, 0.0, None, ok, bad, "no gated bars")
    return _scored(name, missed_bars, ok, bad, f"{missed_bars:g} completed bars not in the warehouse")


def prediction_freshness_score(
    lag_bars: float | None, *, ok: float, bad: float, detail: str = ""
) -> ComponentScore:
    """Bars between the newest bar the module produced an output for and the newest gated bar.

    Measured against the data, not the clock, so stale data lowers data_freshness only. None: the module
    never produced an output.
    """
    name = Component.prediction_freshness
    if not _finite(lag_bars):
        return ComponentScore(name, 0.0, None, ok, bad, "no predictions")
    return _scored(name, lag_bars, ok, bad, detail or f"predictions {lag_bars:g} bars behind the newest bar")


def error_rate_score(
    errors: float | None, attempted: float | None, *, ok: float, bad: float
) -> ComponentScore:
    """Share of recent predictions that raised or came out non-finite. Nothing attempted: not measured."""
    name = Component.error_rate
    if not _finite(attempted) or attempted <= 0 or not _finite(errors):
        return ComponentScore(name, None, None, ok, bad, "no predictions in the window")
    rate = errors / attempted
    return _scored(name, rate, ok, bad, f"{errors:g} of {attempted:g} predictions failed or NaN")


def latency_score(
    latency_ms: float | None, threshold_ms: float | None, *, ok: float, bad: float
) -> ComponentScore:
    """p95 predict latency over the learned latency threshold (a ratio: 1 = at the threshold)."""
    name = Component.latency
    if not _finite(latency_ms) or not _finite(threshold_ms) or threshold_ms <= 0:
        return ComponentScore(name, None, None, ok, bad, "no latency measured")
    ratio = latency_ms / threshold_ms
    return _scored(name, ratio, ok, bad, f"p95 {latency_ms:.1f} ms vs threshold {threshold_ms:.1f} ms")


def accuracy_drop_z(baseline: float, recent: float, n: float, n_baseline: float | None = None) -> float:
    """z of an accuracy drop: (baseline - recent) / sqrt(b (1 - b) (1/n + 1/n_baseline)).

    Both accuracies are estimates: the validation one has its own noise (and a champion is the version
    whose validation happened to look best), so its sample counts as well when it is known.
    """
    b = min(max(baseline, 1e-3), 1 - 1e-3)
    inv = 1.0 / n + (1.0 / n_baseline if _finite(n_baseline) and n_baseline > 0 else 0.0)
    return (baseline - recent) / math.sqrt(b * (1 - b) * inv)


def accuracy_drift_score(
    baseline: float | None,
    recent: float | None,
    n: float | None,
    *,
    ok: float,
    bad: float,
    n_baseline: float | None = None,
) -> ComponentScore:
    """Recent accuracy against the module's own validation accuracy, as the z of the drop.

    A z rather than a raw difference: 3 points lost on 100 predictions is noise, on 5,000 it is not.
    An improvement (negative z) scores 100. Missing baseline, recent accuracy or n: not measured.
    """
    name = Component.accuracy_drift
    if not (_finite(baseline) and _finite(recent) and _finite(n)) or n <= 0:
        return ComponentScore(name, None, None, ok, bad, "no benchmark or no validation baseline")
    z = accuracy_drop_z(baseline, recent, n, n_baseline)
    nb = f", validation n={n_baseline:g}" if _finite(n_baseline) else ""
    return _scored(
        name, z, ok, bad, f"accuracy {recent:.3f} vs validation {baseline:.3f} (n={n:g}{nb}, z={z:.2f})"
    )


def feature_drift_score(
    share: float | None,
    worst_feature: str | None = None,
    worst_share: float | None = None,
    *,
    ok: float,
    bad: float,
    tail: float,
) -> ComponentScore:
    """The share of the module's recent input values outside its training window's central range
    (``tail`` cut off each side), beyond the share the training window itself has there; mean over the
    module's inputs. The worst input is named in the detail."""
    name = Component.feature_drift
    if not _finite(share):
        return ComponentScore(name, None, None, ok, bad, "not enough feature rows to compare")
    central = 100 * (1 - 2 * tail)
    worst = (
        f", worst {worst_feature} {100 * worst_share:.0f}%" if worst_feature and _finite(worst_share) else ""
    )
    detail = f"{100 * share:.1f}% of recent input values outside the training window's central {central:g}% (beyond its own){worst}"
    return _scored(name, share, ok, bad, detail)


def model_staleness_score(
    age_hours: float | None, schedule_hours: float, *, ok: float, bad: float, detail: str = ""
) -> ComponentScore:
    """Hours since the champion was last confirmed (or trained) over the retrain schedule (1 = due now).

    None: no champion, scores 0. ``schedule_hours`` is positive (``HealthSettings`` refuses 0: a schedule
    of "never" has no due date to be stale against).
    """
    name = Component.model_staleness
    if not _finite(age_hours):
        return ComponentScore(name, 0.0, None, ok, bad, "no champion model")
    ratio = age_hours / schedule_hours
    detail = detail or f"champion confirmed {age_hours / 24:.1f} d ago"
    return _scored(name, ratio, ok, bad, f"{detail}, retrain every {schedule_hours / 24:g} d")


def dq_failure_score(
    failing: float | None, checked: float | None, *, ok: float, bad: float
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
        """Points below 100 attributed to each measured component: its weight share of the shortfall,
        plus, for the component that capped the score, what the cap took off (they add up to 100 - score)."""
        measured = [c for c in self.components if c.score is not None and self.weights.get(c.name, 0) > 0]
        total = sum(self.weights[c.name] for c in measured)
        if not total:
            return {}
        out = {c.name: self.weights[c.name] / total * (100.0 - c.score) for c in measured}
        if self.capped_by and self.score is not None:
            mean = sum(self.weights[c.name] * c.score for c in measured) / total
            out[self.capped_by] += max(mean - self.score, 0.0)
        return out

    def movers(self, min_points: float = 0.5) -> list[tuple[str, float, str]]:
        """The components that moved the score, biggest first: (name, points lost, detail)."""
        details = {c.name: c.detail for c in self.components}
        lost = sorted(self.lost.items(), key=lambda kv: -kv[1])
        return [(name, pts, details[name]) for name, pts in lost if pts >= min_points]

    def drivers(self, n: int = 3, min_points: float = 0.5) -> list[dict]:
        """The ``n`` components that cost the most points: [{component, lost, score, detail}]."""
        scores = {c.name: c.score for c in self.components}
        return [
            {"component": name, "lost": round(pts, 2), "score": scores[name], "detail": detail}
            for name, pts, detail in self.movers(min_points)[:n]
        ]

    def components_json(self) -> dict:
        lost = self.lost
        return {
            c.name: {**c.as_dict(), "weight": self.weights.get(c.name, 0.0), "lost": lost.get(c.name)}
            for c in self.components
        } | {"_capped_by": self.capped_by}


def module_score(
    module: str,
    components: Sequence[ComponentScore],
    weights: Mapping[str, float],
    *,
    cap_margin: float,
) -> ModuleHealth:
    """Weighted mean of the measured components, capped at the worst one + ``cap_margin``.

    None when no component with a positive weight was measured.
    """
    weights = {str(k): float(v) for k, v in weights.items()}
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


def overall_drivers(
    modules: Mapping[str, ModuleHealth], module_weights: Mapping[str, float] | None = None, n: int = 3
) -> list[dict]:
    """What pulled the overall score down: each module's lost points scaled by its weight share,
    biggest first: [{module, component, lost, detail}]."""
    module_weights = module_weights or {}
    scored = {m: h for m, h in modules.items() if _finite(h.score) and module_weights.get(m, 1.0) > 0}
    total = sum(module_weights.get(m, 1.0) for m in scored)
    if not total:
        return []
    rows = []
    for m, h in scored.items():
        share = module_weights.get(m, 1.0) / total
        details = {c.name: c.detail for c in h.components}
        for comp, pts in h.lost.items():
            rows.append(
                {"module": m, "component": comp, "lost": round(share * pts, 2), "detail": details[comp]}
            )
    rows.sort(key=lambda r: -r["lost"])
    return [r for r in rows if r["lost"] >= 0.05][:n]


# ---------------------------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Gate:
    """The value a health score is compared with, and where it came from."""

    value: float
    source: str  # learned | fallback | floor | ceiling
    reason: str

    def blocks(self, score: float | None) -> bool:
        return score is None or not math.isfinite(score) or score < self.value


def kill_switch_floor(cfg) -> float:
    """The lowest a gate may go (HealthSettings): a component within ``kill_switch_margin`` of 0 caps its
    module at ``cap_margin + kill_switch_margin`` or less, so it always blocks."""
    return cfg.cap_margin + cfg.kill_switch_margin


def gate_value(seed: float, baseline: float | None, floor: float, *, learned: bool = True) -> Gate:
    """The gate for one score: the module's learned baseline (a robust lower bound of its own health
    history), within [floor, seed]; the seed's value when there is no baseline yet (or ``learned`` off).

    Never above the seed (the documented policy is never made stricter) and never below the kill-switch
    floor (a real fault still blocks whatever the module's history).
    """
    if not learned or baseline is None or not math.isfinite(baseline):
        why = "learned gates off" if not learned else "no learned baseline yet"
        return Gate(float(seed), "fallback", f"seed gate {seed:g} ({why})")
    if baseline >= seed:
        return Gate(
            float(seed), "ceiling", f"seed gate {seed:g} (learned baseline {baseline:.1f} is above it)"
        )
    if baseline <= floor:
        return Gate(float(floor), "floor", f"kill-switch floor {floor:g} (learned baseline {baseline:.1f})")
    return Gate(
        float(baseline), "learned", f"learned baseline {baseline:.1f} (seed {seed:g}, floor {floor:g})"
    )


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


# --------------------------------------------------------------------------------------- drift (out of range)

# Features in price units: a level that doubles with the price. They are measured through the scale-free
# column that carries the same information (ATR / close), never as themselves.
LEVEL_FEATURES: dict[str, str] = {"atr_14": "natr_14"}


@dataclass(frozen=True)
class DriftReference:
    """Per input feature of a training window: the central range [lo, hi] (``tail`` cut off each side)
    and the share of the window's own values outside it (about 2 x tail; more for a discrete feature)."""

    columns: tuple[str, ...]
    lo: np.ndarray
    hi: np.ndarray
    outside: np.ndarray

    @classmethod
    def from_frame(
        cls, train: pd.DataFrame, columns: Iterable[str], tail: float, min_rows: int
    ) -> DriftReference:
        cols, lo, hi, outside = [], [], [], []
        for c in columns:
            if c not in train.columns:
                continue
            x = train[c].to_numpy(dtype="float64", na_value=np.nan)
            x = x[np.isfinite(x)]
            if len(x) < min_rows:
                continue
            a, b = np.quantile(x, [tail, 1.0 - tail])
            cols.append(c)
            lo.append(a)
            hi.append(b)
            outside.append(((x < a) | (x > b)).mean())
        return cls(tuple(cols), *(np.asarray(v, dtype="float64") for v in (lo, hi, outside)))


def out_of_range_flags(ref: DriftReference, keep: list[int], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value of ``x`` (rows x the features ``ref.columns[keep]``): (outside the reference's central
    range, finite). Counted, they are integers: window sums of per-bar counts are exact."""
    finite = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        outside = ((x < ref.lo[keep]) | (x > ref.hi[keep])) & finite
    return outside, finite


def out_of_range_shares(ref: DriftReference, recent, min_rows: int) -> pd.Series:
    """Per feature of ``ref``: the share of ``recent`` values outside the reference's central range, minus
    the share the training window itself has there (floored at 0), largest first. Features with fewer
    than ``min_rows`` finite recent values are left out.

    A quantile range is unchanged by any increasing transform of a feature, so this measures where the
    values sit relative to what the module was trained on, in the feature's own units; features in price
    units are left out (``LEVEL_FEATURES``). Shifts *within* the training range (a regime the training
    window also saw) do not count: the module has seen such inputs.

    ``recent``: the rows (a DataFrame), or a window that counts them itself (``columns``, ``empty`` and
    ``out_of_range_counts(ref, keep)``: the sums of ``out_of_range_flags`` over its rows; the backtest's,
    from per-bar counts instead of the window's rows at every run).
    """
    cols, excess = _excess(ref, recent, min_rows)
    return pd.Series(excess, index=cols, dtype="float64").sort_values(ascending=False)


def drift_summary(ref: DriftReference, recent, min_rows: int) -> tuple[float, float, str] | None:
    """(mean, largest, its feature) of ``out_of_range_shares`` (None: no feature), without building and
    sorting its Series (a health run measures every module): pandas' descending sort order (which feature
    of a tie comes first), and the mean of the values summed in that order, so the same floats."""
    cols, excess = _excess(ref, recent, min_rows)
    if not len(excess):
        return None
    # pandas.core.sorting.nargsort(ascending=False) of values without NaN
    order = np.arange(len(excess))[::-1][excess[::-1].argsort(kind="quicksort")][::-1]
    ordered = excess[order]
    return float(ordered.sum() / float(len(ordered))), float(ordered[0]), cols[int(order[0])]


def _excess(ref: DriftReference, recent, min_rows: int) -> tuple[list[str], np.ndarray]:
    keep = [i for i, c in enumerate(ref.columns) if c in recent.columns]
    if not keep or recent.empty:
        return [], np.empty(0)
    cols = [ref.columns[i] for i in keep]
    if isinstance(recent, pd.DataFrame):
        if all(dt == np.float64 for dt in recent.dtypes):  # one float block: pick by position
            x = recent.to_numpy()[:, recent.columns.get_indexer(cols)]
        else:
            x = recent[cols].to_numpy(dtype="float64", na_value=np.nan)
        outside, finite = out_of_range_flags(ref, keep, x)
        n_out, n = outside.sum(axis=0), finite.sum(axis=0)
    else:
        n_out, n = recent.out_of_range_counts(ref, keep)
    share = np.divide(n_out, n, out=np.zeros(len(cols)), where=n > 0)
    excess = np.maximum(share - ref.outside[keep], 0.0)
    enough = n >= min_rows
    return [c for c, k in zip(cols, enough, strict=True) if k], excess[enough]


_SELECTOR_INPUTS = ("ret_20", "trend_slope_50", "bb_pctb_20", "rsi_14", "adx_14")
_REGIME_RULE_INPUTS = ("adx_14", "trend_slope_50")


def drift_columns(module: str, available: Iterable[str]) -> list[str]:
    """The feature columns whose drift matters to ``module`` (its inputs, per docs/modules.md), price-unit
    columns (``LEVEL_FEATURES``) left out.

    ``direction`` and ``ensemble`` read every feature: all continuous features (candlestick flags are
    left to ``patterns``, whose inputs they are).
    """
    available = [c for c in available if c not in LEVEL_FEATURES]
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
    Component.feature_drift: "out_of_range",
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
    prediction_detail: str = ""
    prediction_errors: float | None = None
    predictions_attempted: float | None = None
    latency_p95_ms: float | None = None
    latency_at: pd.Timestamp | None = None
    accuracy_baseline: float | None = None
    accuracy_baseline_n: float | None = None
    accuracy_recent: float | None = None
    accuracy_n: float | None = None
    accuracy_at: pd.Timestamp | None = None
    drift_share: float | None = None
    drift_max: float | None = None
    drift_feature: str | None = None  # the feature with drift_max
    model_age_hours: float | None = None
    staleness_detail: str = ""
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
            "out_of_range": (self.drift_share, None),
            "model_age_hours": (self.model_age_hours, None),
        }[metric]
        return (float(value) if _finite(value) else None), at


def interval_components(
    m: IntervalMeasurements, cfg, latency_threshold_ms: float | None
) -> list[ComponentScore]:
    """The eight component scores of one interval's measurements, thresholds from ``cfg`` (HealthSettings)."""
    daily = is_daily(m.interval)
    data_ok, data_bad = freshness_thresholds(m.interval, "data", cfg)
    pred_ok, pred_bad = freshness_thresholds(m.interval, "prediction", cfg)
    schedule = cfg.retrain_schedule_hours_daily if daily else cfg.retrain_schedule_hours_intraday
    return [
        data_freshness_score(m.data_lag_bars, ok=data_ok, bad=data_bad),
        prediction_freshness_score(
            m.prediction_lag_bars, ok=pred_ok, bad=pred_bad, detail=m.prediction_detail
        ),
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
            n_baseline=m.accuracy_baseline_n,
        ),
        feature_drift_score(
            m.drift_share,
            m.drift_feature,
            m.drift_max,
            ok=cfg.drift_ok,
            bad=cfg.drift_bad,
            tail=cfg.drift_tail,
        ),
        model_staleness_score(
            m.model_age_hours,
            schedule,
            ok=cfg.staleness_ratio_ok,
            bad=cfg.staleness_ratio_bad,
            detail=m.staleness_detail,
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
    """What a health run reads (warehouse/health.py from a warehouse, models/health_timeline.py from
    memory; plain frames).

    - ``champions``: module, interval, version, trained_at, confirmed_at (the newest retrain that kept it;
      NaT if none), train_start, train_end, feature_set_version, metrics (dict or JSON text: validation)
    - ``newest_bars``: {interval: newest gated bar ts}
    - ``predictions``: module, interval, newest_ts (newest bar with a valid prediction), run_id,
      predicted_at, rows, bad (non-finite or out-of-range probabilities), quarantined, latency_p95_ms (of
      the newest predict run, a run whose every row was quarantined included)
    - ``failed_runs``: module, interval, failed (recent retrain runs that registered nothing for it)
    - ``benchmarks``: module, interval, accuracy, n, coverage, computed_at (the configured window)
    - ``features``: {(interval, train_start, train_end): (training-window rows, recent rows)}
    - ``dq``: {interval: (failing rows, checked rows)} of the critical verdicts of recent input runs
    - ``combined``: {module: (members, min_voters)} for a module whose output is combined from other
      modules' stored predictions at decision time (the ensemble)
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
    combined: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)


def _by_key(frame: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """{(module, interval): the first row as a dict} of a small frame."""
    if frame is None or frame.empty:
        return {}
    out: dict[tuple[str, str], dict] = {}
    cols = list(frame.columns)
    # column lists (native Python values, as to_dict gives them): a health run reads four small frames, and
    # to_dict("records") cost more than the rest of its measuring
    for values in zip(*(frame[c].tolist() for c in cols), strict=True):
        row = {c: None if v is pd.NA else v for c, v in zip(cols, values, strict=True)}
        out.setdefault((str(row["module"]), str(row["interval"])), row)
    return out


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
    inputs: HealthInputs,
    now: pd.Timestamp,
    cfg,
    *,
    exchange: str = "XNYS",
    references: dict | None = None,
) -> dict[str, list[IntervalMeasurements]]:
    """Per module, the measurements of each of its intervals (those with a champion, else the defaults).

    ``cfg``: HealthSettings. ``references`` (a dict the caller keeps) caches each training window's
    ``DriftReference`` between runs.
    """
    now = utc(now)
    refs = references if references is not None else {}
    # drift memos of training samples not in these inputs (an older champion's window) go: each holds its
    # sample, and a backtest's timeline sees a new window at every promotion
    current = {id(train) for train, _ in inputs.features.values()}
    for key in [k for k in refs if k[0] != "rows by key" and k[-1] not in current]:
        del refs[key]
    keyed = {}
    for name in ("champions", "predictions", "benchmarks", "failed_runs"):
        # a frame the caller passes again (a memo of its: the champions, benchmarks and failed runs change
        # only now and then) is keyed once; the frame is kept with its rows, so its id stays its own
        frame = getattr(inputs, name)
        seen = refs.get(("rows by key", name))
        if seen is None or seen[0] is not frame:
            seen = refs[("rows by key", name)] = (frame, _by_key(frame))
        keyed[name] = seen[1]
    out: dict[str, list[IntervalMeasurements]] = {}
    champion_intervals: dict[str, set] = {}  # one pass over the champions, not a filter per module
    if len(inputs.champions):
        for m, iv in zip(inputs.champions["module"], inputs.champions["interval"], strict=True):
            champion_intervals.setdefault(m, set()).add(iv)
    for module in inputs.modules:
        intervals = (
            sorted(champion_intervals[module])
            if module in champion_intervals
            else list(inputs.default_intervals)
        )
        out[module] = [_measure_one(inputs, keyed, module, iv, now, cfg, exchange, refs) for iv in intervals]
    return out


def combined_newest(
    predictions: pd.DataFrame, members: Sequence[str], min_voters: int, interval: str
) -> pd.Timestamp | None:
    """The newest bar on which at least ``min_voters`` of ``members`` had a prediction: where a module
    combined from them (the ensemble) produced an output, a call or an abstention."""
    if predictions is None or predictions.empty:
        return None
    wanted = set(members)
    columns = (predictions[c].tolist() for c in ("module", "interval", "newest_ts"))
    newest = sorted(
        (t for m, iv, t in zip(*columns, strict=True) if iv == interval and m in wanted and not pd.isna(t)),
        reverse=True,
    )
    return utc(newest[min_voters - 1]) if len(newest) >= min_voters else None


def _prediction_lag(inputs, module, interval, pred, newest_bar, exchange) -> tuple[float | None, str]:
    own = _ts(pred["newest_ts"]) if pred is not None else None
    combined = None
    if module in inputs.combined:
        members, min_voters = inputs.combined[module]
        combined = combined_newest(inputs.predictions, members, min_voters, interval)
    newest = max([t for t in (own, combined) if t is not None], default=None)
    if newest is None:
        return None, ""
    lag = lag_bars(interval, newest, newest_bar, exchange)
    if combined is not None and (own is None or combined > own):
        members, min_voters = inputs.combined[module]
        return (
            lag,
            f"combined output {lag:g} bars behind the newest bar (>= {min_voters} of its members predicted)",
        )
    return lag, ""


def _measure_one(
    inputs: HealthInputs, keyed: dict, module: str, interval: str, now: pd.Timestamp, cfg, exchange: str,
    refs: dict,
) -> IntervalMeasurements:  # fmt: skip
    newest_bar = inputs.newest_bars.get(interval)
    champ = keyed["champions"].get((module, interval))
    pred = keyed["predictions"].get((module, interval))
    bench = keyed["benchmarks"].get((module, interval))
    failed = keyed["failed_runs"].get((module, interval))

    # Errors: rows of the newest predict run that failed, plus each recent retrain run that raised for the
    # module counted as a run whose every prediction failed.
    rows = (_num(pred["rows"]) or 0.0) + (_num(pred["quarantined"]) or 0.0) if pred is not None else 0.0
    errors = (_num(pred["bad"]) or 0.0) + (_num(pred["quarantined"]) or 0.0) if pred is not None else 0.0
    n_failed = _num(failed["failed"]) or 0.0 if failed is not None else 0.0
    per_run = max(rows, 1.0)
    attempted = rows + n_failed * per_run
    errors += n_failed * per_run

    validation = _metrics(champ["metrics"]) if champ is not None else {}
    baseline = _num(validation.get("accuracy"))
    baseline_n = None
    if _num(validation.get("n")) is not None:
        baseline_n = _num(validation["n"]) * (_num(validation.get("coverage")) or 1.0)
    acc_n = None
    if bench is not None and _num(bench["n"]) is not None:
        coverage = _num(bench.get("coverage"))
        acc_n = _num(bench["n"]) * (coverage if coverage is not None else 1.0)

    drift_share = drift_max = drift_feature = None
    if champ is not None:
        key = (interval, _ts(champ["train_start"]), _ts(champ["train_end"]))
        frames = inputs.features.get(key)
        if frames is not None:
            train, recent = frames
            memo = refs.get(("drift columns", module, id(train)))
            if memo is None or memo[0] is not train:  # the training sample's columns listed once
                names = [c for c in train.columns if c not in ("symbol", "interval", "ts")]
                memo = refs[("drift columns", module, id(train))] = (train, drift_columns(module, names))
            cols = memo[1]
            ref_key = (*key, tuple(cols), id(train))
            if ref_key not in refs:
                refs[ref_key] = DriftReference.from_frame(train, cols, cfg.drift_tail, cfg.drift_min_rows)
            summary = drift_summary(refs[ref_key], recent, cfg.drift_min_rows)
            if summary is not None:
                drift_share, drift_max, drift_feature = summary

    age = staleness = None
    if champ is not None:
        trained = utc(champ["trained_at"])
        confirmed = _ts(champ.get("confirmed_at"))
        since = max(trained, confirmed) if confirmed is not None else trained
        age = (now - since).total_seconds() / 3600
        version = f"v{int(champ['version'])}" if _num(champ.get("version")) is not None else "champion"
        staleness = (
            f"champion {version} confirmed by a retrain {age / 24:.1f} d ago (trained {(now - trained).days} d ago)"
            if confirmed is not None and confirmed > trained
            else f"champion {version} trained {age / 24:.1f} d ago, not re-evaluated since"
        )

    lag, lag_detail = _prediction_lag(inputs, module, interval, pred, newest_bar, exchange)
    dq = inputs.dq.get(interval)
    return IntervalMeasurements(
        interval=interval,
        data_lag_bars=missed_bars(interval, newest_bar, now, exchange),
        prediction_lag_bars=lag,
        prediction_detail=lag_detail,
        prediction_errors=errors if attempted > 0 else None,
        predictions_attempted=attempted if attempted > 0 else None,
        latency_p95_ms=_num(pred["latency_p95_ms"]) if pred is not None else None,
        latency_at=_ts(pred["predicted_at"]) if pred is not None else None,
        accuracy_baseline=baseline,
        accuracy_baseline_n=baseline_n,
        accuracy_recent=_num(bench["accuracy"]) if bench is not None else None,
        accuracy_n=acc_n,
        accuracy_at=_ts(bench["computed_at"]) if bench is not None else None,
        drift_share=drift_share,
        drift_max=drift_max,
        drift_feature=drift_feature,
        model_age_hours=age,
        staleness_detail=staleness or "",
        dq_failing=dq[0] if dq else None,
        dq_checked=dq[1] if dq else None,
    )


def health_gates(
    modules: Iterable[str],
    thresholds: Mapping[tuple[str, str], object],
    *,
    overall_seed: float,
    module_seed: float,
    floor: float,
    learned: bool = True,
) -> dict[str, Gate]:
    """The gate of each module and of the overall score (key ``OVERALL``): ``gate_value`` with the
    module's learned ``health_score`` threshold (a LearnedThreshold; a default one is no baseline)."""

    def baseline(module: str) -> float | None:
        t = thresholds.get((module, HEALTH_METRIC))
        return None if t is None or getattr(t, "is_default", True) else float(t.value)

    gates = {m: gate_value(module_seed, baseline(m), floor, learned=learned) for m in modules if m != OVERALL}
    gates[OVERALL] = gate_value(overall_seed, baseline(OVERALL), floor, learned=learned)
    return gates


def schedule_hours(every_bars: int, interval: str) -> float:
    """Calendar hours between runs scheduled every ``every_bars`` bars of ``interval``: a session (a
    daily bar, or 390 minutes of intraday bars) spans 24 x 7/5 calendar hours on average (weekends)."""
    sessions = every_bars if is_daily(interval) else every_bars * interval_minutes(interval) / 390.0
    return sessions * 24.0 * 7.0 / 5.0
