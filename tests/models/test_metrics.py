from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from models.metrics import classification_metrics, latency_stats, performance_score


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.55).astype(int)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 500), 0.01, 0.99)
    m = classification_metrics(y, p)
    pred = (p > 0.5).astype(int)
    assert m["n"] == 500
    assert m["base_rate"] == pytest.approx(y.mean())
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert 0 <= m["ece"] <= 1


def test_classification_metrics_edge_cases():
    one_class = classification_metrics([1, 1, 1], [0.6, 0.7, 0.4])
    assert np.isnan(one_class["auc"]) and one_class["accuracy"] == pytest.approx(2 / 3)
    nothing_up = classification_metrics([0, 1], [0.2, 0.3])
    assert np.isnan(nothing_up["precision"]) and nothing_up["recall"] == 0.0
    with_gaps = classification_metrics(pd.Series([1, np.nan, 0]), pd.Series([0.8, 0.9, np.nan]))
    assert with_gaps["n"] == 1
    empty = classification_metrics([], [])
    assert empty["n"] == 0 and np.isnan(empty["accuracy"])
    assert classification_metrics([0, 1], [0.6, 0.6], threshold=0.65)["accuracy"] == 0.5


def test_no_opinion_rows_count_for_probability_metrics_but_not_for_calls():
    m = classification_metrics([1, 0, 1, 0], [0.8, 0.5, 0.5, 0.3])
    assert m["n"] == 4 and m["coverage"] == 0.5
    assert m["accuracy"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["brier"] == pytest.approx(brier_score_loss([1, 0, 1, 0], [0.8, 0.5, 0.5, 0.3]))
    silent = classification_metrics([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5])
    assert silent["coverage"] == 0.0 and np.isnan(silent["accuracy"]) and silent["auc"] == 0.5
    assert performance_score(silent) == pytest.approx(20.0)  # only the calibration part: ECE 0


def test_performance_score_formula_and_bounds():
    assert performance_score({"accuracy": 0.5, "auc": 0.5, "ece": 0.0}) == pytest.approx(20.0)
    assert performance_score({"accuracy": 0.6, "auc": 0.6, "ece": 0.0}) == pytest.approx(100.0)
    assert performance_score({"accuracy": 0.55, "auc": 0.58, "ece": 0.05}) == pytest.approx(
        100 * (0.4 * 0.5 + 0.4 * 0.8 + 0.2 * 0.5)
    )
    assert performance_score({"accuracy": 0.9, "auc": 0.99, "ece": 0.0}) == pytest.approx(100.0)
    assert performance_score({"accuracy": 0.3, "auc": 0.3, "ece": 0.5}) == 0.0
    assert performance_score({"accuracy": 0.55, "auc": float("nan"), "ece": 0.0}) == pytest.approx(40.0)


def test_performance_score_is_monotone_in_accuracy():
    scores = [performance_score({"accuracy": a, "auc": 0.55, "ece": 0.03}) for a in np.linspace(0.4, 0.7, 31)]
    assert all(b >= a for a, b in zip(scores, scores[1:], strict=False))
    inside = [performance_score({"accuracy": a, "auc": 0.55, "ece": 0.03}) for a in (0.51, 0.53, 0.57)]
    assert inside[0] < inside[1] < inside[2]


def test_latency_stats():
    p50, p95 = latency_stats([0.1 * i for i in range(1, 101)])
    assert p50 == pytest.approx(np.percentile(np.arange(1, 101) * 0.1, 50))
    assert p95 == pytest.approx(np.percentile(np.arange(1, 101) * 0.1, 95))
    assert latency_stats([2.0]) == (2.0, 2.0)
    assert all(np.isnan(latency_stats([])))
