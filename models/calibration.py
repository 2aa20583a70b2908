"""Confidence calibration: the plan's formula (seed 000, section 2.3) as baseline, and fitted maps.

What is calibrated: the **confidence of the predicted side**, ``max(P(up), 1 - P(up))``, against whether
that side happened (``correct``). This is the quantity the seed formula is defined on and the one the
trade filter and sizing read (the ensemble's ``confidence``), so the seed formula and the fitted maps are
interchangeable and are benchmarked on the same pairs. Up and down calls are pooled (twice the data; the
direction bias is the modules' concern, not the calibrator's). ``Calibrator.fit_p_up`` /
``transform_p_up`` convert to and from P(up) for callers that hold module probabilities.

Evaluation metrics (used by the benchmark): ``expected_calibration_error`` (equal-width bins),
``brier_score`` and ``clipped_log_loss``; they take any probability / 0-1 outcome pairs, so they score
P(up) against label_up as well as confidence against correct.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from qtrader.settings import BenchmarkSettings, RetrainSettings

# Seed 000 section 2.3: calibrated = raw * (0.7 * accuracy / raw + 0.3) when raw > 0.5, clamped; the
# numbers default to RetrainSettings' (their only home) and the ECE bins to BenchmarkSettings.ece_bins.
_R = RetrainSettings()
SEED_ACCURACY_WEIGHT = _R.seed_accuracy_weight
SEED_FLOOR = _R.seed_confidence_floor
SEED_CAP = _R.seed_confidence_cap
DEFAULT_N_BINS = BenchmarkSettings().ece_bins
LOG_LOSS_EPS = 1e-6


def _as_float(values: object) -> np.ndarray:
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(values, dtype="float64")


def seed_calibration(
    raw: object,
    accuracy: object,
    *,
    accuracy_weight: float = SEED_ACCURACY_WEIGHT,
    floor: float = SEED_FLOOR,
    cap: float = SEED_CAP,
) -> np.ndarray | float:
    """The seed's formula, vectorised: ``raw * (w * factor + (1 - w))`` clamped to [floor, cap].

    ``factor = accuracy / raw`` when ``raw > 0.5``, else 1 (so raw <= 0.5 passes through, clamped);
    ``accuracy`` is the module's benchmarked accuracy as a fraction. E.g. raw 0.8, accuracy 0.6:
    0.8 * (0.7 * 0.75 + 0.3) = 0.66. Returns a float for scalar inputs.
    """
    raw_arr, acc = np.broadcast_arrays(_as_float(raw), _as_float(accuracy))
    confident = raw_arr > 0.5
    factor = np.divide(acc, raw_arr, out=np.ones_like(raw_arr), where=confident)
    calibrated = np.clip(raw_arr * (accuracy_weight * factor + (1.0 - accuracy_weight)), floor, cap)
    return float(calibrated) if calibrated.ndim == 0 else calibrated


def side_confidence(p_up: object, y: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(confidence of the predicted side, whether it was correct). Ties at 0.5 count as an up call."""
    p = _as_float(p_up)
    confidence = np.maximum(p, 1.0 - p)
    if y is None:
        return confidence, None
    outcome = _as_float(y)
    correct = np.where(p >= 0.5, outcome, 1.0 - outcome)
    return confidence, np.where(np.isnan(outcome) | np.isnan(p), np.nan, correct)


METHODS = ("seed", "isotonic", "sigmoid")


