"""The benchmark flow on the retrained warehouse: every module and window scored, exit statistics sane,
calibration lowering the ECE of a deliberately mis-calibrated module, and the CLI scoreboard."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.benchmark import benchmark
from flows.retrain import retrain
from models.signals import DEFAULT_MEMBERS
from qtrader.cli import app
from tests.flows.conftest import NOW, data_dir, fresh_copy
from warehouse.db import query_df

WINDOWS = ["30d", "90d", "365d", "all"]
RATES = ["tp1_rate", "tp2_rate", "tp3_rate", "stop_rate", "timeout_rate"]


@pytest.fixture(scope="module")
def benchmarked(retrained):
    out = benchmark(interval="1d", warehouse=str(retrained.warehouse), now=NOW)
    return retrained.warehouse, out


def test_benchmark_scores_every_module_and_window(benchmarked):
    db, out = benchmarked
    b = query_df(db, "SELECT * FROM benchmarks WHERE run_id = ?", [out["run_id"]])
    e = query_df(db, "SELECT * FROM exit_stats WHERE run_id = ?", [out["run_id"]])
    modules = sorted([*DEFAULT_MEMBERS, "ensemble"])
    assert sorted(b["module"].unique()) == modules and sorted(b["window_name"].unique()) == sorted(WINDOWS)
    assert len(b) == len(modules) * len(WINDOWS)
    newest = query_df(db, "SELECT max(ts) AS ts FROM predictions WHERE kind = 'walk_forward'")["ts"][0]
    assert (b["window_end"] == newest).all()
    assert (b["computed_at"] == pd.Timestamp(NOW, tz="UTC")).all()
    assert (b["n"] > 0).all()
    # Wider windows hold more predictions.
    n = b.pivot(index="module", columns="window_name", values="n")
    assert ((n["30d"] < n["90d"]) & (n["90d"] < n["365d"]) & (n["365d"] <= n["all"])).all()
    for col in ["coverage", "base_rate", "auc", "brier", "ece", "ece_raw", "ece_seed", "ece_calibrated"]:
        assert b[col].between(0, 1).all(), col
    assert b["accuracy"].dropna().between(0, 1).all() and b["performance_score"].between(0, 100).all()
    assert (b["latency_p50_ms"] <= b["latency_p95_ms"]).all() and (b["latency_p50_ms"] > 0).all()

    assert set(e["basis"]) == {"labels"} and (e["n"] > 0).all()
    assert set(e["module"]) == set(modules)  # a window where a module made no call has no exit row
    assert e[RATES].stack().between(0, 1).all()
    assert ((e["tp1_rate"] >= e["tp2_rate"]) & (e["tp2_rate"] >= e["tp3_rate"])).all()
    # Each call ends at a TP, the stop or the horizon.
    outcome_share = e["stop_rate"] + e["timeout_rate"] + e["tp1_rate"]
    np.testing.assert_allclose(outcome_share, 1.0, atol=1e-12)
    assert e["avg_r"].between(-1.5, 1.5).all()
    both = e.merge(b, on=["module", "window_name"], suffixes=("_exit", ""))
    assert len(both) == len(e) and (both["n_exit"] <= both["n"]).all()

    card = query_df(db, "SELECT * FROM v_scoreboard WHERE interval = '1d' AND window_name = '90d'")
    assert sorted(card["module"]) == modules and (card["champion_version"] == 1).all()


def test_benchmark_table_artifact_rows_are_json(benchmarked):
    _, out = benchmarked
    json.dumps(out["rows"])  # timestamps as strings, NaN as None
    assert {r["window_name"] for r in out["rows"]} == set(WINDOWS)


def test_calibration_lowers_the_ece_of_a_miscalibrated_module(market_warehouse, tmp_path):
    # Deep trees, large steps, tiny leaves: probabilities far more extreme than the hit rates behind them.
    overconfident = {"direction": {"min_samples_leaf": 20, "learning_rate": 1.0, "max_iter": 30,
                                   "max_depth": None, "max_leaf_nodes": 31}}  # fmt: skip
    db, data = fresh_copy(market_warehouse, tmp_path)
    os.environ["QTRADER_SIGNAL__MODULE_PARAMS"] = json.dumps(overconfident)
    try:
        with data_dir(data):
            retrain(interval="1d", modules=["direction"], warehouse=str(db), now=NOW)
    finally:
        os.environ.pop("QTRADER_SIGNAL__MODULE_PARAMS")
    params = json.loads(query_df(db, "SELECT params FROM model_registry")["params"][0])
    assert params["learning_rate"] == 1.0 and params["min_samples_leaf"] == 20
    out = benchmark(interval="1d", windows=["365d", "all"], warehouse=str(db), now=NOW)
    b = query_df(db, "SELECT * FROM benchmarks WHERE run_id = ?", [out["run_id"]]).set_index("window_name")
    assert (b["ece_raw"] > 0.15).all()  # deliberately mis-calibrated
    assert (b["ece_calibrated"] < 0.5 * b["ece_raw"]).all()
    assert (b["brier_calibrated"] < b["brier_raw"]).all()


def test_scoreboard_command_prints_every_module(benchmarked):
    db, _ = benchmarked
    result = CliRunner().invoke(
        app, ["scoreboard", "--warehouse", str(db), "--window", "all"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for module in [*DEFAULT_MEMBERS, "ensemble"]:
        assert module in result.output
    assert "v1" in result.output and "2026-10-31" in result.output  # champion version and since when
    as_json = CliRunner().invoke(app, ["scoreboard", "--warehouse", str(db), "--window", "all", "--json"])
    rows = {r["module"]: r for r in json.loads(as_json.stdout)["modules"]}
    assert set(rows) == {*DEFAULT_MEMBERS, "ensemble"}
    assert {int(r["champion_version"]) for r in rows.values()} == {1}
    missing = CliRunner().invoke(app, ["scoreboard", "--warehouse", str(db), "--window", "7d"])
    assert missing.exit_code == 0 and "no 1d benchmark for window 7d" in missing.output
