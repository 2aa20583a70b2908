"""Run records (qtrader/runs.py, pipeline_runs): a run that dies is marked at the next start, one that fails
before fetching is listed with the others by `qtrader status`. The signal cases: tests/test_cli_signals.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from qtrader.cli import app
from qtrader.runs import process_alive, reap_crashed, recorded
from warehouse.db import Warehouse, query_df, transaction

runner = CliRunner()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_process_is_alive_only_while_it_runs_and_only_as_itself():
    me = os.getpid()
    import psutil

    started = psutil.Process(me).create_time()
    assert process_alive(me, started) and process_alive(me, None)
    assert not process_alive(me, started - 3600)  # the pid now belongs to another process
    assert not process_alive(_dead_pid(), None)


def _running(db, run_id: str, flow: str, pid: int, interval: str, stage: str) -> None:
    with transaction(db) as con:
        con.execute(
            "INSERT INTO pipeline_runs (run_id, flow, interval, status, stage, host, pid, parameters, started_at) "
            "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            [run_id, flow, interval, stage, socket.gethostname(), pid,
             json.dumps({"source": "synthetic", "symbols": ["AAA"]}), pd.Timestamp("2026-11-20", tz="UTC")],
        )  # fmt: skip


def test_the_next_start_marks_the_runs_of_dead_processes_crashed(tmp_path):
    db = Warehouse(tmp_path / "w.duckdb")
    _running(db, "ingest-dead", "ingest", _dead_pid(), "1d", "fetch")
    _running(db, "ingest-dead-recorded", "ingest", _dead_pid(), "1d", "recorded")
    _running(db, "decide-dead", "decide", _dead_pid(), "5m", "start")
    _running(db, "decide-alive", "decide", os.getpid(), "5m", "start")
    with recorded(db, "decide", "decide-new", interval="1d") as run:
        run.outcome("refused", "no champions")
    got = query_df(db, "SELECT run_id, status FROM pipeline_runs ORDER BY run_id")
    assert dict(zip(got.run_id, got.status, strict=True)) == {
        "decide-alive": "running",
        "decide-dead": "crashed",
        "decide-new": "refused",
        "ingest-dead": "crashed",
        "ingest-dead-recorded": "crashed",
    }
    # the interval in flight gets its ingest_runs row; an interval already recorded does not get a second
    rows = query_df(db, "SELECT run_id, status, interval, source, symbols FROM ingest_runs")
    assert rows[["run_id", "status", "interval", "source"]].values.tolist() == [
        ["ingest-dead", "crashed", "1d", "synthetic"]
    ]
    assert reap_crashed(db) == []  # once


def test_an_exception_or_a_signal_closes_the_run(tmp_path):
    from qtrader.interrupts import Stopped

    db = Warehouse(tmp_path / "w.duckdb")
    with pytest.raises(ValueError), recorded(db, "ingest", "ingest-bad", interval="1d") as run:
        run.stage("fetch", "1d")
        raise ValueError("no such folder\nsecond line")
    secret = {"overrides": {"alpaca_api_key": "AKXYZ", "alpaca": {"secret_block": "b", "url_override": "u"}}}
    with pytest.raises(Stopped), recorded(db, "decide", "decide-stopped", interval="5m", parameters=secret):
        raise Stopped(15)
    got = query_df(db, "SELECT run_id, status, message FROM pipeline_runs ORDER BY run_id")
    assert got.values.tolist() == [
        ["decide-stopped", "interrupted", "stopped by SIGTERM"],
        ["ingest-bad", "failed", "ValueError: no such folder"],
    ]
    stored = query_df(db, "SELECT parameters FROM pipeline_runs WHERE run_id = 'decide-stopped'")[
        "parameters"
    ][0]
    assert "AKXYZ" not in stored and json.loads(stored)["overrides"]["alpaca"]["url_override"] == "u"


@pytest.mark.slow
def test_an_ingest_that_fails_before_fetching_is_listed_by_status(prefect_harness, tmp_path):
    from flows.ingest import ingest

    db = tmp_path / "w.duckdb"
    with pytest.raises(Exception, match="does not exist"):
        ingest(source="files", path=str(tmp_path / "nope"), warehouse=str(db))
    rows = query_df(db, "SELECT status, source, interval, message FROM ingest_runs")
    assert rows[["status", "source"]].values.tolist() == [["failed", "files"]]
    assert "does not exist" in rows["message"][0]
    out = runner.invoke(app, ["status", "--warehouse", str(db)])
    assert out.exit_code == 0, out.output
    assert "failed" in out.output and "files" in out.output


@pytest.mark.slow
def test_the_next_flow_marks_a_killed_runs_prefect_flow_run_crashed(prefect_harness, tmp_path):
    """kill -9 leaves the Prefect flow run Running (nothing reports it); the next flow on the warehouse does."""
    from prefect import get_client
    from prefect.states import Running

    from flows.ingest import ingest

    with get_client(sync_client=True) as client:
        from prefect import flow

        @flow(name="killed-ingest")
        def killed() -> None:
            pass

        run = client.create_flow_run(killed, name="killed", state=Running())
    db = tmp_path / "w.duckdb"
    _running(db, "ingest-killed", "ingest", _dead_pid(), "1d", "fetch")
    with transaction(db) as con:
        con.execute("UPDATE pipeline_runs SET flow_run_id = ? WHERE run_id = 'ingest-killed'", [str(run.id)])
    with pytest.raises(Exception, match="does not exist"):
        ingest(source="files", path=str(tmp_path / "nope"), warehouse=str(db))
    assert (
        query_df(db, "SELECT status FROM pipeline_runs WHERE run_id = 'ingest-killed'")["status"][0]
        == "crashed"
    )
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.type.value == "CRASHED", state
    assert "ended without closing the run" in state.message
