"""`qtrader account --plot` (issue 15): equity as % return on its own axis (cash does not flatten it), a
time axis, drawdown, trade markers and a buy-and-hold benchmark of the same symbols, in an HTML page
and a PNG that agree. A hand-made paper account whose cash swings 50k-130k while equity moves 4%."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.ticker import PercentFormatter

from qtrader.cli import _plot_equity
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

T0 = pd.Timestamp("2026-05-04 20:00", tz="UTC")
DAYS = 30
BROKER = "local"
START = 100_000.0
BASE = {"AAA": 100.0, "BBB": 40.0}


def day(n: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


def close(symbol: str, n: int) -> float:
    return BASE[symbol] * (1 + (0.004 if symbol == "AAA" else -0.002) * n)


FILLS = [  # symbol, side, role, day, qty, the bracket's entry
    ("AAA", "buy", "entry", 3, 100, "c0"),
    ("AAA", "sell", "take_profit", 9, 100, "c0"),
    ("BBB", "sell", "entry", 12, 200, "c2"),
    ("BBB", "buy", "stop_loss", 17, 200, "c2"),
]
# The decisions behind the two brackets (v_trades joins fills, bracket orders and decisions).
DECISIONS = [  # decision id, entry client order id, symbol, side, day, contributors, stop, take-profit
    ("d0", "c0", "AAA", "buy", 2, "regime,direction", 95.0, 110.0),
    ("d1", "c2", "BBB", "sell", 11, "direction", 41.0, 35.0),
]
GATE = [62.0 + (k % 3) for k in range(DAYS)]  # the overall gate of each health run (learned)


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    root = tmp_path_factory.mktemp("account")
    db = root / "warehouse.duckdb"
    n = np.arange(DAYS)
    equity = START * (1 + 0.04 * n / DAYS + 0.003 * np.sin(n))
    cash = np.where(n % 2 == 0, 50_000.0, 130_000.0)
    bars = [{"symbol": s, "interval": "1d", "ts": day(k), "open": close(s, k), "high": close(s, k) * 1.01,
             "low": close(s, k) * 0.99, "close": close(s, k), "volume": 1e6, "source": "test", "run_id": "i",
             "ingested_at": day(k)} for s in BASE for k in range(DAYS)]  # fmt: skip
    snaps = pd.DataFrame({"broker": BROKER, "ts": [day(k) for k in range(DAYS)], "cash": cash, "equity": equity,
                          "buying_power": cash, "recorded_at": [day(k) for k in range(DAYS)]})  # fmt: skip
    fills = pd.DataFrame([
        {"fill_key": f"f{i}", "broker": BROKER, "order_id": f"o{i}", "client_order_id": f"c{i}",
         "entry_client_order_id": entry, "symbol": s, "side": side, "role": role, "qty": q,
         "price": close(s, k), "commission": 0.5, "ts": day(k), "recorded_at": day(k)}
        for i, (s, side, role, k, q, entry) in enumerate(FILLS)
    ])  # fmt: skip
    decisions = pd.DataFrame([
        {"decision_id": d, "ts": day(k), "interval": "1d", "symbol": s, "strategy": "ensemble", "broker": BROKER,
         "side": side, "direction": 1 if side == "buy" else -1, "consensus": "STRONG", "voters": 3, "agree": 2,
         "contributors": who, "source_module": "ensemble", "accepted": True, "submitted": True,
         "reason_code": "accepted", "run_id": "decide", "decided_at": day(k)}
        for d, _, s, side, k, who, _, _ in DECISIONS
    ])  # fmt: skip
    orders = pd.DataFrame([
        {"client_order_id": c, "decision_id": d, "leg": 1, "symbol": s, "side": side,
         "qty": 100 if s == "AAA" else 200, "entry_ref": close(s, k), "take_profit": tp, "stop_price": stop,
         "broker": BROKER, "recorded_at": day(k)}
        for d, c, s, side, k, _, stop, tp in DECISIONS
    ])  # fmt: skip
    health = pd.DataFrame([
        {"ts": day(k), "module": m, "score": score, "components": "{}", "run_id": f"h{k}", "recorded_at": day(k),
         "gate": GATE[k] if m == "overall" else 50.0, "gate_source": "learned"}
        for k in range(DAYS) for m, score in (("overall", 70.0 - k / 2), ("direction", 80.0))
    ])  # fmt: skip
    with transaction(db) as con:
        insert_frame(con, "bars", pd.DataFrame(bars))
        insert_frame(con, "account_snapshots", snaps)
        insert_frame(con, "broker_fills", fills)
        insert_frame(con, "decisions", decisions)
        insert_frame(con, "decision_orders", orders)
        insert_frame(con, "health", health)
    return db, root, equity


@pytest.fixture
def drawn(account, saved_figures):  # noqa: F811
    db, root, _ = account
    html, png = _plot_equity(db, BROKER, root)
    assert png.exists() and html.exists() and len(saved_figures) >= 1
    return html, saved_figures[-1]


def test_png_return_axis_without_cash_with_time_axis_labels_and_percent_ticks(drawn, account):
    _, fig = drawn
    ax = find_axes(fig, r"return|equity")
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert not [lb for lb in labels if "cash" in lb.lower()], f"cash shares the equity axis: {labels}"
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter), "equity is not shown as % return"
    assert ax.get_ylabel() and ax.get_xlabel() and ax.get_xlabel().lower() != "bar"
    equity_line = [ln for ln in ax.get_lines() if ln.get_label().startswith("account")]
    assert equity_line, labels
    expected = np.round(account[2], 4) / START - 1  # account_snapshots.equity is DECIMAL(18,4)
    np.testing.assert_allclose(np.asarray(equity_line[0].get_ydata(), float), expected, rtol=1e-9)


def test_png_has_drawdown_benchmark_and_trade_markers(drawn):
    _, fig = drawn
    find_axes(fig, "drawdown")
    ax = find_axes(fig, r"return|equity")
    assert [ln for ln in ax.get_lines() if ln.get_label().startswith("buy & hold")]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points == len(FILLS), "every fill is a marker on the equity curve"


def test_html_agrees(drawn):
    html, _ = drawn
    page, tables = read_page(html)
    names = [t.get("name") or "" for t in traces(page)]
    assert "cash" not in [n.lower() for n in names]
    assert any(n.startswith("account") for n in names) and any(n.startswith("buy & hold") for n in names)
    assert any("drawdown" in n.lower() for n in names)
    returns = [f for f in plotly_figures(page) if "return" in f["layout"]["title"]["text"].lower()][0]
    markers = [t for t in returns["data"] if t.get("mode") == "markers" and t.get("x")]
    assert sum(len(values(t["x"])) for t in markers) == len(FILLS)
    xtitles = [
        (ax.get("title") or {}).get("text", "")
        for f in plotly_figures(page)
        for k, ax in f["layout"].items()
        if k.startswith("xaxis")
    ]
    assert "bar" not in xtitles
    assert "http" not in "".join(a for a in page.split("<script")[0:1])  # no remote asset before the scripts
    assert "<script src=" not in page


def test_the_panels_of_a_tearsheet_for_the_account(drawn):
    html, fig = drawn
    for pattern in (r"monthly", r"rolling sharpe", r"distribution", r"AAA", r"module", r"health"):
        find_axes(fig, pattern)
    page, tables = read_page(html)
    kinds = {t.get("type", "scatter") for t in traces(page)}
    assert "heatmap" in kinds and "histogram" in kinds, kinds
    assert "-0.00%" not in " ".join(tables.text)
    assert not [t for t in figure_texts(fig) if "-0.00%" in t]


def test_human_title_and_offline_page(drawn):
    html, fig = drawn
    page, tables = read_page(html)
    assert "Paper account (local)" in tables.title and "2026-05-04" in tables.title
    assert "2026-05-04" in fig.get_suptitle()
    # One file: no remote script, stylesheet or image.
    assert not re.search(r"<(script|link|img)[^>]*\b(src|href)=[\"']?https?:", page, re.I)
    assert not re.search(r"<script[^>]*\bsrc=", page)


def test_trade_list_module_pnl_and_health_gate(drawn):
    html, fig = drawn
    page, tables = read_page(html)
    rows = tables.tables.get("trades")
    assert rows and len(rows) == 1 + len(DECISIONS), rows
    flat = [" ".join(r) for r in rows[1:]]
    assert any("AAA" in r and "TP1" in r for r in flat) and any("BBB" in r and "stop" in r for r in flat)
    bars = [t for t in traces(page) if t.get("type") == "bar"]
    assert bars and set(bars[0]["x"]) == {"regime", "direction"}
    gate = [t for t in traces(page) if "gate" in (t.get("name") or "").lower()]
    assert len(gate) == 1 and values(gate[0]["y"]) == GATE
    ax = find_axes(fig, "health")
    assert [ln for ln in ax.get_lines() if "gate" in ln.get_label().lower()]


def test_price_panel_symbol_is_the_users_choice(account, saved_figures):  # noqa: F811
    db, root, _ = account
    html, _ = _plot_equity(db, BROKER, root / "bbb", symbol="BBB")
    find_axes(saved_figures[-1], r"^BBB")
    page, _ = read_page(html)
    assert any((t.get("name") or "") == "BBB close" for t in traces(page))


def test_no_legend_covers_a_panel(drawn):
    _, fig = drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_title()]
    legends = [ax.get_legend() for ax in panels if ax.get_legend() is not None] + [
        lg for f in (fig, *fig.subfigs) for lg in f.legends
    ]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        hit = [o.get_title() for o in panels if box.overlaps(o.get_window_extent(renderer))]
        assert not hit, f"a legend ({[t.get_text() for t in legend.get_texts()][:3]}) covers {hit}"


@pytest.fixture(scope="module")
def idle_account(tmp_path_factory):
    """An account that never traded (the demo's default policy rejects every candidate), with health runs
    after its last snapshot (the health flow runs at wall-clock time, the replayed bars are older)."""
    root = tmp_path_factory.mktemp("idle")
    db = root / "warehouse.duckdb"
    bars = [{"symbol": s, "interval": "1d", "ts": day(k), "open": close(s, k), "high": close(s, k),
             "low": close(s, k), "close": close(s, k), "volume": 1e6, "source": "test", "run_id": "i",
             "ingested_at": day(k)} for s in BASE for k in range(DAYS)]  # fmt: skip
    snaps = pd.DataFrame({"broker": BROKER, "ts": [day(k) for k in range(DAYS)], "cash": START, "equity": START,
                          "buying_power": START, "recorded_at": [day(k) for k in range(DAYS)]})  # fmt: skip
    health = pd.DataFrame([{"ts": day(DAYS + 1), "module": "overall", "score": 90.0, "components": "{}",
                            "run_id": "h", "recorded_at": day(DAYS + 1), "gate": 80.0, "gate_source": "ceiling"}])  # fmt: skip
    with transaction(db) as con:
        insert_frame(con, "bars", pd.DataFrame(bars))
        insert_frame(con, "account_snapshots", snaps)
        insert_frame(con, "health", health)
    return db, root


def test_an_idle_account_still_shows_a_price_health_and_says_why_panels_are_empty(
    idle_account,
    saved_figures,  # noqa: F811
):
    db, root = idle_account
    html, _ = _plot_equity(db, BROKER, root)
    fig = saved_figures[-1]
    px = find_axes(fig, r"close")  # a symbol's close, though the account has no fills
    assert px.get_lines(), "no price line"
    h = find_axes(fig, "health")
    overall = [ln for ln in h.get_lines() if "overall" in ln.get_label()]
    assert overall, "the health run after the snapshots is missing"
    assert overall[0].get_marker() not in (None, "", "None"), (
        "a single health run drawn as a line is invisible"
    )
    rs = find_axes(fig, "rolling sharpe")
    texts = [t.get_text() for t in rs.texts]
    assert any("not enough" in t for t in texts), f"an empty rolling Sharpe panel says nothing: {texts}"


def test_fills_at_the_same_time_are_all_markers(tmp_path, saved_figures):  # noqa: F811
    """A bar often has several fills (entries of different symbols, a bracket's legs): each is a marker."""
    from tasks.report_views import Sheet, write_html, write_png

    idx = pd.DatetimeIndex([day(k) for k in range(10)])
    equity = pd.Series(START * (1 + 0.001 * np.arange(10)), index=idx)
    markers = pd.DataFrame({"ts": [day(3), day(3), day(3), day(6)], "kind": ["entry", "entry", "take_profit", "stop_loss"],
                            "symbol": ["AAA", "BBB", "AAA", "BBB"], "side": ["buy", "sell", "sell", "buy"],
                            "qty": [10, 20, 10, 20], "price": [100.0, 40.0, 101.0, 41.0]})  # fmt: skip
    sheet = Sheet(title="t", subtitle="s", interval="1d", periods_per_year=252, starting_equity=START,
                  curves={"account (local)": equity}, markers=markers)  # fmt: skip
    write_html(sheet, tmp_path / "a.html")
    write_png(sheet, tmp_path / "a.png")
    page, _ = read_page(tmp_path / "a.html")
    returns = [f for f in plotly_figures(page) if "return" in f["layout"]["title"]["text"].lower()][0]
    shown = [t for t in returns["data"] if t.get("mode") == "markers" and t.get("x")]
    assert sum(len(values(t["x"])) for t in shown) == len(markers)
    ax = find_axes(saved_figures[-1], r"return")
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(markers)
