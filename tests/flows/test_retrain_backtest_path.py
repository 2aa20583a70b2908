"""The backtest's retrain path (split fits reused across retrains, members in threads, the in-memory
predictions gate) on a trending market with one market-wide regime path: the same models, predictions and
checks as the live path (one module after another, every split fitted, Great Expectations)."""

from __future__ import annotations

import pandas as pd
from prefect import flow

from flows.retrain import retrain, retrain_body
from models.features import FEATURE_SET_VERSION, compute_features_many
from models.training import FitCache
from sources.base import BAR_COLUMNS, FetchRequest
from sources.synthetic import SyntheticSource
from tests.flows._market import END
from tests.flows.conftest import data_dir
from warehouse.db import query_df
from warehouse.features import write_features
from warehouse.ingest import IngestRun, write_ingest

# Small walk-forward so a few retrains are quick: test blocks of EVERY bars, so split k of a retrain is
# split k + 1 of the one before (reused from the second retrain on).
EVERY, RETRAINS = 20, 3
WALK = {"n_splits": 3, "test_window_bars_daily": EVERY, "train_window_bars_daily": 250, "min_train_bars": 100}
BACKTEST = {"retrain": {**WALK, "predictions_gate": "in_memory", "module_threads": 2}}


def _market() -> tuple[pd.DataFrame, pd.DataFrame]:
    """4 symbols, 2.6 years: a strong upward drift from the middle on, and regimes shared by the market."""
    src = SyntheticSource(seed=11, trend=0.6, market_regime=True, trend_start=END - pd.Timedelta(days=470))
    start = END - pd.Timedelta(days=int(365.25 * 2.6))
    bars = src.fetch(FetchRequest([f"R{i}" for i in range(4)], "1d", start, END)).bars
    bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)[BAR_COLUMNS]
    return bars, compute_features_many(bars)


def _append(db, bars: pd.DataFrame, features: pd.DataFrame, lo, hi, step: int) -> None:
    """The bars (and their features) with ts in (lo, hi], as ingest and the features flow store them."""
    now = pd.Timestamp("2026-10-31", tz="UTC")
    rows = bars[(bars["ts"] > lo) & (bars["ts"] <= hi)]
    run = IngestRun(
        run_id=f"ingest-{step}", source="synthetic", interval="1d", symbols=sorted(rows["symbol"].unique()),
        started_at=now, finished_at=now, rows_in=len(rows), rows_written=len(rows),
    )  # fmt: skip
    empty = pd.DataFrame().reindex(columns=["run_id"])
    write_ingest(db, run, rows.assign(source="synthetic", run_id=run.run_id, ingested_at=now), empty, empty)
    feats = features[(features["ts"] > lo) & (features["ts"] <= hi)]
    write_features(
        db, feats.assign(feature_set_version=FEATURE_SET_VERSION, run_id=f"features-{step}", computed_at=now),
        pd.DataFrame(), pd.DataFrame(),
    )  # fmt: skip


@flow(name="backtest-retrains")
def _backtest_retrain(db: str, now: str, fits: FitCache) -> dict:
    return retrain_body("1d", None, db, now, BACKTEST, fits)


def test_backtest_retrains_on_a_trending_regime_market_match_the_live_path(tmp_path, prefect_harness):
    bars, features = _market()
    stamps = sorted(bars["ts"].unique())
    cuts = [stamps[-1 - EVERY * (RETRAINS - 1 - j)] for j in range(RETRAINS)]
    live, backtest = tmp_path / "live" / "warehouse.duckdb", tmp_path / "backtest" / "warehouse.duckdb"
    fits = FitCache(keep=1)  # test window / cadence
    lo = stamps[0] - pd.Timedelta(days=1)
    for j, cut in enumerate(cuts):
        for db in (live, backtest):
            db.parent.mkdir(exist_ok=True)
            _append(db, bars, features, lo, cut, j)
        now = (cut + pd.Timedelta(hours=22)).isoformat()
        with data_dir(live.parent / "data"):
            retrain(interval="1d", warehouse=str(live), now=now, overrides={"retrain": WALK})
        with data_dir(backtest.parent / "data"):
            out = _backtest_retrain(str(backtest), now, fits)
        assert out["dq_docs"] is None
        lo = cut
    same = ["module", "version", "train_start", "train_end", "valid_start", "valid_end", "params", "config_hash",
            "data_hash", "metrics", "calibration", "status", "status_reason", "artifact_sha256"]  # fmt: skip
    registry = "SELECT * FROM model_registry ORDER BY module, version"
    pd.testing.assert_frame_equal(query_df(backtest, registry)[same], query_df(live, registry)[same])
    statuses = query_df(live, registry)["status"]
    assert len(statuses) == RETRAINS * 7 and (statuses == "champion").sum() == 7
    predictions = "SELECT * EXCLUDE (run_id, predicted_at, predict_latency_ms) FROM predictions ORDER BY ALL"
    pd.testing.assert_frame_equal(query_df(backtest, predictions), query_df(live, predictions))
    dq = (
        "SELECT * EXCLUDE (run_id, validated_at) FROM dq_results WHERE stage = 'predictions' "
        "ORDER BY validated_at, expectation, column_name"
    )
    assert len(query_df(live, dq)) > 5 * RETRAINS
    pd.testing.assert_frame_equal(query_df(backtest, dq), query_df(live, dq))
    # every retrain after the first reused the splits that moved (all modules but the ensemble)
    assert fits.hits == (RETRAINS - 1) * (WALK["n_splits"] - 1) * 6, (fits.hits, fits.fits)
