"""The qtrader command line: help, config, init, sql, status and clear failures."""

import json

import pytest
from typer.testing import CliRunner

from qtrader.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for cmd in (
        "init",
        "ingest",
        "features",
        "demo",
        "sql",
        "config",
        "status",
        "decide",
        "account",
        "backtest",
    ):
        assert cmd in out.output


def test_config_merges_env_and_masks_secrets(monkeypatch, tmp_path):
    toml = tmp_path / "qtrader.toml"
    toml.write_text('universe = ["AAA"]\nhistory_days = 10\n[gate]\nmax_gap_bars_daily = 9\n')
    monkeypatch.setenv("QTRADER_HISTORY_DAYS", "20")  # environment beats the file
    monkeypatch.setenv("QTRADER_ALPACA_SECRET_KEY", "very-secret")
    out = runner.invoke(app, ["--config", str(toml), "config", "--warehouse", str(tmp_path / "w.duckdb")])
    assert out.exit_code == 0, out.output
    cfg = json.loads(out.output)
    assert cfg["universe"] == ["AAA"] and cfg["history_days"] == 20
    assert cfg["gate"]["max_gap_bars_daily"] == 9
    assert cfg["warehouse"] == str(tmp_path / "w.duckdb")  # the flag beats everything
    assert cfg["alpaca_secret_key"] == "********" and "very-secret" not in out.output


def test_init_then_sql_and_status(tmp_path):
    db = str(tmp_path / "w.duckdb")
    assert runner.invoke(app, ["init", "--warehouse", db]).exit_code == 0
    out = runner.invoke(
        app, ["sql", "SELECT version, name FROM schema_version ORDER BY version", "--warehouse", db]
    )
    assert out.exit_code == 0 and "ingest" in out.output
    out = runner.invoke(app, ["sql", "--csv", "SELECT 1 AS one", "--warehouse", db])
    assert out.output.strip().splitlines() == ["one", "1"]
    assert runner.invoke(app, ["status", "--warehouse", db]).exit_code == 0


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["sql", "SELECT * FROM nope"], "nope does not exist", 1),
        (["sql", "DELETE FROM bars"], "read-only", 1),
        (["ingest", "--path", "/no/such/folder"], "is not a folder", 2),  # bad usage: nothing started
    ],
)
def test_failures_exit_non_zero_with_one_line(tmp_path, args, message, code):
    db = str(tmp_path / "w.duckdb")
    runner.invoke(app, ["init", "--warehouse", db])
    out = runner.invoke(app, [*args, "--warehouse", db])
    assert out.exit_code == code
    assert message in out.output
    assert "Traceback" not in out.output


def test_status_of_a_missing_warehouse_says_what_to_do(tmp_path):
    out = runner.invoke(app, ["status", "--warehouse", str(tmp_path / "none.duckdb")])
    assert out.exit_code == 1 and "qtrader init" in out.output
