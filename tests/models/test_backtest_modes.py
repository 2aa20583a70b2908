"""Backtest modes (settings overrides), the scorecard and the --signals file checks."""

import math

import numpy as np
import pandas as pd
import pytest

from models import backtest as mb
from qtrader.settings import load_settings

STATIC_EXITS = {"tp1_atr": 1.0, "tp2_atr": 2.5, "tp3_atr": 4.0, "stop_atr": 1.5}


def test_static_turns_every_enhancement_off_with_the_old_exit_profile():
    s = load_settings(**mb.mode_overrides("static", STATIC_EXITS))
    assert not s.exits.adaptive and not s.exits.predictive
    assert not s.trade_filter.health_gating and not s.sizing.performance_sizing
    assert not s.decision.calibrated_confidence
    assert (s.exits.tp1_atr, s.exits.tp2_atr, s.exits.tp3_atr, s.exits.stop_atr) == (1.0, 2.5, 4.0, 1.5)


def test_each_ablation_turns_exactly_one_enhancement_off():
    base = load_settings().model_dump()
    for name in mb.ENHANCEMENTS:
        s = load_settings(**mb.mode_overrides(f"no_{name}", STATIC_EXITS)).model_dump()
        changed = {
            (sec, k) for sec in s if isinstance(s[sec], dict) for k in s[sec] if s[sec][k] != base[sec][k]
        }
        assert len(changed) == 1, (name, changed)
    assert load_settings(**mb.mode_overrides("adaptive", STATIC_EXITS)).model_dump() == base


def test_policy_applies_to_every_mode_and_unknown_modes_fail():
    policy = {"trade_filter": {"min_confidence": 0.5}}
    for mode in mb.MODES:
        assert mb.mode_overrides(mode, STATIC_EXITS, policy)["trade_filter"]["min_confidence"] == 0.5
    with pytest.raises(ValueError, match="unknown backtest mode"):
        mb.mode_overrides("no_such", STATIC_EXITS)
    with pytest.raises(ValueError, match="no_such"):
        mb.check_modes(["adaptive", "no_such"])


def test_scorecard_by_hand():
    trades = pd.DataFrame(
        {"pnl": [100.0, -50.0, 25.0], "qty": [10, 10, 5], "entry_price": [100.0, 100.0, 50.0]}
    )
    equity = pd.DataFrame({"equity": [1000.0, 1100.0, 990.0, 1045.0], "gross": [0.0, 500.0, 500.0, 0.0]})
    card = mb.scorecard(trades, equity, starting_equity=1000.0, periods_per_year=252, notional=2000.0)
    rets = np.diff([1000.0, 1000.0, 1100.0, 990.0, 1045.0]) / np.array([1000.0, 1000.0, 1100.0, 990.0])
    assert card["trades"] == 3 and card["win_rate"] == pytest.approx(2 / 3)
    assert card["avg_pnl_pct"] == pytest.approx((0.1 - 0.05 + 0.1) / 3)
    assert card["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(252))
    downside = math.sqrt(np.mean(np.minimum(rets, 0) ** 2))
    assert card["sortino"] == pytest.approx(rets.mean() / downside * math.sqrt(252))
    assert card["max_drawdown"] == pytest.approx(990 / 1100 - 1)
    assert card["exposure"] == pytest.approx(np.mean([0, 500 / 1100, 500 / 990, 0]))
    assert card["turnover"] == pytest.approx(2000 / np.mean([1000, 1000, 1100, 990, 1045]) / (4 / 252))
    assert card["total_return"] == pytest.approx(0.045)


def test_scorecard_without_trades():
    card = mb.scorecard(pd.DataFrame(), pd.DataFrame({"equity": [100.0, 100.0], "gross": [0.0, 0.0]}),
                        starting_equity=100.0, periods_per_year=252)  # fmt: skip
    assert card["trades"] == 0 and card["win_rate"] is None and card["sharpe"] is None
    assert card["max_drawdown"] == 0.0


BARS = pd.DataFrame({"symbol": ["AAA", "AAA", "BBB"],
                     "ts": pd.to_datetime(["2026-01-05", "2026-01-06", "2026-01-05"], utc=True)})  # fmt: skip


def test_signals_are_parsed_and_sorted():
    frame = pd.DataFrame(
        {"symbol": ["BBB", "AAA"], "ts": ["2026-01-05", "2026-01-05"], "side": ["Sell", "long"]}
    )
    out = mb.validate_signals(frame, BARS)
    assert out.to_dict("records") == [
        {"symbol": "AAA", "ts": pd.Timestamp("2026-01-05", tz="UTC"), "direction": 1},
        {"symbol": "BBB", "ts": pd.Timestamp("2026-01-05", tz="UTC"), "direction": -1},
    ]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"symbol": ["AAA"], "ts": ["2026-01-05"]}), "missing column"),
        (pd.DataFrame({"symbol": ["AAA"], "ts": ["2026-01-05"], "side": ["hold"]}), "side must be buy/sell"),
        (
            pd.DataFrame({"symbol": ["ZZZ"], "ts": ["2026-01-05"], "side": ["buy"]}),
            r"unknown symbol\(s\) \['ZZZ'\]",
        ),
        (pd.DataFrame({"symbol": ["AAA"], "ts": ["not a date"], "side": ["buy"]}), "unparseable ts"),
        (
            pd.DataFrame({"symbol": ["AAA", "AAA"], "ts": ["2026-01-05"] * 2, "side": ["buy", "sell"]}),
            "duplicate",
        ),
        (pd.DataFrame({"symbol": ["BBB"], "ts": ["2026-01-06"], "side": ["buy"]}), "not on a stored bar"),
        (pd.DataFrame(columns=["symbol", "ts", "side"]), "no entries"),
    ],
)
def test_bad_signals_fail_clearly(frame, message):
    with pytest.raises(ValueError, match=message):
        mb.validate_signals(frame, BARS, source="my.csv")
