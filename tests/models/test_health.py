"""Health components: each responds to its own degradation only; module and overall scores; PSI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import health as h
from models.health import Component
from qtrader.settings import HealthSettings

CFG = HealthSettings()
W = CFG.weights


def ok_bad(name: str) -> dict:
    return {"ok": getattr(CFG, f"{name}_ok"), "bad": getattr(CFG, f"{name}_bad")}


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
        "drift": {"share": 0.01},
        "stale": {"age_hours": 24.0, "schedule_hours": 168.0},
        "dq": {"failing": 0.0, "checked": 100_000.0},
    }


def _components(m: dict[str, dict]) -> dict[str, h.ComponentScore]:
    comps = [
        h.data_freshness_score(**m["data"], ok=CFG.data_lag_ok_daily, bad=CFG.data_lag_bad_daily),
        h.prediction_freshness_score(
            **m["pred"], ok=CFG.prediction_lag_ok_daily, bad=CFG.prediction_lag_bad_daily
        ),
        h.error_rate_score(**m["err"], **ok_bad("error_rate")),
        h.latency_score(**m["lat"], **ok_bad("latency_ratio")),
        h.accuracy_drift_score(**m["acc"], **ok_bad("accuracy_drop_z")),
        h.feature_drift_score(**m["drift"], **ok_bad("drift"), tail=CFG.drift_tail),
        h.model_staleness_score(**m["stale"], **ok_bad("staleness_ratio")),
        h.dq_failure_score(**m["dq"], **ok_bad("dq_failure")),
    ]
    return {c.name: c for c in comps}


# Each degradation, and the one component it must move.
DEGRADATIONS = [
    ("data", {"missed_bars": 6.0}, Component.data_freshness),
    ("pred", {"lag_bars": 5.0}, Component.prediction_freshness),
    ("err", {"errors": 40.0, "attempted": 500.0}, Component.error_rate),
    ("lat", {"latency_ms": 130.0, "threshold_ms": 60.0}, Component.latency),
    ("acc", {"baseline": 0.54, "recent": 0.48, "n": 2000.0}, Component.accuracy_drift),
    ("drift", {"share": 0.4}, Component.feature_drift),
    ("stale", {"age_hours": 24.0 * 30, "schedule_hours": 168.0}, Component.model_staleness),
    ("dq", {"failing": 3000.0, "checked": 100_000.0}, Component.dq_failure_rate),
]


def test_healthy_module_scores_100():
    comps = _components(_healthy())
    assert all(c.score == 100 for c in comps.values()), {n: c.score for n, c in comps.items()}
    assert h.module_score("m", list(comps.values()), W, cap_margin=CFG.cap_margin).score == 100


@pytest.mark.parametrize(("key", "bad", "component"), DEGRADATIONS, ids=[d[2].value for d in DEGRADATIONS])
def test_each_component_responds_to_its_own_degradation_only(key, bad, component):
    m = _healthy()
    m[key] = bad
    comps = _components(m)
    assert comps[component].score < 50
    others = {n: c.score for n, c in comps.items() if n != component}
    assert all(s == 100 for s in others.values()), others
    health = h.module_score("m", list(comps.values()), W, cap_margin=CFG.cap_margin)
    assert health.score < 100
    assert health.movers()[0][0] == component
    assert set(health.lost) == set(W)  # every measured component is accounted for
    assert sum(health.lost.values()) == pytest.approx(100 - health.score)  # the cap's points included


def test_module_score_is_weighted_mean_with_cap_and_missing_components():
    c = [
        h.ComponentScore("data_freshness", 100.0, 0, 1, 4),
        h.ComponentScore("error_rate", 60.0, 0.046, 0.01, 0.1),
        h.ComponentScore("accuracy_drift", None, None, 2, 5, "no benchmark"),
    ]
    w = {"data_freshness": 3.0, "error_rate": 1.0, "accuracy_drift": 5.0}
    mh = h.module_score("m", c, w, cap_margin=CFG.cap_margin)
    assert mh.score == pytest.approx((3 * 100 + 60) / 4)  # the unmeasured component's weight is dropped
    assert mh.lost == pytest.approx({"data_freshness": 0.0, "error_rate": 10.0})
    # a component at 0 caps the module at CAP_MARGIN however small its weight
    c0 = [
        h.ComponentScore("data_freshness", 100.0, 0, 1, 4),
        h.ComponentScore("error_rate", 0.0, 1, 0.01, 0.1),
    ]
    capped = h.module_score("m", c0, {"data_freshness": 9.0, "error_rate": 1.0}, cap_margin=CFG.cap_margin)
    assert capped.score == CFG.cap_margin and capped.capped_by == "error_rate"
    assert capped.components_json()["_capped_by"] == "error_rate"
    assert capped.lost == pytest.approx({"data_freshness": 0.0, "error_rate": 50.0})  # 10 + the cap's 40
    assert h.module_score("m", [c[2]], w, cap_margin=CFG.cap_margin).score is None
    with pytest.raises(KeyError):
        h.module_score("m", c, {"data_freshness": 1.0}, cap_margin=CFG.cap_margin)


def test_missing_inputs_score_zero_or_unmeasured():
    assert h.data_freshness_score(None, ok=1, bad=4).score == 0
    assert h.prediction_freshness_score(None, ok=1, bad=4).score == 0
    assert h.model_staleness_score(None, 168, **ok_bad("staleness_ratio")).score == 0
    assert h.error_rate_score(0, 0, **ok_bad("error_rate")).score is None
    assert h.latency_score(None, 50, **ok_bad("latency_ratio")).score is None
    assert h.accuracy_drift_score(0.55, None, 100, **ok_bad("accuracy_drop_z")).score is None
    assert h.feature_drift_score(float("nan"), **ok_bad("drift"), tail=0.01).score is None
    assert h.dq_failure_score(0, 0, **ok_bad("dq_failure")).score is None


def test_accuracy_drift_uses_the_size_of_both_samples():
    z = ok_bad("accuracy_drop_z")
    small = h.accuracy_drift_score(0.55, 0.52, 100, **z)  # 3 points on 100 calls: noise
    large = h.accuracy_drift_score(0.55, 0.52, 5000, **z)  # 3 points on 5,000: a real drop
    assert small.score == 100 and large.score < 30
    assert h.accuracy_drift_score(0.55, 0.60, 5000, **z).score == 100  # improving is healthy
    # the validation accuracy is an estimate too: on 300 validation calls the same drop is within noise
    assert h.accuracy_drift_score(0.55, 0.52, 5000, **z, n_baseline=300).score == 100
    assert h.accuracy_drop_z(0.55, 0.52, 5000, 5000) == pytest.approx(h.accuracy_drop_z(0.55, 0.52, 2500))


def test_overall_score_weights_modules():
    assert h.overall_score({"a": 100.0, "b": 50.0}) == 75
    assert h.overall_score({"a": 100.0, "b": 50.0, "c": None}, {"b": 3.0}) == pytest.approx(62.5)
    assert h.overall_score({"a": None}) is None


def _drift(train: pd.DataFrame, recent: pd.DataFrame, cols) -> pd.Series:
    ref = h.DriftReference.from_frame(train, cols, CFG.drift_tail, CFG.drift_min_rows)
    return h.out_of_range_shares(ref, recent, CFG.drift_min_rows)


def test_out_of_range_share_is_zero_inside_the_training_range_and_large_outside():
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"x": rng.normal(0, 1, 20_000)})
    assert _drift(train, pd.DataFrame({"x": rng.normal(0, 1, 1000)}), ["x"])["x"] < 0.01
    # a shift within what the training window saw (a regime it also had) barely counts...
    assert _drift(train, pd.DataFrame({"x": rng.normal(0.5, 0.5, 1000)}), ["x"])["x"] < 0.03
    # ...values beyond it do: 3x the volatility puts ~45% of the values outside the central 98%
    assert _drift(train, pd.DataFrame({"x": rng.normal(0, 3, 1000)}), ["x"])["x"] > 0.35
    # a candlestick flag: the training window's own share outside its range is subtracted
    flags = pd.DataFrame({"f": rng.choice([-1.0, 0.0, 1.0], size=20_000, p=[0.05, 0.9, 0.05])})
    same = pd.DataFrame({"f": rng.choice([-1.0, 0.0, 1.0], size=1000, p=[0.05, 0.9, 0.05])})
    assert _drift(flags, same, ["f"])["f"] < 0.03
    assert _drift(train, pd.DataFrame({"x": [1.0, 2.0]}), ["x"]).empty  # too few rows: not compared


def test_no_drift_input_moves_when_the_price_level_doubles():
    """The same market at twice the price: every measured input is scale-free, so nothing drifts.
    (The old PSI read atr_14 in price units: its PSI went from 1.39 to 1.90 on the doubled copy.)"""
    from models.features import compute_features_many
    from tests.flows._market import synthetic_bars

    bars = synthetic_bars(5, 3.0)
    doubled = bars.assign(**{c: bars[c] * 2 for c in ("open", "high", "low", "close")})
    plain, twice = compute_features_many(bars), compute_features_many(doubled)
    cols = h.drift_columns("direction", [c for c in plain.columns if c not in ("symbol", "interval", "ts")])
    assert "atr_14" not in cols and "natr_14" in cols and len(cols) > 40
    times = np.sort(plain["ts"].unique())
    train = plain[plain["ts"] <= times[-100]]
    recent_plain, recent_twice = plain[plain["ts"] > times[-63]], twice[twice["ts"] > times[-63]]
    a, b = _drift(train, recent_plain, cols), _drift(train, recent_twice, cols)
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index(), atol=0.01)


def test_drift_columns():
    cols = ["rv_20", "clv", "cdl_doji", "rsi_14", "adx_14", "trend_slope_50", "atr_14", "natr_14"]
    assert h.drift_columns("volatility", cols) == ["rv_20", "natr_14"]
    assert h.drift_columns("imbalance", cols) == ["clv"]
    assert h.drift_columns("patterns", cols) == ["cdl_doji", "adx_14", "trend_slope_50"]
    assert "cdl_doji" not in h.drift_columns("direction", cols)
    assert "atr_14" not in h.drift_columns("direction", cols)  # price units: measured as natr_14


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
    assert h.freshness_thresholds("1d", "data", CFG) == (CFG.data_lag_ok_daily, CFG.data_lag_bad_daily)
    assert h.freshness_thresholds("5m", "prediction", CFG) == (
        CFG.prediction_lag_ok_intraday,
        CFG.prediction_lag_bad_intraday,
    )
    with pytest.raises(ValueError):
        h.freshness_thresholds("1d", "other", CFG)


@pytest.mark.parametrize(
    "module", ["models.health", "models.thresholds", "models.alerts", "models.trade_filter"]
)
def test_settings_are_the_only_home_of_the_numbers(module):
    """No tuned number is duplicated as a module constant: every threshold, weight, horizon and default
    is a Settings field (MAD_TO_SIGMA, a mathematical constant, is the one number allowed)."""
    import importlib

    mod = importlib.import_module(module)
    numbers = {
        name: value for name, value in vars(mod).items()
        if not name.startswith("_") and isinstance(value, (int, float)) and not isinstance(value, bool)
    }  # fmt: skip
    assert set(numbers) <= {"MAD_TO_SIGMA"}, numbers
    assert HealthSettings(weights={"latency": 0.5}).weights["latency"] == 0.5  # partial tables merge
    with pytest.raises(ValueError, match="unknown health components"):
        HealthSettings(weights={"vibes": 1.0})


def test_gate_is_the_learned_baseline_between_the_kill_floor_and_the_seed():
    floor = CFG.kill_floor
    assert floor == CFG.cap_margin + CFG.kill_switch_margin == 55
    assert h.gate_value(80, None, floor).value == 80 and h.gate_value(80, None, floor).source == "fallback"
    assert h.gate_value(80, 92.0, floor).value == 80  # never stricter than the seed
    assert h.gate_value(80, 71.5, floor) == h.Gate(71.5, "learned", h.gate_value(80, 71.5, floor).reason)
    assert h.gate_value(70, 30.0, floor).value == floor  # never below the kill switch
    assert h.gate_value(80, 71.5, floor, learned=False).value == 80
    # a component at 0 caps its module at cap_margin: below every possible gate
    dead = [
        h.ComponentScore("latency", 0.0, 9.0, 1, 2),
        h.ComponentScore("error_rate", 100.0, 0.0, 0.01, 0.1),
    ]
    score = h.module_score("m", dead, W, cap_margin=CFG.cap_margin).score
    assert all(
        h.gate_value(seed, b, floor).blocks(score) for seed in (70, 80) for b in (None, 30.0, 60.0, 99.0)
    )


def test_assess_module_takes_each_component_from_its_worst_interval():
    cfg = CFG
    at = pd.Timestamp("2026-11-20 20:00", tz="UTC")
    daily = h.IntervalMeasurements(
        "1d", data_lag_bars=0, prediction_lag_bars=0, prediction_errors=0, predictions_attempted=100,
        latency_p95_ms=900.0, latency_at=at, accuracy_baseline=0.55, accuracy_recent=0.55, accuracy_n=1000,
        drift_share=0.02, drift_max=0.2, drift_feature="rv_20", model_age_hours=24, dq_failing=0, dq_checked=1000,
    )  # fmt: skip
    intraday = h.IntervalMeasurements(
        "5m", data_lag_bars=30, prediction_lag_bars=0, prediction_errors=0, predictions_attempted=100,
        latency_p95_ms=10.0, latency_at=at, accuracy_baseline=0.55, accuracy_recent=0.56, accuracy_n=1000,
        drift_share=0.01, model_age_hours=12, dq_failing=0, dq_checked=1000,
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
