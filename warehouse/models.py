"""Reads and writes of the model stages: training frames, the model registry, predictions, benchmarks,
exit statistics, and the model artifacts under ``data/models/``.

Every write is one transaction: a retrain's registry rows, status changes, predictions, quarantined
predictions and GX verdicts land together or not at all; so do a benchmark run's two tables.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

from warehouse.db import WarehouseLike, connect, insert_frame, query_df, transaction
from warehouse.ingest import DQ_COLUMNS, QUARANTINE_COLUMNS

REGISTRY_COLUMNS = [
    "module", "interval", "version", "trained_at", "train_start", "train_end", "valid_start", "valid_end",
    "train_rows", "valid_rows", "label_horizon", "feature_set_version", "params", "config_hash", "data_hash",
    "metrics", "calibration", "status", "status_reason", "promoted_at", "retired_at", "artifact_path", "run_id",
    "confirmed_at", "confirmed_by",
]  # fmt: skip
PREDICTION_COLUMNS = [
    "symbol", "interval", "ts", "module", "model_version", "kind", "label_horizon", "p_up", "p_up_calibrated",
    "confidence_raw", "confidence_seed", "confidence_calibrated", "seed_accuracy", "direction",
    "out_of_sample", "predict_latency_ms", "run_id", "predicted_at",
]  # fmt: skip
BENCHMARK_TABLE_COLUMNS = [
    "run_id", "computed_at", "module", "interval", "window_name", "window_start", "window_end",
    "model_version", "n", "coverage", "base_rate", "accuracy", "precision", "recall", "auc", "brier",
    "log_loss", "ece", "ece_raw", "ece_seed", "ece_calibrated", "brier_raw", "brier_seed", "brier_calibrated",
    "latency_p50_ms", "latency_p95_ms", "performance_score",
]  # fmt: skip
EXIT_TABLE_COLUMNS = [
    "run_id", "computed_at", "module", "interval", "window_name", "basis", "n", "tp1_rate", "tp2_rate",
    "tp3_rate", "stop_rate", "timeout_rate", "avg_r",
]  # fmt: skip


class ConcurrentRetrain(RuntimeError):
    """Another retrain registered versions of the same module while this one was training."""


# ------------------------------------------------------------------------------------------------ reads

# The newest `?` bar timestamps of the interval, every bar's position in its symbol's whole history
# (for the warm-up cut), and its feature row if there is one (feature columns NULL otherwise).
_TRAINING_FRAME_SQL = """
WITH ranked AS (
    SELECT symbol, interval, ts, open, high, low, close, volume,
           row_number() OVER (PARTITION BY symbol ORDER BY ts) - 1 AS bar_number
    FROM bars WHERE interval = ?
),
cut AS (
    SELECT min(ts) AS start_ts FROM (SELECT DISTINCT ts FROM bars WHERE interval = ? ORDER BY ts DESC LIMIT ?)
)
SELECT r.*, f.ts IS NOT NULL AS has_features,
       f.* EXCLUDE (symbol, interval, ts, feature_set_version, run_id, computed_at)
FROM ranked r
LEFT JOIN features f
       ON f.symbol = r.symbol AND f.interval = r.interval AND f.ts = r.ts AND f.feature_set_version = ?
WHERE r.ts >= (SELECT start_ts FROM cut)
ORDER BY r.symbol, r.ts
"""


def load_training_frame(
    wh: WarehouseLike,
    interval: str,
    feature_set_version: str,
    n_bars: int,
) -> pd.DataFrame:
    """Bars of the newest ``n_bars`` timestamps with bar_number, has_features and the feature columns.

    Every bar comes back (labels need the whole series); a bar without a feature row has NULL features.
    Opened read-write so a warehouse that predates the model tables gets them (migrations) before the
    retrain reads the registry.
    """
    with connect(wh) as con:
        return con.execute(_TRAINING_FRAME_SQL, [interval, interval, n_bars, feature_set_version]).df()


def registry(wh: WarehouseLike, interval: str | None = None) -> pd.DataFrame:
    return query_df(
        wh,
        "SELECT * FROM model_registry WHERE (? IS NULL OR interval = ?) ORDER BY module, interval, version",
        [interval, interval],
    )


def champions(wh: WarehouseLike, interval: str) -> pd.DataFrame:
    """The champion row of each module for the interval (at most one per module)."""
    return query_df(
        wh,
        "SELECT * FROM model_registry WHERE interval = ? AND status = 'champion' ORDER BY module",
        [interval],
    )


def latest_versions(wh: WarehouseLike, interval: str) -> dict[str, int]:
    df = query_df(
        wh,
        "SELECT module, max(version) AS v FROM model_registry WHERE interval = ? GROUP BY module",
        [interval],
    )
    return {str(m): int(v) for m, v in zip(df["module"], df["v"], strict=True)}


def load_predictions(wh: WarehouseLike, interval: str, *, start: pd.Timestamp | None = None) -> pd.DataFrame:
    return query_df(
        wh,
        "SELECT * FROM predictions WHERE interval = ? AND (? IS NULL OR ts > ?) ORDER BY module, symbol, ts",
        [interval, start, start],
    )


def load_bars_with_atr(
    wh: WarehouseLike,
    interval: str,
    symbols: list[str],
    start: pd.Timestamp,
    feature_set_version: str,
) -> pd.DataFrame:
    """Bars from ``start`` on with the features' atr_14 (NaN without a feature row), for labels."""
    sql = """
        SELECT b.symbol, b.interval, b.ts, b.open, b.high, b.low, b.close, b.volume, f.atr_14
        FROM bars b
        LEFT JOIN features f
               ON f.symbol = b.symbol AND f.interval = b.interval AND f.ts = b.ts AND f.feature_set_version = ?
        WHERE b.interval = ? AND list_contains(?, b.symbol) AND b.ts >= ?
        ORDER BY b.symbol, b.ts
    """
    return query_df(wh, sql, [feature_set_version, interval, symbols, start])


