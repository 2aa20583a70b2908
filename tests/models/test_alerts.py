"""Predictive alerts: time to threshold on ramps, false alarms on noise, severities and resolution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.alerts import AlertSeverity, evaluate, reconcile, severity_for
from models.thresholds import learn_threshold, metric_specs
from qtrader.settings import Settings

NOW = pd.Timestamp("2026-11-20 15:00", tz="UTC")
SETTINGS = Settings()
CFG = SETTINGS.alerts
LATENCY = metric_specs(SETTINGS)["latency_ms"]
FALSE_ALARM_BOUND = 0.01  # stated bound on the per-evaluation false-alarm rate on stationary noise


def _series(hours_back: np.ndarray, values: np.ndarray) -> pd.DatetimeIndex:
    return NOW - pd.to_timedelta(hours_back, unit="h")


@pytest.mark.parametrize(
    ("bound", "level", "slope", "threshold", "truth"),
    [
        ("upper", 100.0, 2.0, 120.0, 10.0),  # latency creeping up, 10 h to go
        ("upper", 0.01, 0.004, 0.05, 10.0),  # error rate
        ("lower", 0.56, -0.002, 0.53, 15.0),  # accuracy drifting down
        ("upper", 50.0, 10.0, 80.0, 3.0),  # fast: critical
    ],
)
def test_linear_ramp_time_to_threshold_is_exact(bound, level, slope, threshold, truth):
    h = np.arange(24.0)[::-1]  # 24 hourly points ending now
    y = level - slope * h
    ev = evaluate("m", "x", _series(h, y), y, threshold, bound, NOW, CFG)
    assert ev.time_to_threshold_hours == pytest.approx(truth, rel=1e-9)
    assert ev.slope_per_hour == pytest.approx(slope)
    assert ev.severity == (AlertSeverity.critical if truth < 4 else AlertSeverity.warning)


def test_noisy_linear_ramp_time_to_threshold_within_10_percent():
    """Irregular sampling (15-75 min), noise sd 0.5 on a 20-unit gap, 100 seeds: every estimate within 10%."""
    errors = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        h = np.cumsum(rng.uniform(0.25, 1.25, 30))[::-1] - 0.25  # hours before now, irregular
        truth_level, slope, threshold = 100.0, 2.0, 120.0  # truth: 10 h
        y = truth_level - slope * h + rng.normal(0, 0.5, len(h))
        ev = evaluate("m", "latency_ms", _series(h, y), y, threshold, "upper", NOW, CFG)
        assert ev.time_to_threshold_hours is not None
        errors.append(abs(ev.time_to_threshold_hours / 10.0 - 1))
    assert max(errors) < 0.10, max(errors)
    assert np.median(errors) < 0.03


def _false_alarm_rate(phi: float, seeds: int = 200, evals_per_seed: int = 5) -> float:
    """Share of evaluations that alert on stationary AR(1) noise (phi = 0: i.i.d.) with unit-variance
    innovations scaled to sd 10 around 100, the threshold learned from 200 earlier points, at 60, 15 and
    5 minute sampling."""
    alerts = evaluations = 0
    for step_min in (60, 15, 5):
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            n = 200 + 300  # 200 points to learn from, then the evaluated stretch (>= 24 h at any rate)
            e = rng.standard_normal(n)
            x = np.empty(n)
            x[0] = e[0]
            for i in range(1, n):
                x[i] = phi * x[i - 1] + np.sqrt(1 - phi**2) * e[i]
            y = 100 + 10 * x
            threshold = learn_threshold(y[:200], LATENCY, SETTINGS.thresholds).value
            ts = NOW + pd.to_timedelta(np.arange(n) * step_min, unit="min")
            for end in np.linspace(260, n, evals_per_seed).astype(int):
                ev = evaluate("m", "latency_ms", ts[:end], y[:end], threshold, "upper", ts[end - 1], CFG)
                evaluations += 1
                alerts += ev.severity is not None
    assert evaluations == 3 * seeds * evals_per_seed
    return alerts / evaluations


def test_stationary_noise_false_alarm_rate_is_under_the_stated_bound():
    """200 seeds x 5 evaluations x 3 sampling rates = 3,000 evaluations per noise model.
    Stated bound FALSE_ALARM_BOUND = 1%. Measured here: 0 alerts on i.i.d. noise, 0.2% (6) on AR(1)
    noise with lag-1 correlation 0.5 (see models/alerts.py for the 12,000-evaluation measurement)."""
    assert _false_alarm_rate(0.0) <= FALSE_ALARM_BOUND
    assert _false_alarm_rate(0.5) <= FALSE_ALARM_BOUND


def test_flat_or_away_trends_do_not_alert_and_breach_is_critical():
    h = np.arange(24.0)[::-1]
    away = 100 + 2.0 * h  # falling, away from an upper bound
    ev = evaluate("m", "latency_ms", _series(h, away), away, 150.0, "upper", NOW, CFG)
    assert ev.severity is None and ev.time_to_threshold_hours is None
    flat = np.full(24, 100.0)
    assert evaluate("m", "latency_ms", _series(h, flat), flat, 150.0, "upper", NOW, CFG).severity is None
    breached = np.r_[np.full(21, 100.0), [160.0, 170.0, 165.0]]
    ev = evaluate("m", "latency_ms", _series(h, breached), breached, 150.0, "upper", NOW, CFG)
    assert ev.breached and ev.severity == AlertSeverity.critical and ev.current == 165.0
    # one spike does not count as a breach (median of the last 3)
    spike = np.r_[np.full(23, 100.0), [400.0]]
    assert evaluate("m", "latency_ms", _series(h, spike), spike, 150.0, "upper", NOW, CFG).severity is None
    # too few points for a trend, but three are enough to see a breach; one or two are not
    few = np.array([100.0, 101.0, 102.0])
    ev = evaluate("m", "latency_ms", _series(h[-3:], few), few, 150.0, "upper", NOW, CFG)
    assert ev.severity is None and "no trend fit" in ev.reason
    high = np.array([160.0, 170.0, 165.0])
    assert evaluate("m", "latency_ms", _series(h[-3:], high), high, 150.0, "upper", NOW, CFG).breached
    assert (
        evaluate("m", "latency_ms", _series(h[-2:], high[:2]), high[:2], 150.0, "upper", NOW, CFG).severity
        is None
    )
    assert evaluate("m", "x", [], [], 1.0, "upper", NOW, CFG).reason == "no recent points"


def test_a_trend_whose_slow_end_is_far_is_not_an_alert():
    rng = np.random.default_rng(0)
    h = np.arange(24.0)[::-1]
    y = 100 - 0.5 * h + rng.normal(0, 6, 24)  # a weak, noisy rise: ~23 h by the point estimate
    ev = evaluate("m", "latency_ms", _series(h, y), y, 110.0, "upper", NOW, CFG)
    assert ev.severity is None and "slow end" in ev.reason
    assert ev.time_to_threshold_hours == pytest.approx(22.8, abs=0.1)  # kept: it holds an open alert open


def test_far_extrapolation_is_not_an_alert():
    h = np.arange(8.0)[::-1] * 0.25  # 1.75 h of data
    y = 100 - 1.0 * h
    ev = evaluate("m", "latency_ms", _series(h, y), y, 110.0, "upper", NOW, CFG)  # 10 h ahead: > 2 x 1.75 h
    assert ev.severity is None and "beyond" in ev.reason


def test_points_after_now_or_outside_the_lookback_are_ignored():
    h = np.r_[np.arange(30.0, 24.0, -1), np.arange(24.0)[::-1], [-5.0]]  # 6 too old, 1 in the future
    y = np.r_[np.full(6, 500.0), 100 - 2.0 * np.arange(24.0)[::-1], [999.0]]
    ev = evaluate("m", "latency_ms", _series(h, y), y, 120.0, "upper", NOW, CFG)
    assert ev.n == 24 and ev.time_to_threshold_hours == pytest.approx(10.0)


def test_severity_levels():
    assert severity_for(0.0, CFG.critical_hours, CFG.warning_hours) == AlertSeverity.critical
    assert severity_for(3.9, CFG.critical_hours, CFG.warning_hours) == AlertSeverity.critical
    assert severity_for(4.0, CFG.critical_hours, CFG.warning_hours) == AlertSeverity.warning
    assert severity_for(23.9, CFG.critical_hours, CFG.warning_hours) == AlertSeverity.warning
    assert (
        severity_for(24.0, CFG.critical_hours, CFG.warning_hours) is None
        and severity_for(None, CFG.critical_hours, CFG.warning_hours) is None
    )


def test_reconcile_opens_updates_and_resolves_with_hysteresis():
    h = np.arange(24.0)[::-1]
    ramp = 100 - 2.0 * h
    opening = evaluate("m", "latency_ms", _series(h, ramp), ramp, 120.0, "upper", NOW, CFG)  # 10 h
    changes = reconcile({}, [opening], resolve_hours=CFG.resolve_hours)
    assert changes.opened == [opening] and not changes.updated and not changes.resolved
    # still alerting -> update the open alert
    changes = reconcile({("m", "latency_ms"): "a1"}, [opening], resolve_hours=CFG.resolve_hours)
    assert changes.updated == [("a1", opening)] and not changes.opened
    # 30 h left: beyond the warning horizon but within resolve_hours -> kept open
    slow = 100 - (20 / 30) * h
    ev = evaluate("m", "latency_ms", _series(h, slow), slow, 120.0, "upper", NOW, CFG)
    assert ev.severity is None and ev.time_to_threshold_hours == pytest.approx(30.0)
    assert reconcile({("m", "latency_ms"): "a1"}, [ev], resolve_hours=CFG.resolve_hours).updated == [
        ("a1", ev)
    ]
    # flat again -> resolved
    flat = np.full(24, 100.0)
    ev = evaluate("m", "latency_ms", _series(h, flat), flat, 120.0, "upper", NOW, CFG)
    changes = reconcile({("m", "latency_ms"): "a1"}, [ev], resolve_hours=CFG.resolve_hours)
    assert changes.resolved[0][0] == "a1" and changes.resolved[0][1].startswith("cleared")
    # no data: left alone
    empty = evaluate("m", "latency_ms", [], [], 120.0, "upper", NOW, CFG)
    assert reconcile({("m", "latency_ms"): "a1"}, [empty], resolve_hours=CFG.resolve_hours) == reconcile(
        {}, [], resolve_hours=CFG.resolve_hours
    )
