"""One home for every tuned number (issue 13, part 6): defaults live in ``qtrader/settings.py`` only.

Two checks. The model modules hold no numeric default (a function's default argument, a dataclass
field, a module constant) equal to a setting's default: where a module needs a default, it reads it from
the settings class (``models.labels.BarrierProfile`` from ``SignalSettings``, ``models.metrics`` from
``BenchmarkSettings``, ...). And changing a setting changes what the code computes from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from qtrader.settings import SEED_STOP_ATR, SEED_TP1_ATR, SEED_TP2_ATR, SEED_TP3_ATR, load_settings

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "models/labels.py", "models/exits.py", "models/thresholds.py", "models/alerts.py", "models/health.py",
    "models/health_timeline.py", "models/metrics.py", "models/calibration.py", "models/sizing.py",
    "models/trade_filter.py", "models/training.py", "models/signals/ensemble.py", "models/walkforward.py",
    "models/engine.py", "models/decision.py", "models/brackets.py", "models/fills.py", "models/backtest.py",
]  # fmt: skip
# Numbers that equal a setting by coincidence, not tuned values: how many of a score's drivers a health
# message names, the smallest loss in points worth naming (presentation, not a decision), the hex
# digits of an id hash, and the span of a split digest's cache piece (which rows are hashed together;
# models and trades do not depend on it).
ALLOWED = {
    ("models/brackets.py", "stable_hash", 12),
    ("models/training.py", "_PIECE_BARS", 64),
    ("models/health.py", "overall_drivers", 3),
    ("models/health.py", "movers", 0.5),
    ("models/health.py", "drivers", 3),
    ("models/health.py", "drivers", 0.5),
}


def _numbers(value) -> set[float]:
    if isinstance(value, dict):
        return set().union(*(_numbers(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_numbers(v) for v in value)) if value else set()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {float(value)}
    return set()


def _numeric_defaults(path: Path):
    """(owner, value) of every number written as a default or a module constant in ``path``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        found = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            found = [
                (node.name, d) for d in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
            ]
        elif isinstance(node, ast.ClassDef):
            found = [(f"{node.name}.{b.target.id}", b.value) for b in node.body
                     if isinstance(b, ast.AnnAssign) and b.value is not None and isinstance(b.target, ast.Name)]  # fmt: skip
        elif isinstance(node, ast.Module):
            found = [(",".join(getattr(t, "id", "?") for t in b.targets), b.value) for b in node.body
                     if isinstance(b, ast.Assign)]  # fmt: skip
        for owner, v in found:
            if (
                isinstance(v, ast.UnaryOp)
                and isinstance(v.op, ast.USub)
                and isinstance(v.operand, ast.Constant)
            ):
                v = ast.Constant(-v.operand.value)
            if (
                isinstance(v, ast.Constant)
                and isinstance(v.value, int | float)
                and not isinstance(v.value, bool)
            ):
                yield owner, v.value


def test_model_modules_hold_no_default_that_duplicates_a_setting():
    tuned = _numbers(load_settings().model_dump()) - {0.0, 1.0}  # 0 and 1 are identities, not tunings
    duplicated = [
        (m, owner, value)
        for m in MODULES
        for owner, value in _numeric_defaults(ROOT / m)
        if float(value) in tuned and (m, owner, value) not in ALLOWED
    ]
    assert duplicated == [], "defaults written outside qtrader/settings.py: " + "; ".join(
        f"{m} {owner} = {v}" for m, owner, v in duplicated
    )


def test_the_seed_exit_profile_is_written_once_and_read_everywhere():
    from models.labels import BarrierProfile
    from tasks.backtest import static_exits
    from tasks.benchmark import exit_profile

    s = load_settings()
    seed = (SEED_TP1_ATR, SEED_TP2_ATR, SEED_TP3_ATR, SEED_STOP_ATR)
    assert (s.signal.tp1_atr, s.signal.tp2_atr, s.signal.tp3_atr, s.signal.stop_atr) == seed
    assert (s.exits.tp1_atr, s.exits.tp2_atr, s.exits.tp3_atr, s.exits.stop_atr) == seed
    assert tuple(static_exits(s).values()) == seed
    b = BarrierProfile()
    assert (b.tp1, b.tp2, b.tp3, b.stop, b.horizon) == (*seed, s.signal.exit_horizon_bars)
    assert exit_profile(s) == b
    changed = exit_profile(load_settings(signal={"tp1_atr": 1.2, "exit_horizon_bars": 10}))
    assert (changed.tp1, changed.horizon) == (1.2, 10)
    assert static_exits(load_settings(backtest={"static_tp2_atr": 3.0}))["tp2_atr"] == 3.0


def test_thresholds_defaults_are_computed_from_the_settings_that_define_them():
    from models.thresholds import metric_specs

    specs = metric_specs(load_settings())
    assert specs["stop_distance_atr"].default == pytest.approx(SEED_STOP_ATR * 1.3)  # the seed's 1.95
    assert specs["health_score"].default == 70.0
    moved = metric_specs(
        load_settings(exits={"stop_atr": 2.0, "high_vol_stop_mult": 1.5, "min_overall_health": 65})
    )
    assert moved["stop_distance_atr"].default == pytest.approx(3.0)
    assert moved["health_score"].default == 65.0


def test_performance_score_weights_come_from_benchmark_settings():
    from models.metrics import performance_score
    from tasks.retrain import score_params

    metrics = {"accuracy": 0.58, "auc": 0.52, "ece": 0.03}
    base = performance_score(metrics, **score_params(load_settings()))
    assert performance_score(metrics) == base  # the module's defaults are the settings' defaults
    heavy = performance_score(metrics, **score_params(load_settings(benchmark={"score_w_accuracy": 0.8})))
    assert heavy > base


def test_seed_calibration_numbers_come_from_retrain_settings_and_travel_with_the_calibrator():
    from models.calibration import select_calibrator
    from models.training import side_values
    from tasks.retrain import training_config

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 0.9, 400)
    hit = (rng.uniform(size=400) < 0.55).astype(float)
    cap = training_config(
        load_settings(retrain={"seed_confidence_cap": 0.6, "calibration_methods": ["seed"]}), "1d"
    )
    default = training_config(load_settings(retrain={"calibration_methods": ["seed"]}), "1d")
    assert default.seed_params() == {"accuracy_weight": 0.7, "floor": 0.1, "cap": 0.95}
    low, _ = select_calibrator(conf, hit, methods=("seed",), seed=cap.seed_params())
    high, _ = select_calibrator(conf, hit, methods=("seed",), seed=default.seed_params())
    assert low.transform(np.array([0.99]))[0] == pytest.approx(0.6)
    assert high.transform(np.array([0.99]))[0] > 0.6
    _, seed_conf, _ = side_values(np.array([0.99]), low, 0.99)
    assert seed_conf[0] == pytest.approx(0.6)


def test_the_venue_tick_comes_from_order_settings():
    from models import engine as me
    from models.brackets import DEFAULT_TICK

    s = load_settings()
    assert DEFAULT_TICK == s.orders.tick
    assert me.EngineConfig.from_settings(load_settings(orders={"tick": 0.05}), "local").tick == 0.05
