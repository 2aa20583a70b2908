"""Configuration mistakes as a user makes them: `qtrader config` with a qtrader.toml, environment or flags.

Every mistake exits 2 with one line naming where it came from (the file, the environment variable or the
flag), the field and the reason; unrelated QTRADER_* variables are left alone.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qtrader.cli import app

runner = CliRunner()


def _config(tmp_path, toml: str | None = None, *extra: str):
    args = []
    if toml is not None:
        path = tmp_path / "qtrader.toml"
        path.write_text(toml)
        args += ["--config", str(path)]
    return runner.invoke(app, [*args, "config", "--warehouse", str(tmp_path / "w.duckdb"), *extra])


def _error_line(out) -> str:
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1, out.output
    assert "validation error for Settings" not in out.output and "Traceback" not in out.output
    return lines[0]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in ("QTRADER_CONFIG", "QTRADER_HISTORY_DAYS", "QTRADER_GATE__MAX_ABS_RETURN_DAILY"):
        monkeypatch.delenv(key, raising=False)


def test_unknown_top_level_key_in_the_file_names_the_file_and_suggests_the_key(tmp_path):
    line = _error_line(_config(tmp_path, "histroy_days = 10\n"))
    assert "qtrader.toml" in line and "histroy_days" in line and "history_days" in line


def test_unknown_key_in_a_section_names_the_section(tmp_path):
    line = _error_line(_config(tmp_path, "[gate]\nmax_gap_bars_dayly = 3\n"))
    assert "qtrader.toml" in line and "gate.max_gap_bars_dayly" in line and "max_gap_bars_daily" in line


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("history_days = -5\n", "history_days"),
        ("intraday_history_sessions = 0\n", "intraday_history_sessions"),
        ('intervals = ["1d", "7x"]\n', "intervals"),
        ('universe = ["AAPL", "A B"]\n', "universe"),
        ("[gate]\nmax_abs_return_daily = -1\n", "gate.max_abs_return_daily"),
        ("[gate]\nmax_stale_bars_daily = -2\n", "gate.max_stale_bars_daily"),
        ("[retrain]\nn_splits = 0\n", "retrain.n_splits"),
        ("[retrain]\ncalibration_holdout_fraction = 1.5\n", "retrain.calibration_holdout_fraction"),
        ('[signal]\nmembers = ["direction", "nope"]\n', "signal.members"),
        ("[sizing]\nrisk_per_trade = 2\n", "sizing.risk_per_trade"),
        ("[trade_filter]\nmin_confidence = 1.5\n", "trade_filter.min_confidence"),
        ("[paper]\nslippage_bps = -1\n", "paper.slippage_bps"),
        ('[benchmark]\nwindows_daily = ["30d", "7x"]\n', "benchmark.windows_daily"),
        ("lock_timeout_s = -1\n", "lock_timeout_s"),
        ('[files]\ndate_format = "%Y"\n', "files.date_format"),
        # the staleness score divides by the schedule; a backtest has no 0-bar cadence either
        ("[health]\nretrain_schedule_hours_daily = 0\n", "health.retrain_schedule_hours_daily"),
        ("[health]\nretrain_schedule_hours_intraday = -1\n", "health.retrain_schedule_hours_intraday"),
        ("[backtest]\nretrain_every_bars_daily = 0\n", "backtest.retrain_every_bars_daily"),
    ],
)
def test_nonsensical_values_in_the_file_are_refused(tmp_path, toml, field):
    line = _error_line(_config(tmp_path, toml))
    assert "qtrader.toml" in line and field in line


def test_an_environment_variable_is_named_when_it_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADER_GATE__MAX_ABS_RETURN_DAILY", "-1")
    line = _error_line(_config(tmp_path))
    assert "QTRADER_GATE__MAX_ABS_RETURN_DAILY" in line and "greater than 0" in line


def test_environment_beats_the_file_and_is_the_one_named(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADER_HISTORY_DAYS", "-3")
    line = _error_line(_config(tmp_path, "history_days = 10\n"))
    assert "QTRADER_HISTORY_DAYS" in line and "qtrader.toml" not in line


def test_a_misspelt_environment_variable_is_refused_with_the_right_name(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADER_HISTROY_DAYS", "10")
    line = _error_line(_config(tmp_path))
    assert "QTRADER_HISTROY_DAYS" in line and "QTRADER_HISTORY_DAYS" in line


def test_unrelated_qtrader_variables_do_not_break_the_settings(tmp_path, monkeypatch):
    for key in ("QTRADER_HOME", "QTRADER_DEBUG", "QTRADER_SOMETHING_ELSE_ENTIRELY"):
        monkeypatch.setenv(key, "1")
    out = _config(tmp_path, "history_days = 10\n")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["history_days"] == 10


def test_toml_syntax_error_names_the_file_and_the_line(tmp_path):
    line = _error_line(_config(tmp_path, "history_days = = 10\n"))
    assert "qtrader.toml" in line and "line 1" in line


def test_qtrader_config_naming_a_missing_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADER_CONFIG", str(tmp_path / "nope.toml"))
    line = _error_line(_config(tmp_path))
    assert "nope.toml" in line and "QTRADER_CONFIG" in line


def test_a_missing_config_flag_is_bad_usage(tmp_path):
    out = runner.invoke(app, ["--config", str(tmp_path / "nope.toml"), "config"])
    assert "nope.toml" in _error_line(out)


def test_secrets_are_never_echoed_in_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADER_ALPACA_API_KEY", "very-secret-key")
    out = _config(tmp_path, "history_days = -1\n")
    assert out.exit_code == 2 and "very-secret-key" not in out.output


def test_valid_configuration_still_loads(tmp_path):
    toml = 'history_days = 10\nintervals = ["1d", "5m"]\n[gate]\nmax_abs_return_daily = 0.3\n'
    toml += '[files]\ndate_format = "%d/%m/%Y"\n'
    out = _config(tmp_path, toml)
    assert out.exit_code == 0, out.output
    cfg = json.loads(out.output)
    assert cfg["gate"]["max_abs_return_daily"] == 0.3 and cfg["files"]["date_format"] == "%d/%m/%Y"


def test_the_allowed_names_mirror_the_code_that_uses_them():
    from typing import get_args

    from models.backtest import EXTERNAL, SIGNALS_POLICY
    from models.calibration import METHODS
    from models.signals import DEFAULT_MEMBERS, MODULES
    from models.signals.ensemble import ConsensusType
    from models.walkforward import HIGHER_IS_BETTER, LOWER_IS_BETTER
    from qtrader import settings

    assert settings.DEFAULT_SIGNAL_MEMBERS == list(DEFAULT_MEMBERS)
    assert set(MODULES) == {*settings.DEFAULT_SIGNAL_MEMBERS, "ensemble"}
    assert set(get_args(settings.PromotionMetric)) == set(HIGHER_IS_BETTER) | set(LOWER_IS_BETTER)
    assert set(get_args(settings.CalibrationMethod)) == set(METHODS)
    settings.FilterSettings(**SIGNALS_POLICY["trade_filter"])  # the backtest's signals mode is valid
    assert set(get_args(settings.Consensus)) == {c.value for c in ConsensusType} | {EXTERNAL}
