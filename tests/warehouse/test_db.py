import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from warehouse.db import (
    LockPolicy,
    Warehouse,
    WarehouseBusy,
    WarehouseMissing,
    connect,
    migrations,
    query_df,
    transaction,
)
from warehouse.ingest import BARS_COLUMNS, IngestRun, write_ingest

ROOT = Path(__file__).resolve().parents[2]


def _bars(symbols=("AAA", "BBB"), days=5, close=10.0, run_id="r1"):
    rows = []
    for s in symbols:
        for i, ts in enumerate(pd.date_range("2024-01-02", periods=days, freq="B", tz="UTC")):
            c = close + i
            rows.append((s, "1d", ts, c, c + 1, c - 1, c, 1000.0, "test", run_id, pd.Timestamp.now(tz="UTC")))
    return pd.DataFrame(rows, columns=BARS_COLUMNS)


def _run(run_id="r1", rows=0):
    now = pd.Timestamp.now(tz="UTC")
    return IngestRun(
        run_id=run_id,
        source="test",
        interval="1d",
        symbols=["AAA", "BBB"],
        started_at=now,
        finished_at=now,
        rows_in=rows,
        rows_written=rows,
    )


def test_migrations_recorded_once(warehouse_path):
    with connect(warehouse_path) as con:
        first = con.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    with connect(warehouse_path) as con:
        again = con.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    assert first == again == [(v, n) for v, n, _ in migrations()]
    tables = set(query_df(warehouse_path, "SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"bars", "ingest_runs", "quarantine", "dq_results", "schema_version"} <= tables


def test_read_only_open_of_missing_warehouse_is_clear(tmp_path):
    with pytest.raises(WarehouseMissing, match="qtrader init"):
        with connect(tmp_path / "nope.duckdb", read_only=True):
            pass


def test_upsert_is_idempotent(warehouse_path):
    write_ingest(warehouse_path, _run(), _bars(), pd.DataFrame(), pd.DataFrame())
    write_ingest(warehouse_path, _run("r2"), _bars(run_id="r2", close=20.0), pd.DataFrame(), pd.DataFrame())
    df = query_df(warehouse_path, "SELECT * FROM bars ORDER BY symbol, ts")
    assert len(df) == 10
    assert df["close"].min() == 20.0  # the second ingest replaced the same keys
    assert set(df["run_id"]) == {"r2"}


def test_failed_write_leaves_warehouse_untouched(warehouse_path):
    write_ingest(warehouse_path, _run(), _bars(), pd.DataFrame(), pd.DataFrame())
    before = query_df(warehouse_path, "SELECT * FROM bars ORDER BY symbol, ts")
    broken_quarantine = pd.DataFrame({"run_id": ["r2"]})  # missing columns: fails after the bars upsert
    with pytest.raises(KeyError):
        write_ingest(
            warehouse_path, _run("r2"), _bars(run_id="r2", close=99.0), broken_quarantine, pd.DataFrame()
        )
    after = query_df(warehouse_path, "SELECT * FROM bars ORDER BY symbol, ts")
    pd.testing.assert_frame_equal(before, after)
    assert query_df(warehouse_path, "SELECT count(*) AS n FROM ingest_runs")["n"][0] == 1


def test_error_inside_transaction_rolls_back(warehouse_path):
    write_ingest(warehouse_path, _run(), _bars(), pd.DataFrame(), pd.DataFrame())
    with pytest.raises(duckdb.Error):
        with transaction(warehouse_path) as con:
            con.execute("DELETE FROM bars")
            con.execute("INSERT INTO bars (symbol) VALUES ('X')")  # NOT NULL violation
    assert query_df(warehouse_path, "SELECT count(*) AS n FROM bars")["n"][0] == 10


def test_duplicate_keys_in_a_batch_are_refused(warehouse_path):
    bars = _bars()
    with pytest.raises(ValueError, match="duplicate"):
        write_ingest(warehouse_path, _run(), pd.concat([bars, bars.iloc[:1]]), pd.DataFrame(), pd.DataFrame())


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    code = (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
        " time.sleep(float(sys.argv[2])); con.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_reader_waits_for_a_held_lock_then_reads(warehouse_path):
    write_ingest(warehouse_path, _run(), _bars(), pd.DataFrame(), pd.DataFrame())
    holder = _hold_lock(warehouse_path, 1.5)
    try:
        started = time.monotonic()
        df = Warehouse(warehouse_path, LockPolicy(timeout_s=30)).query_df("SELECT count(*) AS n FROM bars")
        assert df["n"][0] == 10
        assert time.monotonic() - started > 0.5  # it really waited for the other process
    finally:
        holder.wait(timeout=30)


def test_lock_held_past_deadline_raises_warehouse_busy(warehouse_path):
    write_ingest(warehouse_path, _run(), _bars(), pd.DataFrame(), pd.DataFrame())
    holder = _hold_lock(warehouse_path, 5)
    try:
        with pytest.raises(WarehouseBusy, match="stayed locked"):
            with Warehouse(warehouse_path, LockPolicy(timeout_s=0.5, backoff_initial_s=0.05)).connect():
                pass
    finally:
        holder.wait(timeout=30)


def test_two_processes_write_and_read_without_lock_errors(warehouse_path):
    with connect(warehouse_path):
        pass  # create + migrate once
    n = 25
    procs = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_hammer.py")), str(warehouse_path), name, str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("P1", "P2")
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        assert out.startswith("done")
    counts = query_df(
        warehouse_path, "SELECT symbol, count(*) AS n FROM bars GROUP BY symbol ORDER BY symbol"
    )
    assert counts.to_dict("list") == {"symbol": ["P1", "P2"], "n": [n, n]}


def test_a_session_opens_the_file_once_and_takes_the_writer_guard_once(warehouse_path, monkeypatch):
    import warehouse.db as db

    guards, opens = [], []
    real_open = db.open_with_retry

    def counting_open(path, read_only, *args, **kwargs):
        opens.append(read_only)
        return real_open(path, read_only, *args, **kwargs)

    @contextmanager
    def guard(_wh):
        guards.append(1)
        yield

    monkeypatch.setattr(db, "open_with_retry", counting_open)
    wh = Warehouse(warehouse_path, writer=guard)
    with wh.session():
        write_ingest(wh, _run(rows=10), _bars(), pd.DataFrame(), pd.DataFrame())
        assert len(query_df(wh, "SELECT * FROM bars")) == 10
        with pytest.raises(RuntimeError), wh.transaction() as con:  # a failed unit of work still rolls back
            con.execute("DELETE FROM bars")
            raise RuntimeError("boom")
        with connect(wh, read_only=True) as con:
            assert con.execute("SELECT count(*) FROM bars").fetchall()[0][0] == 10
    assert (opens, guards) == ([False], [1])
    with wh.read() as con:  # after the session: short connections again
        assert con.execute("SELECT count(*) FROM bars").fetchall()[0][0] == 10
    assert opens == [False, True]
