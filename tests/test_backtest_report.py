"""The backtest report on a hand-made warehouse: two modes, a few trades, one run without trades."""

import json
import re

import duckdb
import pandas as pd
import pytest

from tasks.backtest_report import EXTERNAL, NO_TRADES, module_pnl, report_data, write_report
from warehouse.db import insert_frame, transaction

T0 = pd.Timestamp("2026-03-02", tz="UTC")
DAYS = 12
START_EQUITY = 100_000.0
BASE = {"AAA": 100.0, "BBB": 50.0, "CCC": 20.0}  # a symbol's close on day n: base + n


def day(n: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


def _bars() -> pd.DataFrame:
    rows = []
    for symbol, base in BASE.items():
        for n in range(DAYS):
            close = base + n
            rows.append(
                {
                    "symbol": symbol, "interval": "1d", "ts": day(n), "open": close - 0.5, "high": close + 1,
                    "low": close - 1, "close": close, "volume": 1e6, "source": "test", "run_id": "ingest",
                    "ingested_at": day(n),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def _run(run_id: str, mode: str, trades: pd.DataFrame, started: pd.Timestamp) -> dict:
    pnl = float(trades["pnl"].sum()) if len(trades) else 0.0
    return {
        "run_id": run_id, "mode": mode, "interval": "1d", "start_ts": day(0), "end_ts": day(DAYS - 1),
        "bars": DAYS, "symbols": 3, "overrides": json.dumps({}), "scratch": None,
        "starting_equity": START_EQUITY, "final_equity": START_EQUITY + pnl, "trades": len(trades),
        "open_trades": 0, "win_rate": float((trades["pnl"] > 0).mean()) if len(trades) else None,
        "avg_pnl_pct": None, "avg_pnl": pnl / len(trades) if len(trades) else None,
        "total_return": pnl / START_EQUITY, "sharpe": 1.2, "sortino": 1.5, "max_drawdown": -0.01,
        "exposure": 0.3, "turnover": 2.0, "commission": 1.0, "refused_bars": 0, "started_at": started,
        "finished_at": started + pd.Timedelta(minutes=1),
    }  # fmt: skip


def _trade(run_id, mode, n, symbol, side, entry, exit_, pnl, reason, contributors) -> dict:
    return {
        "run_id": run_id, "mode": mode, "decision_id": f"{mode}-{n}", "symbol": symbol, "side": side,
        "decided_at": day(entry - 1), "entry_ts": day(entry), "exit_ts": day(exit_), "qty": 10,
        "entry_price": BASE[symbol] + entry, "exit_price": BASE[symbol] + exit_, "pnl": pnl,
        "pnl_pct": pnl / 1000.0, "r_multiple": pnl / 20.0, "exit_reason": reason, "legs": None,
        "consensus": "UNANIMOUS", "confidence_calibrated": 0.6, "contributors": contributors,
    }  # fmt: skip


# static trades AAA three times, adaptive trades BBB twice: the default symbol follows adaptive.
TRADES = pd.DataFrame(
    [
        _trade("r1", "adaptive", 1, "AAA", "buy", 1, 4, 30.0, "TP2", "regime,direction"),
        _trade("r1", "adaptive", 2, "BBB", "sell", 2, 5, -10.0, "stop", "direction"),
        _trade("r1", "adaptive", 3, "BBB", "buy", 6, 8, 5.0, "breakeven", None),
        _trade("r1", "static", 1, "AAA", "buy", 1, 3, 9.0, "TP1", "regime, direction ,volume"),
        _trade("r1", "static", 2, "AAA", "sell", 4, 7, -4.0, "stop", ""),
        _trade("r1", "static", 3, "AAA", "buy", 8, 10, 2.0, "TP3", "regime"),
    ]
)


def _equity(run_id: str, mode: str, drift: float) -> pd.DataFrame:
    eq = pd.Series([START_EQUITY + drift * n * (1 if n % 4 else -2) for n in range(DAYS)])
    return pd.DataFrame(
        {
            "run_id": run_id, "mode": mode, "ts": [day(n) for n in range(DAYS)], "equity": eq, "cash": eq,
            "gross": 0.0, "drawdown": eq / eq.cummax() - 1,
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "warehouse.duckdb"
    t1 = pd.Timestamp("2026-04-01 12:00", tz="UTC")
    no_trades = TRADES.iloc[:0]
    runs = [
        _run("r0", "static", no_trades, t1 - pd.Timedelta(days=2)),
        _run("r1", "static", TRADES[TRADES["mode"] == "static"], t1),
        _run("r1", "adaptive", TRADES[TRADES["mode"] == "adaptive"], t1),
        _run("r-empty", "static", no_trades, t1 + pd.Timedelta(days=1)),
        _run("r-empty", "adaptive", no_trades, t1 + pd.Timedelta(days=1)),
    ]
    equity = [_equity(r["run_id"], r["mode"], 3.0 if r["mode"] == "adaptive" else 1.0) for r in runs]
    # A 5m run (no 5m bars) that recorded no equity rows either: every panel is empty.
    runs.append(_run("r-bare", "adaptive", no_trades, t1 - pd.Timedelta(days=3)) | {"interval": "5m"})
    with transaction(path) as con:  # a read-write open applies every migration first
        insert_frame(con, "bars", _bars())
        insert_frame(con, "backtest_runs", pd.DataFrame(runs))
        insert_frame(con, "backtest_trades", TRADES)
        insert_frame(con, "backtest_equity", pd.concat(equity, ignore_index=True))
    return path


def test_module_pnl_splits_each_trade_equally_and_sums_to_total_pnl(db):
    data = report_data(db, "r1")
    got = {(r.mode, r.module): (r.trades, round(r.pnl, 9)) for r in data.module_pnl.itertuples()}
    assert got == {
        ("adaptive", "regime"): (1, 15.0),
        ("adaptive", "direction"): (2, 15.0 - 10.0),
        ("adaptive", EXTERNAL): (1, 5.0),
        ("static", "regime"): (2, 3.0 + 2.0),
        ("static", "direction"): (1, 3.0),
        ("static", "volume"): (1, 3.0),
        ("static", EXTERNAL): (1, -4.0),
    }
    per_mode = data.module_pnl.groupby("mode")["pnl"].sum()
    totals = data.trades.groupby("mode")["pnl"].sum()
    pd.testing.assert_series_equal(per_mode.sort_index(), totals.sort_index(), check_names=False)


def test_module_pnl_of_no_trades_is_empty():
    out = module_pnl(TRADES.iloc[:0])
    assert out.empty and list(out.columns) == ["mode", "module", "trades", "pnl"]


def test_report_data_defaults(db):
    data = report_data(db, "r1")
    assert data.modes == ["static", "adaptive"]
    assert list(data.runs["mode"]) == ["static", "adaptive"]
    assert data.interval == "1d"
    assert data.symbol == "BBB"  # most trades in adaptive, though static traded AAA more often
    assert len(data.bars) == DAYS and data.bars["close"].iloc[0] == 50.0
    assert len(data.symbol_trades) == 2
    assert set(data.equity["mode"]) == {"static", "adaptive"}


def test_chosen_symbol_and_unknown_symbol(db):
    assert report_data(db, "r1", symbol="AAA").symbol_trades["mode"].value_counts().to_dict() == {
        "static": 3,
        "adaptive": 1,
    }
    with pytest.raises(ValueError, match="'ZZZ'"):
        report_data(db, "r1", symbol="ZZZ")


def test_unknown_run_names_it_and_the_newest_runs(db):
    with pytest.raises(ValueError, match="'nope'") as err:
        report_data(db, "nope")
    assert "newest runs: r-empty, r1, r0, r-bare" in str(err.value)


def test_warehouse_without_backtest_tables(tmp_path):
    path = tmp_path / "old.duckdb"
    duckdb.connect(str(path)).close()  # an unmigrated file
    with pytest.raises(ValueError, match="no backtest tables"):
        report_data(path, "r1")


def test_write_report(db, tmp_path):
    html, png = write_report(db, "r1", tmp_path / "out")
    assert (html, png) == (tmp_path / "out" / "report.html", tmp_path / "out" / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    page = html.read_text(encoding="utf-8")
    assert len(page) > 1_000_000  # plotly.js inline: the page works offline
    assert "plotly" in page and not re.search(r"<script[^>]*\bsrc=", page)
    for text in (
        "static",
        "adaptive",
        "run r1",
        "2026-03-02 to 2026-03-13",
        "BBB 1d close",
        "exit: stop",
        EXTERNAL,
        "regime",
    ):
        assert text in page
    assert NO_TRADES not in page


def test_run_without_trades_still_writes_both_files(db, tmp_path):
    data = report_data(db, "r-empty")
    assert data.trades.empty and data.module_pnl.empty
    assert data.symbol == "AAA"  # no trades: the first symbol with bars
    html, png = write_report(db, "r-empty", tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"
    page = html.read_text(encoding="utf-8")
    assert page.count(NO_TRADES) >= 2  # the price panel and the module panel
    assert "static" in page and "adaptive" in page


def test_run_without_bars_trades_or_equity_still_writes_both_files(db, tmp_path):
    data = report_data(db, "r-bare")
    assert data.interval == "5m" and data.symbol is None and data.bars.empty and data.equity.empty
    html, png = write_report(db, "r-bare", tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"
    page = html.read_text(encoding="utf-8")
    assert "no equity rows" in page and f"no 5m bars and {NO_TRADES}" in page
