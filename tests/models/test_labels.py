from dataclasses import FrozenInstanceError

import numpy as np
import pandas as pd
import pytest

from models.features import compute_features
from models.labels import BarrierProfile, Outcome, forward_return, label_columns, make_labels, triple_barrier
from qtrader.calendar import expected_bars
from tests.models.test_features import random_walk_bars

# Entry close 100, ATR 1: long TP1/TP2/TP3 = 101 / 102.5 / 104, stop 98.5 (R unit 1.5).
P = BarrierProfile(horizon=5)
ENTRY = (100.0, 100.0, 100.0, 100.0)
QUIET = (100.0, 100.4, 99.6, 100.0)


def _bars(path: list[tuple[float, float, float, float]], symbol: str = "HND") -> pd.DataFrame:
    """Entry bar, the given (open, high, low, close) bars, then quiet bars to cover the horizon."""
    rows = [ENTRY, *path] + [QUIET] * (P.horizon + 2)
    ts = expected_bars("1d", "2021-01-04", "2021-12-31")[: len(rows)]
    o, h, lo, c = (np.array(x) for x in zip(*rows, strict=True))
    return pd.DataFrame(
        {
            "symbol": symbol,
            "interval": "1d",
            "ts": ts,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": 1e5,
        }
    )


def _mirror(path):
    """The same path reflected around 100: a short sees what the long saw."""
    return [(200 - o, 200 - lo, 200 - h, 200 - c) for o, h, lo, c in path]


def _first(path, side="long"):
    bars = _bars(path)
    return (
        triple_barrier(bars, P, atr=np.ones(len(bars))).iloc[0].rename(lambda c: c.removeprefix(f"{side}_"))
    )


def test_defaults_are_the_seed_exit_profile():
    p = BarrierProfile()
    assert (p.tp1, p.tp2, p.tp3, p.stop, p.horizon) == (1.0, 2.5, 4.0, 1.5, 20)
    with pytest.raises(ValueError):
        BarrierProfile(tp1=3.0, tp2=2.0)
    with pytest.raises(FrozenInstanceError):
        p.tp1 = 2.0  # type: ignore[misc]


TP2_PATH = [(100.0, 101.2, 99.8, 101.0), (101.0, 102.6, 100.5, 102.0), (102.0, 102.1, 98.0, 98.2)]
CASES = {
    "tp2": (TP2_PATH, dict(outcome="tp2", tp1=True, tp2=True, tp3=False, stop=False, r=1 / 1.5, bars=1)),
    "tp3": (
        [(100.0, 104.2, 99.9, 104.0)],
        dict(outcome="tp3", tp1=True, tp2=True, tp3=True, stop=False, r=1 / 1.5, bars=1),
    ),
    "tp1_then_stop": (
        [(100.0, 101.1, 99.9, 100.5), (100.5, 100.6, 98.0, 98.2)],
        dict(outcome="tp1", tp1=True, tp2=False, tp3=False, stop=False, r=1 / 1.5, bars=1),
    ),
    "stop_first": (
        [(100.0, 100.3, 99.0, 99.5), (99.5, 99.6, 98.4, 98.6), (98.6, 105.0, 98.6, 104.5)],
        dict(outcome="stop", tp1=False, tp2=False, tp3=False, stop=True, r=-1.0, bars=2),
    ),
    "same_bar_tp_and_stop": (
        [(100.0, 101.5, 98.0, 100.0), (100.0, 104.5, 99.9, 104.2)],
        dict(outcome="stop", tp1=False, tp2=False, tp3=False, stop=True, r=-1.0, bars=1),
    ),
    "gap_through_stop": (
        [(97.0, 97.5, 96.5, 97.2)],
        dict(outcome="stop", tp1=False, tp2=False, tp3=False, stop=True, r=-2.0, bars=1),
    ),
    "timeout": (
        [(100.0, 100.8, 99.0, 100.3)] * 5,
        dict(outcome="timeout", tp1=False, tp2=False, tp3=False, stop=False, r=0.3 / 1.5, bars=5),
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("side", ["long", "short"])
def test_hand_made_paths(case, side):
    path, want = CASES[case]
    got = _first(path if side == "long" else _mirror(path), side)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == value, key


def test_opposite_side_of_a_long_win():
    # The path that gives the long TP2 stops the short out (stop 101.5) on the second bar.
    got = _first(TP2_PATH, "short")
    assert (
        got["outcome"] == Outcome.STOP
        and got["stop"]
        and got["r"] == pytest.approx(-1.0)
        and got["bars"] == 2
    )


def test_only_fully_observed_horizons_are_labelled():
    bars = random_walk_bars(300, seed=11)
    p = BarrierProfile()
    lab = make_labels(bars, p)
    assert list(lab.columns) == ["symbol", "interval", "ts", *label_columns(p)]
    tail, head = lab.iloc[-p.horizon :], lab.iloc[: -p.horizon]
    assert tail.drop(columns=["symbol", "interval", "ts"]).isna().all().all()
    # ATR(14) is NaN on the first 14 bars: no barrier labels there, but forward returns exist.
    assert head["long_outcome"].iloc[:14].isna().all() and head["long_outcome"].iloc[14:].notna().all()
    assert head["fwd_ret_20"].notna().all() and head["label_up"].isin([0.0, 1.0]).all()
    assert set(head["long_outcome"].dropna()) <= {o.value for o in Outcome}
    assert str(lab["long_tp1"].dtype) == "boolean"


def test_labels_never_cross_series_boundaries():
    a, b = random_walk_bars(120, seed=1, symbol="A"), random_walk_bars(120, seed=2, symbol="B", price=30.0)
    both = make_labels(pd.concat([a, b], ignore_index=True))
    alone = make_labels(a)
    pd.testing.assert_frame_equal(both.iloc[:120], alone)
    assert both["long_outcome"].iloc[100:120].isna().all()


def test_uses_feature_atr_when_given():
    bars = random_walk_bars(200, seed=3)
    feats = compute_features(bars)
    pd.testing.assert_frame_equal(make_labels(bars), make_labels(bars, atr=feats["atr_14"]))


def test_forward_return_and_label_up():
    bars = random_walk_bars(60, seed=4)
    c = bars["close"].to_numpy()
    fwd = forward_return(bars, 3)
    np.testing.assert_allclose(fwd.to_numpy()[:-3], np.log(c[3:] / c[:-3]), rtol=1e-12)
    assert fwd.iloc[-3:].isna().all() and fwd.name == "fwd_ret_3"
    lab = make_labels(bars, BarrierProfile(horizon=3))
    np.testing.assert_array_equal(lab["label_up"].to_numpy()[:-3], (np.log(c[3:] / c[:-3]) > 0).astype(float))
    with pytest.raises(ValueError):
        forward_return(bars.iloc[::-1], 3)
