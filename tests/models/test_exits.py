from dataclasses import dataclass

import pytest

from models.exits import (
    ExitProfile,
    adaptive_profile,
    breakeven_after_tp1,
    health_gated_adjustment,
    next_stop,
    plan_levels,
    predictive_tightening,
    tp_multiplier,
)
from qtrader.settings import ExitSettings


def test_base_profile_is_the_seed_profile():
    p = adaptive_profile(2.0, {}, None, "NORMAL")
    assert (p.tp1, p.tp2, p.tp3, p.stop) == (2.0, 5.0, 8.0, 3.0)
    assert (p.tp1_mult, p.tp2_mult, p.tp3_mult, p.regime_mult, p.learned_factor) == (1, 1, 1, 1, 1)
    assert p.confidence is None
    assert "Adaptive TP/SL" in p.reason and "regime=NORMAL" in p.reason


@pytest.mark.parametrize(
    "rate, mult",
    [(0.85, 1.2), (0.80, 1.0), (0.75, 1.0), (0.70, 1.0), (0.69, 0.8), (None, 1.0), (float("nan"), 1.0)],
)
def test_tp_multiplier_rule(rate, mult):
    assert tp_multiplier(rate, 0.80, 0.70, 1.2, 0.8) == mult


def test_each_level_uses_its_own_rate():
    # Seed example rates: TP1 0.85 (x1.2), TP2 0.60 (x0.8), TP3 0.30 (x0.8).
    p = adaptive_profile(1.0, {"tp1": 0.85, "tp2": 0.60, "tp3": 0.30})
    assert (p.tp1_mult, p.tp2_mult, p.tp3_mult) == (1.2, 0.8, 0.8)
    assert p.tp1 == pytest.approx(1.2)
    assert p.tp2 == pytest.approx(2.5 * (1.2 + 0.8) / 2)  # the seed's blended TP2
    assert p.tp3 == pytest.approx(4.0 * 0.8)
    assert p.confidence == 0.85
    assert "TP1_rate=0.85" in p.reason and "TP2_rate=0.60" in p.reason and "TP3_rate=0.30" in p.reason


def test_tp2_unblended_and_per_level_thresholds():
    cfg = ExitSettings(tp2_blend_tp1=False, tp3_rate_high=0.25, tp3_rate_low=0.15)
    p = adaptive_profile(1.0, {"tp1": 0.9, "tp2": 0.9, "tp3": 0.30}, cfg=cfg)
    assert p.tp2 == pytest.approx(2.5 * 1.2)
    assert p.tp3_mult == 1.2 and p.tp3 == pytest.approx(4.8)


def test_confidence_is_capped():
    assert adaptive_profile(1.0, {"tp1": 0.99}).confidence == 0.95


@pytest.mark.parametrize(
    "state, mult", [("HIGH_VOLATILITY", 1.3), ("LOW_VOLATILITY", 0.9), ("NORMAL", 1.0), (None, 1.0)]
)
def test_regime_scales_the_stop(state, mult):
    p = adaptive_profile(2.0, {}, None, state)
    assert p.regime_mult == mult
    assert p.stop == pytest.approx(2.0 * 1.5 * mult)


def test_learned_threshold_caps_the_stop():
    # Learned widest normal stop 1.8 ATR: a high-vol stop of 1.95 ATR is narrowed to 1.8 ATR.
    p = adaptive_profile(2.0, {}, 1.8, "HIGH_VOLATILITY")
    assert p.learned_factor == pytest.approx(1.8 / 1.95)
    assert p.stop == pytest.approx(2.0 * 1.8)
    # The default learned threshold (1.95 = 1.5 x 1.3) never binds; a wider one never widens.
    assert adaptive_profile(2.0, {}, 1.95, "HIGH_VOLATILITY").learned_factor == pytest.approx(1.0)
    assert adaptive_profile(2.0, {}, 3.0, "NORMAL").stop == pytest.approx(3.0)
    assert "learned_stop=1.8" in p.reason


def test_profile_refuses_bad_input():
    with pytest.raises(ValueError):
        adaptive_profile(0.0, {})
    with pytest.raises(ValueError, match="tp1 < tp2 < tp3"):
        adaptive_profile(1.0, {}, cfg=ExitSettings(tp2_atr=0.5))


def test_plan_levels_buy_and_sell():
    p = adaptive_profile(2.0, {})
    lv = plan_levels(100.0, "buy", p)
    assert (lv.tp1, lv.tp2, lv.tp3, lv.stop) == (102.0, 105.0, 108.0, 97.0)
    sv = plan_levels(100.0, "sell", p)
    assert (sv.tp1, sv.tp2, sv.tp3, sv.stop) == (98.0, 95.0, 92.0, 103.0)
    with pytest.raises(ValueError):
        plan_levels(5.0, "sell", p)  # take-profits below zero
    assert isinstance(p, ExitProfile)


def test_breakeven_after_tp1():
    u = breakeven_after_tp1(100.0, 97.0, "buy")
    assert u.new_stop == 100.0 and u.rule == "breakeven_after_tp1"
    assert breakeven_after_tp1(100.0, 103.0, "sell").new_stop == 100.0
    assert breakeven_after_tp1(100.0, 100.5, "buy") is None  # already tighter: never loosen
    assert breakeven_after_tp1(100.0, 99.0, "sell") is None


