"""The backtest report: one run's modes side by side, as one self-contained HTML page (Plotly, offline)
and a matplotlib PNG with the same panels (tasks/report_views.py).

What it shows: cumulative return of every distinct equity curve against an equal-weight buy-and-hold of
the replayed symbols, drawdown, monthly returns, rolling Sharpe, the distribution of bar returns, one
symbol's close with every mode's entries and exits, P&L by contributing module, the timeline's health
against the trade filter's gate, the candidates each mode did not trade (by rule), and the trade list.
Modes whose equity curves are identical are drawn once, and the page says which. Everything is read
with read-only connections: the user's warehouse, the run's scratch ``models.duckdb`` (health) and
each mode's results file (decisions).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from models import report as mr
from tasks.report_views import NO_TRADES, Sheet, write_sheet
from warehouse.db import connect

log = logging.getLogger(__name__)

EXTERNAL = "external"  # P&L of trades no module voted for
NEWEST_RUNS_SHOWN = 5  # run ids named when a run_id is unknown
__all__ = ["EXTERNAL", "NO_TRADES", "ReportData", "module_pnl", "report_data", "write_report"]


@dataclass(frozen=True)
class ReportData:
    """What the report plots, one frame per view (timestamps UTC)."""

    run_id: str
    interval: str
    symbol: str | None  # the price panel's symbol (None: no bars and no trades to choose from)
    modes: list[str]  # static, adaptive, then the rest by name
    runs: pd.DataFrame  # the run's backtest_runs rows, in ``modes`` order
    equity: pd.DataFrame  # mode, ts, equity, cash, gross, drawdown
    trades: pd.DataFrame  # every closed trade of the run (backtest_trades)
    bars: pd.DataFrame  # ts, open, high, low, close, volume of ``symbol`` over the run's span
    module_pnl: pd.DataFrame  # mode, module, trades, pnl: each trade's P&L split among its contributors
    benchmark: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))  # buy & hold equity by ts
    benchmark_symbols: list[str] = field(default_factory=list)
    health: pd.DataFrame = field(default_factory=pd.DataFrame)  # ts, module, score (+ gate columns)
    gates: dict[str, float] = field(default_factory=dict)  # the trade filter's health minimums
    blocked: pd.DataFrame = field(default_factory=pd.DataFrame)  # mode, rule, candidates

    @property
    def symbol_trades(self) -> pd.DataFrame:
        return self.trades[self.trades["symbol"] == self.symbol]


def module_pnl(trades: pd.DataFrame) -> pd.DataFrame:
    """P&L by contributing module per mode: each closed trade's pnl split equally among the modules that
    voted for it (``contributors``, comma-separated); a trade without contributors counts as "external".
    Per mode the shares sum to the mode's total P&L."""
    cols = ["mode", "module", "trades", "pnl"]
    if trades.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("mode", "module") else float) for c in cols})
    modules = trades["contributors"].map(_modules)
    long = pd.DataFrame(
        {
            "mode": trades["mode"].to_numpy(),
            "module": modules.to_numpy(),
            "share": (trades["pnl"].astype(float) / modules.map(len)).to_numpy(),
        }
    ).explode("module")
    out = long.groupby(["mode", "module"], sort=False).agg(trades=("share", "size"), pnl=("share", "sum"))
    return out.reset_index().sort_values(["mode", "pnl"], ascending=[True, False], ignore_index=True)


def _modules(contributors) -> list[str]:
    if not isinstance(contributors, str):
        return [EXTERNAL]
    names = [m.strip() for m in contributors.split(",") if m.strip()]
    return list(dict.fromkeys(names)) or [EXTERNAL]


def _mode_order(modes) -> list[str]:
    unique = list(dict.fromkeys(modes))
    return sorted(unique, key=lambda m: (m != "static", m != "adaptive", m))


def _default_symbol(trades: pd.DataFrame) -> str | None:
    """The symbol with the most trades in the adaptive mode (else in any mode); ties by name."""
    if trades.empty:
        return None
    adaptive = trades[trades["mode"] == "adaptive"]
    pool = adaptive if len(adaptive) else trades
    counts = pool.groupby("symbol").size().reset_index(name="n")
    return str(counts.sort_values(["n", "symbol"], ascending=[False, True]).iloc[0]["symbol"])


