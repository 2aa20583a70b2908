"""A warehouse holding a synthetic market's gated bars and their features, built without the flows (fast).

Bars come from ``SyntheticSource`` and go in through ``write_ingest``; features are
``compute_features_many`` on those bars, written with the features stage's ``write_features``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.features import FEATURE_SET_VERSION, compute_features_many
from sources.base import BAR_COLUMNS, FetchRequest
from sources.synthetic import SyntheticSource
from warehouse.features import write_features
from warehouse.ingest import IngestRun, write_ingest

END = pd.Timestamp("2026-10-30", tz="UTC")


def synthetic_bars(
    n_symbols: int, years: float, *, seed: int = 7, signal_strength: float = 0.12, interval: str = "1d"
) -> pd.DataFrame:
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    start = END - pd.Timedelta(days=int(365.25 * years))
    src = SyntheticSource(seed=seed, signal_strength=signal_strength)
    bars = src.fetch(FetchRequest(symbols, interval, start, END)).bars
    return bars.sort_values(["symbol", "ts"]).reset_index(drop=True)[BAR_COLUMNS]


def build_warehouse(path: str | Path, bars: pd.DataFrame) -> Path:
    """Write ``bars`` and their features (feature set v1) into a new warehouse at ``path``."""
    now = pd.Timestamp("2026-10-31", tz="UTC")
    run = IngestRun(
        run_id="ingest-test",
        source="synthetic",
        interval=str(bars["interval"].iloc[0]),
        symbols=sorted(bars["symbol"].unique()),
        started_at=now,
        finished_at=now,
        rows_in=len(bars),
        rows_written=len(bars),
    )
    rows = bars.assign(source="synthetic", run_id=run.run_id, ingested_at=now)
    empty = pd.DataFrame()
    write_ingest(path, run, rows, empty.reindex(columns=["run_id"]), empty.reindex(columns=["run_id"]))
    features = compute_features_many(bars).assign(
        feature_set_version=FEATURE_SET_VERSION, run_id="features-test", computed_at=now
    )
    write_features(path, features, pd.DataFrame(), pd.DataFrame())
    return Path(path)
