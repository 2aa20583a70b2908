"""What a trader looks for in the backtest report (issue 15): a benchmark, drawdown, monthly returns,
rolling Sharpe, the return distribution, health against its gate, the trade list, what each mode means,
identical curves shown once, no "-0.00%", a readable title, and a legend that covers no bar.

A hand-made run: static, adaptive and no_predictive_tightening (the same equity and trades as adaptive),
40 daily bars over two months, a scratch folder with the timeline's health and each mode's decisions."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from models.report import MODE_NOTES
from tasks.backtest_report import report_data, write_report
from tests.report_pages import (  # noqa: F401 - saved_figures is a fixture
    figure_texts,
    find_axes,
    plotly_figures,
    read_page,
    saved_figures,
    traces,
    values,
)
from warehouse.db import insert_frame, transaction

T0 = pd.Timestamp("2026-03-02", tz="UTC")
DAYS = 40
START = 100_000.0
BASE = {"AAA": 100.0, "BBB": 50.0, "CCC": 20.0}
RUN = "bt-20260411-0001"
GATE = 70.0


def day(n: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


def close(symbol: str, n: int) -> float:
    # AAA rises 1% a day, BBB falls 0.5% a day, CCC alternates: the benchmark is not a straight line.
    step = {"AAA": 0.01, "BBB": -0.005, "CCC": 0.02 if n % 2 else -0.015}[symbol]
    return BASE[symbol] * (1 + step) ** n if symbol != "CCC" else BASE[symbol] * (1 + 0.002 * n + step)


def _bars() -> pd.DataFrame:
    rows = []
    for s in BASE:
        for n in range(DAYS):
            c = close(s, n)
            rows.append({"symbol": s, "interval": "1d", "ts": day(n), "open": c, "high": c * 1.01, "low": c * 0.99,
                         "close": c, "volume": 1e6, "source": "test", "run_id": "ingest", "ingested_at": day(n)})  # fmt: skip
    return pd.DataFrame(rows)


def _trade(mode, n, symbol, side, entry, exit_, pnl, reason, contributors):
    return {"run_id": RUN, "mode": mode, "decision_id": f"{mode}-{n}", "symbol": symbol, "side": side,
            "decided_at": day(entry - 1), "entry_ts": day(entry), "exit_ts": day(exit_), "qty": 10,
            "entry_price": close(symbol, entry), "exit_price": close(symbol, exit_), "pnl": pnl,
            "pnl_pct": pnl / (10 * close(symbol, entry)), "r_multiple": pnl / 20.0, "exit_reason": reason,
            "legs": None, "consensus": "UNANIMOUS", "confidence_calibrated": 0.6,
            "contributors": contributors}  # fmt: skip


ADAPTIVE_TRADES = [
    ("AAA", "buy", 2, 6, 40.0, "TP2", "regime,direction"),
    ("BBB", "sell", 5, 9, -12.0, "stop", "direction"),
    ("AAA", "buy", 12, 20, 55.0, "TP3", "regime"),
    ("CCC", "buy", 25, 31, -8.0, "stop", "volume,direction"),
]
TRADES = pd.DataFrame(
    [
        _trade(m, i, *t)
        for m in ("adaptive", "no_predictive_tightening")
        for i, t in enumerate(ADAPTIVE_TRADES)
    ]
    + [_trade("static", 0, "AAA", "buy", 3, 5, 1.0, "TP1", "regime")]
)


def _equity_curve(mode: str) -> pd.Series:
    n = np.arange(DAYS)
    if mode == "static":
        # Ends a hair below the start: its return rounds to zero (never "-0.00%").
        eq = START + 30 * np.sin(n / 3.0)
        eq[-1] = START - 0.004
    else:
        eq = START * (1 + 0.0015 * n + 0.004 * np.sin(n))
    return pd.Series(eq)


def _run_row(mode: str, scratch) -> dict:
    eq = _equity_curve(mode)
    t = TRADES[TRADES["mode"] == mode]
    policy = {"trade_filter": {"min_overall_health": GATE, "min_module_health": 50.0}}
    return {"run_id": RUN, "mode": mode, "interval": "1d", "start_ts": day(0), "end_ts": day(DAYS - 1),
            "bars": DAYS, "symbols": 3, "overrides": json.dumps(policy), "scratch": str(scratch / f"{mode}.duckdb"),
            "starting_equity": START, "final_equity": float(eq.iloc[-1]), "trades": len(t), "open_trades": 0,
            "win_rate": float((t["pnl"] > 0).mean()), "avg_pnl_pct": float(t["pnl_pct"].mean()),
            "avg_pnl": float(t["pnl"].mean()), "total_return": float(eq.iloc[-1] / START - 1),
            "sharpe": 0.8, "sortino": 1.1, "max_drawdown": -0.01, "exposure": 0.3, "turnover": 2.0,
            "commission": 1.0, "refused_bars": 0, "started_at": day(DAYS), "finished_at": day(DAYS)}  # fmt: skip


def _equity_rows(mode: str) -> pd.DataFrame:
    eq = _equity_curve(mode)
    return pd.DataFrame({"run_id": RUN, "mode": mode, "ts": [day(n) for n in range(DAYS)], "equity": eq,
                         "cash": eq * 0.6, "gross": eq * 0.4, "drawdown": eq / np.maximum(eq.cummax(), START) - 1})  # fmt: skip


BLOCKED = {"static": {}, "adaptive": {"ai_health_degraded": 7, "low_confidence": 3}}
BLOCKED["no_predictive_tightening"] = BLOCKED["adaptive"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-views")
    scratch = root / "backtests" / RUN
    scratch.mkdir(parents=True)
    db = root / "warehouse.duckdb"
    modes = ["static", "adaptive", "no_predictive_tightening"]
    with transaction(db) as con:
        insert_frame(con, "bars", _bars())
        insert_frame(con, "backtest_runs", pd.DataFrame([_run_row(m, scratch) for m in modes]))
        insert_frame(con, "backtest_trades", TRADES)
        insert_frame(con, "backtest_equity", pd.concat([_equity_rows(m) for m in modes], ignore_index=True))
    # The timeline's health (overall and two modules), in the scratch models warehouse.
    rows = []
    for n in range(DAYS):
        for module, score in (("overall", 60 + n), ("direction", 80 - n / 2), ("regime", 55 + (n % 7))):
            rows.append((day(n), module, float(score)))
    con = duckdb.connect(str(scratch / "models.duckdb"))
    con.execute("CREATE TABLE health (ts TIMESTAMPTZ, module VARCHAR, score DOUBLE)")
    con.executemany("INSERT INTO health VALUES (?, ?, ?)", rows)
    con.close()
    # Each mode's decisions: candidates not traded, by the rules they failed.
    for mode in modes:
        con = duckdb.connect(str(scratch / f"{mode}.duckdb"))
        con.execute("CREATE TABLE decisions (accepted BOOLEAN, reason_code VARCHAR, failed VARCHAR)")
        for rule, k in BLOCKED[mode].items():
            con.executemany("INSERT INTO decisions VALUES (false, ?, ?)", [(rule, rule)] * k)
        con.executemany("INSERT INTO decisions VALUES (true, 'accepted', NULL)", [()] * 4)
        con.close()
    html, png = write_report(db, RUN, scratch, symbol="AAA")
    return db, html, png


@pytest.fixture
def drawn(run, saved_figures):  # noqa: F811
    db, _, _ = run
    write_report(db, RUN, run[1].parent / "again", symbol="AAA")
    assert len(saved_figures) == 1
    return saved_figures[0]


def _lines(fig):
    return [ln for ax in fig.axes for ln in ax.get_lines()]


def test_identical_curves_are_drawn_once_with_a_note(run, drawn):
    page, tables = read_page(run[1])
    names = [t.get("name") or "" for t in traces(page)]
    assert "no_predictive_tightening" not in names, "a curve identical to adaptive is drawn on its own"
    text = " ".join(tables.text)
    assert "identical" in text.lower() and "no_predictive_tightening" in text
    labels = [ln.get_label() for ln in _lines(drawn)]
    assert not [lb for lb in labels if lb.startswith("no_predictive_tightening")], labels
    assert any(lb.startswith("adaptive") and "no_predictive_tightening" in lb for lb in labels), labels


def _benchmark() -> pd.Series:
    closes = pd.DataFrame({s: [close(s, n) for n in range(DAYS)] for s in BASE})
    units = (START / len(BASE)) / closes.iloc[0]
    return (closes * units).sum(axis=1)


def test_buy_and_hold_benchmark_of_the_replayed_symbols(run, drawn):
    data = report_data(run[0], RUN, symbol="AAA")
    np.testing.assert_allclose(data.benchmark.to_numpy(), _benchmark().to_numpy(), rtol=1e-12)
    page, _ = read_page(run[1])
    assert any((t.get("name") or "").startswith("buy & hold") for t in traces(page))
    eq_ax = find_axes(drawn, r"return|equity")
    bench = [ln for ln in eq_ax.get_lines() if ln.get_label().startswith("buy & hold")]
    assert bench, [ln.get_label() for ln in eq_ax.get_lines()]
    # Plotted as % return, like the modes: the last point is the benchmark's total return.
    assert bench[0].get_ydata()[-1] == pytest.approx(_benchmark().iloc[-1] / START - 1, rel=1e-9)


def test_the_panels_a_tearsheet_has(run, drawn):
    page, _ = read_page(run[1])
    kinds = {t.get("type", "scatter") for t in traces(page)}
    assert "heatmap" in kinds and "histogram" in kinds, kinds
    titles = " | ".join(ax.get_title() for ax in drawn.axes)
    for pattern in (r"return", r"drawdown", r"monthly", r"rolling sharpe", r"distribution", r"AAA", r"module",
                    r"health"):  # fmt: skip
        find_axes(drawn, pattern)
    monthly = find_axes(drawn, "monthly")
    assert monthly.images or monthly.collections, "the monthly panel draws no heatmap"
    for ax in drawn.axes:
        if ax.get_title() and not ax.get_title().lower().startswith("monthly"):
            assert ax.get_xlabel() or ax.get_ylabel(), (
                f"panel {ax.get_title()!r} has no axis label ({titles})"
            )


def test_health_over_time_with_the_gate_line(run, drawn):
    page, _ = read_page(run[1])
    health = [t for t in traces(page) if "overall" in (t.get("name") or "")]
    assert health, "no overall-health trace"
    gate = [t for t in traces(page) if "gate" in (t.get("name") or "").lower()]
    assert gate and set(values(gate[0]["y"])) == {GATE}
    ax = find_axes(drawn, "health")
    flat = [ln for ln in ax.get_lines() if len(set(np.asarray(ln.get_ydata(), float))) == 1]
    assert any(float(ln.get_ydata()[0]) == GATE for ln in flat), "no gate line at the filter's health minimum"


def test_no_negative_zero_and_a_readable_title(run, drawn):
    page, tables = read_page(run[1])
    assert "-0.00%" not in " ".join(tables.text)
    assert not [t for t in figure_texts(drawn) if "-0.00%" in t]
    assert tables.title.strip() != f"Backtest {RUN}"
    assert "2026-03-02" in tables.title and "2026-04-10" in tables.title and "1d" in tables.title
    assert "2026-03-02" in drawn.get_suptitle()


def test_module_legend_sits_outside_the_bars(drawn):
    ax = find_axes(drawn, "module")
    legend = ax.get_legend()
    assert legend is not None
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not box.overlaps(area), "the module legend is drawn inside the bar area"


def test_trade_list_mode_notes_and_blocked_candidates(run):
    page, tables = read_page(run[1])
    trade_rows = tables.tables.get("trades")
    assert trade_rows, f"no trade list (tables: {list(tables.tables)})"
    body = trade_rows[1:]
    assert len(body) == len(
        TRADES[TRADES["mode"] != "no_predictive_tightening"]
    )  # identical mode listed once
    assert any("AAA" in r and "TP3" in r for r in body)
    text = " ".join(tables.text)
    for mode in ("static", "adaptive", "no_predictive_tightening"):
        assert MODE_NOTES[mode] in text
    blocked = tables.tables.get("blocked")
    assert blocked, "no table of candidates not traded"
    flat = [" ".join(r) for r in blocked]
    assert any("ai_health_degraded" in r and "7" in r for r in flat)


def test_health_gate_recorded_per_run_is_the_gate_line(run, tmp_path, saved_figures):  # noqa: F811
    """Since migration 008 each health row carries the gate it was compared with (``gate``, a number) and
    where that gate came from (``gate_source``, text): the panel draws the overall row's gate over time."""
    db, html, _ = run
    scratch = html.parent
    models = scratch / "models.duckdb"
    saved = tmp_path / "models.duckdb"
    saved.write_bytes(models.read_bytes())
    try:
        con = duckdb.connect(str(models))
        con.execute("ALTER TABLE health ADD COLUMN gate DOUBLE")
        con.execute("ALTER TABLE health ADD COLUMN gate_source VARCHAR")
        con.execute(
            "UPDATE health SET gate = CASE WHEN module = 'overall' THEN 60 + epoch(ts) % 3 ELSE 50 END, "
            "gate_source = 'learned'"
        )
        learned = con.execute("SELECT ts, gate FROM health WHERE module = 'overall' ORDER BY ts").df()
        con.close()
        html2, _ = write_report(db, RUN, tmp_path / "out", symbol="AAA")
    finally:
        models.write_bytes(saved.read_bytes())
    page, _ = read_page(html2)
    gate = [t for t in traces(page) if "gate" in (t.get("name") or "").lower()]
    assert len(gate) == 1, [t.get("name") for t in gate]
    np.testing.assert_allclose(values(gate[0]["y"]), learned["gate"].to_numpy(float))
    ax = find_axes(saved_figures[-1], "health")
    assert [ln for ln in ax.get_lines() if "gate" in ln.get_label().lower()]


