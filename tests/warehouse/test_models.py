"""The model tables and views of migration 003, their writers and the artifact store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.calibration import Calibrator
from models.signals import make_module
from models.training import ModelArtifact
from warehouse.db import connect, query_df
from warehouse.models import (
    BENCHMARK_TABLE_COLUMNS,
    EXIT_TABLE_COLUMNS,
    PREDICTION_COLUMNS,
    REGISTRY_COLUMNS,
    ConcurrentRetrain,
    artifact_path,
    champions,
    latest_versions,
    load_artifact,
    save_artifact,
    scoreboard,
    write_benchmarks,
    write_retrain,
)

T0 = pd.Timestamp("2026-10-01", tz="UTC")


def _columns(db, table: str) -> list[str]:
    df = query_df(
        db,
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    )
    return df["column_name"].tolist()


def test_migration_creates_the_model_tables_with_the_writers_columns(warehouse_path):
    with connect(warehouse_path):
        pass
    assert _columns(warehouse_path, "model_registry") == REGISTRY_COLUMNS
    assert _columns(warehouse_path, "predictions") == PREDICTION_COLUMNS
    assert _columns(warehouse_path, "benchmarks") == BENCHMARK_TABLE_COLUMNS
    assert _columns(warehouse_path, "exit_stats") == EXIT_TABLE_COLUMNS
    views = query_df(
        warehouse_path, "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'"
    )
    assert {"v_latest_benchmarks", "v_champions", "v_scoreboard"} <= set(views["table_name"])


def _registry_row(module: str, version: int, status: str, at: pd.Timestamp) -> dict:
    return {
        "module": module, "interval": "1d", "version": version, "trained_at": at, "train_start": T0,
        "train_end": T0 + pd.Timedelta(days=100), "valid_start": T0 + pd.Timedelta(days=110),
        "valid_end": T0 + pd.Timedelta(days=170), "train_rows": 1000, "valid_rows": 100, "label_horizon": 1,
        "feature_set_version": "v1", "params": "{}", "config_hash": "c", "data_hash": "d",
        "metrics": '{"auc": 0.55}', "calibration": "isotonic", "status": status, "status_reason": "why",
        "promoted_at": at if status == "champion" else None, "retired_at": None,
        "artifact_path": f"data/models/{module}/1d/v{version}.pkl", "run_id": f"retrain-{version}",
    }  # fmt: skip


def _prediction(symbol: str, ts: pd.Timestamp, version: int, p: float) -> dict:
    return {
        "symbol": symbol, "interval": "1d", "ts": ts, "module": "direction", "model_version": version,
        "kind": "walk_forward", "label_horizon": 1, "p_up": p, "p_up_calibrated": p, "confidence_raw": max(p, 1 - p),
        "confidence_seed": max(p, 1 - p), "confidence_calibrated": max(p, 1 - p), "seed_accuracy": 0.5,
        "direction": 1 if p > 0.5 else -1, "out_of_sample": True, "predict_latency_ms": 0.01, "run_id": "r",
        "predicted_at": T0,
    }  # fmt: skip


def _empty() -> pd.DataFrame:
    return pd.DataFrame()


def test_a_retrain_that_keeps_the_champion_confirms_it(warehouse_path):
    """Staleness counts from the newest retrain that evaluated the champion and kept it (docs/health.md)."""
    db = warehouse_path
    write_retrain(db, pd.DataFrame([_registry_row("direction", 1, "champion", T0)]), [], _empty(), _empty(),
                  _empty(), expected_versions={})  # fmt: skip
    for k, version in ((1, 2), (2, 3)):  # two retrains whose challengers lose
        at = T0 + pd.Timedelta(days=7 * k)
        write_retrain(db, pd.DataFrame([_registry_row("direction", version, "challenger", at)]), [], _empty(),
                      _empty(), _empty(), expected_versions={"direction": version - 1},
                      confirm=[{"module": "direction", "interval": "1d", "version": 1}], run_id=f"retrain-{k}")  # fmt: skip
    champ = champions(db, "1d").iloc[0]
    assert champ["version"] == 1 and champ["trained_at"] == T0
    assert champ["confirmed_at"] == T0 + pd.Timedelta(days=14) and champ["confirmed_by"] == "retrain-2"
    challengers = query_df(db, "SELECT confirmed_at FROM model_registry WHERE status = 'challenger'")
    assert challengers["confirmed_at"].isna().all()


def test_write_retrain_registers_retires_and_upserts_predictions(warehouse_path):
    db = warehouse_path
    first = pd.DataFrame([_registry_row("direction", 1, "champion", T0)])
    preds = pd.DataFrame([_prediction("AAA", T0, 1, 0.6), _prediction("BBB", T0, 1, 0.4)])
    write_retrain(db, first, [], preds, _empty(), _empty(), expected_versions={})
    assert latest_versions(db, "1d") == {"direction": 1}

    later = T0 + pd.Timedelta(days=1)
    second = pd.DataFrame([_registry_row("direction", 2, "champion", later)])
    retire = [
        {
            "module": "direction",
            "interval": "1d",
            "version": 1,
            "retired_at": later,
            "reason": "replaced by v2",
        }
    ]
    newer = pd.DataFrame([_prediction("AAA", T0, 2, 0.7)])  # same key: replaces v1's prediction
    write_retrain(db, second, retire, newer, _empty(), _empty(), expected_versions={"direction": 1})
    reg = query_df(
        db, "SELECT version, status, status_reason, retired_at FROM model_registry ORDER BY version"
    )
    assert reg["status"].tolist() == ["retired", "champion"]
    assert reg.loc[0, "status_reason"] == "replaced by v2" and reg.loc[0, "retired_at"] == later
    assert champions(db, "1d")["version"].tolist() == [2]
    p = query_df(db, "SELECT symbol, model_version, p_up FROM predictions ORDER BY symbol")
    assert p.to_dict("records") == [
        {"symbol": "AAA", "model_version": 2, "p_up": 0.7},
        {"symbol": "BBB", "model_version": 1, "p_up": 0.4},
    ]


def test_a_concurrent_retrain_writes_nothing(warehouse_path):
    db = warehouse_path
    write_retrain(db, pd.DataFrame([_registry_row("direction", 1, "champion", T0)]), [], _empty(), _empty(), _empty(),
                  expected_versions={})  # fmt: skip
    stale = pd.DataFrame([_registry_row("direction", 1, "challenger", T0)])
    with pytest.raises(ConcurrentRetrain, match="registered by another retrain"):
        write_retrain(db, stale, [], pd.DataFrame([_prediction("AAA", T0, 1, 0.6)]), _empty(), _empty(),
                      expected_versions={})  # fmt: skip
    assert query_df(db, "SELECT count(*) AS n FROM predictions")["n"][0] == 0
    assert query_df(db, "SELECT count(*) AS n FROM model_registry")["n"][0] == 1


def _benchmark(run_id: str, at: pd.Timestamp, module: str, score: float) -> dict:
    row = dict.fromkeys(BENCHMARK_TABLE_COLUMNS, None)
    row.update(run_id=run_id, computed_at=at, module=module, interval="1d", window_name="90d", window_end=at, n=100,
               accuracy=0.55, auc=0.56, performance_score=score)  # fmt: skip
    return row


def test_scoreboard_shows_the_latest_benchmark_with_exit_stats_and_champion(warehouse_path):
    db = warehouse_path
    write_retrain(db, pd.DataFrame([_registry_row("direction", 1, "champion", T0)]), [], _empty(), _empty(), _empty(),
                  expected_versions={})  # fmt: skip
    later = T0 + pd.Timedelta(days=1)
    exits = pd.DataFrame(
        [{"run_id": "b2", "computed_at": later, "module": "direction", "interval": "1d", "window_name": "90d",
          "basis": "labels", "n": 60, "tp1_rate": 0.6, "tp2_rate": 0.3, "tp3_rate": 0.1, "stop_rate": 0.35,
          "timeout_rate": 0.05, "avg_r": 0.1}]
    )  # fmt: skip
    write_benchmarks(db, pd.DataFrame([_benchmark("b1", T0, "direction", 40.0)]), _empty())
    write_benchmarks(
        db,
        pd.DataFrame([_benchmark("b2", later, "direction", 55.0), _benchmark("b2", later, "regime", 60.0)]),
        exits,
    )
    card = scoreboard(db, "1d", "90d")
    assert card["module"].tolist() == ["regime", "direction"]  # best score first
    row = card.set_index("module").loc["direction"]
    assert row["performance_score"] == 55.0 and row["run_id"] == "b2" and row["tp1_rate"] == 0.6
    assert row["champion_version"] == 1 and row["champion_since"] == T0
    assert pd.isna(card.set_index("module").loc["regime", "champion_version"])


def test_artifact_round_trip(tmp_path, rng=np.random.default_rng(0)):
    X = pd.DataFrame({"clv": rng.normal(size=400), "clv_volume_imbalance_5": rng.normal(size=400),
                      "clv_volume_imbalance_20": rng.normal(size=400), "up_volume_share_20": rng.uniform(size=400)})  # fmt: skip
    y = (X["clv"] + rng.normal(size=400) > 0).astype(float)
    model = make_module("imbalance").fit(X, y)
    artifact = ModelArtifact(
        module="imbalance", interval="1d", version=3, estimator=model,
        calibrator=Calibrator("isotonic").fit_p_up(model.p_up(X), y), seed_accuracy=0.55,
        features=list(X.columns), feature_set_version="v1", label_horizon=1, params=model.get_params(),
        config_hash="c", data_hash="d", train_start=T0, train_end=T0, valid_start=T0, valid_end=T0, trained_at=T0,
    )  # fmt: skip
    path = save_artifact(artifact, artifact_path(tmp_path, "imbalance", "1d", 3))
    assert path == tmp_path / "models" / "imbalance" / "1d" / "v3.pkl"
    assert not list(path.parent.glob("*.tmp"))
    loaded = load_artifact(path)
    np.testing.assert_array_equal(loaded.predict_p_up(X)[0], artifact.predict_p_up(X)[0])
    np.testing.assert_array_equal(loaded.calibrator.transform(np.linspace(0.5, 1, 11)),
                                  artifact.calibrator.transform(np.linspace(0.5, 1, 11)))  # fmt: skip
