from datetime import UTC, datetime

import pandas as pd
import pytest

from models import decision as dm
from models.brackets import Side
from qtrader.settings import ExitSettings, FilterSettings, SizingSettings

TS = datetime(2026, 11, 20, tzinfo=UTC)


def sig(symbol="AAA", direction=1, consensus="UNANIMOUS", conf=0.7, close=100.0, atr=2.0):
    return dm.Signal(symbol, direction, consensus, 3, 3, "regime,selector,direction", conf, conf, conf, close, atr,
                     "NORMAL", {"regime": {"p_up": 0.6}})  # fmt: skip


def ctx(**kw):
    base = dict(
        ts=TS, interval="1d", strategy="qtrader", broker="local", source_module="ensemble", market_open=True,
        overall_health=90.0, module_health={"ensemble": 90.0}, equity=100_000.0, buying_power=100_000.0,
        accuracy=0.65, performance_score=60.0,
    )  # fmt: skip
    base.update(kw)
    return dm.DecisionContext(**base)


def test_accepted_candidate_becomes_three_brackets_with_every_input_recorded():
    batch = dm.assemble([sig()], ctx())
    (row,) = batch.rows
    assert row["accepted"] and row["reason_code"] == "accepted"
    # risk 1% of 100k / (1.5 ATR = 3.0) = 333 shares, capped by 10% notional = 100 shares
    assert row["qty"] == 100 and row["capped_by"] == "max_notional"
    assert [p.bracket.qty for p in batch.brackets] == [34, 33, 33]
    assert [p.leg for p in batch.brackets] == [1, 2, 3]
    b1 = batch.brackets[0].bracket
    assert b1.side is Side.buy and b1.stop == pytest.approx(97.0) and b1.take_profit == pytest.approx(102.0)
    assert row["client_order_ids"][0] == b1.client_order_id
    for k in ("confidence_calibrated", "overall_health", "module_health", "size_multiplier", "exit_profile"):
        assert row[k] is not None


def test_rejections_carry_their_reason_code():
    rows = dm.assemble(
        [sig("W", consensus="WEAK"), sig("L", conf=0.51), sig("S", direction=-1)],
        ctx(allow_short=False),
    ).rows
    by = {r["symbol"]: r for r in rows}
    assert by["W"]["reason_code"] == "weak_consensus"
    assert by["L"]["reason_code"] == "low_confidence"
    assert by["S"]["reason_code"] == "short_disabled"
    assert not any(r["accepted"] for r in rows)


def test_health_below_80_rejects_every_candidate():
    batch = dm.assemble([sig("A"), sig("B")], ctx(overall_health=79.9))
    assert {r["reason_code"] for r in batch.rows} == {"ai_health_degraded"}
    assert batch.brackets == []


def test_positions_and_buying_power_are_used_up_best_confidence_first():
    signals = [sig("LOW", conf=0.6), sig("HIGH", conf=0.9), sig("MID", conf=0.7)]
    batch = dm.assemble(signals, ctx(open_positions=8), FilterSettings(max_open_positions=10))
    by = {r["symbol"]: r["reason_code"] for r in batch.rows}
    assert by == {"HIGH": "accepted", "MID": "accepted", "LOW": "max_positions"}


def test_order_gate_view_flags_prices_out_of_order():
    batch = dm.assemble([sig()], ctx())
    frame = dm.order_batch_frame(batch, ctx(), SizingSettings())
    view = dm.order_gate_view(frame)
    assert (view["tp_gap"] > 0).all() and (view["stop_gap"] > 0).all()
    assert view["notional_to_cap"].max() <= 1.0
    frame.loc[0, "stop"] = 105.0
    assert dm.order_gate_view(frame)["stop_gap"].iloc[0] < 0


def _open(did="d1", leg=2, stop=97.0, entry=100.0, side=Side.buy):
    return dm.OpenBracket(f"c{leg}", did, leg, "AAA", side, entry, f"sl{leg}", stop)


def test_breakeven_after_tp1_for_the_remaining_legs():
    moves = dm.plan_stop_moves(
        [_open(leg=2), _open(leg=3)], tp1_filled={"d1"}, current={"AAA": 103.0}, overall_health=90,
        ensemble_health=90,
    )  # fmt: skip
    assert [(m.rule, m.new_stop) for m in moves] == [("breakeven_after_tp1", 100.0)] * 2


def test_stop_rules_health_gate_ensemble_and_predictive():
    b = [_open()]
    # overall < 70: health-driven changes skipped
    assert (
        dm.plan_stop_moves(b, tp1_filled=set(), current={"AAA": 104.0}, overall_health=65, ensemble_health=50)
        == []
    )
    # ensemble < 60: halfway toward the current price
    (m,) = dm.plan_stop_moves(
        b, tp1_filled=set(), current={"AAA": 104.0}, overall_health=75, ensemble_health=50
    )
    assert m.rule == "ensemble_degraded" and m.new_stop == pytest.approx(102.0)
    # a predictive alert < 4 h: breakeven - 0.1%
    alert = {"module": "ensemble", "metric": "latency_ms", "time_to_threshold_hours": 2.0, "reason": "trend"}
    (m,) = dm.plan_stop_moves(
        b, tp1_filled=set(), current={"AAA": 99.0}, overall_health=90, ensemble_health=90, alerts=[alert],
        cfg=ExitSettings(),
    )  # fmt: skip
    assert m.rule == "predictive_tightening" and m.new_stop == pytest.approx(99.9)


def test_ensemble_signals_calibrate_the_combined_confidence():
    probas = pd.DataFrame({"a": [0.7, 0.5], "b": [0.65, 0.4]}, index=["X", "Y"])
    feats = pd.DataFrame({"symbol": ["X", "Y"], "bar_close": [10.0, 20.0], "atr_14": [0.5, 1.0],
                          "atr_pct_rank_252": [0.5, 0.9], "rv_ratio_5_20": [1.0, 1.0], "rv_ratio_20_60": [1.0, 1.0]})  # fmt: skip
    out = dm.ensemble_signals(probas, feats, weights=None, calibrator=None, seed_accuracy=0.6, min_edge=0.05,
                              strong=0.75, weak=0.5, min_voters=2)  # fmt: skip
    x, y = out
    assert x.consensus == "UNANIMOUS" and x.direction == 1 and x.confidence_raw == pytest.approx(0.675)
    assert x.confidence_calibrated == pytest.approx(0.675)  # no calibrator: the raw confidence
    assert x.confidence_seed == pytest.approx(0.675 * (0.7 * 0.6 / 0.675 + 0.3))
    assert y.consensus == "NONE" and y.direction == 0 and y.vol_state == "HIGH_VOLATILITY"