def test_report_command_redraws_a_stored_run_for_another_symbol(run, tmp_path):
    from typer.testing import CliRunner

    from qtrader.cli import app

    db, _, _ = run
    out = CliRunner().invoke(
        app, ["report", RUN, "--symbol", "BBB", "--out", str(tmp_path), "--warehouse", str(db)]
    )
    assert out.exit_code == 0, out.output
    page, _ = read_page(tmp_path / "report.html")
    assert any((t.get("name") or "") == "BBB close" for t in traces(page))
    assert (tmp_path / "report.png").exists() and str(
        (tmp_path / "report.html").resolve()
    ) in out.output.replace("\n", "")
    bad = CliRunner().invoke(
        app, ["report", RUN, "--symbol", "ZZZ", "--out", str(tmp_path), "--warehouse", str(db)]
    )
    assert bad.exit_code != 0 and "ZZZ" in bad.output


def test_no_legend_covers_a_panel(drawn):
    """Legends sit outside the panels (one figure legend names the curves): none hides a line or a bar."""
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    panels = [ax for ax in drawn.axes if ax.get_title()]
    for ax in panels:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        fb = drawn.bbox
        assert fb.x0 <= box.x0 and box.x1 <= fb.x1 and fb.y0 <= box.y0 and box.y1 <= fb.y1, (
            f"the legend of {ax.get_title()!r} is cut off by the figure's edge"
        )
        for other in panels:
            assert not box.overlaps(other.get_window_extent(renderer)), (
                f"the legend of {ax.get_title()!r} covers panel {other.get_title()!r}"
            )
    for legend in [lg for f in (drawn, *drawn.subfigs) for lg in f.legends]:  # figure legends
        box = legend.get_window_extent(renderer)
        hit = [ax.get_title() for ax in panels if box.overlaps(ax.get_window_extent(renderer))]
        assert not hit, f"the figure legend covers {hit}"
    names = [t.get_text() for f in (drawn, *drawn.subfigs) for lg in f.legends for t in lg.get_texts()]
    assert any(n.startswith("buy & hold") for n in names) and any(n.startswith("static") for n in names), (
        names
    )


def test_html_months_are_categories_and_legends_sit_below_the_axis_title(run):
    page, _ = read_page(run[1])
    figs = plotly_figures(page)
    monthly = [f for f in figs if f["layout"]["title"]["text"].lower().startswith("monthly")][0]
    # "2026-03" read as a date puts the cells between ticks like "Feb 22"; they are months, one per column.
    assert monthly["layout"]["xaxis"].get("type") == "category", monthly["layout"]["xaxis"]
    for f in figs:
        legend = f["layout"].get("legend", {})
        assert legend.get("yanchor") == "top" and legend.get("y", 0) <= -0.25, (f["layout"]["title"], legend)
