"""The backtest report: one run's modes side by side, as a self-contained Plotly page and a matplotlib PNG.

Four views of the same data (``report_data``): equity per mode, drawdown per mode, one symbol's close with
every mode's entries and exits, and P&L by contributing module. The HTML adds the run's metrics table
(``backtest_runs``) at the top. Everything is read from the warehouse with one read-only connection.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from warehouse.db import connect

log = logging.getLogger(__name__)

EXTERNAL = "external"  # P&L of trades no module voted for
NO_TRADES = "no closed trades"
NEWEST_RUNS_SHOWN = 5  # run ids named when a run_id is unknown
PNG_DPI = 150

# Mode colours in run order (static, adaptive, then the ablations), shared by both outputs (tab10).
MODE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# Exit markers: take-profits green (darker = further), stops red, breakeven grey.
REASON_COLOURS = {
    "TP1": "#a1d99b",
    "TP2": "#41ab5d",
    "TP3": "#006d2c",
    "take_profit": "#41ab5d",
    "stop": "#e31a1c",
    "stop_loss": "#e31a1c",
    "breakeven": "#969696",
    "manual": "#6a3d9a",
}
OTHER_REASON_COLOURS = ("#b15928", "#fb9a99", "#cab2d6", "#ffff99", "#1f78b4")
UNKNOWN_REASON = "unknown"

# Metrics table of the HTML page: column -> (header, format).
METRICS = {
    "mode": ("mode", "{}"),
    "trades": ("trades", "{:d}"),
    "open_trades": ("open", "{:d}"),
    "win_rate": ("win rate", "{:.1%}"),
    "avg_pnl_pct": ("avg trade", "{:+.2%}"),
    "avg_pnl": ("avg P&L", "{:+,.2f}"),
    "total_return": ("return", "{:+.2%}"),
    "sharpe": ("Sharpe", "{:.2f}"),
    "sortino": ("Sortino", "{:.2f}"),
    "max_drawdown": ("max DD", "{:.2%}"),
    "exposure": ("exposure", "{:.1%}"),
    "turnover": ("turnover", "{:.2f}"),
    "final_equity": ("final equity", "{:,.2f}"),
    "commission": ("commission", "{:,.2f}"),
    "refused_bars": ("refused bars", "{:d}"),
}


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
    )


def write_report(
    warehouse: str | Path,
    run_id: str,
    out_dir: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` (self-contained Plotly, works offline) and ``out_dir/report.png``
    (matplotlib, 2x2 at 150 dpi) for one backtest run; returns their paths."""
    data = report_data(warehouse, run_id, symbol=symbol, interval=interval)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, png_path = out / "report.html", out / "report.png"
    _write_html(data, html_path)
    _write_png(data, png_path)
    log.info("backtest report for %s: %s, %s", run_id, html_path, png_path)
    return html_path, png_path


# ---- shared presentation helpers ---------------------------------------------------------------------


def _mode_colours(modes: list[str]) -> dict[str, str]:
    return {m: MODE_COLOURS[i % len(MODE_COLOURS)] for i, m in enumerate(modes)}


def _reason_colours(reasons) -> dict[str, str]:
    out, others = {}, iter(OTHER_REASON_COLOURS * 4)
    for r in sorted({_reason(r) for r in reasons}, key=lambda r: (r not in REASON_COLOURS, r)):
        out[r] = REASON_COLOURS.get(r) or next(others, "#000000")
    return out


def _reason(value) -> str:
    return value if isinstance(value, str) and value else UNKNOWN_REASON


def _price_title(data: ReportData) -> str:
    if data.symbol is None:
        return f"Price ({data.interval}): no bars"
    return f"{data.symbol} {data.interval} close with entries and exits"


def _price_note(data: ReportData) -> str | None:
    """The price panel's empty-state text, if any."""
    if data.symbol is None:
        return f"no {data.interval} bars and {NO_TRADES}"
    if data.trades.empty:
        return NO_TRADES if not data.bars.empty else f"no {data.interval} bars for {data.symbol}; {NO_TRADES}"
    if data.symbol_trades.empty:
        return f"{NO_TRADES} in {data.symbol}"
    return None


