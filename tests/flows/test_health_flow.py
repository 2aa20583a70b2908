"""The health and thresholds flows on a real warehouse: injected degradations move the right module only,
alerts open and resolve, learned thresholds are what other stages read.

The warehouse is built directly through the real tables (bars, features, model_registry, predictions,
benchmarks, ingest_runs, dq_results) so each degradation is one precise change.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.health import health
from flows.thresholds import thresholds
from models.features import FEATURE_SET_VERSION, feature_dtypes
from models.signals.columns import VOL_STRUCTURE
from qtrader.calendar import expected_bars
from qtrader.cli import app
from warehouse.db import insert_frame, query_df, transaction
from warehouse.health import learned_threshold

NOW = pd.Timestamp("2026-11-20 21:30", tz="UTC")  # Friday, after the close
SYMBOLS = [f"S{i:02d}" for i in range(10)]
MODULES = ["patterns", "volatility", "regime", "selector", "imbalance", "direction", "ensemble"]
INTRADAY_MODULE = "imbalance"  # the one module trained on 5m bars here


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


def _bars(interval: str, start: str) -> pd.DataFrame:
    ts = expected_bars(interval, start, NOW)
    if interval != "1d":
        ts = ts[ts + pd.Timedelta(minutes=5) <= NOW]
    n = len(ts)
    frames = [
        pd.DataFrame({"symbol": s, "interval": interval, "ts": ts, "open": 10.0, "high": 11.0, "low": 9.0,
                      "close": 10.5, "volume": 1000.0, "source": "synthetic", "run_id": f"ingest-{interval}",
                      "ingested_at": NOW - pd.Timedelta(hours=1)})
        for s in SYMBOLS
    ]  # fmt: skip
    assert n > 0
    return pd.concat(frames, ignore_index=True)


def _features(bars: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(bars)
    values = {
        col: rng.normal(size=n) if dtype == "float64" else np.zeros(n, dtype="int8")
        for col, dtype in feature_dtypes().items()
        if col not in ("symbol", "interval", "ts")
    }
    out = pd.concat([bars[["symbol", "interval", "ts"]].reset_index(drop=True), pd.DataFrame(values)], axis=1)
    return out.assign(feature_set_version=FEATURE_SET_VERSION, run_id=f"features-{bars['interval'].iloc[0]}",
                      computed_at=NOW - pd.Timedelta(hours=1))  # fmt: skip


def _registry(module: str, interval: str, bars: pd.DataFrame) -> dict:
    ts = bars["ts"].drop_duplicates().sort_values()
    return {
        "module": module, "interval": interval, "version": 1, "trained_at": NOW - pd.Timedelta(hours=12 if interval == "5m" else 48),
        "train_start": ts.iloc[0], "train_end": ts.iloc[int(len(ts) * 0.7)], "valid_start": ts.iloc[int(len(ts) * 0.7) + 1],
        "valid_end": ts.iloc[-1], "train_rows": 100, "valid_rows": 50, "label_horizon": 1,
        "feature_set_version": FEATURE_SET_VERSION, "params": "{}", "config_hash": "c", "data_hash": "d",
        "metrics": json.dumps({"accuracy": 0.55, "auc": 0.56}), "calibration": "seed", "status": "champion",
        "status_reason": "first", "promoted_at": NOW - pd.Timedelta(days=2), "retired_at": None,
        "artifact_path": "x.pkl", "run_id": "retrain-1",
    }  # fmt: skip


def _predictions(module: str, interval: str, newest: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {"symbol": SYMBOLS, "interval": interval, "ts": newest, "module": module, "model_version": 1, "kind": "live",
         "label_horizon": 1, "p_up": 0.55, "p_up_calibrated": 0.54, "confidence_raw": 0.55, "confidence_seed": 0.55,
         "confidence_calibrated": 0.54, "seed_accuracy": 0.55, "direction": 1, "out_of_sample": True,
         "predict_latency_ms": 5.0, "run_id": "retrain-1", "predicted_at": NOW - pd.Timedelta(hours=1)}
    )  # fmt: skip


def _dq(run_id: str, stage: str, n: int, failing: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {"run_id": run_id, "stage": stage, "suite": "bars_raw", "expectation": "expect_x", "rule": "price_positive",
         "severity": "critical", "column_name": "close", "success": failing == 0, "observed_value": None,
         "element_count": n, "unexpected_count": failing, "validated_at": NOW - pd.Timedelta(minutes=30)}, index=[0]
    )  # fmt: skip


def _ingest_run(run_id: str, interval: str, started: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {"run_id": run_id, "flow_run_id": None, "source": "synthetic", "interval": interval, "symbols": [SYMBOLS],
         "window_start": None, "window_end": None, "rows_in": 1, "rows_written": 1, "rows_quarantined": 0,
         "symbols_failed": [[]], "symbols_blocked": [[]], "status": "success", "message": None,
         "started_at": started, "finished_at": started, "fetch_s": 0.0, "gate_s": 0.0, "write_s": 0.0}
    )  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A healthy warehouse: fresh bars, features, one champion per module, fresh predictions, benchmarks
    matching validation, clean data-quality verdicts."""
    db = tmp_path_factory.mktemp("health") / "baseline.duckdb"
    daily, intraday = _bars("1d", "2025-06-01"), _bars("5m", "2026-11-16")
    newest = {"1d": daily["ts"].max(), "5m": intraday["ts"].max()}
    registry, preds, bench = [], [], []
    for m in MODULES:
        iv, bars = ("5m", intraday) if m == INTRADAY_MODULE else ("1d", daily)
        registry.append(_registry(m, iv, bars))
        preds.append(_predictions(m, iv, newest[iv]))
        bench.append({"run_id": "benchmark-1", "computed_at": NOW - pd.Timedelta(hours=1), "module": m, "interval": iv,
                      "window_name": "30d" if iv == "1d" else "24h", "window_end": newest[iv], "n": 2000,
                      "coverage": 1.0, "accuracy": 0.55})  # fmt: skip
    with transaction(db) as con:
        insert_frame(con, "bars", pd.concat([daily, intraday], ignore_index=True))
        insert_frame(
            con, "features", pd.concat([_features(daily, 1), _features(intraday, 2)], ignore_index=True)
        )
        insert_frame(con, "model_registry", pd.DataFrame(registry))
        insert_frame(con, "predictions", pd.concat(preds, ignore_index=True))
        insert_frame(con, "benchmarks", pd.DataFrame(bench))
        for iv in ("1d", "5m"):
            insert_frame(con, "ingest_runs", _ingest_run(f"ingest-{iv}", iv, NOW - pd.Timedelta(hours=1)))
            insert_frame(con, "dq_results", _dq(f"ingest-{iv}", "raw_bars", 800))
    result = health(warehouse=str(db), now=str(NOW))
    return db, result


