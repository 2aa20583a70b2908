"""Progress reported by long work (sources, the gate, the ingest tasks) and what Prefect prints on the
terminal with and without ``qtrader -v``."""

from __future__ import annotations

import io
import logging

import pandas as pd
import pytest
from typer.testing import CliRunner

from qtrader import progress

GOOD = "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,1000\n2024-01-03,10.5,12,10,11.5,2000\n"


@pytest.fixture
def reports():
    seen: list[tuple[str, int, int]] = []
    with progress.listening(lambda stage, done, total: seen.append((stage, done, total))):
        yield seen


def test_step_reports_start_and_end(reports):
    with progress.step("write 1d"):
        assert reports == [("write 1d", 0, 1)]
    assert reports == [("write 1d", 0, 1), ("write 1d", 1, 1)]


def test_files_source_reports_each_file(tmp_path, reports):
    from sources.base import FetchRequest
    from sources.files import FilesSource

    for sym in ("AAA", "BBB", "CCC"):
        (tmp_path / f"{sym}.csv").write_text(GOOD)
    FilesSource(tmp_path).fetch(FetchRequest(None, "1d", None, None))
    assert reports == [("fetch 1d", 0, 3), ("fetch 1d", 1, 3), ("fetch 1d", 2, 3)]


def test_gate_reports_its_passes(reports):
    from expectations.gate import gate_bars
    from qtrader.settings import GateSettings
    from tests.expectations.test_gate import DAILY_REF, daily

    gate_bars(daily(), interval="1d", settings=GateSettings(), run_id="t", reference_end=DAILY_REF)
    assert reports == [("gate 1d", 0, 3), ("gate 1d", 1, 3), ("gate 1d", 2, 3), ("gate 1d", 3, 3)]


def test_fetch_and_write_tasks_report(tmp_path, reports, monkeypatch):
    monkeypatch.delenv("QTRADER_CONFIG", raising=False)  # a CLI test's --config may have set it
    from prefect.logging import disable_run_logger

    from expectations.gate import gate_bars
    from qtrader.settings import load_settings
    from sources.base import FetchRequest
    from sources.synthetic import SyntheticSource
    from tasks.ingest import fetch_bars, write_gated
    from warehouse.ingest import IngestRun

    now = pd.Timestamp("2026-11-20 22:00", tz="UTC")
    request = FetchRequest(["AAA", "BBB"], "1d", pd.Timestamp("2026-10-01", tz="UTC"), now)
    settings = load_settings(warehouse=tmp_path / "w.duckdb")
    with disable_run_logger():
        fetched = fetch_bars.fn(SyntheticSource(now=now), request)
        gated = gate_bars(fetched.bars, interval="1d", settings=settings.gate, run_id="r", reference_end=now)
        run = IngestRun("r", "synthetic", "1d", ["AAA", "BBB"], now, now)
        write_gated.fn(settings, run, gated, "synthetic")
    stages = [r for r in reports if not r[0].startswith("gate")]
    assert stages == [("fetch 1d", 0, 2), ("fetch 1d", 2, 2), ("write 1d", 0, 1), ("write 1d", 1, 1)]


# ------------------------------------------------------------------------------- Prefect on the terminal


@pytest.fixture
def prefect_console_output():
    """Prefect's console handlers writing into a buffer (logging configured as ``import prefect`` does)."""
    import prefect  # noqa: F401 - configures logging

    from qtrader.logs import console_handlers

    handlers = console_handlers()
    if not handlers:
        from prefect.logging.configuration import setup_logging

        setup_logging()
        handlers = console_handlers()
    assert handlers
    buffer = io.StringIO()
    saved = [(h, h.console.file, h.level) for h in handlers]
    for h in handlers:
        h.console.file = buffer
    yield buffer
    for h, file, level in saved:
        h.console.file = file
        h.setLevel(level)


@pytest.mark.parametrize("flags", [[], ["-v"], ["--verbose"], ["after"]])
def test_prefect_info_only_with_verbose(prefect_console_output, monkeypatch, tmp_path, flags):
    from qtrader.cli import app

    monkeypatch.delenv("QTRADER_CONFIG", raising=False)
    verbose = bool(flags)
    args = [*[f for f in flags if f != "after"], "init", "--warehouse", str(tmp_path / "w.duckdb")]
    if "after" in flags:
        args.append("-v")  # qtrader init --warehouse W -v
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    log = logging.getLogger("prefect.test_progress")  # propagates to the root console handler, as run logs do
    log.info("an info line")
    log.warning("a warning line")
    printed = prefect_console_output.getvalue()
    assert "a warning line" in printed
    assert ("an info line" in printed) is verbose, printed


def test_api_handlers_keep_info():
    """Only the console is quieted: the run loggers still send INFO to the Prefect API (the UI)."""
    import prefect  # noqa: F401

    from qtrader.logs import prefect_console

    prefect_console(False)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        api = [h for h in logging.getLogger(name).handlers if type(h).__name__ == "APILogHandler"]
        assert api and all(h.level <= logging.INFO for h in api)
