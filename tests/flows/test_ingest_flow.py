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


# --------------------------------------------------------------- the files source as a user runs it


def _history_file(folder, name: str, start: str, end: str, date_format: str = "%Y-%m-%d") -> int:
    """A clean daily file on real NYSE sessions; returns its row count."""
    from qtrader.calendar import sessions

    days = sessions(start, end)
    close = 100 * (1.0005 ** pd.RangeIndex(len(days)))
    lines = ["Date,Open,High,Low,Close,Volume"] + [
        f"{d.strftime(date_format)},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},1000"
        for d, c in zip(days, close, strict=True)
    ]
    (folder / name).write_text("\n".join(lines) + "\n")
    return len(days)


def _cli(*args: str):
    from typer.testing import CliRunner

    from qtrader.cli import app

    return CliRunner().invoke(app, list(args))


def test_history_files_ending_in_different_years_load_whole(warehouse_path, tmp_path):
    folder = tmp_path / "history"
    folder.mkdir()
    n_old = _history_file(folder, "old.csv", "2010-01-04", "2010-12-31")
    n_new = _history_file(folder, "new.csv", "2010-01-04", "2012-12-31")
    out = _cli("ingest", "--path", str(folder), "--warehouse", str(warehouse_path))
    assert out.exit_code == 0, out.output
    counts = query_df(warehouse_path, "SELECT symbol, count(*) AS n FROM bars GROUP BY ALL ORDER BY ALL")
    assert counts.to_dict("records") == [{"symbol": "NEW", "n": n_new}, {"symbol": "OLD", "n": n_old}]
    assert query_df(warehouse_path, "SELECT count(*) AS n FROM quarantine")["n"].item() == 0

    # Stated as of the end of 2012, the 2010 file is stale: blocked, and the run is partial (exit 3).
    out = _cli(
        "ingest", "--path", str(folder), "--as-of", "2012-12-31", "--warehouse", str(tmp_path / "b.duckdb")
    )
    assert out.exit_code == 3, out.output
    assert "OLD: BLOCKED by stale_last_bar" in out.output and "before 2012-12-31" in out.output
    assert "partial: 1 (OLD) blocked by the gate" in out.output


def test_a_partial_ingest_exits_3_and_keeps_the_good_files(warehouse_path, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    n = _history_file(folder, "aaa.csv", "2024-01-02", "2024-03-28")
    _history_file(folder, "bbb.csv", "2024-01-02", "2024-03-28")
    (folder / "bad.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-13-45,1,2,0.5,1.5,10\n"
    )
    out = _cli("ingest", "--path", str(folder), "--warehouse", str(warehouse_path))
    assert out.exit_code == 3, out.output
    assert "partial: 1 (BAD) failed" in out.output and "bad.csv line 3" in out.output
    assert query_df(warehouse_path, "SELECT count(*) AS n FROM bars")["n"].item() == 2 * n
    assert query_df(warehouse_path, "SELECT status FROM ingest_runs")["status"].tolist() == ["partial"]


def test_ambiguous_day_month_dates_are_refused_until_the_format_is_given(warehouse_path, tmp_path):
    folder = tmp_path / "eu"
    folder.mkdir()
    # 2-12 December 2024 written day/month: every day is 12 or less, so each date also reads as month/day.
    n = _history_file(folder, "vod.csv", "2024-12-02", "2024-12-12", "%d/%m/%Y")
    _history_file(folder, "aaa.csv", "2024-12-02", "2024-12-12")
    out = _cli("ingest", "--path", str(folder), "--warehouse", str(warehouse_path))
    assert out.exit_code == 3, out.output
    assert "vod.csv: ambiguous day/month order" in out.output
    assert query_df(warehouse_path, "SELECT DISTINCT symbol FROM bars")["symbol"].tolist() == ["AAA"]

    out = _cli(
        "ingest", "--path", str(folder), "--date-format", "%d/%m/%Y", "--warehouse", str(warehouse_path)
    )
    assert out.exit_code == 0, out.output
    vod = query_df(
        warehouse_path,
        "SELECT min(ts) AS first, max(ts) AS last, count(*) AS n FROM bars WHERE symbol = 'VOD'",
    )
    assert vod.to_dict("records") == [
        {"first": pd.Timestamp("2024-12-02", tz="UTC"), "last": pd.Timestamp("2024-12-12", tz="UTC"), "n": n}
    ]


def test_ingest_reports_each_stage(warehouse_path):
    """What the CLI's progress bars show: fetch, the gate's passes, the write, then the Data Docs."""
    from qtrader import progress

    seen: list[tuple[str, int, int]] = []
    with progress.listening(lambda stage, done, total: seen.append((stage, done, total))):
        ingest(**DAILY, warehouse=str(warehouse_path))
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert stages == ["fetch 1d", "gate 1d", "write 1d", "data docs"]
    assert seen[0] == ("fetch 1d", 0, 3) and ("fetch 1d", 3, 3) in seen
    assert [r for r in seen if r[0] == "gate 1d"][-1] == ("gate 1d", 3, 3)