def test_a_healthy_warehouse_scores_every_module_high(baseline):
    db, result = baseline
    assert set(result["scores"]) == set(MODULES)
    assert all(s >= 95 for s in result["scores"].values()), result["components"]
    assert result["overall"] >= 95 and not result["alerts_opened"]
    rows = query_df(db, "SELECT module, score, components FROM v_latest_health ORDER BY module")
    assert sorted(rows["module"]) == sorted([*MODULES, "overall"])
    comps = json.loads(rows.set_index("module").loc["direction", "components"])
    assert set(comps) >= {"data_freshness", "latency", "feature_drift", "dq_failure_rate"}
    points = query_df(db, "SELECT DISTINCT metric FROM metric_history WHERE module = 'direction' ORDER BY 1")
    assert {"latency_ms", "accuracy", "out_of_range", "health_score", "data_lag_bars"} <= set(
        points["metric"]
    )
    # every row carries the trade filter's gate: the seed's before any learned baseline
    gates = query_df(db, "SELECT module, gate, gate_source, drivers FROM v_latest_health ORDER BY module")
    assert set(gates["gate_source"]) == {"fallback"}
    assert (
        gates.set_index("module").loc["overall", "gate"] == 80.0
        and gates.set_index("module").loc["direction", "gate"] == 70.0
    )


def _stale_intraday(con):
    # the last 5m session never arrived
    con.execute("DELETE FROM bars WHERE interval = '5m' AND ts >= '2026-11-20'")


def _slow_direction(con):
    con.execute("UPDATE predictions SET predict_latency_ms = 2500 WHERE module = 'direction'")


