"""Arguments as a user types them: refused before any flow, Prefect or Great Expectations work starts,
with one line naming the argument and what is allowed, exit code 2.

The flows and the heavy libraries are made unimportable for these tests: a command that reached them
would fail with an ImportError (exit 1), not the clean refusal (exit 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qtrader.cli import app
from warehouse.db import transaction
from warehouse.models import REGISTRY_COLUMNS

runner = CliRunner()
HEAVY = ["prefect", "great_expectations", "flows.ingest", "flows.backtest", "flows.decide", "flows.retrain",
         "flows.benchmark", "flows.features", "flows.health"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_config(monkeypatch):
    monkeypatch.delenv("QTRADER_CONFIG", raising=False)  # --config sets it for the process: undone after


@pytest.fixture
def no_flows(monkeypatch):
    for name in HEAVY:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def _refused(args: list[str]) -> str:
    out = runner.invoke(app, args)
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ingest", "--source", "bogus"], ["--source", "synthetic, yfinance, files"]),
        (["ingest", "--symbols", "AAPL,A B"], ["--symbols", "'A B'"]),
        (["ingest", "--symbols", "AAPL,'X'"], ["--symbols", "'X'"]),
        (["ingest", "--interval", "7x"], ["--interval", "1d, 1h"]),
        (["ingest", "--start", "2024-02-01", "--end", "2024-01-01"], ["--start", "after --end"]),
        (["ingest", "--start", "yesterday-ish"], ["--start", "2024-01-31"]),
        (["ingest", "--source", "synthetic", "--fault", "bogus:MSFT"], ["--fault", "nan_price"]),
        (["ingest", "--source", "yfinance", "--fault", "nan_price:MSFT"], ["--fault", "synthetic"]),
        (["ingest", "--source", "files", "--path", "{tmp}/missing"], ["--path", "missing", "folder"]),
        (["ingest", "--date-format", "%Y"], ["--date-format", "%d/%m/%Y"]),
        (["ingest", "--as-of", "soon"], ["--as-of"]),
        (["backtest", "--modes", "static,nope"], ["--modes", "'nope'", "adaptive", "no_health_gating"]),
        (["backtest", "--start", "2025-06-01", "--end", "2025-01-01"], ["--start", "after --end"]),
        (["backtest", "--interval", "1x"], ["--interval"]),
        (["backtest", "--signals", "/no/such/file.csv"], ["--signals", "/no/such/file.csv"]),
        (["backtest", "--symbol", "A B"], ["--symbol"]),
        (["backtest", "--sweep", "health.kill_floor=50,60"], ["--sweep health.kill_floor", "exits"]),
        (["backtest", "--sweep", "exits.tp1_atr=1,-2"], ["--sweep exits.tp1_atr=-2", "greater than 0"]),
        (["backtest", "--sweep", "exits.tp1_atr"], ["--sweep", "section.field=v1,v2"]),
        (["scoreboard", "--window", "7x"], ["--window", "30d", "all"]),
        (["benchmark", "--windows", "30d,7x"], ["--windows", "'7x'"]),
        (["benchmark", "--interval", "5x"], ["--interval"]),
        (["decide", "--bars", "-5"], ["--bars", ">= 1"]),
        (["decide", "--bars", "0"], ["--bars", ">= 1"]),
        (["decide", "--at", "someday"], ["--at"]),
        (["decide", "--interval", "2d"], ["--interval"]),
        (["retrain", "--modules", "direction,nope"], ["--modules", "'nope'", "ensemble"]),
        (["retrain", "--interval", "x"], ["--interval"]),
        (["features", "--interval", "1d,9q"], ["--interval", "'9q'"]),
        (["features", "--symbols", 'A"B'], ["--symbols"]),
        (["account", "--recent", "-1"], ["--recent", ">= 0"]),
        (["sql", "--max-rows", "-1", "SELECT 1"], ["--max-rows", ">= 0"]),
    ],
)
def test_bad_arguments_are_refused_before_any_work(no_flows, tmp_path, args, expected):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    line = _refused([*args, "--warehouse", str(tmp_path / "w.duckdb")])
    for text in expected:
        assert text in line, line
    assert not (tmp_path / "w.duckdb").exists()  # nothing was created either


def test_a_bad_config_stops_a_flow_command_before_it_starts(no_flows, tmp_path):
    toml = tmp_path / "q.toml"
    toml.write_text("histroy_days = 3\n")
    line = _refused(["--config", str(toml), "ingest", "--warehouse", str(tmp_path / "w.duckdb")])
    assert "histroy_days" in line and "q.toml" in line


def test_bogus_source_as_a_user_types_it_never_imports_prefect(tmp_path):
    # A fresh interpreter, as `qtrader` runs: -X importtime lists every module imported.
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qtrader.cli", "ingest", "--source", "bogus",
         "--warehouse", str(tmp_path / "w.duckdb")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --source 'bogus' is not allowed; choose one of: synthetic, yfinance, files"]
    imported = {
        line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    assert not {m for m in imported if m.split(".")[0] in ("prefect", "great_expectations", "flows")}


# ------------------------------------------------------------------------- checks against the warehouse


def _warehouse(path: Path, symbols=("AAA", "BBB"), sessions=30, train_end_index=19) -> list[pd.Timestamp]:
    """A warehouse with daily bars of ``symbols`` and one champion (ensemble) trained to the 20th bar."""
    days = pd.bdate_range("2026-01-05", periods=sessions, tz="UTC")
    bars = pd.DataFrame(
        [
            {"symbol": s, "interval": "1d", "ts": d, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
             "volume": 1.0, "source": "t", "run_id": "r", "ingested_at": d}
            for s in symbols for d in days
        ]
    )  # fmt: skip
    end = days[train_end_index]
    row = {
        "module": "ensemble", "interval": "1d", "version": 1, "trained_at": end, "train_start": days[0],
        "train_end": end, "valid_start": end, "valid_end": end, "train_rows": 1, "valid_rows": 1,
        "label_horizon": 1, "feature_set_version": "v", "params": "{}", "config_hash": "c", "data_hash": "d",
        "metrics": "{}", "calibration": "seed", "status": "champion", "status_reason": "", "promoted_at": end,
        "retired_at": None, "artifact_path": "x.pkl", "run_id": "r",
    }  # fmt: skip
    with transaction(path) as con:
        con.register("b", bars)
        con.execute("INSERT INTO bars BY NAME SELECT * FROM b")
        con.register("m", pd.DataFrame([row]).reindex(columns=REGISTRY_COLUMNS))
        con.execute("INSERT INTO model_registry BY NAME SELECT * FROM m")
    return list(days)


def test_backtest_of_an_unknown_symbol_names_it_and_what_is_stored(no_flows, tmp_path):
    db = tmp_path / "w.duckdb"
    _warehouse(db)
    line = _refused(["backtest", "--symbols", "AAA,ZZZZ", "--warehouse", str(db)])
    assert "ZZZZ" in line and "AAA, BBB" in line and "ingest" not in line


def test_decide_that_would_replay_into_the_training_window_is_refused(no_flows, tmp_path):
    db = tmp_path / "w.duckdb"
    days = _warehouse(db)
    line = _refused(["decide", "--interval", "1d", "--bars", "100000000", "--warehouse", str(db)])
    # 30 bars stored, the champion trained to the 20th: only the 10 after it can be decided.
    assert "--bars 100000000" in line and f"{days[19]:%Y-%m-%d}" in line and "--bars 10" in line
    line = _refused(["decide", "--interval", "1d", "--at", f"{days[15]:%Y-%m-%d}", "--warehouse", str(db)])
    assert "--at" in line and "training window" in line


def test_a_valid_sweep_reaches_the_flow_as_a_grid(no_flows, tmp_path):
    from qtrader.cli import _backtest_arguments
    from qtrader.settings import load_settings

    settings = load_settings(warehouse=tmp_path / "w.duckdb")
    args = _backtest_arguments(settings, None, None, None, None, "adaptive", None, None,
                               ["exits.tp1_atr=1,1.5", "trade_filter.health_gating=true,false"])  # fmt: skip
    assert args["sweep"] == {"exits.tp1_atr": [1, 1.5], "trade_filter.health_gating": [True, False]}
    assert args["modes"] == ["adaptive"]
    assert _backtest_arguments(settings, None, None, None, None, None, None, None)["sweep"] is None
