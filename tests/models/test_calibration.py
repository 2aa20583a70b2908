from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from models.calibration import (
    Calibrator,
    brier_score,
    clipped_log_loss,
    expected_calibration_error,
    reliability_table,
    seed_calibration,
    select_calibrator,
    side_confidence,
)


def test_seed_formula_matches_hand_computed_values():
    assert seed_calibration(0.8, 0.6) == pytest.approx(0.8 * (0.7 * 0.75 + 0.3))  # 0.66
    assert seed_calibration(0.8, 0.6) == pytest.approx(0.66)
    assert seed_calibration(0.4, 0.9) == pytest.approx(0.4)  # raw <= 0.5 passes through
    assert seed_calibration(0.5, 0.9) == pytest.approx(0.5)
    assert seed_calibration(0.99, 1.0) == pytest.approx(0.95)  # 0.99 * (0.7 / 0.99 + 0.3) = 0.997 -> cap
    assert seed_calibration(0.05, 0.6) == pytest.approx(0.1)  # floor
    # accuracy above the claim raises the confidence: 0.6 * (0.7 * 0.8 / 0.6 + 0.3) = 0.74
    assert seed_calibration(0.6, 0.8) == pytest.approx(0.74)


def test_seed_formula_is_vectorised():
    raw = np.array([0.8, 0.4, 0.99, 0.05, 0.7])
    acc = np.array([0.6, 0.6, 1.0, 0.6, 0.55])
    expected = [0.66, 0.4, 0.95, 0.1, 0.7 * (0.7 * 0.55 / 0.7 + 0.3)]
    np.testing.assert_allclose(seed_calibration(raw, acc), expected)
    np.testing.assert_allclose(seed_calibration(raw, 0.6)[:2], [0.66, 0.4])


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes drawn from true_p; the model reports p = 0.5 + 2 * (true_p - 0.5), clipped."""
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.25, 0.75, n)
    y = (rng.random(n) < true_p).astype(float)
    p = np.clip(0.5 + 2 * (true_p - 0.5), 0.01, 0.99)
    return p, y, true_p


# Platt scaling is logit-linear and the distortion here is linear in p, so it cannot fit it exactly.
@pytest.mark.parametrize(("method", "max_ece"), [("isotonic", 0.015), ("sigmoid", 0.035)])
def test_fitted_calibration_removes_overconfidence(method, max_ece):
    p_fit, y_fit, _ = _overconfident(20_000, seed=0)
    p_new, y_new, true_p = _overconfident(20_000, seed=1)
    calibrator = Calibrator(method).fit_p_up(p_fit, y_fit)

    conf, correct = side_confidence(p_new, y_new)
    before = expected_calibration_error(conf, correct)
    after = expected_calibration_error(calibrator.transform(conf), correct)
    assert before > 0.1
    assert after < max_ece
    assert after < before / 4

    p_cal = calibrator.transform_p_up(p_new)
    assert expected_calibration_error(p_cal, y_new) < expected_calibration_error(p_new, y_new) / 4
    assert brier_score(p_cal, y_new) < brier_score(p_new, y_new)
    assert np.abs(p_cal - true_p).mean() < 0.05


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrator_is_deterministic_and_picklable(method):
    p, y, _ = _overconfident(2_000, seed=2)
    first = Calibrator(method).fit_p_up(p, y)
    second = Calibrator(method).fit_p_up(p, y)
    grid = np.linspace(0.5, 1.0, 11)
    np.testing.assert_array_equal(first.transform(grid), second.transform(grid))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(first)).transform(grid), first.transform(grid))
    assert np.all(np.diff(first.transform(grid)) >= 0)  # monotone


def test_seed_method_applies_the_formula_with_the_fitted_accuracy():
    confidence = np.array([0.8, 0.8, 0.7, 0.6, 0.9])
    correct = np.array([1, 0, 1, 0, 1])  # accuracy 0.6
    seed = Calibrator("seed", min_samples=1).fit(confidence, correct)
    assert seed.accuracy_ == pytest.approx(0.6)
    np.testing.assert_allclose(seed.transform([0.8, 0.4]), [0.66, 0.4])


def test_select_calibrator_prefers_a_fitted_map_for_an_overconfident_model():
    p, y, _ = _overconfident(6_000, seed=4)
    confidence, correct = side_confidence(p, y)
    chosen, scores = select_calibrator(confidence, correct)
    assert set(scores) == {"seed", "isotonic", "sigmoid"}
    assert chosen.method == min(scores, key=scores.get)
    assert chosen.n_fit_ == 6_000  # refitted on every pair
    assert scores[chosen.method] < 0.03
    few, none = select_calibrator(confidence[:40], correct[:40])
    assert few.method == "seed" and none == {}


def test_calibrator_refuses_too_little_data_and_unknown_methods():
    with pytest.raises(ValueError, match="needs at least"):
        Calibrator().fit([0.6, 0.7], [1, 0])
    with pytest.raises(ValueError, match="method"):
        Calibrator("magic").fit(np.full(100, 0.6), np.tile([0, 1], 50))


def test_no_opinion_rows_are_skipped_and_kept_at_half():
    p, y, _ = _overconfident(2_000, seed=3)
    p[:500] = 0.5
    calibrator = Calibrator().fit_p_up(p, y)
    assert calibrator.n_fit_ == 1_500
    assert calibrator.transform_p_up(np.array([0.5]))[0] == 0.5


def test_side_confidence():
    conf, correct = side_confidence(np.array([0.8, 0.3, 0.6, np.nan]), np.array([1, 1, 0, 1]))
    np.testing.assert_allclose(conf[:3], [0.8, 0.7, 0.6])
    np.testing.assert_array_equal(correct[:3], [1, 0, 0])
    assert np.isnan(correct[3])


def test_ece_brier_and_log_loss_by_hand_and_against_sklearn():
    p = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    y = np.array([0, 0, 1, 1, 1, 1, 0])
    # bins: [0.0,0.1): p .05 rate 0; [0.1,0.2): p .15 rate .5; [0.9,1.0]: p .95 rate .75
    expected = (1 * 0.05 + 2 * 0.35 + 4 * 0.20) / 7
    assert expected_calibration_error(p, y) == pytest.approx(expected)
    assert brier_score(p, y) == pytest.approx(brier_score_loss(y, p))
    assert clipped_log_loss(p, y) == pytest.approx(log_loss(y, p))
    assert np.isfinite(clipped_log_loss([0.0, 1.0], [1, 0]))
    table = reliability_table(p, y)
    assert len(table) == 10 and table["n"].sum() == 7
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0  # 1.0 in the last bin
    assert np.isnan(expected_calibration_error([], []))


def test_ece_equals_the_reliability_tables_figure_to_the_last_bit():
    """expected_calibration_error sums on arrays; the reliability table's frame gives the same float."""
    from models.calibration import reliability_table

    def from_table(p, y, n_bins):
        table = reliability_table(p, y, n_bins)
        total = table["n"].sum()
        if total == 0:
            return float("nan")
        used = table["n"] > 0
        gap = (table.loc[used, "rate"] - table.loc[used, "mean_prob"]).abs()
        return float((table.loc[used, "n"] * gap).sum() / total)

    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(0, 3000))
        p = rng.beta(0.5 + trial % 7, 0.5 + trial % 5, n)
        p[rng.random(n) < 0.05] = np.nan
        p[rng.random(n) < 0.02] = 1.0
        y = (rng.random(n) < p).astype(float)
        y[rng.random(n) < 0.05] = np.nan
        for n_bins in (10, 15):
            want, got = from_table(p, y, n_bins), expected_calibration_error(p, y, n_bins)
            assert (np.isnan(want) and np.isnan(got)) or got == want, (trial, n_bins, got, want)