class Calibrator(BaseEstimator):
    """A map from raw confidence to the observed hit rate, fitted on (confidence, correct) pairs.

    ``method="seed"``: the seed formula with ``accuracy_`` = the hit rate of the fitted pairs (the
    module's benchmarked accuracy), so the baseline has the same interface as the fitted maps.
    ``method="isotonic"``: isotonic regression (monotone, non-parametric, needs a few hundred points, flat
    outside the fitted range). ``method="sigmoid"``: Platt scaling, ``sigmoid(a * logit(conf) + b)`` (two
    parameters, steadier on little data). Fit on out-of-sample predictions only (walk-forward output);
    deterministic and picklable.
    """

    def __init__(
        self,
        method: str = "isotonic",
        min_samples: int = _R.calibration_min_samples,
        accuracy_weight: float = SEED_ACCURACY_WEIGHT,
        floor: float = SEED_FLOOR,
        cap: float = SEED_CAP,
    ):
        self.method = method
        self.min_samples = min_samples
        # the seed formula's numbers (method "seed"; side_values' confidence_seed): RetrainSettings'
        self.accuracy_weight = accuracy_weight
        self.floor = floor
        self.cap = cap

    def seed_params(self) -> dict[str, float]:
        """The seed formula's keyword arguments this calibrator was made with (a calibrator pickled before
        they were stored: the settings' defaults)."""
        return {"accuracy_weight": getattr(self, "accuracy_weight", SEED_ACCURACY_WEIGHT),
                "floor": getattr(self, "floor", SEED_FLOOR), "cap": getattr(self, "cap", SEED_CAP)}  # fmt: skip

    def fit(self, confidence: object, correct: object) -> Calibrator:
        conf, hit = _as_float(confidence), _as_float(correct)
        keep = np.isfinite(conf) & np.isfinite(hit)
        conf, hit = conf[keep], hit[keep]
        if self.method not in METHODS:
            raise ValueError(f"Calibrator: method must be one of {METHODS}, got {self.method!r}")
        if len(conf) < self.min_samples:
            raise ValueError(f"Calibrator: {len(conf)} usable predictions, needs at least {self.min_samples}")
        self.accuracy_ = float(hit.mean())
        if self.method == "seed":
            self.map_ = None
        elif self.method == "isotonic":
            self.map_ = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            self.map_.fit(conf, hit)
        elif self.method == "sigmoid":
            if len(np.unique(hit)) < 2:
                raise ValueError("Calibrator(sigmoid): needs both hits and misses")
            # Nearly unregularised: Platt scaling is a 2-parameter maximum-likelihood fit.
            self.map_ = LogisticRegression(C=1e6, max_iter=1000).fit(
                _logit(conf)[:, None], hit.astype(np.int8)
            )
        self.n_fit_ = int(len(conf))
        return self

    def transform(self, confidence: object) -> np.ndarray:
        conf = _as_float(confidence)
        out = np.full(conf.shape, np.nan)
        ok = np.isfinite(conf)
        if ok.any():
            if self.method == "seed":
                out[ok] = seed_calibration(conf[ok], self.accuracy_, **self.seed_params())
            elif self.method == "isotonic":
                out[ok] = self.map_.predict(conf[ok])
            else:
                out[ok] = self.map_.predict_proba(_logit(conf[ok])[:, None])[:, 1]
        return out

    def fit_p_up(self, p_up: object, y: object) -> Calibrator:
        """Fit from module probabilities and label_up; rows at exactly 0.5 (no opinion) are skipped."""
        p = _as_float(p_up)
        confidence, correct = side_confidence(p, y)
        return self.fit(np.where(p == 0.5, np.nan, confidence), correct)

    def transform_p_up(self, p_up: object) -> np.ndarray:
        """Calibrated P(up): the calibrated confidence put back on the predicted side; 0.5 stays 0.5."""
        p = _as_float(p_up)
        calibrated = self.transform(side_confidence(p)[0])
        out = np.where(p >= 0.5, calibrated, 1.0 - calibrated)
        return np.where(p == 0.5, 0.5, out)


