"""Prefect tasks of the benchmark flow: load predictions with their labels, score, write, publish."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.evaluation import (
    attach_labels,
    benchmark_rows,
    exit_stats_from_labels,
    newest_labelled,
    window_span,
)
from models.features import FEATURE_SET_VERSION
from models.labels import BarrierProfile
from qtrader import artifacts as qa
from qtrader.calendar import is_daily
from qtrader.settings import Settings
from tasks.resources import warehouse
from tasks.retrain import score_params
from tasks.steps import step
from warehouse.models import load_bars_with_atr, load_predictions, write_benchmarks


def exit_profile(settings: Settings) -> BarrierProfile:
    s = settings.signal
    return BarrierProfile(
        tp1=s.tp1_atr, tp2=s.tp2_atr, tp3=s.tp3_atr, stop=s.stop_atr, horizon=s.exit_horizon_bars
    )


def benchmark_windows(settings: Settings, interval: str, windows: list[str] | None) -> list[str]:
    chosen = (
        list(windows)
        if windows
        else (settings.benchmark.windows_daily if is_daily(interval) else settings.benchmark.windows_intraday)
    )
    for name in chosen:
        window_span(name)  # fail fast on a malformed window
    return chosen


@task(name="load-labelled-predictions", cache_policy=NO_CACHE)
def load_labelled_predictions(settings: Settings, interval: str) -> pd.DataFrame:
    """Every stored prediction of the interval with label_up and the predicted side's barrier outcome."""
    log = get_run_logger()
    started = time.perf_counter()
    predictions = load_predictions(warehouse(settings), interval)
    if predictions.empty:
        raise ValueError(f"no {interval} predictions in {settings.warehouse}: run the retrain flow first")
    bars = load_bars_with_atr(
        warehouse(settings),
        interval,
        sorted(predictions["symbol"].unique()),
        predictions["ts"].min(),
        FEATURE_SET_VERSION,
    )
    labelled = attach_labels(predictions, bars, exit_profile(settings))
    log.info(
        "%s: %d predictions of %d modules, %d with a known label, in %.2fs",
        interval, len(labelled), labelled["module"].nunique(), int(labelled["label_up"].notna().sum()),
        time.perf_counter() - started,
    )  # fmt: skip
    return labelled


