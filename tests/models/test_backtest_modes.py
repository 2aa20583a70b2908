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


# ---------------------------------------------------------------------------------------------- sweeps


def test_sweep_is_parsed_as_typed_values_and_gridded_in_order():
    grid = mb.parse_sweep(["exits.tp1_atr=1,1.5", "trade_filter.health_gating=true,false"])
    assert grid == {"exits.tp1_atr": [1, 1.5], "trade_filter.health_gating": [True, False]}
    points = mb.sweep_points(grid)
    assert points == [
        {"exits.tp1_atr": 1, "trade_filter.health_gating": True},
        {"exits.tp1_atr": 1, "trade_filter.health_gating": False},
        {"exits.tp1_atr": 1.5, "trade_filter.health_gating": True},
        {"exits.tp1_atr": 1.5, "trade_filter.health_gating": False},
    ]
    lists = mb.parse_sweep(['trade_filter.allowed_consensus=[["STRONG"], ["STRONG", "WEAK"]]'])
    assert lists == {"trade_filter.allowed_consensus": [["STRONG"], ["STRONG", "WEAK"]]}


def test_each_variant_is_its_mode_with_the_point_on_top():
    base = {m: mb.mode_overrides(m, STATIC_EXITS) for m in ("static", "adaptive")}
    variants = mb.sweep_variants(["static", "adaptive"], base, {"exits.tp1_atr": [2.0, 3.0]})
    assert list(variants) == ["static[exits.tp1_atr=2.0]", "static[exits.tp1_atr=3.0]",
                              "adaptive[exits.tp1_atr=2.0]", "adaptive[exits.tp1_atr=3.0]"]  # fmt: skip
    s = load_settings(**variants["static[exits.tp1_atr=3.0]"])
    assert s.exits.tp1_atr == 3.0 and s.exits.tp2_atr == 2.5 and not s.exits.adaptive  # static's, but TP1
    a = load_settings(**variants["adaptive[exits.tp1_atr=2.0]"])
    assert a.exits.tp1_atr == 2.0 and a.exits.adaptive
    assert base["static"] == mb.mode_overrides("static", STATIC_EXITS)  # the modes' own overrides untouched
    assert mb.base_mode("static[exits.tp1_atr=3.0]") == "static"


def test_a_variant_name_is_a_safe_file_name():
    name = mb.variant_name(
        "adaptive", {"orders.strategy": "a/b c", "trade_filter.allowed_consensus": ["STRONG"]}
    )
    assert "/" not in name and " " not in name and name.startswith("adaptive[")


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (["exits.tp1_atr"], ["exits.tp1_atr", "section.field=v1,v2"]),
        (["exits.tp1_atr="], ["section.field=v1,v2"]),
        (["exits.tp1_atr=1", "exits.tp1_atr=2"], ["given twice"]),
        (["health.kill_floor=50,60"], ["health.kill_floor", "trade_filter, sizing, exits", "model timeline"]),
        (["signal.members=1"], ["signal.members", "only settings the replay reads"]),
        (["exits=1"], ["section.field"]),
    ],
)
def test_a_bad_sweep_names_the_item_and_what_is_allowed(items, words):
    with pytest.raises(ValueError) as err:
        mb.check_sweep(mb.parse_sweep(items), 64)
    for w in words:
        assert w in str(err.value)


def test_a_grid_larger_than_the_setting_is_refused():
    with pytest.raises(ValueError, match="max_sweep_variants = 4"):
        mb.check_sweep({"exits.tp1_atr": [1, 2, 3], "exits.tp2_atr": [3, 4]}, 4)


def test_sweep_values_go_through_the_settings_validation():
    mb.check_sweep_values({"exits.tp1_atr": [1.5, 2]}, lambda o: load_settings(**o))
    with pytest.raises(ValueError) as err:
        mb.check_sweep_values({"exits.tp1_atr": [1.5, -1]}, lambda o: load_settings(**o))
    assert str(err.value).startswith("--sweep exits.tp1_atr=-1: ") and "greater than 0" in str(err.value)
    with pytest.raises(ValueError, match="unknown setting"):
        mb.check_sweep_values({"exits.tp1_atrr": [2]}, lambda o: load_settings(**o))


def test_a_variant_is_described_as_its_mode_with_its_point():
    from models.report import MODE_NOTES, mode_note

    assert mode_note("adaptive[exits.tp1_atr=2.0]") == f"{MODE_NOTES['adaptive']}, with exits.tp1_atr=2.0"
    assert mode_note("static") == MODE_NOTES["static"] and mode_note("mine") == "custom settings"
