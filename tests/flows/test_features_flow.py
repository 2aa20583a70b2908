"""The features flow on a real warehouse: incremental equals full, the gate, daily context."""

import numpy as np
import pandas as pd
import pytest

from expectations.features_gate import features_view
from expectations.frame_gate import gate_frame
from flows.features import features
from flows.ingest import ingest
from models.features import DAILY_CONTEXT_COLUMNS, FEATURE_SET_VERSION, feature_columns
from warehouse.db import query_df
from warehouse.features import load_features

SYMBOLS = ["AAA", "BBB"]


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


def _ingest(db, now, start="2023-01-01", interval="1d"):
    ingest(source="synthetic", symbols=SYMBOLS, interval=interval, start=start, now=now, warehouse=str(db))


def test_incremental_run_equals_a_full_recompute(tmp_path):
    inc, full = tmp_path / "inc.duckdb", tmp_path / "full.duckdb"
    _ingest(inc, "2026-06-30 22:00")
    first = features(intervals=["1d"], warehouse=str(inc))
    assert first["intervals"][0]["written"] > 0
    _ingest(inc, "2026-11-20 22:00", start="2026-06-01")  # new bars arrive
    second = features(intervals=["1d"], warehouse=str(inc))
    assert 0 < second["intervals"][0]["new"] < first["intervals"][0]["new"]
    assert features(intervals=["1d"], warehouse=str(inc))["intervals"][0]["new"] == 0  # nothing new: no work

    _ingest(full, "2026-11-20 22:00")
    features(intervals=["1d"], warehouse=str(full))
    a = load_features(inc, "1d", FEATURE_SET_VERSION)
    b = load_features(full, "1d", FEATURE_SET_VERSION)
    assert len(a) == len(b)
    cols = feature_columns()
    np.testing.assert_allclose(
        a[cols].to_numpy(float), b[cols].to_numpy(float), rtol=1e-9, atol=1e-9, equal_nan=True
    )


def test_intraday_features_get_daily_context_point_in_time(warehouse_path):
    now = "2026-11-20 22:00"
    _ingest(warehouse_path, now)
    _ingest(warehouse_path, now, start="2026-11-16", interval="5m")
    features(warehouse=str(warehouse_path))
    intraday = load_features(warehouse_path, "5m", FEATURE_SET_VERSION)
    daily = load_features(warehouse_path, "1d", FEATURE_SET_VERSION)
    assert intraday[DAILY_CONTEXT_COLUMNS].notna().all().all()
    # Tuesday's bars carry Monday's daily values (Monday closed before Tuesday opened), never Tuesday's own.
    tue = intraday[(intraday["symbol"] == "AAA") & (intraday["ts"].dt.strftime("%Y-%m-%d") == "2026-11-17")]
    mon = daily[(daily["symbol"] == "AAA") & (daily["ts"].dt.strftime("%Y-%m-%d") == "2026-11-16")].iloc[0]
    assert (tue["d_rsi_14"] == mon["rsi_14"]).all()
    runs = query_df(warehouse_path, "SELECT DISTINCT stage FROM dq_results ORDER BY stage")
    assert runs["stage"].tolist() == ["features", "raw_bars"]


def test_features_gate_quarantines_out_of_range_rows(warehouse_path):
    _ingest(warehouse_path, "2026-11-20 22:00")
    features(intervals=["1d"], warehouse=str(warehouse_path))
    frame = load_features(warehouse_path, "1d", FEATURE_SET_VERSION).drop(
        columns=["feature_set_version", "run_id", "computed_at"]
    )
    frame["bar_number"] = frame.groupby("symbol").cumcount()
    bad = frame.copy()
    bad.loc[400, "rsi_14"] = 140.0
    bad.loc[401, "atr_14"] = np.inf
    bad.loc[402, "cdl_doji"] = 3
    result = gate_frame(bad, suite="features", run_id="t", stage="features", derive=features_view)
    assert dict(zip(result.quarantined.index, result.quarantined["rule"], strict=True)) == {
        0: "bounded_range",
        1: "finite_after_warmup",
        2: "pattern_values",
    }
    assert len(result.passed) == len(frame) - 3
    clean = gate_frame(frame, suite="features", run_id="t", stage="features", derive=features_view)
    assert clean.quarantined.empty
    assert not pd.isna(clean.dq_results["success"]).any()
