"""Health components: each responds to its own degradation only; module and overall scores; PSI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import health as h
from models.health import Component


def test_ramp_score_both_directions():
    assert h.ramp_score(0.5, ok=1, bad=3) == 100
    assert h.ramp_score(2, ok=1, bad=3) == 50
    assert h.ramp_score(9, ok=1, bad=3) == 0
    # higher is better when ok > bad
    assert h.ramp_score(0.8, ok=0.6, bad=0.4) == 100
    assert h.ramp_score(0.5, ok=0.6, bad=0.4) == pytest.approx(50)
    with pytest.raises(ValueError):
        h.ramp_score(1, ok=1, bad=1)
    with pytest.raises(ValueError):
        h.ramp_score(float("nan"), ok=1, bad=2)


def _healthy() -> dict[str, dict]:
    """Measurements of a healthy module, as keyword arguments of each component function."""
    return {
        "data": {"missed_bars": 0.0},
        "pred": {"lag_bars": 0.0},
        "err": {"errors": 0.0, "attempted": 500.0},
        "lat": {"latency_ms": 40.0, "threshold_ms": 60.0},
        "acc": {"baseline": 0.54, "recent": 0.545, "n": 2000.0},
        "drift": {"psi_median": 0.03},
        "stale": {"age_hours": 24.0, "schedule_hours": 168.0},
        "dq": {"failing": 0.0, "checked": 100_000.0},
    }


def _components(m: dict[str, dict]) -> dict[str, h.ComponentScore]:
    comps = [
        h.data_freshness_score(**m["data"]),
        h.prediction_freshness_score(**m["pred"]),
        h.error_rate_score(**m["err"]),
        h.latency_score(**m["lat"]),
        h.accuracy_drift_score(**m["acc"]),
        h.feature_drift_score(**m["drift"]),
        h.model_staleness_score(**m["stale"]),
        h.dq_failure_score(**m["dq"]),
    ]
    return {c.name: c for c in comps}


# Each degradation, and the one component it must move.
DEGRADATIONS = [
    ("data", {"missed_bars": 6.0}, Component.data_freshness),
    ("pred", {"lag_bars": 5.0}, Component.prediction_freshness),
    ("err", {"errors": 40.0, "attempted": 500.0}, Component.error_rate),
    ("lat", {"latency_ms": 130.0, "threshold_ms": 60.0}, Component.latency),
    ("acc", {"baseline": 0.54, "recent": 0.48, "n": 2000.0}, Component.accuracy_drift),
    ("drift", {"psi_median": 0.4}, Component.feature_drift),
    ("stale", {"age_hours": 24.0 * 30, "schedule_hours": 168.0}, Component.model_staleness),
    ("dq", {"failing": 3000.0, "checked": 100_000.0}, Component.dq_failure_rate),
]


def test_healthy_module_scores_100():
    comps = _components(_healthy())
    assert all(c.score == 100 for c in comps.values()), {n: c.score for n, c in comps.items()}
    assert h.module_score("m", list(comps.values())).score == 100


@pytest.mark.parametrize(("key", "bad", "component"), DEGRADATIONS, ids=[d[2].value for d in DEGRADATIONS])
def test_each_component_responds_to_its_own_degradation_only(key, bad, component):
    m = _healthy()
    m[key] = bad
    comps = _components(m)
    assert comps[component].score < 50
    others = {n: c.score for n, c in comps.items() if n != component}
    assert all(s == 100 for s in others.values()), others
    health = h.module_score("m", list(comps.values()))
    assert health.score < 100
    assert health.movers()[0][0] == component
    assert set(health.lost) == set(h.DEFAULT_WEIGHTS)  # every measured component is accounted for


def test_module_score_is_weighted_mean_with_cap_and_missing_components():
    c = [
        h.ComponentScore("data_freshness", 100.0, 0, 1, 4),
        h.ComponentScore("error_rate", 60.0, 0.046, 0.01, 0.1),
        h.ComponentScore("accuracy_drift", None, None, 2, 5, "no benchmark"),
    ]
    w = {"data_freshness": 3.0, "error_rate": 1.0, "accuracy_drift": 5.0}
    mh = h.module_score("m", c, w)
    assert mh.score == pytest.approx((3 * 100 + 60) / 4)  # the unmeasured component's weight is dropped
    assert mh.lost == pytest.approx({"data_freshness": 0.0, "error_rate": 10.0})
    # a component at 0 caps the module at CAP_MARGIN however small its weight
    c0 = [
        h.ComponentScore("data_freshness", 100.0, 0, 1, 4),
        h.ComponentScore("error_rate", 0.0, 1, 0.01, 0.1),
    ]
    capped = h.module_score("m", c0, {"data_freshness": 9.0, "error_rate": 1.0})
    assert capped.score == h.CAP_MARGIN and capped.capped_by == "error_rate"
    assert capped.components_json()["_capped_by"] == "error_rate"
    assert h.module_score("m", [c[2]], w).score is None
    with pytest.raises(KeyError):
        h.module_score("m", c, {"data_freshness": 1.0})


def test_missing_inputs_score_zero_or_unmeasured():
    assert h.data_freshness_score(None).score == 0
    assert h.prediction_freshness_score(None).score == 0
    assert h.model_staleness_score(None, 168).score == 0
    assert h.error_rate_score(0, 0).score is None
    assert h.latency_score(None, 50).score is None
    assert h.accuracy_drift_score(0.55, None, 100).score is None
    assert h.feature_drift_score(float("nan")).score is None
    assert h.dq_failure_score(0, 0).score is None


def test_accuracy_drift_uses_the_size_of_the_sample():
    small = h.accuracy_drift_score(0.55, 0.52, 100)  # 3 points on 100 calls: noise
    large = h.accuracy_drift_score(0.55, 0.52, 5000)  # 3 points on 5,000: a real drop
    assert small.score == 100 and large.score < 30
    assert h.accuracy_drift_score(0.55, 0.60, 5000).score == 100  # improving is healthy


def test_overall_score_weights_modules():
    assert h.overall_score({"a": 100.0, "b": 50.0}) == 75
    assert h.overall_score({"a": 100.0, "b": 50.0, "c": None}, {"b": 3.0}) == pytest.approx(62.5)
    assert h.overall_score({"a": None}) is None


def test_psi_is_small_for_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, 5000)
    assert h.psi(train, rng.normal(0, 1, 1000)) < 0.05
    assert 0.10 < h.psi(train, rng.normal(0.4, 1, 1000)) < 0.25
    assert h.psi(train, rng.normal(1.0, 1, 1000)) > 0.25
    assert np.isnan(h.psi(train, [1.0, 2.0]))
    # a candlestick flag: one bin per value
    flags = rng.choice([-100, 0, 100], size=5000, p=[0.05, 0.9, 0.05])
    assert h.psi(flags, rng.choice([-100, 0, 100], size=1000, p=[0.05, 0.9, 0.05])) < 0.02
    assert h.psi(flags, rng.choice([-100, 0, 100], size=1000, p=[0.25, 0.5, 0.25])) > 0.25
    # the textbook formula on two explicit distributions
    e = np.repeat(np.arange(10.0), 100)
    a = np.repeat(np.arange(10.0), [50] * 5 + [150] * 5)
    expected = 5 * (0.05 - 0.1) * np.log(0.05 / 0.1) + 5 * (0.15 - 0.1) * np.log(0.15 / 0.1)
    assert h.psi(e, a) == pytest.approx(expected)


def test_feature_psi_and_drift_columns():
    rng = np.random.default_rng(2)
    train = pd.DataFrame({"rv_20": rng.normal(size=2000), "clv": rng.normal(size=2000), "cdl_doji": 0})
    recent = pd.DataFrame({"rv_20": rng.normal(2, 1, 300), "clv": rng.normal(size=300), "cdl_doji": 0})
    out = h.feature_psi(train, recent, ["rv_20", "clv", "cdl_doji", "absent"])
    assert out.index[0] == "rv_20" and out["rv_20"] > 1 and out["clv"] < 0.1
    cols = ["rv_20", "clv", "cdl_doji", "rsi_14", "adx_14", "trend_slope_50"]
    assert h.drift_columns("volatility", cols) == ["rv_20"]
    assert h.drift_columns("imbalance", cols) == ["clv"]
    assert h.drift_columns("patterns", cols) == ["cdl_doji", "adx_14", "trend_slope_50"]
    assert "cdl_doji" not in h.drift_columns("direction", cols)


def test_missed_bars_follow_the_exchange_calendar():
    # Friday 2026-11-20 after the close: Friday's daily bar is due.
    fri_close = pd.Timestamp("2026-11-20 21:30", tz="UTC")
    assert h.missed_bars("1d", pd.Timestamp("2026-11-20", tz="UTC"), fri_close) == 0
    assert h.missed_bars("1d", pd.Timestamp("2026-11-19", tz="UTC"), fri_close) == 1
    # Monday before the open: nothing new is due since Friday.
    mon = pd.Timestamp("2026-11-23 13:00", tz="UTC")
    assert h.missed_bars("1d", pd.Timestamp("2026-11-20", tz="UTC"), mon) == 0
    # 5m: bars of 15:00-15:25 UTC closed by 15:30 -> the bar at 15:00 is newest, 5 more complete
    now = pd.Timestamp("2026-11-20 15:30", tz="UTC")
    assert h.missed_bars("5m", pd.Timestamp("2026-11-20 15:00", tz="UTC"), now) == 5
    assert h.missed_bars("5m", pd.Timestamp("2026-11-20 15:25", tz="UTC"), now) == 0
    assert h.missed_bars("1d", None, now) is None
    # lag between predictions and bars, counted in expected bars
    assert h.lag_bars("1d", pd.Timestamp("2026-11-18", tz="UTC"), pd.Timestamp("2026-11-20", tz="UTC")) == 2
    assert (
        h.lag_bars(
            "5m", pd.Timestamp("2026-11-20 15:00", tz="UTC"), pd.Timestamp("2026-11-20 15:25", tz="UTC")
        )
        == 5
    )
    assert h.lag_bars("1d", pd.Timestamp("2026-11-20", tz="UTC"), pd.Timestamp("2026-11-20", tz="UTC")) == 0
    assert h.lag_bars("1d", None, pd.Timestamp("2026-11-20", tz="UTC")) is None


def test_freshness_thresholds_by_interval_family():
    assert h.freshness_thresholds("1d") == (h.DATA_LAG_OK_DAILY, h.DATA_LAG_BAD_DAILY)
    assert h.freshness_thresholds("5m", "prediction") == (
        h.PREDICTION_LAG_OK_INTRADAY,
        h.PREDICTION_LAG_BAD_INTRADAY,
    )
    with pytest.raises(ValueError):
        h.freshness_thresholds("1d", "other")


def test_settings_defaults_are_the_documented_constants():
    from models import alerts, thresholds
    from qtrader.settings import AlertSettings, HealthSettings, ThresholdSettings

    hs = HealthSettings()
    assert hs.weights == {str(k): v for k, v in h.DEFAULT_WEIGHTS.items()} and hs.cap_margin == h.CAP_MARGIN
    pairs = {
        "data_lag_ok_daily": h.DATA_LAG_OK_DAILY, "data_lag_bad_daily": h.DATA_LAG_BAD_DAILY,
        "data_lag_ok_intraday": h.DATA_LAG_OK_INTRADAY, "data_lag_bad_intraday": h.DATA_LAG_BAD_INTRADAY,
        "prediction_lag_ok_daily": h.PREDICTION_LAG_OK_DAILY, "prediction_lag_bad_daily": h.PREDICTION_LAG_BAD_DAILY,
        "prediction_lag_ok_intraday": h.PREDICTION_LAG_OK_INTRADAY,
        "prediction_lag_bad_intraday": h.PREDICTION_LAG_BAD_INTRADAY,
        "error_rate_ok": h.ERROR_RATE_OK, "error_rate_bad": h.ERROR_RATE_BAD,
        "latency_ratio_ok": h.LATENCY_RATIO_OK, "latency_ratio_bad": h.LATENCY_RATIO_BAD,
        "accuracy_drop_z_ok": h.ACCURACY_DROP_Z_OK, "accuracy_drop_z_bad": h.ACCURACY_DROP_Z_BAD,
        "psi_ok": h.PSI_OK, "psi_bad": h.PSI_BAD, "psi_bins": h.PSI_BINS,
        "staleness_ratio_ok": h.STALENESS_RATIO_OK, "staleness_ratio_bad": h.STALENESS_RATIO_BAD,
        "dq_failure_ok": h.DQ_FAILURE_OK, "dq_failure_bad": h.DQ_FAILURE_BAD,
    }  # fmt: skip
    assert {k: getattr(hs, k) for k in pairs} == pairs
    ts = ThresholdSettings()
    assert (ts.method, ts.k, ts.quantile, ts.window, ts.min_history) == (
        thresholds.Method.mad, thresholds.DEFAULT_K, thresholds.DEFAULT_QUANTILE, thresholds.DEFAULT_WINDOW,
        thresholds.DEFAULT_MIN_HISTORY,
    )  # fmt: skip
    a = AlertSettings()
    assert (a.critical_hours, a.warning_hours, a.resolve_hours, a.confirm_hours, a.confidence) == (
        alerts.CRITICAL_HOURS, alerts.WARNING_HOURS, alerts.RESOLVE_HOURS, alerts.CONFIRM_HOURS, alerts.CONFIDENCE
    )  # fmt: skip
    assert (a.min_points, a.max_points, a.lookback_hours, a.breach_points, a.max_extrapolation) == (
        alerts.MIN_POINTS, alerts.MAX_POINTS, alerts.LOOKBACK_HOURS, alerts.BREACH_POINTS, alerts.MAX_EXTRAPOLATION
    )  # fmt: skip
    assert set(a.metrics) <= set(thresholds.METRICS)
    with pytest.raises(ValueError, match="unknown health components"):
        HealthSettings(weights={"vibes": 1.0})
    assert HealthSettings(weights={"latency": 0.5}).weights["latency"] == 0.5  # partial tables merge


def test_assess_module_takes_each_component_from_its_worst_interval():
    from qtrader.settings import HealthSettings

    cfg = HealthSettings()
    at = pd.Timestamp("2026-11-20 20:00", tz="UTC")
    daily = h.IntervalMeasurements(
        "1d", data_lag_bars=0, prediction_lag_bars=0, prediction_errors=0, predictions_attempted=100,
        latency_p95_ms=900.0, latency_at=at, accuracy_baseline=0.55, accuracy_recent=0.55, accuracy_n=1000,
        psi_median=0.02, psi_max=0.2, psi_feature="rv_20", model_age_hours=24, dq_failing=0, dq_checked=1000,
    )  # fmt: skip
    intraday = h.IntervalMeasurements(
        "5m", data_lag_bars=30, prediction_lag_bars=0, prediction_errors=0, predictions_attempted=100,
        latency_p95_ms=10.0, latency_at=at, accuracy_baseline=0.55, accuracy_recent=0.56, accuracy_n=1000,
        psi_median=0.01, model_age_hours=12, dq_failing=0, dq_checked=1000,
    )  # fmt: skip
    out = h.assess_module("m", [daily, intraday], cfg, latency_threshold_ms=600.0)
    comps = {c.name: c for c in out.health.components}
    assert comps["data_freshness"].score == 0 and comps["data_freshness"].detail.startswith("[5m]")
    assert comps["latency"].detail.startswith("[1d]") and comps["latency"].value == pytest.approx(1.5)
    assert out.metrics["data_lag_bars"] == (30.0, None)
    assert out.metrics["latency_ms"] == (900.0, at)
    assert out.metrics["health_score"][0] == out.health.score == 50.0  # capped by the stale 5m data
    with pytest.raises(ValueError):
        h.assess_module("m", [], cfg)