def _regime_accuracy_drop(con):
    con.execute("UPDATE benchmarks SET accuracy = 0.45 WHERE module = 'regime'")


def _volatility_feature_shift(con):
    cols = ", ".join(f"{c} = {c} + 3" for c in VOL_STRUCTURE)
    con.execute(f"UPDATE features SET {cols} WHERE interval = '1d' AND ts >= '2026-09-01'")  # test constants


def _intraday_dq_failures(con):
    insert_frame(con, "ingest_runs", _ingest_run("ingest-5m-bad", "5m", NOW - pd.Timedelta(minutes=20)))
    insert_frame(con, "dq_results", _dq("ingest-5m-bad", "raw_bars", 800, failing=120))


def _selector_returns_nan(con):
    # the newest predict run of selector: every row NaN, so the predictions gate quarantined them all and
    # nothing of that run reached the predictions table
    newest = con.execute("SELECT max(ts) AS t FROM predictions WHERE module = 'selector'").df()["t"].iloc[0]
    rows = pd.DataFrame({
        "run_id": "decide-nan", "stage": "predictions", "rule": "p_up_in_unit_interval", "severity": "critical",
        "symbol": SYMBOLS, "interval": "1d", "ts": newest, "source": "decide",
        "detail": "selector v1: p_up NaN (p_up=nan, p_up_calibrated=nan)", "quarantined_at": NOW,
    })  # fmt: skip
    insert_frame(con, "quarantine", rows)


DEGRADATIONS = [
    # (injection, module whose score must drop, component that explains it, modules allowed to move)
    (_stale_intraday, INTRADAY_MODULE, "data_freshness", {INTRADAY_MODULE}),
    (_slow_direction, "direction", "latency", {"direction"}),
    (_regime_accuracy_drop, "regime", "accuracy_drift", {"regime"}),
    # direction and ensemble read these 9 features among ~50: their share moves too, less
    (_volatility_feature_shift, "volatility", "feature_drift", {"volatility", "direction", "ensemble"}),
    (_intraday_dq_failures, INTRADAY_MODULE, "dq_failure_rate", {INTRADAY_MODULE}),
    # a run whose every prediction failed is the newest run (it used to be invisible: no stored rows)
    (_selector_returns_nan, "selector", "error_rate", {"selector"}),
]


@pytest.mark.parametrize(
    ("inject", "module", "component", "allowed"), DEGRADATIONS, ids=[d[2] for d in DEGRADATIONS]
)
def test_an_injected_degradation_lowers_the_right_module_only(
    baseline, tmp_path, inject, module, component, allowed
):
    base_db, base = baseline
    db = tmp_path / "w.duckdb"
    shutil.copy(base_db, db)
    with transaction(db) as con:
        inject(con)
    later = NOW + pd.Timedelta(minutes=10)
    result = health(warehouse=str(db), now=str(later))
    assert result["scores"][module] <= 60, result["components"][module]
    assert result["components"][module][component] < 50
    for m in set(MODULES) - allowed:
        assert result["scores"][m] == pytest.approx(base["scores"][m]), (m, result["components"][m])
    # the artifact's source of truth: the health row says what moved it
    row = query_df(db, "SELECT components FROM health WHERE module = ? AND ts = ?", [module, later])
    comps = json.loads(row["components"].iloc[0])
    assert max((c for c in comps if not c.startswith("_")), key=lambda c: comps[c]["lost"] or 0) == component


