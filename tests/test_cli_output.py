"""What the commands print: tables that fit 80 and 100 columns (and a pipe), human headers, short
timestamps, fixed precision, --json that is only JSON, --version, help without type names."""

from __future__ import annotations

import io
import json
import re
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from qtrader.cli import app
from tests.warehouse.test_decisions import db  # noqa: F401 - the account fixture (hand-written fills)
from warehouse.db import transaction
from warehouse.ingest import BARS_COLUMNS, IngestRun, write_ingest

runner = CliRunner()
MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d\.\d")
CUT = "…"


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    monkeypatch.delenv("QTRADER_CONFIG", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)


def _invoke(args, columns: int | None = None):
    env = {"COLUMNS": str(columns)} if columns else {}
    out = runner.invoke(app, args, env=env)
    return out


def _widest(text: str) -> int:
    """The widest line, a suggested command excepted: it stays one line to copy (soft-wrapped)."""
    return max((len(line) for line in text.splitlines() if 'qtrader sql "' not in line), default=0)


@pytest.fixture
def ingested(warehouse_path):
    """Daily bars for two symbols, one ingest run (timestamps with microseconds, as the flow writes them)."""
    now = pd.Timestamp("2026-11-20 21:05:07.123456", tz="UTC")
    rows = []
    for s in ("AAA", "BBB"):
        for i, ts in enumerate(pd.date_range("2026-11-02", periods=5, freq="B", tz="UTC")):
            rows.append(
                (s, "1d", ts, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 1000.0, "synthetic", "ingest-r1", now)
            )
    run = IngestRun(
        run_id="ingest-20261120T210507-abc123", source="synthetic", interval="1d", symbols=["AAA", "BBB"],
        started_at=now, finished_at=now + pd.Timedelta(seconds=3.25), rows_in=10, rows_written=10,
    )  # fmt: skip
    write_ingest(
        warehouse_path, run, pd.DataFrame(rows, columns=BARS_COLUMNS), pd.DataFrame(), pd.DataFrame()
    )
    return warehouse_path


@pytest.mark.parametrize("columns", [80, 100])
def test_status_fits_with_whole_headers_and_short_timestamps(ingested, columns):
    out = _invoke(["status", "--warehouse", str(ingested)], columns)
    assert out.exit_code == 0, out.output
    assert _widest(out.stdout) <= columns, out.stdout
    assert CUT not in out.stdout, out.stdout
    assert not MICROSECONDS.search(out.stdout), out.stdout
    assert "2026-11-06" in out.stdout  # the last daily bar as a date
    assert "rows_" not in out.stdout and "inter…" not in out.stdout


def test_piped_output_is_not_fixed_at_140_columns(ingested):
    out = _invoke(["status", "--warehouse", str(ingested)])  # no terminal, no COLUMNS: 80, rich's default
    assert out.exit_code == 0, out.output
    assert _widest(out.stdout) <= 80, out.stdout


@pytest.mark.parametrize("columns", [80, 100])
def test_account_fits_without_cutting_dates_or_money(db, columns):  # noqa: F811 - the fixture
    out = _invoke(["account", "--warehouse", str(db)], columns)
    assert out.exit_code == 0, out.output
    assert _widest(out.stdout) <= columns, out.stdout
    for cut in ("2026-1…", "2026-…", "-366.…"):
        assert cut not in out.stdout
    assert not re.search(r"\d…", out.stdout), out.stdout  # no number or date ends in an ellipsis
    assert "100,020.00" in out.stdout  # equity: money with 2 decimals
    assert "2026-11-06" in out.stdout  # a fill's bar date, whole
    trades = out.stdout.split("Closed trades")[1].split("P&L by module")[0]
    assert re.search(r"\b0\.22\b", trades) and re.search(r"-1\.00\b", trades), trades  # R with 2 decimals
    assert "30.00" not in trades and re.search(r"\b30\b", trades)  # qty as an integer
    modules = out.stdout.split("P&L by module")[1]
    assert "50.0%" in modules, modules  # win rate as a percentage


