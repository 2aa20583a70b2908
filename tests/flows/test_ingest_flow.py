"""The ingest flow end to end on a real DuckDB file, real GX and a temporary Prefect server."""

import pandas as pd
import pytest

from flows.ingest import ingest
from warehouse.db import query_df

NOW = "2026-11-20 22:00"  # after the close of Friday 2026-11-20
SYMBOLS = ["AAA", "BBB", "CCC"]
DAILY = dict(source="synthetic", symbols=SYMBOLS, interval="1d", start="2026-06-01", now=NOW)


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


def _bars(db):
    return query_df(db, "SELECT symbol, interval, ts, open, high, low, close, volume FROM bars ORDER BY ALL")


def test_clean_ingest_writes_every_row_and_records_the_run(warehouse_path):
    out = ingest(**DAILY, warehouse=str(warehouse_path))
    (run,) = out["runs"]
    bars = _bars(warehouse_path)
    assert run["status"] == "success"
    assert run["rows_in"] == run["rows_written"] == len(bars) > 3 * 100
    assert run["rows_quarantined"] == 0
    assert set(bars["symbol"]) == set(SYMBOLS)
    runs = query_df(warehouse_path, "SELECT * FROM ingest_runs")
    assert runs["rows_written"].tolist() == [len(bars)]
    dq = query_df(warehouse_path, "SELECT * FROM dq_results")
    assert len(dq) > 5 and dq["success"].all()


def test_reingest_is_idempotent(warehouse_path):
    ingest(**DAILY, warehouse=str(warehouse_path))
    first = _bars(warehouse_path)
    ingest(**DAILY, warehouse=str(warehouse_path))
    pd.testing.assert_frame_equal(first, _bars(warehouse_path))
    assert query_df(warehouse_path, "SELECT count(*) AS n FROM ingest_runs")["n"][0] == 2


def test_intraday_and_daily_in_one_run(warehouse_path):
    out = ingest(
        source="synthetic", symbols=["AAA"], start="2026-11-16", now=NOW, warehouse=str(warehouse_path)
    )
    assert sorted(r["interval"] for r in out["runs"]) == ["1d", "5m"]
    per = query_df(
        warehouse_path, "SELECT interval, count(*) AS n FROM bars GROUP BY interval ORDER BY interval"
    )
    assert per["n"].tolist() == [5, 5 * 78]  # Mon..Fri sessions, 78 five-minute bars each


# fault kind -> (rule, effect): quarantine rows, block the symbol, or record a warning and keep the rows
FAULTS = {
    "nan_price": ("price_not_null", "quarantine"),
    "negative_price": ("price_positive", "quarantine"),
    "high_below": ("high_ge_open_close", "quarantine"),
    "low_above": ("low_le_open_close", "quarantine"),
    "negative_volume": ("volume_non_negative", "quarantine"),
    "duplicate_ts": ("duplicate_timestamp", "quarantine"),
    "out_of_order": ("timestamp_decreasing", "quarantine"),
    "outside_session": ("outside_session", "quarantine"),
    "stale": ("stale_last_bar", "block"),
    "gap": ("gap_beyond_tolerance", "warning"),
    "big_move": ("move_beyond_limit", "warning"),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_each_fault_is_caught_by_its_rule_and_earlier_data_stays_intact(warehouse_path, kind):
    rule, effect = FAULTS[kind]
    db = str(warehouse_path)
    ingest(**DAILY, warehouse=db)
    before = _bars(warehouse_path)

    out = ingest(**DAILY, warehouse=db, faults=[f"{kind}:BBB"])
    (run,) = out["runs"]
    q = query_df(db, "SELECT * FROM quarantine WHERE run_id = ?", [run["run_id"]])
    dq = query_df(db, "SELECT rule, success FROM dq_results WHERE run_id = ?", [run["run_id"]])
    assert not dq.loc[dq["rule"] == rule, "success"].all(), f"{rule} should have failed"
    assert dq.loc[dq["rule"] != rule, "success"].all() or kind in {"gap", "stale", "out_of_order", "big_move"}
    after = _bars(warehouse_path)
    untouched = after[after["symbol"] != "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(untouched, before[before["symbol"] != "BBB"].reset_index(drop=True))
    assert any(line.startswith("[1d] BBB") and rule in line for line in out["findings"])

    if effect == "quarantine":
        assert len(q) >= 1 and set(q["rule"]) == {rule} and set(q["symbol"]) == {"BBB"}
        assert run["rows_written"] == run["rows_in"] - len(q)
        pd.testing.assert_frame_equal(after, before)  # the bad row never replaced the good one
    elif effect == "block":
        assert run["symbols_blocked"] == ["BBB"] and run["status"] == "partial"
        assert set(q["rule"]) == {rule} and len(q) == run["rows_in"] - run["rows_written"]
        pd.testing.assert_frame_equal(after, before)
    else:
        assert q.empty and run["rows_written"] == run["rows_in"]


def test_unknown_and_empty_symbols_are_reported_and_others_load(warehouse_path):
    out = ingest(**{**DAILY, "symbols": ["AAA", "UNKNOWN1", "EMPTY1"]}, warehouse=str(warehouse_path))
    (run,) = out["runs"]
    assert run["symbols_failed"] == ["EMPTY1", "UNKNOWN1"]
    assert run["status"] == "partial"
    assert set(_bars(warehouse_path)["symbol"]) == {"AAA"}


def test_files_source_loads_a_folder(warehouse_path, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "goog.csv").write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,10,11,9,10.5,10.5,1000\n2024-01-03,10.5,11.5,10,11,11,1200\n"
        "2024-01-04,11,11.2,9.5,10,10,900\n"
    )
    (folder / "bad.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-13-45,1,2,0.5,1.5,10\n"
    )
    out = ingest(source="files", path=str(folder), warehouse=str(warehouse_path))
    (run,) = out["runs"]
    assert run["interval"] == "1d" and run["rows_written"] == 3
    assert any("bad.csv line 3" in line for line in out["findings"])
    assert _bars(warehouse_path)["symbol"].unique().tolist() == ["GOOG"]


def test_a_failed_run_leaves_an_artifact_explaining_why(warehouse_path, tmp_path):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from sources.base import SourceError

    state = ingest(
        source="files", path=str(tmp_path / "missing"), warehouse=str(warehouse_path), return_state=True
    )
    assert state.is_failed()
    with pytest.raises(SourceError):
        state.result()

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-failure"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            )

    (artifact,) = asyncio.run(artifacts())
    assert "does not exist or is not a folder" in artifact.data


def test_retry_condition_retries_only_transient_errors():
    from prefect.states import Completed, Failed

    from sources.base import SourceError, TransientSourceError
    from tasks.retry import retry_on

    condition = retry_on(TransientSourceError)
    assert condition(None, None, Failed(data=TransientSourceError("connection reset")))
    assert not condition(None, None, Failed(data=SourceError("no such folder")))
    assert not condition(None, None, Failed(data=ValueError("bad input")))
    assert not condition(None, None, Completed(data=1))