def report_data(
    warehouse: str | Path,
    run_id: str,
    *,
    symbol: str | None = None,
    interval: str | None = None,
) -> ReportData:
    """Read one backtest run (and the chosen symbol's bars over its span) with one read-only connection.

    ``interval`` defaults to the run's; ``symbol`` to the one with the most trades in the adaptive mode,
    else in any mode, else the first symbol with bars. Raises ``ValueError`` for an unknown run or symbol.
    """
    with connect(warehouse, read_only=True) as con:
        # A read-only open applies no migrations: a warehouse from before backtests lacks the tables.
        if not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'backtest_runs'"
        ).fetchall()[0][0]:
            raise ValueError(f"no backtest tables in {warehouse}: run `qtrader init` to migrate it")
        runs = con.execute("SELECT * FROM backtest_runs WHERE run_id = ?", [run_id]).df()
        if runs.empty:
            newest = [
                r[0]
                for r in con.execute(
                    "SELECT run_id FROM backtest_runs GROUP BY run_id ORDER BY max(started_at) DESC LIMIT ?",
                    [NEWEST_RUNS_SHOWN],
                ).fetchall()
            ]
            known = f"newest runs: {', '.join(newest)}" if newest else "no backtest has been recorded yet"
            raise ValueError(f"no backtest run {run_id!r} in {warehouse} ({known})")
        equity = con.execute(
            "SELECT mode, ts, equity, cash, gross, drawdown FROM backtest_equity WHERE run_id = ? "
            "ORDER BY mode, ts",
            [run_id],
        ).df()
        trades = con.execute(
            "SELECT * FROM backtest_trades WHERE run_id = ? ORDER BY mode, entry_ts, decision_id", [run_id]
        ).df()

        modes = _mode_order([*runs["mode"], *equity["mode"], *trades["mode"]])
        runs = runs.set_index("mode").loc[[m for m in modes if m in set(runs["mode"])]].reset_index()
        if interval is None:
            own = runs.loc[runs["mode"] == "adaptive", "interval"]
            interval = str(own.iloc[0] if len(own) else runs["interval"].iloc[0])
        # The run's span, widened to its trades' entries and exits so that every marker sits on the line.
        span_start, span_end = runs["start_ts"].min(), runs["end_ts"].max()
        if len(trades):
            span_start = min(span_start, trades["entry_ts"].min())
            span_end = max(span_end, trades["exit_ts"].max())

        if symbol is None:
            symbol = _default_symbol(trades)
        if symbol is None:
            symbol = con.execute(
                "SELECT min(symbol) FROM bars WHERE interval = ? AND ts BETWEEN ? AND ?",
                [interval, span_start, span_end],
            ).fetchall()[0][0]
        bars = con.execute(
            "SELECT ts, open, high, low, close, volume FROM bars "
            "WHERE symbol = ? AND interval = ? AND ts BETWEEN ? AND ? ORDER BY ts",
            [symbol, interval, span_start, span_end],
        ).df()
        if symbol is not None and bars.empty and not (trades["symbol"] == symbol).any():
            raise ValueError(
                f"symbol {symbol!r} has no {interval} bars between {span_start:%Y-%m-%d} and "
                f"{span_end:%Y-%m-%d} and no trades in backtest run {run_id!r}"
            )

        folder = _scratch_folder(runs)
        replayed = _replayed_symbols(folder, interval) or [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT symbol FROM bars WHERE interval = ? AND ts BETWEEN ? AND ? ORDER BY symbol",
                [interval, runs["start_ts"].min(), runs["end_ts"].max()],
            ).fetchall()
        ]
        closes = con.execute(
            "SELECT ts, symbol, close FROM bars WHERE interval = ? AND ts BETWEEN ? AND ? "
            "AND list_contains(?, symbol) ORDER BY ts",
            [interval, runs["start_ts"].min(), runs["end_ts"].max(), replayed],
        ).df()

    benchmark = pd.Series(dtype=float)
    if len(closes) and len(equity):
        wide = closes.pivot_table(index="ts", columns="symbol", values="close", aggfunc="last")
        index = pd.DatetimeIndex(sorted(equity["ts"].unique()))
        benchmark = mr.buy_and_hold(wide, float(runs["starting_equity"].iloc[0]), index)
    return ReportData(
        run_id=run_id,
        interval=interval,
        symbol=symbol,
        modes=modes,
        runs=runs,
        equity=equity,
        trades=trades,
        bars=bars,
        module_pnl=module_pnl(trades),
        benchmark=benchmark,
        benchmark_symbols=sorted(closes["symbol"].unique()) if len(closes) else [],
        health=_read_health(folder, runs["start_ts"].min(), runs["end_ts"].max()),
        gates=_gates(runs),
        blocked=_read_blocked(runs),
    )


