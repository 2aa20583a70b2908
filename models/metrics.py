"""Out-of-sample classification metrics of a module, its 0-100 performance score, and latency percentiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

from models.calibration import (
    DEFAULT_N_BINS,
    brier_score,
    clipped_log_loss,
    expected_calibration_error,
)
from models.signals.base import NO_OPINION
from qtrader.settings import BenchmarkSettings

# performance_score: weights of its three parts, and the edge that earns a part full marks, defaulting to
# BenchmarkSettings' (their only home; tasks pass the configured ones, tasks.retrain.score_params).
_B = BenchmarkSettings()
W_ACCURACY = _B.score_w_accuracy
W_AUC = _B.score_w_auc
W_CALIBRATION = _B.score_w_calibration
ACCURACY_SPAN = _B.score_accuracy_span  # accuracy 0.60 (10 points over a coin flip) earns the part in full
AUC_SPAN = _B.score_auc_span  # AUC 0.60 earns the AUC part in full
ECE_SPAN = _B.score_ece_span  # ECE 0 earns the calibration part in full, ECE >= 0.10 earns nothing


def classification_metrics(
    y_true: object, p_up: object, threshold: float = NO_OPINION, n_bins: int = DEFAULT_N_BINS
) -> dict[str, float]:
    """n, coverage, base_rate, accuracy, precision, recall, auc, brier, log_loss, ece of P(up) vs label_up.

    Rows with a missing label or probability are dropped (``n`` counts the rest). A module says exactly
    0.5 when it has no opinion (see models/signals), so the *call* metrics (accuracy, precision, recall)
    use only the rows with ``p_up != 0.5``, ``coverage`` being their share; the predicted class there is
    ``p_up > threshold``. The probability metrics (auc, brier, log_loss, ece) use every row: 0.5 is a
    legitimate probability. AUC is NaN with one class; precision is NaN when nothing is called up, recall
    when no called row went up. ``ece`` is the binary ECE of P(up) (equal-width bins on [0, 1]).
    """
    y, p = _float(y_true), _float(p_up)
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep].astype(np.int64), p[keep]
    nan = float("nan")
    if len(y) == 0:
        keys = ("coverage", "base_rate", "accuracy", "precision", "recall", "auc", "brier", "log_loss", "ece")
        return {"n": 0, **dict.fromkeys(keys, nan)}
    called = p != NO_OPINION
    y_called, pred = y[called], (p[called] > threshold).astype(np.int64)
    return {
        "n": int(len(y)),
        "coverage": float(called.mean()),
        "base_rate": float(y.mean()),
        "accuracy": float(accuracy_score(y_called, pred)) if called.any() else nan,
        "precision": float(precision_score(y_called, pred, zero_division=np.nan)) if called.any() else nan,
        "recall": float(recall_score(y_called, pred, zero_division=np.nan)) if called.any() else nan,
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else nan,
        "brier": brier_score(p, y),
        "log_loss": clipped_log_loss(p, y),
        "ece": expected_calibration_error(p, y, n_bins),
    }


def _float(values: object) -> np.ndarray:
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(values, dtype="float64")


def performance_score(
    metrics: Mapping[str, float],
    *,
    w_accuracy: float = W_ACCURACY,
    w_auc: float = W_AUC,
    w_calibration: float = W_CALIBRATION,
    accuracy_span: float = ACCURACY_SPAN,
    auc_span: float = AUC_SPAN,
    ece_span: float = ECE_SPAN,
) -> float:
    """A 0-100 score from out-of-sample metrics:

    ``100 * (0.4 * clip((accuracy - 0.5) / 0.10, 0, 1)
           + 0.4 * clip((auc - 0.5) / 0.10, 0, 1)
           + 0.2 * (1 - clip(ece / 0.10, 0, 1)))``

    A missing (NaN) part earns 0. A coin flip that is perfectly calibrated scores 20; 60% accuracy,
    AUC 0.60 and ECE 0 score 100. Non-decreasing in accuracy and AUC, non-increasing in ECE.
    """

    def part(value: float | None, fn) -> float:
        if value is None or not np.isfinite(value):
            return 0.0
        return float(np.clip(fn(float(value)), 0.0, 1.0))

    accuracy = part(metrics.get("accuracy"), lambda a: (a - 0.5) / accuracy_span)
    auc = part(metrics.get("auc"), lambda a: (a - 0.5) / auc_span)
    calibration = part(metrics.get("ece"), lambda e: 1.0 - e / ece_span)
    return 100.0 * (w_accuracy * accuracy + w_auc * auc + w_calibration * calibration)


def latency_stats(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) of latencies in seconds (linear interpolation); NaN when empty."""
    values = np.asarray([s for s in seconds if s is not None and np.isfinite(s)], dtype="float64")
    if len(values) == 0:
        return float("nan"), float("nan")
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)