def test_numbers_are_right_aligned(db):  # noqa: F811
    out = _invoke(["account", "--warehouse", str(db)], 100)
    trades = out.stdout.split("Closed trades")[1].split("P&L by module")[0]
    lines = [line for line in trades.splitlines() if re.search(r"(AAA|BBB)", line)]
    pnl_ends = {re.search(r"(-?[\d,]+\.\d\d)\s+-?\d+\.\d\d\s", line).end(1) for line in lines}
    assert len(pnl_ends) == 1, lines


def test_sql_prints_short_timestamps_and_fixed_decimals(ingested):
    q = "SELECT symbol, ts, close, ingested_at, close / 3 AS third FROM bars ORDER BY symbol, ts LIMIT 3"
    out = _invoke(["sql", q, "--warehouse", str(ingested)], 80)
    assert out.exit_code == 0, out.output
    assert not MICROSECONDS.search(out.stdout), out.stdout
    assert "2026-11-02 00:00" not in out.stdout and "2026-11-02" in out.stdout  # daily bars: dates
    assert "3.50" in out.stdout and "3.5 " not in out.stdout  # one precision for the column


# ----------------------------------------------------------------------------------------------- --json


def _json(args) -> object:
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)  # stdout is JSON and nothing else


def test_status_json(ingested):
    data = _json(["status", "--warehouse", str(ingested)])
    assert data["coverage"][0]["interval"] == "1d" and data["coverage"][0]["bars"] == 10
    assert data["ingest_runs"][0]["run_id"] == "ingest-20261120T210507-abc123"
    assert data["quarantine"] == []


def test_account_json(db):  # noqa: F811
    data = _json(["account", "--warehouse", str(db)])
    assert data["account"]["equity"] == 100020
    assert {t["symbol"] for t in data["trades"]} == {"AAA", "BBB"}
    assert data["positions"][0]["symbol"] == "CCC"


def test_sql_json(ingested):
    data = _json(["sql", "SELECT symbol, count(*) AS n, max(ts) AS last FROM bars GROUP BY 1 ORDER BY 1",
                  "--warehouse", str(ingested)])  # fmt: skip
    assert data == [
        {"symbol": "AAA", "n": 5, "last": "2026-11-06T00:00:00+00:00"},
        {"symbol": "BBB", "n": 5, "last": "2026-11-06T00:00:00+00:00"},
    ]


def test_init_json(tmp_path):
    data = _json(["init", "--warehouse", str(tmp_path / "w.duckdb")])
    assert data["schema_version"] >= 1 and data["warehouse"].endswith("w.duckdb")


def test_scoreboard_json_of_an_empty_board(tmp_path):
    wh = tmp_path / "w.duckdb"
    runner.invoke(app, ["init", "--warehouse", str(wh)])
    data = _json(["scoreboard", "--warehouse", str(wh)])
    assert data == {"interval": "1d", "window": "90d", "modules": []}


def test_health_json(tmp_path):
    wh = tmp_path / "w.duckdb"
    at = pd.Timestamp("2026-11-20 21:00", tz="UTC")
    runner.invoke(app, ["init", "--warehouse", str(wh)])
    with transaction(wh) as con:
        for module, score in (("overall", 71.25), ("direction", 64.5)):
            con.execute("INSERT INTO health (ts, module, score, components, run_id, recorded_at) VALUES "
                        "(?, ?, ?, '{}', 'h1', ?)", [at, module, score, at])  # fmt: skip
    data = _json(["health", "--warehouse", str(wh)])
    assert data["overall"] == 71.25 and data["modules"][0]["module"] == "direction"
    assert data["alerts"] == [] and data["thresholds"] == []


# --------------------------------------------------------------------------------- version and help


def test_version():
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and re.fullmatch(r"qtrader \S+\n", out.stdout), out.stdout


@pytest.mark.parametrize("command", ["ingest", "sql", "account", "backtest", "health"])
def test_help_has_no_type_names(command):
    out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert out.exit_code == 0
    assert "<bool>" not in out.stdout and "<list[str]>" not in out.stdout and "<str>" not in out.stdout
    assert "--json" in out.stdout


# ------------------------------------------------------------------------ flow commands, flows stubbed

