import math

import pytest

from models.sizing import SizeCaps, performance_multiplier, position_size
from qtrader.settings import SizingSettings


@pytest.mark.parametrize(
    "accuracy, score, expected",
    [
        (0.80, 70.0, 1.2),  # accuracy >= 75%
        (0.75, 70.0, 1.2),  # the boundary is inclusive
        (0.74, 70.0, 1.0),
        (0.60, 70.0, 1.0),  # 60% is not below 60%
        (0.59, 70.0, 0.7),  # accuracy < 60%
        (0.80, 49.9, 1.2 * 0.8),  # performance score < 50: a further x0.8
        (0.65, 40.0, 0.8),
        (0.50, 10.0, 0.7 * 0.8),
        (0.65, 50.0, 1.0),  # 50 is not below 50
        (None, None, 1.0),  # no benchmark: base size
        (None, 20.0, 0.8),
        (float("nan"), 60.0, 1.0),
    ],
)
def test_performance_multiplier(accuracy, score, expected):
    mult, reason = performance_multiplier(accuracy, score)
    assert mult == pytest.approx(expected)
    assert reason


def test_performance_multiplier_thresholds_are_settings():
    cfg = SizingSettings(accuracy_high=0.9, multiplier_high=1.5, score_penalty=0.5)
    assert performance_multiplier(0.8, 90, cfg)[0] == 1.0
    assert performance_multiplier(0.95, 40, cfg)[0] == pytest.approx(0.75)


def test_base_size_from_risk_and_stop():
    # 100k x 1% / 2.0 stop = 500 shares; x1.2 = 600.
    d = position_size(100_000, 0.01, 2.0, 1.0, 50.0)
    assert (d.shares, d.capped_by, d.rejected) == (500, (), False)
    assert position_size(100_000, 0.01, 2.0, 1.2, 50.0).shares == 600
    assert position_size(100_000, 0.01, 2.0, 0.7, 50.0).shares == 350
    assert position_size(100_000, 0.01, 2.0, 0.56, 50.0).shares == 280


def test_whole_shares_round_down():
    assert position_size(10_000, 0.01, 3.0, 1.0, 10.0).shares == 33  # 33.33 shares


@pytest.mark.parametrize(
    "caps, shares, capped_by",
    [
        (SizeCaps(max_notional=10_000), 200, ("max_notional",)),
        (SizeCaps(gross_exposure_remaining=5_000), 100, ("gross_exposure_remaining",)),
        (SizeCaps(buying_power=2_525), 50, ("buying_power",)),
        (SizeCaps(max_notional=10_000, buying_power=2_525), 50, ("buying_power",)),
        (SizeCaps(max_notional=1e9, gross_exposure_remaining=1e9, buying_power=1e9), 500, ()),
    ],
)
def test_caps(caps, shares, capped_by):
    d = position_size(100_000, 0.01, 2.0, 1.0, 50.0, caps)
    assert d.shares == shares
    assert d.capped_by == capped_by


def test_caps_from_account():
    caps = SizeCaps.from_account(100_000, 95_000, 40_000)
    assert caps == SizeCaps(max_notional=10_000, gross_exposure_remaining=5_000, buying_power=40_000)
    assert SizeCaps.from_account(100_000, 120_000, 0).gross_exposure_remaining == 0


@pytest.mark.parametrize(
    "args, caps, why",
    [
        ((100_000, 0.01, 0.0, 1.0, 50.0), None, "stop distance"),
        ((100_000, 0.01, math.nan, 1.0, 50.0), None, "stop distance"),
        ((0, 0.01, 2.0, 1.0, 50.0), None, "equity"),
        ((100_000, 0.01, 2.0, 1.0, 0.0), None, "price"),
        ((100_000, 0.0, 2.0, 1.0, 50.0), None, "risk per trade"),
        ((100, 0.01, 5.0, 1.0, 50.0), None, "rounds to 0 shares"),  # 0.2 shares of risk
        ((100_000, 0.01, 2.0, 1.0, 50.0), SizeCaps(buying_power=40), "buying_power leaves 0 shares"),
        ((100_000, 0.01, 2.0, 1.0, 50.0), SizeCaps(gross_exposure_remaining=0), "gross_exposure_remaining"),
    ],
)
def test_zero_size_is_a_rejection_with_a_reason(args, caps, why):
    d = position_size(*args, caps)
    assert d.shares == 0 and d.rejected
    assert d.reason.startswith("rejected:") and why in d.reason