def _metrics_frame(runs: pd.DataFrame) -> pd.DataFrame:
    shown = {}
    for col, (header, fmt) in METRICS.items():
        if col not in runs:
            continue
        shown[header] = [
            "" if v is None or (isinstance(v, float) and v != v) else fmt.format(int(v) if "d}" in fmt else v)
            for v in runs[col]
        ]
    return pd.DataFrame(shown)


# ---- HTML (Plotly) -----------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table.metrics {{ border-collapse: collapse; font-size: 0.9em; margin-bottom: 1em; }}
table.metrics th, table.metrics td {{
  border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right;
}}
table.metrics td:first-child, table.metrics th:first-child {{ text-align: left; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{subtitle}</p>
{table}
{figure}
</body>
</html>
"""


def _subtitle(data: ReportData) -> str:
    runs = data.runs
    start, end = runs["start_ts"].min(), runs["end_ts"].max()
    return (
        f"{', '.join(runs['interval'].unique())} bars {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
        f"{int(runs['bars'].max())} bars, {int(runs['symbols'].max())} symbols, "
        f"starting equity {float(runs['starting_equity'].iloc[0]):,.2f}; "
        f"{len(data.trades)} closed trades over {len(data.modes)} mode{'' if len(data.modes) == 1 else 's'}"
    )


def _write_html(data: ReportData, path: Path) -> None:
    from plotly.subplots import make_subplots

    colours = _mode_colours(data.modes)
    fig = make_subplots(
        rows=4,
        cols=1,
        row_heights=[0.3, 0.18, 0.3, 0.22],
        vertical_spacing=0.06,
        subplot_titles=(
            "Equity per mode",
            "Drawdown per mode (equity / running peak - 1)",
            _price_title(data),
            "P&L by contributing module (each trade's P&L split equally among its contributors)",
        ),
    )

    def note(row: int, text: str, *, blank: bool = False) -> None:
        if blank:
            # plotly.js draws no subplot without a trace, and a "domain" reference to an undrawn subplot
            # falls back to the first one: an empty trace keeps the panel (and its note) in place.
            fig.add_scatter(
                x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip", row=row, col=1
            )
            hidden = {"showticklabels": False, "showgrid": False, "zeroline": False, "row": row, "col": 1}
            fig.update_xaxes(**hidden)
            fig.update_yaxes(**hidden)
        fig.add_annotation(
            text=text,
            row=row,
            col=1,
            xref="x domain",
            yref="y domain",
            x=0.5,
            y=0.5,
            showarrow=False,
            font={"size": 16, "color": "#666"},
        )

    for mode in data.modes:
        eq = data.equity[data.equity["mode"] == mode]
        style = {"legendgroup": mode, "line": {"color": colours[mode]}}
        fig.add_scatter(x=eq["ts"], y=eq["equity"], name=mode, mode="lines", row=1, col=1, **style)
        fig.add_scatter(
            x=eq["ts"], y=eq["drawdown"], name=mode, mode="lines", showlegend=False, row=2, col=1, **style
        )
    if data.equity.empty:
        note(1, "no equity rows", blank=True)
        note(2, "no equity rows", blank=True)

    if not data.bars.empty:
        fig.add_scatter(
            x=data.bars["ts"],
            y=data.bars["close"],
            name=f"{data.symbol} close",
            mode="lines",
            line={"color": "#444", "width": 1},
            row=3,
            col=1,
        )
    trades = data.symbol_trades
    reasons = _reason_colours(trades["exit_reason"]) if len(trades) else {}
    for mode in data.modes:
        t = trades[trades["mode"] == mode]
        if t.empty:
            continue
        paths_x, paths_y = [], []
        for e_ts, x_ts, e_px, x_px in zip(
            t["entry_ts"], t["exit_ts"], t["entry_price"], t["exit_price"], strict=True
        ):
            paths_x += [e_ts, x_ts, None]
            paths_y += [e_px, x_px, None]
        fig.add_scatter(
            x=paths_x,
            y=paths_y,
            mode="lines",
            line={"color": colours[mode], "width": 1, "dash": "dot"},
            legendgroup=mode,
            showlegend=False,
            hoverinfo="skip",
            row=3,
            col=1,
        )
        fig.add_scatter(
            x=t["entry_ts"],
            y=t["entry_price"],
            mode="markers",
            name=f"{mode} entries",
            legendgroup=mode,
            showlegend=False,
            row=3,
            col=1,
            marker={
                "symbol": ["triangle-up" if s == "buy" else "triangle-down" for s in t["side"]],
                "size": 11,
                "color": colours[mode],
                "line": {"color": "#222", "width": 1},
            },
            hovertext=[
                f"{mode}: {s} {q} @ {p:,.2f}<br>{d}"
                for s, q, p, d in zip(t["side"], t["qty"], t["entry_price"], t["decision_id"], strict=True)
            ],
            hoverinfo="x+text",
        )
        fig.add_scatter(
            x=t["exit_ts"],
            y=t["exit_price"],
            mode="markers",
            name=f"{mode} exits",
            legendgroup=mode,
            showlegend=False,
            row=3,
            col=1,
            marker={
                "symbol": "circle",
                "size": 10,
                "color": [reasons[_reason(r)] for r in t["exit_reason"]],
                "line": {"color": colours[mode], "width": 2},
            },
            hovertext=[
                f"{mode}: {_reason(r)} @ {p:,.2f}<br>P&L {pnl:+,.2f} ({pct:+.2%})"
                + ("" if r_mult is None or r_mult != r_mult else f", {r_mult:+.2f}R")
                for r, p, pnl, pct, r_mult in zip(
                    t["exit_reason"], t["exit_price"], t["pnl"], t["pnl_pct"], t["r_multiple"], strict=True
                )
            ],
            hoverinfo="x+text",
        )
    # Legend keys for the marker shapes and exit colours (no data of their own).
    if len(trades):
        for label, shape in (("buy entry", "triangle-up"), ("sell entry", "triangle-down")):
            fig.add_scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=label,
                legendgroup="keys",
                row=3,
                col=1,
                marker={"symbol": shape, "size": 11, "color": "#bbb", "line": {"color": "#222", "width": 1}},
            )
        for reason, colour in reasons.items():
            fig.add_scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"exit: {reason}",
                legendgroup="keys",
                row=3,
                col=1,
                marker={"symbol": "circle", "size": 10, "color": colour},
            )
    if (text := _price_note(data)) is not None:
        note(3, text, blank=data.bars.empty and trades.empty)

    mp = data.module_pnl
    if mp.empty:
        note(4, NO_TRADES, blank=True)
    else:
        order = mp.groupby("module")["pnl"].sum().sort_values(ascending=False).index.tolist()
        for mode in data.modes:
            m = mp[mp["mode"] == mode].set_index("module").reindex(order)
            if m["trades"].isna().all():
                continue
            fig.add_bar(
                x=order,
                y=m["pnl"],
                name=mode,
                legendgroup=mode,
                showlegend=False,
                marker_color=colours[mode],
                customdata=m["trades"].fillna(0),
                row=4,
                col=1,
                hovertemplate=f"{mode}<br>%{{x}}: %{{y:+,.2f}}, %{{customdata:.0f}} trades<extra></extra>",
            )
        fig.add_hline(y=0, line={"color": "#999", "width": 1}, row=4, col=1)

    fig.update_yaxes(title_text="equity", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".2%", row=2, col=1)
    fig.update_yaxes(title_text="price", row=3, col=1)
    fig.update_yaxes(title_text="P&L", row=4, col=1)
    fig.update_layout(height=1700, barmode="group", hovermode="closest", margin={"t": 40})

    title = f"Backtest {data.run_id}"
    table = _metrics_frame(data.runs).to_html(index=False, classes="metrics", border=0, escape=True)
    page = _PAGE.format(
        title=html.escape(title),
        subtitle=html.escape(_subtitle(data)),
        table=table,
        figure=fig.to_html(full_html=False, include_plotlyjs=True),  # self-contained: works offline
    )
    path.write_text(page, encoding="utf-8")


# ---- PNG (matplotlib) --------------------------------------------------------------------------------


def _write_png(data: ReportData, path: Path) -> None:
    # The object-oriented API with an explicit Agg canvas: no pyplot global state, safe in any thread.
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter, StrMethodFormatter

    colours = _mode_colours(data.modes)
    fig = Figure(figsize=(16, 10), layout="constrained")
    FigureCanvasAgg(fig)
    (ax_eq, ax_dd), (ax_px, ax_mod) = fig.subplots(2, 2)
    fig.suptitle(f"Backtest {data.run_id} ({data.interval})", fontsize=14)

    def note(ax, text: str, *, blank: bool = False) -> None:
        if blank:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#666")

    def dates(ax) -> None:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))

    returns = dict(zip(data.runs["mode"], data.runs["total_return"], strict=True))
    for mode in data.modes:
        eq = data.equity[data.equity["mode"] == mode]
        ret = returns.get(mode)
        label = mode if ret is None or ret != ret else f"{mode} ({ret:+.2%})"
        ax_eq.plot(eq["ts"], eq["equity"], color=colours[mode], label=label, lw=1.4)
        ax_dd.plot(eq["ts"], eq["drawdown"], color=colours[mode], label=mode, lw=1.2)
    ax_eq.set_title("Equity per mode")
    ax_dd.set_title("Drawdown per mode")
    ax_eq.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))  # no "+1e5" offset
    ax_dd.yaxis.set_major_formatter(PercentFormatter(1.0))
    if data.equity.empty:
        note(ax_eq, "no equity rows", blank=True)
        note(ax_dd, "no equity rows", blank=True)
    else:
        ax_eq.legend(fontsize=9, loc="best")
        dates(ax_eq)
        dates(ax_dd)

    ax_px.set_title(_price_title(data))
    if not data.bars.empty:
        ax_px.plot(data.bars["ts"], data.bars["close"], color="#444", lw=1, label=f"{data.symbol} close")
    trades = data.symbol_trades
    reasons = _reason_colours(trades["exit_reason"]) if len(trades) else {}
    for mode in data.modes:
        t = trades[trades["mode"] == mode]
        if t.empty:
            continue
        for e_ts, x_ts, e_px, x_px in zip(
            t["entry_ts"], t["exit_ts"], t["entry_price"], t["exit_price"], strict=True
        ):
            ax_px.plot([e_ts, x_ts], [e_px, x_px], color=colours[mode], lw=0.8, ls=":")
        for side, marker in (("buy", "^"), ("sell", "v")):
            s = t[t["side"] == side]
            ax_px.scatter(
                s["entry_ts"],
                s["entry_price"],
                marker=marker,
                s=60,
                color=colours[mode],
                edgecolors="#222",
                linewidths=0.6,
                zorder=3,
            )
        ax_px.scatter(
            t["exit_ts"],
            t["exit_price"],
            marker="o",
            s=50,
            zorder=3,
            c=[reasons[_reason(r)] for r in t["exit_reason"]],
            edgecolors=colours[mode],
            linewidths=1.5,
        )
    if len(trades):
        keys = [Line2D([], [], color="#444", lw=1, label=f"{data.symbol} close")]
        keys += [
            Line2D([], [], ls="", marker=m, color="#bbb", mec="#222", ms=8, label=f"{side} entry")
            for side, m in (("buy", "^"), ("sell", "v"))
        ]
        keys += [
            Line2D([], [], ls="", marker="o", color=c, mec="#222", ms=7, label=f"exit: {r}")
            for r, c in reasons.items()
        ]
        keys.append(Line2D([], [], ls="", marker="o", mfc="none", mec="#222", ms=7, label="outline: mode"))
        ax_px.legend(handles=keys, fontsize=8, loc="best")
    if not data.bars.empty or len(trades):
        dates(ax_px)
    if (text := _price_note(data)) is not None:
        note(ax_px, text, blank=data.bars.empty and trades.empty)

    ax_mod.set_title("P&L by contributing module (split equally)")
    mp = data.module_pnl
    if mp.empty:
        note(ax_mod, NO_TRADES, blank=True)
    else:
        order = mp.groupby("module")["pnl"].sum().sort_values().index.tolist()  # best at the top
        shown = [m for m in data.modes if (mp["mode"] == m).any()]
        height = 0.8 / len(shown)
        for i, mode in enumerate(shown):
            m = mp[mp["mode"] == mode].set_index("module").reindex(order)["pnl"].fillna(0.0)
            ys = [k + 0.4 - height * (i + 0.5) for k in range(len(order))]  # first mode on top
            ax_mod.barh(ys, m.to_numpy(), height=height, color=colours[mode], label=mode)
        ax_mod.set_yticks(range(len(order)), order)
        ax_mod.axvline(0, color="#999", lw=0.8)
        ax_mod.set_xlabel("P&L")
        ax_mod.legend(fontsize=8, loc="best")

    for ax in (ax_eq, ax_dd, ax_px, ax_mod):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=PNG_DPI)