INGEST_RESULT = {
    "runs": [
        {"run_id": "ingest-1", "source": "synthetic", "interval": "1d", "symbols": ["AAA", "BBB"], "rows_in": 10,
         "rows_written": 9, "rows_quarantined": 1, "symbols_failed": [], "symbols_blocked": [], "status": "success",
         "fetch_s": 0.5, "gate_s": 1.25, "write_s": 0.25}
    ],
    "findings": ["[1d] AAA: 1 row quarantined (price_not_null)"],
    "dq_docs": None,
    "warehouse": "w.duckdb",
    "flow_run_id": "f-1",
}  # fmt: skip


@pytest.fixture
def stub_flows(monkeypatch):
    """The flow modules replaced by functions that report progress and return a fixed result; no Prefect
    server, no GX context."""
    import sys
    import types

    import qtrader.cli as cli
    from qtrader import progress

    monkeypatch.setattr(cli, "_use_prefect", lambda ctx: None)

    def ingest(**params):
        for i in range(3):
            progress.report("fetch 1d", i, 2)
        print("a stray print from a flow goes to stderr in --json mode", file=sys.stderr)
        return INGEST_RESULT

    def retrain(**params):
        progress.report("train 1d", 1, 1)
        return {"run_id": "retrain-1", "interval": params["interval"], "changes": [], "failed": [],
                "newest_labelled": "2026-11-19", "predictions_written": 0, "predictions_quarantined": 0,
                "train_window_bars": 500}  # fmt: skip

    def decide(**params):
        bars = [
            {"ts": f"2026-11-{d:02d}T00:00:00+00:00", "candidates": 19, "accepted": int(d == 20), "submitted": 0,
             "stop_moves": [], "fills": 0, "equity": 100000.0 - d, "reasons": {"low_confidence": 19}}
            for d in range(1, 21)
        ]  # fmt: skip
        return {"interval": "1d", "broker": "local", "bars": bars}

    monkeypatch.setitem(sys.modules, "flows.decide", types.SimpleNamespace(decide=decide))
    monkeypatch.setitem(sys.modules, "flows.ingest", types.SimpleNamespace(ingest=ingest))
    monkeypatch.setitem(sys.modules, "flows.retrain", types.SimpleNamespace(retrain=retrain))


def test_ingest_json_is_the_flow_result_and_nothing_else(stub_flows, tmp_path):
    out = runner.invoke(
        app, ["ingest", "--source", "synthetic", "--json", "--warehouse", str(tmp_path / "w.db")]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == INGEST_RESULT


@pytest.mark.parametrize("columns", [80, 100])
def test_ingest_table_fits(stub_flows, tmp_path, columns):
    out = _invoke(["ingest", "--source", "synthetic", "--warehouse", str(tmp_path / "w.db")], columns)
    assert out.exit_code == 0, out.output
    assert _widest(out.stdout) <= columns and CUT not in out.stdout, out.stdout
    assert "quarantined" in out.stdout and "written" in out.stdout and "success" in out.stdout
    assert ("2.0" in out.stdout) is (columns == 100), out.stdout  # seconds (fetch + gate + write): low value


def test_retrain_json(stub_flows, tmp_path):
    out = runner.invoke(app, ["retrain", "--json", "--warehouse", str(tmp_path / "w.db")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["run_id"] == "retrain-1"


def test_decide_summarises_earlier_bars_and_json_has_them_all(stub_flows, tmp_path):
    import qtrader.cli as cli

    wh = str(tmp_path / "w.db")
    runner.invoke(app, ["init", "--warehouse", wh])
    data = json.loads(runner.invoke(app, ["decide", "--json", "--warehouse", wh]).stdout)
    assert len(data["bars"]) == 20
    out = _invoke(["decide", "--warehouse", wh], 80)
    assert out.exit_code == 0, out.output
    assert "99,980.00" in out.stdout and "2026-11-20" in out.stdout and "00:00" not in out.stdout
    # The demo shows the last 10 bars and counts the earlier ones.
    from rich.console import Console

    monkeypatch_console = Console(width=80, record=True, file=io.StringIO())
    cli.console, saved = monkeypatch_console, cli.console
    try:
        cli._print_decide(sys.modules["flows.decide"].decide(), max_bars=10)
    finally:
        cli.console = saved
    text = monkeypatch_console.export_text()
    assert "10 earlier bars not shown: 190 candidates, 0 accepted" in text
    assert "2026-11-10" not in text and "2026-11-11" in text