def scoreboard(wh: WarehouseLike, interval: str, window: str) -> pd.DataFrame:
    """The latest benchmark of every module for one window, with exit statistics and the champion."""
    return query_df(
        wh,
        "SELECT * FROM v_scoreboard WHERE interval = ? AND window_name = ? "
        "ORDER BY performance_score DESC NULLS LAST, module",
        [interval, window],
    )


# ----------------------------------------------------------------------------------------------- writes


def _insert(
    con, table: str, frame: pd.DataFrame | None, columns: list[str], *, replace: bool = False
) -> None:
    if frame is not None and len(frame):
        insert_frame(con, table, frame.reindex(columns=columns), replace=replace)


def write_retrain(
    wh: WarehouseLike,
    registry_rows: pd.DataFrame,
    retire: list[dict[str, Any]],
    predictions: pd.DataFrame,
    quarantine: pd.DataFrame,
    dq_results: pd.DataFrame,
    *,
    expected_versions: dict[str, int],
    confirm: list[dict[str, Any]] | None = None,
    run_id: str | None = None,
) -> None:
    """Register the new versions, retire the replaced champions, upsert predictions: one transaction.

    ``retire``: dicts with module, interval, version, reason, retired_at. ``confirm``: champions this retrain
    evaluated and kept (module, interval, version): their ``confirmed_at`` becomes the registry rows'
    ``trained_at`` and ``confirmed_by`` this ``run_id``. ``expected_versions``: the newest
    version of each module when the retrain started; if another retrain registered since, nothing is
    written (ConcurrentRetrain) rather than two champions or a version clash.
    """
    with transaction(wh) as con:
        if len(registry_rows):
            interval = str(registry_rows["interval"].iloc[0])
            now = dict(
                con.execute(
                    "SELECT module, max(version) FROM model_registry WHERE interval = ? GROUP BY module",
                    [interval],
                ).fetchall()
            )
            for module in registry_rows["module"]:
                if int(now.get(module, 0)) != int(expected_versions.get(module, 0)):
                    raise ConcurrentRetrain(
                        f"{module} {interval}: version {now.get(module)} was registered by another retrain "
                        f"while this one trained (expected {expected_versions.get(module, 0)}); rerun it"
                    )
        for r in retire:
            con.execute(
                "UPDATE model_registry SET status = 'retired', retired_at = ?, status_reason = ? "
                "WHERE module = ? AND interval = ? AND version = ? AND status = 'champion'",
                [r["retired_at"], r["reason"], r["module"], r["interval"], int(r["version"])],
            )
        _insert(con, "model_registry", registry_rows, REGISTRY_COLUMNS)
        confirmed_at = registry_rows["trained_at"].max() if len(registry_rows) else None
        for c in confirm or []:
            con.execute(
                "UPDATE model_registry SET confirmed_at = ?, confirmed_by = ? "
                "WHERE module = ? AND interval = ? AND version = ? AND status = 'champion'",
                [confirmed_at, run_id, c["module"], c["interval"], int(c["version"])],
            )
        # The newest prediction of a bar replaces an older one (key: symbol, interval, ts, module).
        _insert(con, "predictions", predictions, PREDICTION_COLUMNS, replace=True)
        _insert(con, "quarantine", quarantine, QUARANTINE_COLUMNS)
        _insert(con, "dq_results", dq_results, DQ_COLUMNS)


def write_benchmarks(wh: WarehouseLike, benchmarks: pd.DataFrame, exit_stats: pd.DataFrame) -> None:
    with transaction(wh) as con:
        _insert(con, "benchmarks", benchmarks, BENCHMARK_TABLE_COLUMNS)
        _insert(con, "exit_stats", exit_stats, EXIT_TABLE_COLUMNS)


# -------------------------------------------------------------------------------------------- artifacts


def artifact_path(data_dir: str | Path, module: str, interval: str, version: int) -> Path:
    return Path(data_dir) / "models" / module / interval / f"v{version}.pkl"


def save_artifact(artifact: Any, path: str | Path) -> Path:
    """Pickle a model artifact; written to a temporary name first so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pkl.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(artifact, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return path


def load_artifact(path: str | Path) -> Any:
    """Unpickle an artifact this system wrote (never load artifacts from elsewhere: pickle runs code)."""
    with open(path, "rb") as f:
        return pickle.load(f)


def metrics_of(row: pd.Series) -> dict[str, Any]:
    """The registry's metrics JSON as a dict."""
    value = row["metrics"]
    return json.loads(value) if isinstance(value, str) else dict(value)
