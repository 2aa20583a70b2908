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
