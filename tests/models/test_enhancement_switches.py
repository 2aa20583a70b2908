"""Each enhancement of seed 000 can be switched off alone (the backtest's ablations and static mode)."""

import pytest

from models import decision as dm
from models.exits import adaptive_profile
from models.sizing import performance_multiplier
from qtrader.settings import ExitSettings, FilterSettings, SizingSettings
from tests.models.test_decision import _open, ctx, sig

ALERT = {"module": "ensemble", "metric": "latency_ms", "time_to_threshold_hours": 2.0, "reason": "trend"}


def test_fixed_exit_profile_ignores_hit_rates_regime_and_learned_cap():
    rates = {"tp1": 0.9, "tp2": 0.9, "tp3": 0.1}
    adaptive = adaptive_profile(2.0, rates, 1.0, "HIGH_VOLATILITY", ExitSettings())
    fixed = adaptive_profile(2.0, rates, 1.0, "HIGH_VOLATILITY", ExitSettings(adaptive=False))
    assert (fixed.tp1, fixed.tp2, fixed.tp3, fixed.stop) == (2.0, 5.0, 8.0, 3.0)
    assert (adaptive.tp1, adaptive.stop) != (fixed.tp1, fixed.stop)
    assert fixed.reason.startswith("Fixed TP/SL")


def test_adaptive_exits_off_drops_the_health_rule_but_keeps_breakeven():
    b = [_open()]
    off = ExitSettings(adaptive=False)
    kw = dict(tp1_filled=set(), current={"AAA": 104.0}, overall_health=75, ensemble_health=50)
    assert [m.rule for m in dm.plan_stop_moves(b, **kw)] == ["ensemble_degraded"]
    assert dm.plan_stop_moves(b, **kw, cfg=off) == []
    (m,) = dm.plan_stop_moves(
        [_open(leg=2)], tp1_filled={"d1"}, current={"AAA": 103.0}, overall_health=90, ensemble_health=90,
        cfg=off,
    )  # fmt: skip
    assert m.rule == "breakeven_after_tp1"


def test_predictive_off_ignores_alerts():
    kw = dict(tp1_filled=set(), current={"AAA": 99.0}, overall_health=90, ensemble_health=90, alerts=[ALERT])
    assert [m.rule for m in dm.plan_stop_moves([_open()], **kw)] == ["predictive_tightening"]
    assert dm.plan_stop_moves([_open()], **kw, cfg=ExitSettings(predictive=False)) == []


def test_health_gating_off_trades_on_degraded_health():
    sick = ctx(overall_health=40.0, module_health={"ensemble": 30.0})
    assert dm.assemble([sig()], sick).rows[0]["reason_code"] == "ai_health_degraded"
    row = dm.assemble([sig()], sick, FilterSettings(health_gating=False)).rows[0]
    assert row["accepted"] and row["overall_health"] == 40.0  # still recorded


def test_uniform_sizing_has_multiplier_one():
    assert performance_multiplier(0.9, 20.0, SizingSettings())[0] == pytest.approx(0.96)
    assert performance_multiplier(0.9, 20.0, SizingSettings(performance_sizing=False)) == (
        1.0,
        "uniform sizing: x1",
    )


def test_raw_confidence_replaces_the_calibrated_one_in_filter_and_ranking():
    def s(symbol, raw, cal):
        return dm.Signal(symbol, 1, "UNANIMOUS", 3, 3, "a,b,c", raw, cal, cal, 100.0, 2.0, "NORMAL", {})

    signals = [s("AAA", 0.60, 0.52), s("BBB", 0.56, 0.70)]
    cal = dm.assemble(signals, ctx())
    raw = dm.assemble(signals, ctx(use_calibration=False))
    assert [(r["symbol"], r["accepted"]) for r in cal.rows] == [("BBB", True), ("AAA", False)]
    assert [(r["symbol"], r["accepted"]) for r in raw.rows] == [("AAA", True), ("BBB", True)]