@task(name="score-modules", cache_policy=NO_CACHE)
def score_modules(
    settings: Settings, labelled: pd.DataFrame, windows: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """(benchmarks, exit_stats, window end) of every module and window."""
    end = newest_labelled(labelled)
    if end is None:
        raise ValueError("no prediction has a known label yet: benchmark again once their horizon is over")
    benchmarks = benchmark_rows(labelled, windows, end, settings.benchmark.ece_bins, score_params(settings))
    exits = exit_stats_from_labels(labelled, windows, end)
    return benchmarks, exits, end


def benchmark_table_rows(
    interval: str, benchmarks: pd.DataFrame, exits: pd.DataFrame, run_id: str, now: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmarks and exit_stats rows of one pass, as written."""
    return tuple(f.assign(run_id=run_id, computed_at=now, interval=interval) for f in (benchmarks, exits))


@task(name="write-benchmarks", cache_policy=NO_CACHE)
def record_benchmarks(
    settings: Settings, interval: str, benchmarks: pd.DataFrame, exits: pd.DataFrame, run_id: str,
    now: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    b, e = benchmark_table_rows(interval, benchmarks, exits, run_id, now)
    write_benchmarks(warehouse(settings), b, e)
    get_run_logger().info("wrote %d benchmark rows and %d exit_stats rows", len(b), len(e))
    return b, e


@task(name="benchmark-table", cache_policy=NO_CACHE)
def publish_benchmark_table(
    interval: str, run_id: str, benchmarks: pd.DataFrame, exits: pd.DataFrame
) -> list[dict]:
    table = artifact_rows(benchmarks, exits)
    end = qa.short_ts(benchmarks["window_end"].max()) if len(benchmarks) else "n/a"
    for suffix, rows, what in benchmark_tables(benchmarks, exits):
        create_table_artifact(
            key=f"benchmark-{interval}{suffix}".lower(),
            table=rows,
            description=f"Module benchmarks ({interval}), windows ending {end} UTC: {what} (run {run_id})",
        )
    return table


# The 20 benchmark columns as two tables that fit the UI: what a module predicts, then how its calls exit.
_QUALITY = [("n", "Predictions", "count"), ("accuracy", "Accuracy", "pct"), ("auc", "AUC", "num3"),
            ("brier", "Brier", "num3"), ("ece_calibrated", "ECE", "num3"), ("latency_p95_ms", "p95 ms", "num1"),
            ("performance_score", "Score", "num1")]  # fmt: skip
_EXITS = [("tp1_rate", "TP1 rate", "pct"), ("tp2_rate", "TP2 rate", "pct"), ("tp3_rate", "TP3 rate", "pct"),
          ("stop_rate", "Stop rate", "pct"), ("timeout_rate", "Timeout rate", "pct"), ("avg_r", "Avg R", "num2")]  # fmt: skip


def _cell(value, kind: str) -> str:
    return {
        "count": lambda: qa.count(value),
        "pct": lambda: qa.percent(value, 1),
        "num1": lambda: qa.number(value, 1),
        "num2": lambda: qa.number(value, 2, signed=True),
        "num3": lambda: qa.number(value, 3),
    }[kind]()


def benchmark_tables(benchmarks: pd.DataFrame, exits: pd.DataFrame) -> list[tuple[str, list[dict], str]]:
    """(key suffix, rows, what it shows) of the benchmark's table artifacts: module, window and its first
    day, then at most 7 figures each, with human headers and formatted cells."""
    keys = ["module", "window_name"]
    merged = benchmarks.merge(exits[keys + [c for c, _, _ in _EXITS]], on=keys, how="left")

    def rows(spec, with_start: bool) -> list[dict]:
        out = []
        for r in merged.to_dict("records"):
            row = {"Module": r["module"], "Window": r["window_name"]}
            if with_start:
                row["From"] = qa.short_ts(r["window_start"], date_only=True)
            row |= {title: _cell(r.get(col), kind) for col, title, kind in spec}
            out.append(row)
        return out

    return [
        ("", rows(_QUALITY, True), "accuracy, calibration (ECE after calibration), p95 latency and score"),
        ("-exits", rows(_EXITS, False), "how the calls' brackets would have exited"),
    ]


def artifact_rows(benchmarks: pd.DataFrame, exits: pd.DataFrame) -> list[dict]:
    """JSON-safe rows: timestamps as strings, NaN as None, figures rounded."""
    keys = ["module", "window_name"]
    cols = [
        "module", "window_name", "window_start", "window_end", "n", "accuracy", "auc", "brier", "ece_raw",
        "ece_seed", "ece_calibrated", "latency_p50_ms", "latency_p95_ms", "performance_score",
    ]  # fmt: skip
    exit_cols = ["tp1_rate", "tp2_rate", "tp3_rate", "stop_rate", "timeout_rate", "avg_r"]
    merged = benchmarks[cols].merge(exits[keys + exit_cols], on=keys, how="left")
    out = []
    for row in merged.to_dict("records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, pd.Timestamp):
                clean[k] = v.isoformat()
            elif isinstance(v, float | np.floating):
                clean[k] = round(float(v), 4) if np.isfinite(v) else None
            elif v is None or v is pd.NaT:
                clean[k] = None
            else:
                clean[k] = v.item() if isinstance(v, np.generic) else v
        out.append(clean)
    return out


def benchmark_pass(
    settings: Settings,
    interval: str,
    windows: list[str],
    now: pd.Timestamp,
    run_id: str,
    *,
    tracked: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """Score and record every module's predictions per window (the benchmark flow's body)."""
    labelled = step(load_labelled_predictions, tracked)(settings, interval)
    benchmarks, exits, end = step(score_modules, tracked)(settings, labelled, windows)
    benchmarks, exits = step(record_benchmarks, tracked)(settings, interval, benchmarks, exits, run_id, now)
    return benchmarks, exits, end
