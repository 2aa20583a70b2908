"""The backtest's model timeline keeps health, thresholds and alerts in memory, bar after bar
(``models.health_timeline.HealthTimeline``): what each bar decides with equals what the thresholds and
health flows' full recompute over the scratch warehouse gives at that bar (``recompute=True`` runs both).

A short fixed market, with thresholds and alerts made to learn and evaluate within its few bars
(``min_history``, ``min_points``) and a drift sample smaller than the training window (so both paths
sample it), so every part of a health run is compared: scores, baselines, gates' drivers and alerts.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from prefect import flow

from tests.flows.conftest import data_dir
from tests.golden.record import POLICY, SYMBOLS, build_market

BARS = 16
OVERRIDES = {
    "backtest": {"policy": POLICY, "retrain_every_bars_daily": 8, "benchmark_every_bars_daily": 3},
    "thresholds": {"min_history": 4},
    "alerts": {"min_points": 4, "lookback_hours": 24 * 30},
    # Scores that move from bar to bar (a calm synthetic market otherwise scores 100 throughout): drift and
    # accuracy drops count from zero, and the drift sample is smaller than the training window.
    "health": {"drift_max_rows": 500, "drift_ok": 0.0, "drift_bad": 0.05, "accuracy_drop_z_ok": 0.0,
               "accuracy_drop_z_bad": 1.0},
}  # fmt: skip


@flow(name="model-timeline-test")
def _timeline(db: str, folder: str):
    from qtrader.settings import load_settings
    from tasks.backtest import load_history, model_timeline

    s = load_settings(warehouse=db, **OVERRIDES)
    history = load_history.fn(s, "1d", SYMBOLS, None)
    times = history.times[-BARS:]
    return model_timeline.fn(s, "1d", history, times, __import__("pathlib").Path(folder), "bt-test", OVERRIDES,
                             recompute=True)  # fmt: skip


@pytest.fixture(scope="module")
def timeline(tmp_path_factory, prefect_harness):
    folder = tmp_path_factory.mktemp("timeline")
    db = build_market(folder)
    with data_dir(folder / "data"):
        return _timeline(str(db), str(folder / "scratch"))


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_the_timeline_learns_and_alerts(timeline):
    views = [timeline.snapshots[t].health for t in timeline.times]
    assert all(v.ts is not None for v in views)
    assert any(any(b is not None for b in v.baselines.values()) for v in views), "no learned baseline"
    assert any(v.alerts for v in views), "no alert opened"
    assert len({v.overall for v in views}) > 3, "the overall score hardly moves: nothing is compared"
    assert timeline.runs["health"] == BARS and timeline.runs["retrain"] == 2


@pytest.mark.parametrize("k", [0, 1, 5, 8, 11, BARS - 1])
def test_in_memory_health_equals_the_full_recompute(timeline, k):
    t = timeline.times[k]
    mine, full = timeline.snapshots[t].health, timeline.recomputed[t]
    assert pd.Timestamp(mine.ts) == pd.Timestamp(full.ts)
    for name in ("overall", "modules", "baselines", "drivers", "alerts"):
        a, b = getattr(mine, name), getattr(full, name)
        a = [dict(x) for x in a] if name == "alerts" else a
        b = [dict(x) for x in b] if name == "alerts" else b
        assert _same(a, b), f"bar {k} {name}:\n in memory {a}\n recomputed {b}"


def test_every_bar_agrees(timeline):
    differ = [
        k for k, t in enumerate(timeline.times)
        if not _same(timeline.snapshots[t].health.modules, timeline.recomputed[t].modules)
        or not _same(list(timeline.snapshots[t].health.alerts), list(timeline.recomputed[t].alerts))
    ]  # fmt: skip
    assert differ == []


def test_incremental_benchmarks_equal_the_benchmark_flow_at_every_pass(timeline):
    """Each benchmark pass's rows (running sums of the newly labelled predictions) equal the benchmark
    flow's full recompute over the scratch warehouse at that bar, retrains (which rewrite stored
    predictions) included."""
    from tests.models.test_evaluation import _assert_rows_equal

    assert len(timeline.benchmark_checks) == timeline.runs["benchmark"] >= 5
    for t, ((bench, exits), (full_bench, full_exits)) in timeline.benchmark_checks.items():
        assert len(full_bench) and len(full_exits)
        _assert_rows_equal(bench, full_bench, f"{t} benchmarks")
        _assert_rows_equal(exits, full_exits, f"{t} exit stats")


def _batch_fields(batch) -> dict:
    import numpy as np

    if isinstance(batch, list):
        return {"empty list": len(batch)}
    out = {}
    for name, v in vars(batch).items():
        out[name] = (v.dtype.str, v.tobytes()) if isinstance(v, np.ndarray) else list(v)
    return out


def test_period_signals_equal_the_bar_by_bar_ones(timeline):
    """Each bar's signals, made for the whole retrain period at once (``period_signals``), are those the
    bar's own ``predict_bar`` and ``bar_signals`` make: the same bytes in every column."""
    assert len(timeline.signal_checks) == BARS
    made = 0
    for t in timeline.times:
        mine, per_bar = timeline.snapshots[t].signals, timeline.signal_checks[t]
        made += len(per_bar)
        assert _batch_fields(mine) == _batch_fields(per_bar), f"bar {t}"
    assert made > 0