# ---- the run's scratch files -------------------------------------------------------------------------


def _scratch_folder(runs: pd.DataFrame) -> Path | None:
    """``data/backtests/<run_id>/``: the folder of the modes' results files (``backtest_runs.scratch``)."""
    paths = [p for p in runs.get("scratch", pd.Series(dtype=object)) if isinstance(p, str) and p]
    return Path(paths[0]).parent if paths else None


def _read_only(path: Path):
    return duckdb.connect(str(path), read_only=True)


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _replayed_symbols(folder: Path | None, interval: str) -> list[str]:
    """The symbols the timeline replayed: those of its scratch warehouse's bars."""
    path = folder / "models.duckdb" if folder is not None else None
    if path is None or not path.exists():
        return []
    try:
        with _read_only(path) as con:
            if "bars" not in _tables(con):
                return []
            return [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT symbol FROM bars WHERE interval = ? ORDER BY symbol", [interval]
                ).fetchall()
            ]
    except duckdb.Error as err:  # a scratch file another process holds, or an older layout
        log.warning("backtest report: cannot read %s (%s)", path, err)
        return []


def _read_health(folder: Path | None, start, end) -> pd.DataFrame:
    """The timeline's health runs over the replayed span (ts, module, score, and any gate column)."""
    path = folder / "models.duckdb" if folder is not None else None
    if path is None or not path.exists():
        return pd.DataFrame()
    try:
        with _read_only(path) as con:
            if "health" not in _tables(con):
                return pd.DataFrame()
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'health'"
            ).fetchall()]  # fmt: skip
            # Migration 008 records the gate each score was compared with (a number) and its source (text).
            extra = [c for c in ("gate", "gate_source") if c in cols]
            select = ", ".join(["ts", "module", "score", *extra])
            return con.execute(
                f"SELECT {select} FROM health WHERE ts BETWEEN ? AND ? AND score IS NOT NULL ORDER BY ts, module",
                [start, end],
            ).df()
    except duckdb.Error as err:
        log.warning("backtest report: cannot read health from %s (%s)", path, err)
        return pd.DataFrame()


def _gates(runs: pd.DataFrame) -> dict[str, float]:
    """The trade filter's health minimums the adaptive mode ran with (its overrides, else the defaults)."""
    from qtrader.settings import FilterSettings

    defaults = FilterSettings()
    chosen = runs[runs["mode"] == "adaptive"] if (runs["mode"] == "adaptive").any() else runs
    tf = {}
    if len(chosen) and isinstance(chosen["overrides"].iloc[0], str):
        try:
            tf = (json.loads(chosen["overrides"].iloc[0]) or {}).get("trade_filter") or {}
        except json.JSONDecodeError:
            tf = {}
    return {
        "overall gate": float(tf.get("min_overall_health", defaults.min_overall_health)),
        "module gate": float(tf.get("min_module_health", defaults.min_module_health)),
    }


def _read_blocked(runs: pd.DataFrame) -> pd.DataFrame:
    """Per mode, candidates not traded by each rule they failed (a candidate counts once per rule)."""
    parts = []
    for mode, path in zip(runs["mode"], runs.get("scratch", [None] * len(runs)), strict=True):
        if not isinstance(path, str) or not Path(path).exists():
            continue
        try:
            with _read_only(Path(path)) as con:
                if "decisions" not in _tables(con):
                    continue
                df = con.execute(
                    "SELECT trim(f.rule) AS rule, count(*) AS candidates FROM decisions, "
                    "unnest(string_split(coalesce(nullif(failed, ''), reason_code), ',')) AS f(rule) "
                    "WHERE NOT accepted GROUP BY ALL"
                ).df()
        except duckdb.Error as err:
            log.warning("backtest report: cannot read decisions from %s (%s)", path, err)
            continue
        parts.append(df.assign(mode=mode))
    if not parts:
        return pd.DataFrame(columns=["mode", "rule", "candidates"])
    return pd.concat(parts, ignore_index=True)[["mode", "rule", "candidates"]]


# ---- the report ---------------------------------------------------------------------------------------


