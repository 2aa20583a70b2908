from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from models.trade_filter import Candidate, FilterContext, Reason, filter_candidate
from qtrader.settings import FilterSettings

NOW = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
GOOD = Candidate("AAPL", "buy", "STRONG", 0.70, "ensemble", NOW)
CTX = FilterContext(
    market_open=True,
    overall_health=90.0,
    module_health={"ensemble": 85.0},
    open_position_symbols={"MSFT"},
    pending_order_symbols={"NVDA"},
    open_positions=3,
    start_of_day_equity=100_000.0,
    day_pnl=-500.0,
    last_exit_ts={"AMZN": NOW - timedelta(minutes=10), "AAPL": NOW - timedelta(hours=2)},
)


def test_a_good_candidate_passes():
    r = filter_candidate(GOOD, CTX)
    assert r.accepted and r.reason_code is Reason.accepted and r.failed == ()
    assert filter_candidate(replace(GOOD, consensus="UNANIMOUS"), CTX).accepted


@pytest.mark.parametrize(
    "cand, ctx, code",
    [
        (replace(GOOD, consensus="MAJORITY"), CTX, Reason.weak_consensus),
        (replace(GOOD, consensus="NONE"), CTX, Reason.weak_consensus),
        (replace(GOOD, confidence=0.54), CTX, Reason.low_confidence),
        (replace(GOOD, confidence=None), CTX, Reason.low_confidence),
        (GOOD, replace(CTX, overall_health=79.9), Reason.ai_health_degraded),
        (GOOD, replace(CTX, overall_health=None), Reason.ai_health_degraded),
        (GOOD, replace(CTX, module_health={"ensemble": 69.0}), Reason.module_health_degraded),
        (GOOD, replace(CTX, module_health={}), Reason.module_health_degraded),  # unknown counts as degraded
        (GOOD, replace(CTX, market_open=False), Reason.market_closed),
        (replace(GOOD, symbol="MSFT"), CTX, Reason.position_open),
        (replace(GOOD, symbol="NVDA"), CTX, Reason.order_pending),
        (GOOD, replace(CTX, open_positions=10), Reason.max_positions),
        (GOOD, replace(CTX, day_pnl=-2_000.0), Reason.daily_loss_limit),
        (replace(GOOD, symbol="AMZN"), CTX, Reason.cooldown),
    ],
)
def test_each_rule_has_its_reason_code(cand, ctx, code):
    r = filter_candidate(cand, ctx)
    assert not r.accepted
    assert r.reason_code is code
    assert r.failed == (code,)


def test_boundaries_pass():
    assert filter_candidate(replace(GOOD, confidence=0.55), CTX).accepted
    assert filter_candidate(
        GOOD, replace(CTX, overall_health=80.0, module_health={"ensemble": 70.0})
    ).accepted
    assert filter_candidate(GOOD, replace(CTX, open_positions=9, day_pnl=-1_999.0)).accepted
    ctx = replace(CTX, last_exit_ts={"AAPL": NOW - timedelta(minutes=30)})
    assert filter_candidate(GOOD, ctx).accepted


def test_the_kill_switch_comes_first_after_the_calendar_and_all_failures_are_listed():
    ctx = replace(CTX, market_open=False, day_pnl=-5_000.0, overall_health=10.0)
    r = filter_candidate(replace(GOOD, consensus="WEAK"), ctx)
    assert r.reason_code is Reason.market_closed
    assert r.failed == (
        Reason.market_closed,
        Reason.daily_loss_limit,
        Reason.weak_consensus,
        Reason.ai_health_degraded,
    )
    assert r.details["overall_health"] == 10.0 and r.details["day_loss_pct"] == pytest.approx(0.05)


def test_module_health_is_the_signal_source_module():
    cand = replace(GOOD, source_module="regime")
    ctx = replace(CTX, module_health={"ensemble": 95.0, "regime": 50.0})
    assert filter_candidate(cand, ctx).reason_code is Reason.module_health_degraded


def test_thresholds_are_settings():
    cfg = FilterSettings(min_confidence=0.8, max_open_positions=3, cooldown_minutes=5)
    assert filter_candidate(GOOD, CTX, cfg).failed == (Reason.low_confidence, Reason.max_positions)
    assert filter_candidate(
        replace(GOOD, symbol="AMZN", confidence=0.9), replace(CTX, open_positions=0), cfg
    ).accepted


def test_health_gates_follow_the_learned_baseline_within_the_floor_and_the_seed():
    """A module whose health normally sits at 74 is gated at its own baseline (here 66), not at the
    seed's 70; a baseline above the seed never makes the gate stricter; the kill floor always holds."""
    learned = replace(
        CTX, module_health={"ensemble": 68.0}, health_baselines={"ensemble": 66.0}, health_floor=55.0
    )
    assert filter_candidate(GOOD, learned).accepted
    assert not filter_candidate(GOOD, replace(learned, health_baselines={})).accepted  # fallback: seed 70
    assert filter_candidate(GOOD, replace(learned, module_health={"ensemble": 72.0},
                                          health_baselines={"ensemble": 95.0})).accepted  # fmt: skip
    dead = replace(learned, module_health={"ensemble": 50.0}, health_baselines={"ensemble": 20.0})
    assert filter_candidate(GOOD, dead).reason_code is Reason.module_health_degraded  # floor 55
    fixed = FilterSettings(learned_gates=False)
    assert filter_candidate(GOOD, learned, fixed).reason_code is Reason.module_health_degraded


def test_a_health_block_records_the_gate_and_what_drove_the_score_down():
    from models.trade_filter import gate_block_counts, health_driver_text

    drivers = {
        "overall": [{"module": "ensemble", "component": "prediction_freshness", "lost": 7.1}],
        "ensemble": [{"component": "prediction_freshness", "lost": 50.0, "score": 0.0, "detail": "x"}],
    }
    ctx = replace(CTX, overall_health=62.1, module_health={"ensemble": 50.0}, health_drivers=drivers,
                  health_floor=55.0)  # fmt: skip
    r = filter_candidate(GOOD, ctx)
    gate = r.details["health_gate"]
    assert set(gate) == {"ai_health_degraded", "module_health_degraded"}
    assert (
        gate["ai_health_degraded"]["gate"] == 80 and gate["ai_health_degraded"]["gate_source"] == "fallback"
    )
    assert gate["module_health_degraded"]["drivers"][0]["component"] == "prediction_freshness"
    text = health_driver_text(r.details)
    assert text == ("overall 62.1 < 80: ensemble/prediction_freshness -7.1; "
                    "ensemble 50.0 < 70: prediction_freshness -50.0")  # fmt: skip
    import json

    import pandas as pd

    rows = pd.DataFrame([
        {"reason_code": r.reason_code.value, "failed": ", ".join(f.value for f in r.failed),
         "details": json.dumps(r.details)},
        {"reason_code": "low_confidence", "failed": "low_confidence, ai_health_degraded",
         "details": json.dumps({"health_gate": {"ai_health_degraded": {"drivers": []}}})},
        {"reason_code": "accepted", "failed": None, "details": "{}"},
    ])  # fmt: skip
    counts = gate_block_counts(rows).set_index("rule")
    assert counts.loc["ai_health_degraded", ["first", "any", "only"]].tolist() == [1, 2, 0]
    assert counts.loc["module_health_degraded", ["first", "any", "only"]].tolist() == [0, 1, 0]
    assert counts.loc["ai_health_degraded", "top_driver"] == "ensemble/prediction_freshness"