def test_health_gate_skips_everything_below_70():
    assert health_gated_adjustment(69.9, 10.0, 100.0, 104.0, 97.0, "buy") is None
    assert health_gated_adjustment(None, 10.0, 100.0, 104.0, 97.0, "buy") is None


def test_ensemble_degraded_tightens_halfway():
    u = health_gated_adjustment(75.0, 50.0, 100.0, 104.0, 97.0, "buy")
    assert u.new_stop == pytest.approx(102.0)  # seed: entry + (current - entry) * 0.5
    assert u.rule == "ensemble_degraded"
    s = health_gated_adjustment(75.0, 50.0, 100.0, 96.0, 103.0, "sell")
    assert s.new_stop == pytest.approx(98.0)
    assert health_gated_adjustment(75.0, 60.0, 100.0, 104.0, 97.0, "buy") is None  # 60 is not degraded


def test_ensemble_degraded_under_water_goes_halfway_from_the_stop():
    # Long at 100, now 99, stop 97: the seed point (99.5) is above the price; use halfway stop->price.
    u = health_gated_adjustment(75.0, 50.0, 100.0, 99.0, 97.0, "buy")
    assert u.new_stop == pytest.approx(98.0)
    s = health_gated_adjustment(75.0, 50.0, 100.0, 101.0, 103.0, "sell")
    assert s.new_stop == pytest.approx(102.0)


def test_ensemble_degraded_never_loosens():
    # Stop already at 103 after breakeven ratchets; halfway (102) would loosen it.
    assert health_gated_adjustment(75.0, 50.0, 100.0, 104.0, 103.0, "buy") is None
    assert health_gated_adjustment(75.0, 50.0, 100.0, 96.0, 97.0, "sell") is None


@dataclass
class Alert:
    module: str
    metric: str
    time_to_threshold_hours: float | None
    reason: str = ""


def test_predictive_tightening_to_breakeven_minus_a_tenth():
    alerts = [Alert("ensemble", "latency_ms", 2.5, "latency rising")]
    u = predictive_tightening(alerts, 100.0, 97.0, "buy")
    assert u.new_stop == pytest.approx(99.9)
    assert u.rule == "predictive_tightening" and "2.5h" in u.reason
    s = predictive_tightening(
        [{"module": "x", "metric": "y", "time_to_threshold_hours": 0.0}], 100.0, 103.0, "sell"
    )
    assert s.new_stop == pytest.approx(100.1)


def test_predictive_tightening_needs_an_urgent_alert():
    assert predictive_tightening([Alert("ensemble", "latency_ms", 4.0)], 100.0, 97.0, "buy") is None
    assert predictive_tightening([Alert("ensemble", "latency_ms", None)], 100.0, 97.0, "buy") is None
    assert predictive_tightening([], 100.0, 97.0, "buy") is None


def test_predictive_tightening_only_tightens():
    alerts = [Alert("ensemble", "latency_ms", 1.0)]
    assert predictive_tightening(alerts, 100.0, 99.95, "buy") is None
    assert predictive_tightening(alerts, 100.0, 100.0, "buy") is None  # breakeven is tighter than -0.1%
    assert predictive_tightening(alerts, 100.0, 100.05, "sell") is None


def test_predictive_filters_and_optional_health_gate():
    cfg = ExitSettings(predictive_modules=["ensemble"], predictive_metrics=["latency_ms"])
    assert predictive_tightening([Alert("regime", "latency_ms", 1.0)], 100.0, 97.0, "buy", cfg) is None
    assert predictive_tightening([Alert("ensemble", "psi", 1.0)], 100.0, 97.0, "buy", cfg) is None
    gated = ExitSettings(health_gate_applies_to_predictive=True)
    alerts = [Alert("ensemble", "latency_ms", 1.0)]
    assert predictive_tightening(alerts, 100.0, 97.0, "buy", gated, overall_health=50.0) is None
    assert predictive_tightening(alerts, 100.0, 97.0, "buy", gated, overall_health=90.0) is not None
    assert predictive_tightening(alerts, 100.0, 97.0, "buy", overall_health=50.0) is not None


def test_next_stop_takes_the_tightest_rule():
    alerts = [Alert("ensemble", "latency_ms", 1.0)]
    u = next_stop(side="buy", entry=100.0, current=104.0, active_stop=97.0, tp1_filled=True,
                  overall_health=90.0, ensemble_health=50.0, alerts=alerts)  # fmt: skip
    assert (u.rule, u.new_stop) == ("ensemble_degraded", pytest.approx(102.0))
    u = next_stop(side="buy", entry=100.0, current=104.0, active_stop=97.0, tp1_filled=True,
                  overall_health=60.0, ensemble_health=50.0, alerts=alerts)  # fmt: skip
    assert (u.rule, u.new_stop) == ("breakeven_after_tp1", 100.0)
    assert next_stop(side="buy", entry=100.0, current=104.0, active_stop=97.0, tp1_filled=False,
                     overall_health=90.0, ensemble_health=90.0) is None  # fmt: skip