def write_report(
    warehouse: str | Path,
    run_id: str,
    out_dir: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` (one self-contained page, works offline) and ``out_dir/report.png``
    (the same panels) for one backtest run; returns their paths."""
    data = report_data(warehouse, run_id, symbol=symbol, interval=interval)
    html_path, png_path = write_sheet(sheet_of(data), out_dir, "report")
    log.info("backtest report for %s: %s, %s", run_id, html_path, png_path)
    return html_path, png_path


def _periods_per_year(interval: str) -> float:
    from qtrader.calendar import interval_minutes, is_daily

    return 252.0 if is_daily(interval) else 252.0 * (390 / interval_minutes(interval))


def short_ts(values, interval: str) -> list[str]:
    from qtrader.calendar import is_daily

    fmt = "%Y-%m-%d" if is_daily(interval) else "%Y-%m-%d %H:%M"
    return ["" if pd.isna(v) else f"{pd.Timestamp(v).tz_convert('UTC'):{fmt}}" for v in values]


def sheet_of(data: ReportData) -> Sheet:
    """The tearsheet of one run: identical curves merged, a buy-and-hold benchmark, every table."""
    runs = data.runs
    start_eq = float(runs["starting_equity"].iloc[0]) if len(runs) else 100_000.0
    series = {
        m: data.equity[data.equity["mode"] == m].set_index("ts")["equity"].astype(float)
        for m in data.modes
        if (data.equity["mode"] == m).any()
    }
    groups = mr.identical_groups(series)
    label = {g[0]: (g[0] if len(g) == 1 else f"{g[0]} = {', '.join(g[1:])}") for g in groups}
    shown = [g[0] for g in groups]  # each group's representative
    curves = {label[m]: series[m] for m in shown}
    curve_of = {m: label[g[0]] for g in groups for m in g}

    start, end = runs["start_ts"].min(), runs["end_ts"].max()
    symbols = int(runs["symbols"].max()) if runs["symbols"].notna().any() else len(data.benchmark_symbols)
    title = f"Backtest · {data.interval} bars {start:%Y-%m-%d} to {end:%Y-%m-%d} · {symbols} symbols"
    subtitle = (
        f"run {data.run_id}; {int(runs['bars'].max())} bars, starting equity {start_eq:,.0f}, costs included; "
        f"{len(data.trades)} closed trades over {len(data.modes)} mode{'' if len(data.modes) == 1 else 's'}"
    )

    notes = [f"{m}: {mr.mode_note(m)}" for m in data.modes]
    if (same := mr.same_curve_note(groups)) is not None:
        notes.insert(0, same)
    if len(data.benchmark):
        notes.append(
            f"{mr.BENCHMARK}: equal weights of the {len(data.benchmark_symbols)} replayed symbols "
            f"({', '.join(data.benchmark_symbols[:12])}{', ...' if len(data.benchmark_symbols) > 12 else ''}) "
            f"bought at the first bar's close with the same starting equity, no costs"
        )

    keep = set(shown)
    trades = data.trades[data.trades["mode"].isin(keep)].copy() if len(data.trades) else data.trades
    if len(trades):
        trades["curve"] = trades["mode"].map(curve_of)
    price_trades = trades[trades["symbol"] == data.symbol] if len(trades) else trades
    mp = data.module_pnl[data.module_pnl["mode"].isin(keep)].copy()
    mp["curve"] = mp["mode"].map(curve_of)

    health = data.health
    gates = mr.gate_lines(health, data.gates)

    return Sheet(
        title=title,
        subtitle=subtitle,
        interval=data.interval,
        periods_per_year=_periods_per_year(data.interval),
        starting_equity=start_eq,
        curves=curves,
        benchmark=data.benchmark if len(data.benchmark) else None,
        notes=notes,
        metrics=_metrics(data, groups, label, start_eq),
        price_symbol=data.symbol,
        price_bars=data.bars,
        price_trades=price_trades,
        price_note=_price_note(data),
        module_pnl=mp,
        health=health[["ts", "module", "score"]] if len(health) else pd.DataFrame(),
        gates=gates,
        health_note="no health recorded in the run's scratch warehouse",
        blocked=_blocked_table(data.blocked, data.modes),
        trade_list=trade_list(trades, data.interval),
        trade_list_note=(
            f"{len(trades)} closed trades"
            + (" (identical modes listed once)" if any(len(g) > 1 for g in groups) else "")
            + (f"; the newest {TRADES_SHOWN} shown" if len(trades) > TRADES_SHOWN else "")
        ),
    )


TRADES_SHOWN = 500


def _price_note(data: ReportData) -> str | None:
    if data.symbol is None:
        return f"no {data.interval} bars and {NO_TRADES}"
    if data.trades.empty:
        return NO_TRADES if not data.bars.empty else f"no {data.interval} bars for {data.symbol}; {NO_TRADES}"
    if data.symbol_trades.empty:
        return f"{NO_TRADES} in {data.symbol}"
    return None


def _metrics(data: ReportData, groups, label, start_eq: float) -> pd.DataFrame:
    ppy = _periods_per_year(data.interval)
    runs = data.runs.set_index("mode")
    rows = []

    def num(v, fmt: str) -> str:
        return "n/a" if v is None or pd.isna(v) else fmt.format(v)

    for g in groups:
        m = g[0]
        r = runs.loc[m] if m in runs.index else None
        eq = data.equity[data.equity["mode"] == m].set_index("ts")["equity"].astype(float)
        s = mr.summary(eq, start_eq, ppy)
        years = len(eq) / ppy
        rows.append({
            "mode": label[m],
            "return": mr.fmt_pct(s["total_return"]),
            "CAGR": mr.fmt_pct(s["cagr"]) if years >= 1 else "n/a (< 1 year)",
            "Sharpe": num(r["sharpe"] if r is not None else s["sharpe"], "{:.2f}"),
            "Sortino": num(r["sortino"] if r is not None else s["sortino"], "{:.2f}"),
            "max DD": mr.fmt_pct(s["max_drawdown"], signed=False),
            "volatility": mr.fmt_pct(s["volatility"], signed=False),
            "trades": num(r["trades"] if r is not None else None, "{:,.0f}"),
            "open": num(r["open_trades"] if r is not None else None, "{:,.0f}"),
            "win rate": mr.fmt_pct(r["win_rate"], 1, signed=False) if r is not None else "n/a",
            "avg trade": mr.fmt_pct(r["avg_pnl_pct"]) if r is not None else "n/a",
            "exposure": mr.fmt_pct(r["exposure"], 1, signed=False) if r is not None else "n/a",
            "turnover": num(r["turnover"] if r is not None else None, "{:.2f}"),
            "commission": mr.fmt_money(r["commission"]) if r is not None else "n/a",
        })  # fmt: skip
    if len(data.benchmark):
        s = mr.summary(data.benchmark, start_eq, ppy)
        years = len(data.benchmark) / ppy
        rows.append({
            "mode": mr.BENCHMARK, "return": mr.fmt_pct(s["total_return"]),
            "CAGR": mr.fmt_pct(s["cagr"]) if years >= 1 else "n/a (< 1 year)",
            "Sharpe": num(s["sharpe"], "{:.2f}"), "Sortino": num(s["sortino"], "{:.2f}"),
            "max DD": mr.fmt_pct(s["max_drawdown"], signed=False),
            "volatility": mr.fmt_pct(s["volatility"], signed=False),
        })  # fmt: skip
    return pd.DataFrame(rows).fillna("")


def _blocked_table(blocked: pd.DataFrame, modes: list[str]) -> pd.DataFrame | None:
    """Rows: rules (most candidates first); columns: modes; cells: candidates that failed the rule."""
    if blocked.empty:
        return None
    wide = blocked.pivot_table(index="rule", columns="mode", values="candidates", aggfunc="sum", fill_value=0)
    wide = wide[[m for m in modes if m in wide.columns]]
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False).index]
    out = wide.map(lambda v: f"{int(v):,}").reset_index()
    out.columns.name = None
    return out


def trade_list(trades: pd.DataFrame, interval: str) -> pd.DataFrame:
    """The trade list's rows, newest exit first, formatted for reading (``curve`` names the line)."""
    if trades.empty:
        return pd.DataFrame()
    t = trades.sort_values(["exit_ts", "curve", "symbol"], ascending=[False, True, True]).head(TRADES_SHOWN)
    return pd.DataFrame({
        "mode": t["curve"].to_numpy(),
        "symbol": t["symbol"].to_numpy(),
        "side": t["side"].to_numpy(),
        "entry": short_ts(t["entry_ts"], interval),
        "exit": short_ts(t["exit_ts"], interval),
        "qty": [f"{int(q):,}" for q in t["qty"]],
        "entry price": [mr.fmt_money(v) for v in t["entry_price"]],
        "exit price": [mr.fmt_money(v) for v in t["exit_price"]],
        "P&L": [mr.fmt_money(v, signed=True) for v in t["pnl"]],
        "return": [mr.fmt_pct(v) for v in t["pnl_pct"]],
        "R": ["n/a" if pd.isna(v) else f"{v:+.2f}" for v in t["r_multiple"]],
        "exit reason": [str(v) if isinstance(v, str) else "" for v in t["exit_reason"]],
        "modules": [", ".join(_modules(c)) for c in t["contributors"]],
    })  # fmt: skip
