"""Features are stored in time order (interval, ts, symbol): the decision bar reads one timestamp's rows
(``warehouse.decisions.bar_frame``), and DuckDB skips the row groups whose ts zonemap misses it only when
the rows of a timestamp sit together. Stored by symbol, every row group spans every timestamp."""

from __future__ import annotations

import duckdb
import pandas as pd

import warehouse.db as db
from models.features import FEATURE_SET_VERSION, compute_features_many
from sources.base import BAR_COLUMNS, FetchRequest
from sources.synthetic import SyntheticSource
from warehouse.db import apply_migrations, insert_frame, query_df
from warehouse.features import write_features


def _features() -> pd.DataFrame:
    start, end = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-03-01", tz="UTC")
    bars = SyntheticSource(seed=3).fetch(FetchRequest(["AAA", "BBB", "CCC"], "1d", start, end)).bars
    bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)[BAR_COLUMNS]
    now = pd.Timestamp("2026-03-02", tz="UTC")
    feats = compute_features_many(bars).assign(
        feature_set_version=FEATURE_SET_VERSION, run_id="r", computed_at=now
    )
    return feats.sort_values(["symbol", "ts"]).reset_index(drop=True)  # as computed: by symbol


def _stored_order(path) -> list[tuple]:
    rows = query_df(path, "SELECT interval, ts, symbol FROM features ORDER BY rowid")
    return list(rows.itertuples(index=False, name=None))


def test_written_features_are_stored_in_time_order(warehouse_path):
    write_features(warehouse_path, _features(), pd.DataFrame(), pd.DataFrame())
    order = _stored_order(warehouse_path)
    assert order == sorted(order)


def test_migration_014_stores_older_features_in_time_order(warehouse_path, monkeypatch):
    feats = _features()
    older = [m for m in db.migrations() if m[0] < 14]
    monkeypatch.setattr(db, "migrations", lambda: older)
    con = duckdb.connect(str(warehouse_path))
    apply_migrations(con)
    insert_frame(con, "features", feats)  # by symbol, as written before
    before = con.execute("SELECT * FROM features ORDER BY symbol, interval, ts").df()
    monkeypatch.undo()
    assert apply_migrations(con) == [14]
    after = con.execute("SELECT * FROM features ORDER BY symbol, interval, ts").df()
    order = con.execute("SELECT interval, ts, symbol FROM features ORDER BY rowid").fetchall()
    con.close()
    assert order == sorted(order)
    pd.testing.assert_frame_equal(after, before)


def test_insert_frame_replaces_by_keys_and_appends_in_order():
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR, ts INTEGER, v INTEGER, PRIMARY KEY (k, ts))")
    insert_frame(con, "t", pd.DataFrame({"k": ["a", "b"], "ts": [1, 1], "v": [0, 0]}))
    incoming = pd.DataFrame({"k": ["b", "a", "b"], "ts": [2, 2, 1], "v": [1, 1, 1]})
    assert insert_frame(con, "t", incoming, keys=("k", "ts"), order_by=("ts", "k")) == 3
    rows = con.execute("SELECT k, ts, v FROM t ORDER BY rowid").fetchall()
    # a's ts 1 kept; b's ts 1 replaced; the new rows appended sorted by (ts, k)
    assert rows == [("a", 1, 0), ("b", 1, 1), ("a", 2, 1), ("b", 2, 1)]