def select_calibrator(
    confidence: object,
    correct: object,
    methods: tuple[str, ...] = METHODS,
    holdout_fraction: float = _R.calibration_holdout_fraction,
    min_samples: int = _R.calibration_min_samples,
    n_bins: int = DEFAULT_N_BINS,
    seed: Mapping[str, float] | None = None,
) -> tuple[Calibrator, dict[str, float]]:
    """The calibration used downstream, and the holdout ECE of every candidate.

    Pairs come from ``side_confidence`` on out-of-sample rows with ``P(up) != 0.5`` and must be in time
    order (sorted by bar time). Each method is fitted on
    the older ``1 - holdout_fraction`` of the pairs and scored by ECE on the newer part; the lowest ECE
    wins (ties: the earlier method in ``methods``, the seed formula first by default) and is refitted on
    all pairs. With fewer than ``min_samples`` pairs in the older part only the seed formula is fitted
    (on all pairs) and the ECE dict is empty.
    """
    seed = dict(seed or {})  # the seed formula's numbers (default: the settings' defaults)
    conf, hit = _as_float(confidence), _as_float(correct)
    keep = np.isfinite(conf) & np.isfinite(hit)
    conf, hit = conf[keep], hit[keep]
    cut = int(round(len(conf) * (1.0 - holdout_fraction)))
    if cut < min_samples or cut == len(conf):
        return Calibrator("seed", min_samples=1, **seed).fit(conf, hit), {}
    scores = {}
    for method in methods:
        try:
            fitted = Calibrator(method, min_samples=min_samples, **seed).fit(conf[:cut], hit[:cut])
        except ValueError:  # e.g. sigmoid on a part with no misses
            continue
        scores[method] = expected_calibration_error(fitted.transform(conf[cut:]), hit[cut:], n_bins)
    if not scores:
        return Calibrator("seed", min_samples=1, **seed).fit(conf, hit), {}
    best = min(scores, key=lambda m: (scores[m], methods.index(m)))
    return Calibrator(best, min_samples=min_samples, **seed).fit(conf, hit), scores


def _logit(p: np.ndarray, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def _pairs(prob: object, outcome: object) -> tuple[np.ndarray, np.ndarray]:
    p, o = _as_float(prob), _as_float(outcome)
    if p.shape != o.shape:
        raise ValueError(f"probabilities {p.shape} and outcomes {o.shape} differ in shape")
    keep = np.isfinite(p) & np.isfinite(o)
    return p[keep], o[keep]


def reliability_table(prob: object, outcome: object, n_bins: int = DEFAULT_N_BINS) -> pd.DataFrame:
    """Per equal-width bin of [0, 1]: n, mean probability, observed rate (for reliability plots)."""
    p, o = _pairs(prob, outcome)
    bins = np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(bins, weights=p, minlength=n_bins) / n
        rate = np.bincount(bins, weights=o, minlength=n_bins) / n
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "n": n, "mean_prob": mean_prob, "rate": rate})


def expected_calibration_error(prob: object, outcome: object, n_bins: int = DEFAULT_N_BINS) -> float:
    """ECE: ``sum_b (n_b / n) * |rate_b - mean_prob_b|`` over ``n_bins`` equal-width bins of [0, 1].

    ``reliability_table``'s sums on arrays, without building its frame: a retrain scores hundreds of
    calibration candidates and blocks, and the frame cost more than the sums (the same floats)."""
    p, o = _pairs(prob, outcome)
    bins = np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(bins, minlength=n_bins)
    total = n.sum()
    if total == 0:
        return float("nan")
    used = n > 0
    mean_prob = np.bincount(bins, weights=p, minlength=n_bins)[used] / n[used]
    rate = np.bincount(bins, weights=o, minlength=n_bins)[used] / n[used]
    return float((n[used] * np.abs(rate - mean_prob)).sum() / total)


def brier_score(prob: object, outcome: object) -> float:
    p, o = _pairs(prob, outcome)
    return float(np.mean((p - o) ** 2)) if len(p) else float("nan")


def clipped_log_loss(prob: object, outcome: object, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood with probabilities clipped to [eps, 1 - eps] (a 0 or 1 stays finite)."""
    p, o = _pairs(prob, outcome)
    if not len(p):
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(o * np.log(p) + (1.0 - o) * np.log(1.0 - p)))