def test_latency_creep_opens_an_alert_with_time_to_threshold_then_it_resolves(baseline, tmp_path):
    db = tmp_path / "w.duckdb"
    shutil.copy(baseline[0], db)
    hours = np.arange(20.0, 1.0, -1.0)  # hourly points 20..2 h before now (the baseline run holds 1 h before)
    ramp = 90.0 - 2.0 * hours  # 2 ms/h, 88 ms an hour ago, 90 now: 100 ms in 5 h
    with transaction(db) as con:
        insert_frame(con, "thresholds", pd.DataFrame([{
            "module": "direction", "metric": "latency_ms", "learned_at": NOW - pd.Timedelta(days=1), "value": 100.0,
            "bound": "upper", "method": "mad", "window_points": 500, "n": 200, "center": 40.0, "spread": 20.0,
            "k": 3.0, "quantile": None, "is_default": False, "reason": "test", "run_id": "thresholds-1"}]))  # fmt: skip
        insert_frame(con, "metric_history", pd.DataFrame({
            "module": "direction", "metric": "latency_ms", "ts": NOW - pd.to_timedelta(hours, unit="h"),
            "value": ramp, "run_id": "health-old", "recorded_at": NOW}))  # fmt: skip
        # the newest predictions batch (an hour ago) is on the same ramp
        con.execute("UPDATE predictions SET predict_latency_ms = 88.0 WHERE module = 'direction'")
    result = health(warehouse=str(db), now=str(NOW))
    assert ("direction", "latency_ms", "warning") in result["alerts_opened"]
    alert = query_df(db, "SELECT * FROM v_active_alerts WHERE module = 'direction' AND metric = 'latency_ms'")
    assert len(alert) == 1
    assert alert["time_to_threshold_hours"].iloc[0] == pytest.approx(
        5.0, rel=0.10
    )  # fitted 90 now + 2/h -> 100 in 5 h
    assert alert["slope"].iloc[0] == pytest.approx(2.0, rel=0.05)
    assert learned_threshold("direction", "latency_ms", warehouse=db).value == 100.0

    # latency settles well below the threshold for a day: the alert resolves
    later = NOW + pd.Timedelta(hours=30)
    with transaction(db) as con:
        insert_frame(con, "metric_history", pd.DataFrame({
            "module": "direction", "metric": "latency_ms", "ts": later - pd.to_timedelta(np.arange(20.0), unit="h"),
            "value": 60.0, "run_id": "health-x", "recorded_at": later}))  # fmt: skip
    result = health(warehouse=str(db), now=str(later))
    assert result["alerts_resolved"] == [alert["alert_id"].iloc[0]]
    resolved = query_df(
        db, "SELECT resolved_at, resolve_reason FROM alerts WHERE alert_id = ?", [alert["alert_id"].iloc[0]]
    )
    assert resolved["resolved_at"].iloc[0] == later and resolved["resolve_reason"].iloc[0].startswith(
        "cleared"
    )
    assert query_df(db, "SELECT count(*) AS n FROM v_active_alerts")["n"].iloc[0] == 0

    out = CliRunner().invoke(app, ["health", "--warehouse", str(db)])
    assert out.exit_code == 0, out.output
    assert "direction" in out.output and "overall" in out.output.lower() and "No active alerts" in out.output


def test_thresholds_flow_learns_from_history_and_defaults_when_short(baseline, tmp_path):
    db = tmp_path / "w.duckdb"
    shutil.copy(baseline[0], db)
    rng = np.random.default_rng(0)
    with transaction(db) as con:
        insert_frame(con, "metric_history", pd.DataFrame({
            "module": "direction", "metric": "latency_ms", "ts": NOW - pd.to_timedelta(np.arange(2.0, 62.0), unit="h"),
            "value": rng.normal(50, 5, 60), "run_id": "health-old", "recorded_at": NOW}))  # fmt: skip
    result = thresholds(warehouse=str(db), now=str(NOW))
    learned = {(t["module"], t["metric"]): t for t in result["thresholds"]}
    direction = learned[("direction", "latency_ms")]
    assert (
        not direction["is_default"] and direction["method"] == "mad" and direction["n"] == 61
    )  # + the baseline run's point
    assert 60 < direction["value"] < 70
    assert learned[("patterns", "accuracy")]["is_default"]  # one benchmark point: too short
    got = learned_threshold("direction", "latency_ms", warehouse=db)
    assert got.value == pytest.approx(direction["value"]) and not got.is_default
    short = learned_threshold("patterns", "health_score", warehouse=db)
    assert short.is_default and "history too short" in short.reason and short.value == 70.0
    # a metric no flow has learned yet (the exit planner's), and a warehouse that does not exist
    stop = learned_threshold("exit_planner", "stop_distance_atr", warehouse=db)
    assert stop.is_default and stop.value == pytest.approx(1.95) and "no learned threshold" in stop.reason
    assert learned_threshold("direction", "latency_ms", warehouse=tmp_path / "none.duckdb").is_default
