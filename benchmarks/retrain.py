"""Retrain throughput: every signal module (and the ensemble) on 100 symbols x 5 years of daily synthetic bars.

Runs the plain functions the retrain flow runs (``models.training``: walk-forward with purge and embargo,
walk-forward calibration, validation metrics, the champion comparison against the previous run's model),
with the default settings, and no Prefect server. Bars, features and labels are prepared first and are
not timed. Target on a 2-core machine: <= 120 s for all modules.

    .venv/bin/python benchmarks/retrain.py [--symbols 100] [--years 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, peak_rss_mib  # noqa: E402
from models.features import compute_features_many, feature_columns  # noqa: E402
from models.training import (  # noqa: E402
    ENSEMBLE,
    ModelArtifact,
    compare_with_champion,
    ensemble_candidate,
    module_params,
    plan_walk_forward,
    prepare_training_data,
    train_candidate,
)
from qtrader.settings import load_settings  # noqa: E402
from sources.base import FetchRequest  # noqa: E402
from sources.synthetic import SyntheticSource  # noqa: E402
from tasks.retrain import ensemble_config, score_params, training_config  # noqa: E402

TARGET_S = 120.0
END = pd.Timestamp("2026-10-30", tz="UTC")


def training_frame(symbols: int, years: int, seed: int) -> pd.DataFrame:
    """What warehouse.models.load_training_frame returns, built in memory from the synthetic market."""
    tickers = [f"S{i:03d}" for i in range(symbols)]
    start = END - pd.DateOffset(years=years)
    bars = SyntheticSource(seed=seed).fetch(FetchRequest(tickers, "1d", start, END)).bars
    bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    features = compute_features_many(bars)
    frame = bars.copy()
    frame["bar_number"] = frame.groupby("symbol").cumcount()
    frame["has_features"] = True
    return pd.concat([frame, features[feature_columns()]], axis=1)


def artifact_of(name: str, candidate, data, plan, config) -> ModelArtifact:
    ts = data.keys["ts"]
    return ModelArtifact(
        module=name, interval="1d", version=1, estimator=candidate.run.final_estimator,
        calibrator=candidate.calibration.calibrator, seed_accuracy=candidate.calibration.accuracy,
        features=candidate.run.features, feature_set_version="v1", label_horizon=config.label_horizon,
        params=candidate.run.params, config_hash="", data_hash="", train_start=ts.min(), train_end=ts.min(),
        valid_start=ts.max(), valid_end=ts.max(), trained_at=END,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    settings = load_settings()
    config = training_config(settings, "1d")
    t0 = time.perf_counter()
    frame = training_frame(args.symbols, args.years, args.seed)
    data = prepare_training_data(frame, config)
    plan = plan_walk_forward(data.keys["ts"], config)
    del frame
    print(
        f"prepared {len(data.X):,} labelled rows ({args.symbols} symbols x {args.years} years, "
        f"{len(feature_columns())} features) in {time.perf_counter() - t0:.1f}s (not timed); "
        f"{len(plan.splits)} splits, training window {plan.train_window} bars, "
        f"test blocks {config.test_window} bars, purge {config.label_horizon}, embargo {config.embargo}"
    )

    scores = score_params(settings)
    candidates, seconds = {}, {}
    started = time.perf_counter()
    for name in settings.signal.members:
        t = time.perf_counter()
        params = module_params(name, settings.signal.module_params.get(name), config)
        candidate = train_candidate(name, params, data, plan, config, scores)
        # Champion comparison against a previous model (here: the same one) on the validation window.
        compare_with_champion(
            artifact_of(name, candidate, data, plan, config), candidate.metrics, data, plan, config,
            metric=settings.retrain.promotion_metric, margin=settings.retrain.promotion_margin,
            score_params=scores,
        )  # fmt: skip
        candidates[name] = candidate
        seconds[name] = time.perf_counter() - t
        m = candidate.walk_forward_metrics
        print(
            f"  {name:<11} {seconds[name]:6.1f}s  OOS acc {m['accuracy']:.4f}  AUC {m['auc']:.4f}  "
            f"coverage {m['coverage']:.2f}  calibration {candidate.calibration.method}",
            flush=True,
        )
    t = time.perf_counter()
    ensemble = ensemble_candidate(candidates, data, plan, config, ensemble_config(settings), scores)
    seconds[ENSEMBLE] = time.perf_counter() - t
    m = ensemble.walk_forward_metrics
    print(
        f"  {ENSEMBLE:<11} {seconds[ENSEMBLE]:6.1f}s  OOS acc {m['accuracy']:.4f}  AUC {m['auc']:.4f}  "
        f"coverage {m['coverage']:.2f}  calibration {ensemble.calibration.method}"
    )
    total = time.perf_counter() - started
    status = "OK" if total <= TARGET_S else "SLOWER THAN TARGET"
    print(
        f"all modules: {total:.1f}s wall (target <= {TARGET_S:.0f}s: {status}); "
        f"slowest {max(seconds, key=seconds.get)} {max(seconds.values()):.1f}s; "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
    )
    print(f"machine: {describe()}")


if __name__ == "__main__":
    main()
