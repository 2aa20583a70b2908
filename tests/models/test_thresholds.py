"""Learned thresholds: robust, direction-aware, floored, and a flagged default on short history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.thresholds import Bound, MetricSpec, learn_threshold, metric_specs
from qtrader.settings import Settings, ThresholdSettings

SPECS = metric_specs(Settings())
DEFAULT_MIN_HISTORY = ThresholdSettings().min_history


def learn(values, metric, **cfg):
    spec = metric if isinstance(metric, MetricSpec) else SPECS[metric]
    return learn_threshold(values, spec, ThresholdSettings(**cfg))


def test_mad_threshold_is_median_plus_k_sigma_for_upper_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 10, 5000)
    t = learn(x, "latency_ms", window=5000)
    assert t.bound == Bound.upper and not t.is_default and t.method == "mad"
    assert t.value == pytest.approx(130, abs=1.5)  # 100 + 3 sigma
    assert t.n == 5000 and t.center == pytest.approx(100, abs=0.5) and t.spread == pytest.approx(10, abs=0.5)
    assert "learned from 5000 points" in t.reason


def test_lower_metrics_get_a_lower_bound():
    rng = np.random.default_rng(1)
    t = learn(rng.normal(0.55, 0.01, 400), "accuracy")
    assert t.bound == Bound.lower and t.value == pytest.approx(0.52, abs=0.004)
    assert t.breached(0.50) and not t.breached(0.56)


def test_outliers_barely_move_the_threshold():
    rng = np.random.default_rng(2)
    clean = rng.normal(100, 10, 400)
    dirty = clean.copy()
    dirty[::20] = 5000.0  # 5% wild outliers
    a, b = learn(clean, "latency_ms"), learn(dirty, "latency_ms")
    assert abs(a.value - b.value) < 5
    mean_sd = dirty.mean() + 3 * dirty.std()  # what a non-robust rule would give
    assert mean_sd > 1000 > b.value


def test_quantile_method_and_window():
    x = pd.Series(
        np.arange(1000.0) / 1000, index=pd.date_range("2026-01-01", periods=1000, freq="h", tz="UTC")
    )
    t = learn(x, "out_of_range", method="quantile", quantile=0.9, window=100)
    assert t.method == "quantile" and t.n == 100 and t.quantile == 0.9
    assert t.value == pytest.approx(np.quantile(np.arange(900.0, 1000.0) / 1000, 0.9))
    assert t.window_start == x.index[900] and t.window_end == x.index[-1]
    lower = learn(np.arange(100.0) / 1000, "accuracy", method="quantile", quantile=0.95)
    assert lower.value == pytest.approx(np.quantile(np.arange(100.0) / 1000, 0.05))


def test_constant_history_gets_a_spread_floor():
    t = learn(np.full(200, 12.0), "latency_ms")
    # MAD is 0; the floor is max(min_spread 1 ms, 5% of 12 ms) = 1 ms -> 12 + 3 x 1
    assert t.value == pytest.approx(15.0)
    q = learn(np.full(200, 12.0), "latency_ms", method="quantile")
    assert q.value == pytest.approx(13.0)


def test_short_history_falls_back_to_the_documented_default_and_says_so():
    t = learn([10.0, 11.0, np.nan, 12.0], "latency_ms")
    assert t.is_default and t.value == SPECS["latency_ms"].default and t.n == 3
    assert "history too short (3 < 30 points)" in t.reason
    assert learn(np.ones(DEFAULT_MIN_HISTORY), "error_rate").is_default is False


def test_values_are_clipped_to_the_metric_domain():
    rng = np.random.default_rng(3)
    t = learn(rng.normal(0.0, 0.5, 300), "error_rate")  # nonsense rates: bound still in [0, 1]
    assert 0.0 <= t.value <= 1.0
    h = learn(rng.normal(99.5, 2, 300), "health_score", k=100)
    assert h.value == 0.0


def test_specs_and_errors():
    assert SPECS["stop_distance_atr"].bound == Bound.upper
    # defaults come from the settings that define them: seed 1.2's exit gate, seed 1.1's widest stop
    assert SPECS["health_score"].default == Settings().exits.min_overall_health == 70.0
    assert SPECS["stop_distance_atr"].default == pytest.approx(1.5 * 1.3)
    moved = metric_specs(Settings(exits={"min_overall_health": 65.0, "stop_atr": 2.0}))
    assert moved["health_score"].default == 65.0 and moved["stop_distance_atr"].default == pytest.approx(2.6)
    with pytest.raises(ValueError):
        learn([1.0] * 40, "latency_ms", k=0)
    custom = MetricSpec("x", Bound.lower, 1.0, 0.1, rel_min_spread=0.05)
    assert learn(np.full(50, 5.0), custom).value == pytest.approx(5.0 - 3 * 0.25)


def test_sorted_median_is_numpys_median_bit_for_bit():
    """``sorted_median`` (learn_threshold's centre and MAD) gives np.median's float exactly: odd and even
    lengths, ties, one value, wide and tiny magnitudes."""
    import numpy as np

    from models.thresholds import sorted_median

    rng = np.random.default_rng(0)
    for k in range(3000):
        n = int(rng.integers(1, 80))
        scale = 10.0 ** rng.integers(-12, 12)
        x = rng.normal(0, scale, n)
        if k % 3 == 0:
            x = np.round(x / scale, 1) * scale  # ties
        assert np.float64(sorted_median(x)).tobytes() == np.float64(np.median(x)).tobytes(), (k, x)
        dev = np.abs(x - np.median(x))
        assert sorted_median(dev) == float(np.median(dev))
