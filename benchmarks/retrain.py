"""Retrain throughput: every signal module (and the ensemble) on 100 symbols x 6 years of daily synthetic bars.

Runs the plain functions the retrain flow runs (``models.training``: walk-forward with purge and embargo,
walk-forward calibration, validation metrics, the champion comparison against the previous run's model),
with the default settings, and no Prefect server. Bars, features and labels are prepared first and are
not timed. Target on a 2-core machine: <= 120 s for all modules (one retrain).

Two paths over the same ``--retrains`` retrains, ``--every`` bars apart (the backtest's monthly cadence):

- **live**: what ``qtrader retrain`` does, the members one after another (``retrain.module_threads`` 1),
  every split fitted;
- **backtest**: what the backtest's scratch retrains do, a ``FitCache`` across the retrains (a split whose
  training rows did not change is not refitted) and the members in ``backtest.retrain_module_threads``
  threads. With a full training window the first reuse is ``test_window / every`` retrains in (the 4th at
  the defaults); the models are the same, and the benchmark checks it.

    .venv/bin/python benchmarks/retrain.py [--symbols 100] [--years 6] [--seed 7] [--retrains 5] [--every 21]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, peak_rss_mib  # noqa: E402
from models.features import compute_features_many, feature_columns  # noqa: E402
from models.training import (  # noqa: E402
    ENSEMBLE,
    FitCache,
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
from tasks.backtest import fit_reuse_retrains  # noqa: E402
from tasks.retrain import bars_needed, ensemble_config, score_params, training_config  # noqa: E402

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


def retrain_once(settings, config, data, plan, fits: FitCache | None, threads: int, champions: dict):
    """One retrain's members (in ``threads`` threads), their champion comparison and the ensemble:
    (candidates, seconds per module as measured inside its thread)."""
    scores = score_params(settings)
    if fits is not None:
        fits.begin(data, plan)

    def member(name: str):
        t = time.perf_counter()
        params = module_params(name, settings.signal.module_params.get(name), config)
        candidate = train_candidate(name, params, data, plan, config, scores, fits)
        # Champion comparison against the previous retrain's model (the first: against itself).
        champion = champions.get(name) or artifact_of(name, candidate, data, plan, config)
        compare_with_champion(
            champion, candidate.metrics, data, plan, config, metric=settings.retrain.promotion_metric,
            margin=settings.retrain.promotion_margin, score_params=scores,
        )  # fmt: skip
        return candidate, time.perf_counter() - t

    names = list(settings.signal.members)
    if threads <= 1:
        done = [member(name) for name in names]
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(names))) as pool:
            done = list(pool.map(member, names))  # in member order
    candidates = {name: c for name, (c, _) in zip(names, done, strict=True)}
    seconds = {name: s for name, (_, s) in zip(names, done, strict=True)}
    t = time.perf_counter()
    candidates[ENSEMBLE] = ensemble_candidate(
        candidates, data, plan, config, ensemble_config(settings), scores
    )
    seconds[ENSEMBLE] = time.perf_counter() - t
    for name, c in candidates.items():
        champions[name] = artifact_of(name, c, data, plan, config)
    return candidates, seconds


def run_path(label, settings, config, windows, fits, threads):
    """Every retrain of one path: per retrain (wall, CPU, per-module seconds); the candidates of each."""
    champions: dict = {}
    rows, results = [], []
    for j, (data, plan) in enumerate(windows):
        t, c = time.perf_counter(), time.process_time()
        hits = fits.hits if fits is not None else 0
        candidates, seconds = retrain_once(settings, config, data, plan, fits, threads, champions)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        reused = (fits.hits - hits) if fits is not None else 0
        slowest = max(seconds, key=seconds.get)
        print(
            f"  {label:<8} retrain {j + 1}: {wall:6.1f}s wall, {cpu:6.1f}s CPU; {reused:2d} split fits reused; "
            f"slowest {slowest} {seconds[slowest]:.1f}s; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        rows.append((wall, cpu))
        results.append(candidates)
    return rows, results


def same_models(a: dict, b: dict) -> bool:
    """The two paths' candidates agree exactly: P(up), calibrated P(up) and the calibration chosen."""
    return all(
        np.array_equal(a[m].run.p_up, b[m].run.p_up, equal_nan=True)
        and np.array_equal(a[m].calibration.p_up_calibrated, b[m].calibration.p_up_calibrated, equal_nan=True)
        and a[m].calibration.method == b[m].calibration.method
        for m in a
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument(
        "--years", type=int, default=6, help="history (a full training window from the first retrain on)"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--retrains", type=int, default=5, help="retrains per path, --every bars apart")
    ap.add_argument("--every", type=int, default=None, help="bars between retrains (default: the backtest's)")
    args = ap.parse_args()

    settings = load_settings()
    config = training_config(settings, "1d")
    every = args.every or settings.backtest.retrain_every_bars_daily
    threads = settings.backtest.retrain_module_threads
    t0 = time.perf_counter()
    frame = training_frame(args.symbols, args.years, args.seed)
    stamps = np.sort(frame["ts"].unique())
    need = bars_needed(config)
    windows = []
    for j in range(args.retrains):  # each retrain's newest stored bars, the last one on the newest bar
        window = stamps[stamps <= stamps[-1 - every * (args.retrains - 1 - j)]][-need:]
        data = prepare_training_data(frame[frame["ts"].isin(window)].reset_index(drop=True), config)
        windows.append((data, plan_walk_forward(data.keys["ts"], config)))
    del frame
    data, plan = windows[-1]
    print(
        f"prepared {args.retrains} retrains {every} bars apart, the last on {len(data.X):,} labelled rows "
        f"({args.symbols} symbols x {args.years} years, {len(feature_columns())} features) in "
        f"{time.perf_counter() - t0:.1f}s (not timed); {len(plan.splits)} splits, training window "
        f"{plan.train_window} bars, test blocks {config.test_window} bars, purge {config.label_horizon}, "
        f"embargo {config.embargo}"
    )

    live, live_results = run_path("live", settings, config, windows, None, 1)
    fits = FitCache(keep=fit_reuse_retrains(settings, "1d"))
    backtest, backtest_results = run_path("backtest", settings, config, windows, fits, threads)
    same = all(same_models(a, b) for a, b in zip(live_results, backtest_results, strict=True))
    first = live[0][0]
    status = "OK" if first <= TARGET_S else "SLOWER THAN TARGET"
    for label, rows in (("live", live), ("backtest", backtest)):
        wall, cpu = np.mean([r[0] for r in rows]), np.mean([r[1] for r in rows])
        print(f"{label:<8} (threads {1 if label == 'live' else threads}, cache {label != 'live'}): "
              f"{wall:.1f}s wall, {cpu:.1f}s CPU a retrain on average")  # fmt: skip
    print(
        f"one live retrain: {first:.1f}s wall (target <= {TARGET_S:.0f}s: {status}); backtest path: "
        f"{fits.hits} of {fits.hits + fits.fits} split fits reused; models identical: {same}; "
        f"peak RSS {peak_rss_mib():,.0f} MiB; load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"machine: {describe()}")


if __name__ == "__main__":
    main()
