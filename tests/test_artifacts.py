"""Prefect artifacts that read well in the UI (issue 15): narrow tables (a wide one split), human
headers, short timestamps, absolute links to reports and Data Docs, thousands separators. The builders
are plain functions: no Prefect server here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import backtest as mb
from models.engine import HealthView
from tasks.backtest import table_markdown
from tasks.decide import decide_markdown
from tasks.ingest import ingest_summary_markdown
from warehouse.ingest import IngestRun

MAX_COLUMNS = 10  # ~1600 px of the Prefect UI at its default font
END = pd.Timestamp("2026-04-10 20:00:00.123456", tz="UTC")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d|\d\d:\d\d:\d\d|\+00:00")


def md_tables(md: str) -> list[list[list[str]]]:
    """Markdown tables as rows of cells (header first, the --- line left out)."""
    tables, cur = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def assert_readable_headers(headers) -> None:
    assert len(headers) <= MAX_COLUMNS, f"{len(headers)} columns: {headers}"
    snake = [h for h in headers if "_" in h]
    assert not snake, f"snake_case headers: {snake}"


def assert_links_absolute(md: str, *paths: Path) -> None:
    for p in paths:
        uri = p.resolve().as_uri()
        assert f"]({uri})" in md, f"no absolute link to {p} in:\n{md}"


# ---- benchmark: 20 columns split into narrow tables ------------------------------------------------


def _benchmarks() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, exits = [], []
    for m in ("direction", "regime"):
        for w, days in (("90d", 90), ("all", 400)):
            rows.append({"module": m, "window_name": w, "window_start": END - pd.Timedelta(days=days),
                         "window_end": END, "n": 15040, "accuracy": 0.61234, "auc": 0.6543, "brier": 0.2345,
                         "ece_raw": 0.0812, "ece_seed": 0.05, "ece_calibrated": 0.0213, "latency_p50_ms": 1.23,
                         "latency_p95_ms": 2345.6, "performance_score": 71.234})  # fmt: skip
            exits.append({"module": m, "window_name": w, "tp1_rate": 0.5, "tp2_rate": 0.2, "tp3_rate": 0.1,
                          "stop_rate": 0.3, "timeout_rate": 0.2, "avg_r": 0.0812})  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(exits)


def test_benchmark_table_is_split_into_narrow_tables_with_human_headers():
    from tasks.benchmark import benchmark_tables

    tables = benchmark_tables(*_benchmarks())
    assert len(tables) >= 2
    covered = set()
    for _suffix, rows, description in tables:
        assert rows and description
        headers = list(rows[0])
        assert_readable_headers(headers)
        covered |= set(headers)
        for row in rows:
            for v in row.values():
                assert not ISO.search(str(v)), f"long timestamp {v!r}"
    assert {"Module", "Window", "Predictions", "Accuracy", "TP1 rate", "Avg R"} <= covered, covered
    first = tables[0][1][0]
    assert first["Predictions"] == "15,040" and first["Accuracy"] == "61.2%"
    assert tables[0][1][0]["From"] == "2026-01-10"


# ---- backtest ---------------------------------------------------------------------------------------


def _runs() -> pd.DataFrame:
    rows = []
    for mode, total in (("static", 0.01), ("adaptive", 0.03)):
        row = {"mode": mode, "interval": "1d", "start_ts": pd.Timestamp("2026-03-02", tz="UTC"),
               "end_ts": END, "bars": 1500, "symbols": 12}  # fmt: skip
        row |= {c: 0.1 for c, _, _ in mb.TABLE_COLUMNS} | {"trades": 1234.0, "total_return": total}
        if mode == "static":
            row["win_rate"] = -0.0001  # rounds to zero: never "-0.0%"
        rows.append(row)
    return pd.DataFrame(rows)


def test_backtest_artifact_human_title_narrow_tables_short_times_absolute_links(tmp_path):
    html, png = tmp_path / "bt" / "report.html", tmp_path / "bt" / "report.png"
    md = table_markdown(_runs(), "bt-20260411-0001", (str(html), str(png)))
    title = md.splitlines()[0]
    assert title.startswith("# ") and "bt-20260411-0001" not in title and "2026-03-02" in title
    assert not ISO.search(md), md
    for table in md_tables(md):
        assert_readable_headers(table[0])
    assert "-0.0%" not in md and "1,234" in md and "1,500" in md
    assert_links_absolute(md, html, png)


def test_backtest_artifact_links_are_absolute_even_for_a_relative_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    md = table_markdown(_runs(), "r1", ("data/backtests/r1/report.html", "data/backtests/r1/report.png"))
    assert_links_absolute(md, tmp_path / "data/backtests/r1/report.html")


# ---- ingest -----------------------------------------------------------------------------------------


def test_ingest_summary_thousands_and_absolute_data_docs_link(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = IngestRun(run_id="ingest-1", source="synthetic", interval="1d", symbols=["A"] * 150,
                    started_at=END, finished_at=END, rows_in=15040, rows_written=15040, rows_quarantined=1200)  # fmt: skip
    md = ingest_summary_markdown([run], ["AAA 2026-04-10: abs_return (critical)"], "data/dq/index.html")
    assert "15,040" in md and "1,200" in md and "15040" not in md
    assert_links_absolute(md, tmp_path / "data/dq/index.html")
    for table in md_tables(md):
        assert_readable_headers(table[0])


# ---- decide ----------------------------------------------------------------------------------------


def test_decide_artifact_short_timestamps():
    bars = [{"ts": END, "candidates": 12345, "accepted": 2, "submitted": 2, "stop_moves": [], "fills": 1,
             "equity": 104000.5, "reasons": {"low_confidence": 1200}, "order_gate_failures": []}]  # fmt: skip
    health = HealthView(ts=END, overall=81.234, modules={})
    md = decide_markdown("1d", "decide-1", bars, health)
    assert not ISO.search(md), md
    assert "2026-04-10 20:00" in md and "12,345" in md and "104,000.50" in md and "1,200" in md
    for table in md_tables(md):
        assert_readable_headers(table[0])


# ---- retrain -----------------------------------------------------------------------------------------


def test_retrain_table_human_headers():
    changes = pd.DataFrame([{"module": "direction", "version": 3, "status": "champion", "replaces": "v2",
                             "champion_now": "v3", "val_accuracy": 0.61234, "val_auc": 0.65, "champion_auc": None,
                             "calibration": "isotonic", "live_predictions": "1200 by v2", "seconds": 1.5,
                             "reason": "AUC +0.02"}])  # fmt: skip
    from tasks.retrain import retrain_table

    rows = retrain_table(changes)
    assert_readable_headers(list(rows[0]))
    assert rows[0]["Val accuracy"] == "61.2%" and rows[0]["Champion AUC"] == "n/a"


@pytest.mark.parametrize("value, text", [(15040, "15,040"), (-0.0001, "0"), (np.nan, "n/a"), (None, "n/a")])
def test_count_format(value, text):
    from qtrader.artifacts import count

    assert count(value) == text


# ---- features ----------------------------------------------------------------------------------------


def test_features_summary_thousands_and_absolute_data_docs_link(tmp_path, monkeypatch):
    from tasks.features import features_markdown

    monkeypatch.chdir(tmp_path)
    summary = [{"interval": "5m", "bars_read": 1234567, "batches": 12, "new": 15040, "written": 15040,
                "quarantined": 3}]  # fmt: skip
    md = features_markdown(summary, ["[5m] AAA 2026-04-10 20:00: rsi_14 (warning)"], "features-1", "thread",
                           "data/dq/index.html")  # fmt: skip
    assert "1,234,567" in md and "15,040" in md
    assert_links_absolute(md, tmp_path / "data/dq/index.html")
    for table in md_tables(md):
        assert_readable_headers(table[0])
