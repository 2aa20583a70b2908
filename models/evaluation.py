"""Benchmarks of stored predictions: classification and calibration metrics per module and window, and exit
statistics on the predicted side. Pure: the benchmark flow (flows/benchmark.py) loads predictions with
their labels and writes what these functions return.

Windows are calendar spans ending at the newest labelled bar ``end``: ``"30d"`` keeps predictions with
``end - 30 days < ts <= end``; ``"all"`` keeps every labelled prediction.

Calibration is scored on the pairs the seed formula is defined on: the confidence of the side the raw
P(up) calls (``confidence_raw`` / ``_seed`` / ``_calibrated``) against whether that side happened, over
the rows with an opinion (direction != 0). ``ece`` / ``brier`` / ``log_loss`` are of raw P(up) against
label_up (``models.metrics.classification_metrics``), and feed ``performance_score``.

Exit statistics come from one basis at a time: ``exit_stats_from_labels`` reads the triple-barrier
outcome of the predicted side (long_* for an up call, short_* for a down call); a later
``exit_stats_from_trades`` will read realized trades and return the same columns with basis 'trades'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from models.calibration import DEFAULT_N_BINS, brier_score, expected_calibration_error
from models.labels import SIDES, BarrierProfile, make_labels
from models.metrics import classification_metrics, latency_stats, performance_score

ALL = "all"
BENCHMARK_COLUMNS = [
    "module", "window_name", "window_start", "window_end", "model_version", "n", "coverage", "base_rate",
    "accuracy", "precision", "recall", "auc", "brier", "log_loss", "ece", "ece_raw", "ece_seed",
    "ece_calibrated", "brier_raw", "brier_seed", "brier_calibrated", "latency_p50_ms", "latency_p95_ms",
    "performance_score",
]  # fmt: skip
EXIT_COLUMNS = [
    "module", "window_name", "basis", "n", "tp1_rate", "tp2_rate", "tp3_rate", "stop_rate", "timeout_rate",
    "avg_r",
]  # fmt: skip


BARRIER_FIELDS = ("outcome", "tp1", "tp2", "tp3", "stop", "r")


def attach_labels(
    predictions: pd.DataFrame, bars: pd.DataFrame, exit_profile: BarrierProfile
) -> pd.DataFrame:
    """Predictions with ``label_up`` (at each row's own label horizon) and the exit profile's barrier outcomes.

    ``bars``: the bars of the predicted symbols from the first predicted bar on, ordered by symbol and ts,
    with the features' ``atr_14`` (so barriers sit where the labels of training put them). Rows whose
    horizon is not over yet get NaN / None.
    """
    keys = ["symbol", "ts"]
    atr = bars["atr_14"].to_numpy(dtype="float64")
    exits = make_labels(bars, exit_profile, atr=atr)
    barrier_cols = [f"{side}_{f}" for side in SIDES for f in BARRIER_FIELDS]
    out = predictions.merge(exits[keys + barrier_cols], on=keys, how="left")
    out["label_up"] = np.nan
    for horizon in sorted(out["label_horizon"].unique()):
        profile = BarrierProfile(
            tp1=exit_profile.tp1, tp2=exit_profile.tp2, tp3=exit_profile.tp3, stop=exit_profile.stop,
            horizon=int(horizon),
        )  # fmt: skip
        labels = make_labels(bars, profile, atr=atr)[keys + ["label_up"]]
        rows = (out["label_horizon"] == horizon).to_numpy()
        joined = out.loc[rows, keys].merge(labels, on=keys, how="left")
        out.loc[rows, "label_up"] = joined["label_up"].to_numpy()
    return out


def newest_labelled(frame: pd.DataFrame) -> pd.Timestamp | None:
    """The newest bar with a known label: where every benchmark window ends."""
    known = frame["label_up"].notna()
    return frame.loc[known, "ts"].max() if known.any() else None


def window_span(name: str) -> pd.Timedelta | None:
    """``"30d"`` -> 30 days, ``"24h"`` -> 24 hours, ``"all"`` -> None. Raises ValueError otherwise."""
    if name == ALL:
        return None
    try:
        span = pd.Timedelta(name)
    except ValueError:
        raise ValueError(f"benchmark window {name!r}: use a span like 24h, 7d, 30d, 365d, or 'all'") from None
    if span <= pd.Timedelta(0):
        raise ValueError(f"benchmark window {name!r} must be positive")
    return span


def window_mask(ts: pd.Series, name: str, end: pd.Timestamp) -> tuple[np.ndarray, pd.Timestamp | None]:
    span = window_span(name)
    inside = (ts <= end).to_numpy()
    if span is None:
        return inside, None
    start = end - span
    return inside & (ts > start).to_numpy(), start


def _hits(frame: pd.DataFrame) -> np.ndarray:
    """Whether the raw predicted side happened (up call and label_up 1, or down call and 0)."""
    y = frame["label_up"].to_numpy(dtype="float64")
    up = frame["p_up"].to_numpy(dtype="float64") >= 0.5
    return np.where(up, y, 1.0 - y)


def window_metrics(
    frame: pd.DataFrame, n_bins: int = DEFAULT_N_BINS, score_params: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Metrics of one module's labelled predictions in one window."""
    y = frame["label_up"].to_numpy(dtype="float64")
    metrics = classification_metrics(y, frame["p_up"].to_numpy(dtype="float64"), n_bins=n_bins)
    calls = frame["direction"].to_numpy() != 0
    hit = _hits(frame)[calls]
    for name in ("raw", "seed", "calibrated"):
        confidence = frame[f"confidence_{name}"].to_numpy(dtype="float64")[calls]
        metrics[f"ece_{name}"] = (
            expected_calibration_error(confidence, hit, n_bins) if calls.any() else np.nan
        )
        metrics[f"brier_{name}"] = brier_score(confidence, hit) if calls.any() else np.nan
    p50, p95 = latency_stats(frame["predict_latency_ms"].to_numpy(dtype="float64"))
    metrics["latency_p50_ms"], metrics["latency_p95_ms"] = p50, p95
    metrics["performance_score"] = performance_score(metrics, **dict(score_params or {}))
    return metrics


def benchmark_rows(
    frame: pd.DataFrame,
    windows: Sequence[str],
    end: pd.Timestamp,
    n_bins: int = DEFAULT_N_BINS,
    score_params: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (module, window) with at least one labelled prediction (BENCHMARK_COLUMNS).

    ``frame``: predictions (module, ts, p_up, confidence_raw/_seed/_calibrated, direction,
    predict_latency_ms, model_version) with ``label_up`` (NaN where the horizon is not over yet).
    """
    labelled = frame[frame["label_up"].notna()]
    rows = []
    for module, group in labelled.groupby("module", sort=True):
        for name in windows:
            inside, start = window_mask(group["ts"], name, end)
            part = group[inside]
            if part.empty:
                continue
            metrics = window_metrics(part, n_bins, score_params)
            rows.append(
                {
                    "module": module,
                    "window_name": name,
                    "window_start": start,
                    "window_end": end,
                    "model_version": int(part["model_version"].max()),
                    **metrics,
                }
            )
    return pd.DataFrame(rows, columns=BENCHMARK_COLUMNS)


def _side_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """The predicted side's barrier outcome per call: tp1, tp2, tp3, stop (booleans), outcome, r."""
    up = frame["direction"].to_numpy() > 0
    out = {}
    for col in ("outcome", "tp1", "tp2", "tp3", "stop", "r"):
        out[col] = np.where(
            up, frame[f"long_{col}"].to_numpy(dtype=object), frame[f"short_{col}"].to_numpy(dtype=object)
        )
    return pd.DataFrame(out, index=frame.index)


def exit_stats_from_labels(frame: pd.DataFrame, windows: Sequence[str], end: pd.Timestamp) -> pd.DataFrame:
    """TP1/TP2/TP3 hit rates, stop rate, timeout rate and average R of the calls, per module and window.

    ``frame``: predictions (module, ts, direction) with the triple-barrier columns of
    ``models.labels.make_labels`` (long_* / short_*; outcome None where the horizon is not over). Rows
    without an opinion (direction 0) and without a known outcome are left out.
    """
    calls = frame[(frame["direction"] != 0)]
    if calls.empty:
        return pd.DataFrame(columns=EXIT_COLUMNS)
    side = _side_outcomes(calls)
    known = side["outcome"].notna().to_numpy() & (side["outcome"].astype(str) != "<NA>").to_numpy()
    calls, side = calls[known], side[known]
    rows = []
    for module, idx in calls.groupby("module", sort=True).groups.items():
        group, outcomes = calls.loc[idx], side.loc[idx]
        for name in windows:
            inside, _ = window_mask(group["ts"], name, end)
            part = outcomes[inside]
            if part.empty:
                continue
            outcome = part["outcome"].astype(str)
            rows.append(
                {
                    "module": module,
                    "window_name": name,
                    "basis": "labels",
                    "n": len(part),
                    "tp1_rate": float(part["tp1"].astype(bool).mean()),
                    "tp2_rate": float(part["tp2"].astype(bool).mean()),
                    "tp3_rate": float(part["tp3"].astype(bool).mean()),
                    "stop_rate": float(part["stop"].astype(bool).mean()),
                    "timeout_rate": float((outcome == "timeout").mean()),
                    "avg_r": float(pd.to_numeric(part["r"], errors="coerce").mean()),
                }
            )
    return pd.DataFrame(rows, columns=EXIT_COLUMNS)
