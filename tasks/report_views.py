"""One tearsheet, two outputs: a self-contained HTML page (Plotly, plotly.js inline once, works offline)
and a matplotlib PNG that show the same panels from the same ``Sheet``.

Panels, in order: cumulative return with the buy-and-hold benchmark (and, for an account, its fills as
markers), drawdown, monthly returns, rolling Sharpe, the distribution of bar returns, one symbol's
close with entries and exits, P&L by contributing module, health over time with its gate. Tables: the
metrics, candidates not traded by rule (backtests), the trade list. The numbers come from
``models.report`` (QuantStats' definitions); this module only draws.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models import report as mr

PNG_DPI = 110
BENCHMARK_COLOUR = "#555555"
CURVE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
REASON_COLOURS = {
    "TP1": "#a1d99b", "TP2": "#41ab5d", "TP3": "#006d2c", "take_profit": "#41ab5d", "stop": "#e31a1c",
    "stop_loss": "#e31a1c", "breakeven": "#969696", "manual": "#6a3d9a", "entry": "#1f77b4",
}  # fmt: skip
OTHER_REASON_COLOURS = ("#b15928", "#fb9a99", "#cab2d6", "#ffff99", "#1f78b4")
UNKNOWN_REASON = "unknown"
NO_TRADES = "no closed trades"
FEW_POINTS = 10  # a health series this short is drawn with markers (one run alone is invisible as a line)
TRADES_SHOWN = 500  # rows of the trade list (the newest first); the rest are in the warehouse


@dataclass
class Sheet:
    """Everything a report shows. Curves are equity series indexed by UTC time, one per distinct curve
    (identical ones merged under one label); trades/module P&L/price trades carry a ``curve`` column."""

    title: str
    subtitle: str
    interval: str
    periods_per_year: float
    starting_equity: float
    curves: dict[str, pd.Series]
    benchmark: pd.Series | None = None
    benchmark_label: str = mr.BENCHMARK
    notes: list[str] = field(default_factory=list)
    metrics: pd.DataFrame | None = None  # preformatted strings, first column the curve
    markers: pd.DataFrame | None = None  # ts, kind, symbol, side, qty, price: fills on the first curve
    price_symbol: str | None = None
    price_bars: pd.DataFrame = field(default_factory=pd.DataFrame)  # ts, close
    price_trades: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # curve, side, entry/exit ts+price, exit_reason
    price_note: str | None = None
    module_pnl: pd.DataFrame = field(default_factory=pd.DataFrame)  # curve, module, trades, pnl
    health: pd.DataFrame = field(default_factory=pd.DataFrame)  # ts, module, score
    gates: dict[str, float | pd.Series] = field(default_factory=dict)  # label -> level (or series by ts)
    health_note: str | None = None
    blocked: pd.DataFrame | None = None  # preformatted: mode, then one column per rule
    trade_list: pd.DataFrame = field(default_factory=pd.DataFrame)  # preformatted strings
    trade_list_note: str | None = None

    @property
    def colours(self) -> dict[str, str]:
        return {c: CURVE_COLOURS[i % len(CURVE_COLOURS)] for i, c in enumerate(self.curves)}

    def returns(self) -> dict[str, pd.Series]:
        out = {c: mr.bar_returns(eq, self.starting_equity) for c, eq in self.curves.items()}
        if self.benchmark is not None:
            out[self.benchmark_label] = mr.bar_returns(self.benchmark, self.starting_equity)
        return out

    def all_curves(self) -> dict[str, pd.Series]:
        out = dict(self.curves)
        if self.benchmark is not None:
            out[self.benchmark_label] = self.benchmark
        return out

    def colour(self, name: str) -> str:
        return BENCHMARK_COLOUR if name == self.benchmark_label else self.colours.get(name, "#000000")

    @property
    def window(self) -> int:
        n = max((len(c) for c in self.curves.values()), default=0)
        return mr.rolling_window(n, self.periods_per_year)

    def monthly(self) -> pd.DataFrame:
        """Rows: curves (benchmark last); columns: months (YYYY-MM); values: returns."""
        rows = {n: mr.monthly_returns(eq, self.starting_equity) for n, eq in self.all_curves().items()}
        table = pd.DataFrame(rows).T
        if table.empty:
            return table
        table.columns = [f"{t:%Y-%m}" for t in table.columns]
        return table


def value_at(curve: pd.Series, times) -> pd.Series:
    """The curve's value at each of ``times`` (the last one at or before it); times may repeat (several
    fills in one bar)."""
    ts = pd.DatetimeIndex(times)
    unique = curve[~curve.index.duplicated(keep="last")]
    return unique.reindex(unique.index.union(ts.unique())).ffill().reindex(ts)


def reason(value) -> str:
    return value if isinstance(value, str) and value else UNKNOWN_REASON


def reason_colours(reasons) -> dict[str, str]:
    out, others = {}, iter(OTHER_REASON_COLOURS * 4)
    for r in sorted({reason(r) for r in reasons}, key=lambda r: (r not in REASON_COLOURS, r)):
        out[r] = REASON_COLOURS.get(r) or next(others, "#000000")
    return out


# ------------------------------------------------------------------------------------------------ HTML

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 1.2em 2em;
        color: #222; max-width: 1500px; }}
h1 {{ font-size: 1.45em; margin-bottom: 0.1em; }}
h2 {{ font-size: 1.1em; margin: 1.4em 0 0.3em; }}
p.sub {{ color: #555; margin-top: 0.2em; }}
ul.notes {{ color: #333; font-size: 0.92em; }}
table {{ border-collapse: collapse; font-size: 0.86em; margin-bottom: 0.8em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.22em 0.6em; text-align: right; white-space: nowrap; }}
th {{ background: #f4f4f4; }}
td:first-child, th:first-child {{ text-align: left; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 0.4em 1.2em; }}
.wide {{ grid-column: 1 / span 2; }}
div.scroll {{ max-height: 28em; overflow-y: auto; display: inline-block; }}
</style>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
{body}
</body>
</html>
"""


def _table(frame: pd.DataFrame | None, table_id: str) -> str:
    if frame is None or frame.empty:
        return ""
    return frame.to_html(index=False, border=0, escape=True, table_id=table_id, na_rep="")


def _fig_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def write_html(sheet: Sheet, path: Path) -> None:
    from plotly.offline import get_plotlyjs

    figs = [
        _px_returns(sheet), _px_drawdown(sheet), _px_monthly(sheet), _px_rolling(sheet),
        _px_distribution(sheet), _px_price(sheet), _px_modules(sheet), _px_health(sheet),
    ]  # fmt: skip
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in sheet.notes)
    body = [f'<ul class="notes">{notes}</ul>' if notes else ""]
    body.append(_table(sheet.metrics, "metrics"))
    body.append('<div class="grid">')
    body += [f"<div>{_fig_html(f, f'panel{i}')}</div>" for i, f in enumerate(figs)]
    body.append("</div>")
    if sheet.blocked is not None and not sheet.blocked.empty:
        body.append("<h2>Candidates not traded, by the rule they failed</h2>")
        body.append(_table(sheet.blocked, "blocked"))
    body.append("<h2>Trades</h2>")
    if sheet.trade_list.empty:
        body.append(f"<p>{NO_TRADES}</p>")
    else:
        if sheet.trade_list_note:
            body.append(f'<p class="sub">{html.escape(sheet.trade_list_note)}</p>')
        body.append(f'<div class="scroll">{_table(sheet.trade_list, "trades")}</div>')
    page = _PAGE.format(
        title=html.escape(sheet.title),
        subtitle=html.escape(sheet.subtitle),
        plotlyjs=get_plotlyjs(),  # inline: one file that works offline
        body="\n".join(body),
    )
    path.write_text(page, encoding="utf-8")


def _layout(fig, title: str, *, ytitle: str, xtitle: str = "time (UTC)", yformat: str | None = None) -> None:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=420,
        # The legend under the axis title, not on it (nor on the plot).
        margin={"l": 60, "r": 10, "t": 50, "b": 110},
        legend={"orientation": "h", "yanchor": "top", "y": -0.28, "x": 0, "font": {"size": 10}},
        hovermode="x unified",
        template="plotly_white",
    )
    fig.update_xaxes(title_text=xtitle)
    fig.update_yaxes(title_text=ytitle, tickformat=yformat)


def _empty(fig, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 15, "color": "#666"})  # fmt: skip
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def _dash(name: str, sheet: Sheet) -> str:
    return "dash" if name == sheet.benchmark_label else "solid"


def _px_returns(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, eq in sheet.all_curves().items():
        cum = mr.cumulative_return(eq, sheet.starting_equity)
        fig.add_scatter(x=eq.index, y=cum, name=f"{name} ({mr.fmt_pct(cum.iloc[-1]) if len(cum) else 'n/a'})",
                        mode="lines", line={"color": sheet.colour(name), "dash": _dash(name, sheet), "width": 1.6},
                        hovertemplate="%{y:.2%}")  # fmt: skip
    if sheet.markers is not None and len(sheet.markers) and sheet.curves:
        first = next(iter(sheet.curves.values()))
        cum = mr.cumulative_return(first, sheet.starting_equity)
        for kind, m in sheet.markers.groupby("kind", sort=True):
            at = value_at(cum, m["ts"])
            fig.add_scatter(
                x=m["ts"], y=at.to_numpy(), mode="markers", name=f"fills: {kind}",
                marker={"symbol": "triangle-up" if kind == "entry" else "circle", "size": 9,
                        "color": REASON_COLOURS.get(kind, "#444"), "line": {"color": "#222", "width": 1}},
                hovertext=[f"{s} {sd} {q:,} @ {p:,.2f}" for s, sd, q, p in
                           zip(m["symbol"], m["side"], m["qty"], m["price"], strict=True)],
            )  # fmt: skip
    _layout(fig, "Cumulative return vs buy & hold", ytitle="return", yformat=".1%")
    if not sheet.curves:
        _empty(fig, "no equity rows")
    return fig


def _px_drawdown(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, eq in sheet.all_curves().items():
        fig.add_scatter(x=eq.index, y=mr.drawdown(eq, sheet.starting_equity), name=f"{name} drawdown",
                        mode="lines", line={"color": sheet.colour(name), "dash": _dash(name, sheet), "width": 1.3},
                        hovertemplate="%{y:.2%}")  # fmt: skip
    _layout(fig, "Drawdown (from the running peak)", ytitle="drawdown", yformat=".1%")
    if not sheet.curves:
        _empty(fig, "no equity rows")
    return fig


def _px_monthly(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    table = sheet.monthly()
    if table.empty:
        _layout(fig, "Monthly returns", ytitle="", xtitle="month")
        _empty(fig, "no equity rows")
        return fig
    z = table.to_numpy(dtype=float)
    text = [[mr.fmt_pct(v, 1) if v == v else "" for v in row] for row in z]
    lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.01
    fig.add_heatmap(z=z, x=list(table.columns), y=list(table.index), text=text, texttemplate="%{text}",
                    colorscale="RdYlGn", zmid=0, zmin=-lim, zmax=lim, colorbar={"tickformat": ".1%", "len": 0.8},
                    hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>", name="monthly returns")  # fmt: skip
    _layout(fig, "Monthly returns", ytitle="", xtitle="month")
    fig.update_xaxes(type="category")  # "2026-03" is a month, not a date between ticks
    fig.update_yaxes(autorange="reversed")
    return fig


def _px_rolling(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    w = sheet.window
    for name, r in sheet.returns().items():
        rs = mr.rolling_sharpe(r, w, sheet.periods_per_year)
        fig.add_scatter(x=rs.index, y=rs, name=f"{name} rolling Sharpe", mode="lines",
                        line={"color": sheet.colour(name), "dash": _dash(name, sheet), "width": 1.3},
                        hovertemplate="%{y:.2f}")  # fmt: skip
    fig.add_hline(y=0, line={"color": "#999", "width": 1})
    _layout(fig, f"Rolling Sharpe ({w} bars, annualised)", ytitle="Sharpe")
    if not sheet.curves:
        _empty(fig, "no equity rows")
    elif all(
        not mr.rolling_sharpe(r, w, sheet.periods_per_year).notna().any() for r in sheet.returns().values()
    ):
        _empty(fig, rolling_note(sheet))
    return fig


def rolling_note(sheet: Sheet) -> str:
    return f"not enough bars with varying returns for a {sheet.window}-bar window"


def _px_distribution(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, r in sheet.returns().items():
        fig.add_histogram(x=r.dropna(), name=f"{name} bar returns", opacity=0.55, nbinsx=40,
                          marker_color=sheet.colour(name), hovertemplate="%{x}: %{y} bars")  # fmt: skip
    fig.update_layout(barmode="overlay")
    _layout(fig, f"Distribution of {sheet.interval} bar returns", ytitle="bars", xtitle="bar return")
    fig.update_xaxes(tickformat=".2%")
    if not sheet.curves:
        _empty(fig, "no equity rows")
    return fig


def price_title(sheet: Sheet) -> str:
    if sheet.price_symbol is None:
        return f"Price ({sheet.interval}): no bars"
    return f"{sheet.price_symbol} {sheet.interval} close with entries and exits"


def _px_price(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    if not sheet.price_bars.empty:
        fig.add_scatter(x=sheet.price_bars["ts"], y=sheet.price_bars["close"], name=f"{sheet.price_symbol} close",
                        mode="lines", line={"color": "#444", "width": 1})  # fmt: skip
    t = sheet.price_trades
    reasons = reason_colours(t["exit_reason"]) if len(t) else {}
    for curve, g in t.groupby("curve", sort=False) if len(t) else ():
        colour = sheet.colour(curve)
        px, py = [], []
        for e_ts, x_ts, e_px, x_px in zip(
            g["entry_ts"], g["exit_ts"], g["entry_price"], g["exit_price"], strict=True
        ):
            px += [e_ts, x_ts, None]
            py += [e_px, x_px, None]
        fig.add_scatter(x=px, y=py, mode="lines", line={"color": colour, "width": 1, "dash": "dot"},
                        showlegend=False, hoverinfo="skip")  # fmt: skip
        fig.add_scatter(
            x=g["entry_ts"], y=g["entry_price"], mode="markers", name=f"{curve} entries",
            marker={"symbol": ["triangle-up" if s == "buy" else "triangle-down" for s in g["side"]], "size": 10,
                    "color": colour, "line": {"color": "#222", "width": 1}},
        )  # fmt: skip
        fig.add_scatter(
            x=g["exit_ts"], y=g["exit_price"], mode="markers", name=f"{curve} exits",
            marker={"symbol": "circle", "size": 9, "color": [reasons[reason(r)] for r in g["exit_reason"]],
                    "line": {"color": colour, "width": 2}},
            hovertext=[f"exit: {reason(r)}" for r in g["exit_reason"]],
        )  # fmt: skip
    for r, c in reasons.items():
        fig.add_scatter(x=[None], y=[None], mode="markers", name=f"exit: {r}",
                        marker={"symbol": "circle", "size": 9, "color": c})  # fmt: skip
    _layout(fig, price_title(sheet), ytitle="price")
    if sheet.price_note:
        if sheet.price_bars.empty and t.empty:
            _empty(fig, sheet.price_note)
        else:
            fig.add_annotation(text=sheet.price_note, xref="paper", yref="paper", x=0.5, y=0.95, showarrow=False,
                               font={"color": "#666"})  # fmt: skip
    return fig


def _px_modules(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    mp = sheet.module_pnl
    _layout(fig, "P&L by contributing module (each trade split equally)", ytitle="P&L", xtitle="module")
    fig.update_layout(hovermode="closest", barmode="group")
    if mp.empty:
        _empty(fig, NO_TRADES)
        return fig
    order = mp.groupby("module")["pnl"].sum().sort_values(ascending=False).index.tolist()
    for curve, g in mp.groupby("curve", sort=False):
        m = g.set_index("module").reindex(order)
        fig.add_bar(x=order, y=m["pnl"], name=f"{curve} P&L", marker_color=sheet.colour(curve),
                    customdata=m["trades"].fillna(0),
                    hovertemplate="%{x}: %{y:+,.2f} over %{customdata:.0f} trades<extra></extra>")  # fmt: skip
    fig.add_hline(y=0, line={"color": "#999", "width": 1})
    return fig


def _gate_series(level, index) -> pd.Series:
    if isinstance(level, pd.Series):
        return level
    return pd.Series(float(level), index=index)


def _px_health(sheet: Sheet):
    import plotly.graph_objects as go

    fig = go.Figure()
    h = sheet.health
    _layout(fig, "Health over time, with the trade filter's gate", ytitle="health (0-100)")
    if h.empty:
        _empty(fig, sheet.health_note or "no health recorded")
        return fig
    for module, g in h.groupby("module", sort=True):
        overall = module == "overall"
        fig.add_scatter(x=g["ts"], y=g["score"], name=f"{module} health",
                        mode="lines" if len(g) > FEW_POINTS else "lines+markers",
                        line={"width": 2.4 if overall else 1, "color": "#222" if overall else None},
                        opacity=1 if overall else 0.7)  # fmt: skip
    index = pd.DatetimeIndex(sorted(h["ts"].unique()))
    for label, level in sheet.gates.items():
        s = _gate_series(level, index)
        fig.add_scatter(x=s.index, y=s.to_numpy(), name=label, mode="lines",
                        line={"color": "#c0392b", "dash": "dash" if "overall" in label else "dot", "width": 1.6})  # fmt: skip
    fig.update_yaxes(range=[0, 100])
    return fig


# ------------------------------------------------------------------------------------------------- PNG


def png_figure(sheet: Sheet):
    """The PNG's figure (Agg canvas, no pyplot state): the HTML's panels in a 4 x 2 grid."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator, PercentFormatter, StrMethodFormatter

    fig = Figure(figsize=(18, 23), layout="constrained")
    FigureCanvasAgg(fig)
    # The curves' legend gets a band of its own under the title (a figure legend and a suptitle overlap).
    head, body = fig.subfigures(2, 1, height_ratios=[1, 14])
    axs = body.subplots(4, 2)
    (ax_ret, ax_dd), (ax_mon, ax_rs), (ax_dist, ax_px), (ax_mod, ax_h) = axs
    fig.suptitle(f"{sheet.title}\n{sheet.subtitle}", fontsize=13)
    pct = PercentFormatter(1.0, decimals=1)

    def dates(ax) -> None:
        loc = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))

    def note(ax, text: str, blank: bool = True) -> None:
        if blank:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="#666")

    def outside(ax, ncols: int = 3, **kw) -> None:
        """A panel's own legend, under the panel's axis title: it never covers a line or a bar."""
        ax.legend(
            fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=ncols, borderaxespad=0.0, **kw
        )

    curves = sheet.all_curves()
    # One legend for the curves (same colour in every panel), above the panels.
    keys = []
    # Cumulative return, drawdown.
    for name, eq in curves.items():
        style = {"color": sheet.colour(name), "ls": "--" if name == sheet.benchmark_label else "-", "lw": 1.4}
        cum = mr.cumulative_return(eq, sheet.starting_equity)
        last = mr.fmt_pct(cum.iloc[-1]) if len(cum) else "n/a"
        (line,) = ax_ret.plot(eq.index, cum.to_numpy(), label=f"{name} ({last})", **style)
        keys.append(line)
        ax_dd.plot(eq.index, mr.drawdown(eq, sheet.starting_equity).to_numpy(), label=name, **style)
    if keys:
        head.legend(handles=keys, loc="lower center", ncols=min(len(keys), 3), fontsize=10, frameon=False,
                    title="return over the run", title_fontsize=10)  # fmt: skip
    if sheet.markers is not None and len(sheet.markers) and sheet.curves:
        first = next(iter(sheet.curves.values()))
        cum = mr.cumulative_return(first, sheet.starting_equity)
        for kind, m in sheet.markers.groupby("kind", sort=True):
            ts = pd.DatetimeIndex(m["ts"])
            at = value_at(cum, ts)
            ax_ret.scatter(ts, at.to_numpy(), marker="^" if kind == "entry" else "o", s=45, zorder=3,
                           color=REASON_COLOURS.get(kind, "#444"), edgecolors="#222", linewidths=0.6,
                           label=f"fills: {kind}")  # fmt: skip
        outside(ax_ret, handles=[c for c in ax_ret.collections if c.get_label().startswith("fills")])
    ax_ret.set_title("Cumulative return vs buy & hold")
    ax_dd.set_title("Drawdown (from the running peak)")
    for ax, ylabel in ((ax_ret, "return"), (ax_dd, "drawdown")):
        ax.set_ylabel(ylabel)
        ax.set_xlabel("time (UTC)")
        ax.yaxis.set_major_formatter(pct)
        if curves:
            dates(ax)
        else:
            note(ax, "no equity rows")

    # Monthly returns heatmap.
    ax_mon.set_title("Monthly returns")
    table = sheet.monthly()
    if table.empty:
        note(ax_mon, "no equity rows")
    else:
        z = table.to_numpy(dtype=float)
        lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.01
        im = ax_mon.imshow(np.ma.masked_invalid(z), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
        ax_mon.set_xticks(range(len(table.columns)), table.columns, rotation=45, ha="right", fontsize=8)
        ax_mon.set_yticks(
            range(len(table.index)), [str(n).replace(" = ", "\n= ") for n in table.index], fontsize=8
        )
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                if z[i, j] == z[i, j] and z.shape[1] <= 24:
                    dark = abs(z[i, j]) > 0.6 * lim
                    ax_mon.text(j, i, mr.fmt_pct(z[i, j], 1), ha="center", va="center", fontsize=8,
                                color="white" if dark else "#222")  # fmt: skip
        body.colorbar(im, ax=ax_mon, format=pct, shrink=0.8)
        ax_mon.set_xlabel("month")

    # Rolling Sharpe.
    w = sheet.window
    ax_rs.set_title(f"Rolling Sharpe ({w} bars, annualised)")
    drawn = 0
    for name, r in sheet.returns().items():
        rs = mr.rolling_sharpe(r, w, sheet.periods_per_year)
        if rs.notna().any():
            drawn += 1
            ax_rs.plot(rs.index, rs.to_numpy(), color=sheet.colour(name), lw=1.2,
                       ls="--" if name == sheet.benchmark_label else "-", label=name)  # fmt: skip
    ax_rs.set_ylabel("Sharpe")
    ax_rs.set_xlabel("time (UTC)")
    if drawn:
        ax_rs.axhline(0, color="#999", lw=0.8)
        dates(ax_rs)
    else:
        note(ax_rs, rolling_note(sheet) if curves else "no equity rows")

    # Distribution of bar returns.
    ax_dist.set_title(f"Distribution of {sheet.interval} bar returns")
    rets = {n: r.dropna().to_numpy() for n, r in sheet.returns().items()}
    values = (
        np.concatenate([v for v in rets.values() if len(v)]) if any(len(v) for v in rets.values()) else []
    )
    if len(values):
        edges = np.histogram_bin_edges(values, bins=40)
        for name, v in rets.items():
            ax_dist.hist(v, bins=edges, alpha=0.5, color=sheet.colour(name), label=name)
        ax_dist.xaxis.set_major_locator(MaxNLocator(6))
        ax_dist.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    else:
        note(ax_dist, "no equity rows")
    ax_dist.set_xlabel("bar return")
    ax_dist.set_ylabel("bars")

    # Price with entries and exits.
    ax_px.set_title(price_title(sheet))
    if not sheet.price_bars.empty:
        ax_px.plot(
            sheet.price_bars["ts"],
            sheet.price_bars["close"],
            color="#444",
            lw=1,
            label=f"{sheet.price_symbol} close",
        )
    t = sheet.price_trades
    reasons = reason_colours(t["exit_reason"]) if len(t) else {}
    for curve, g in t.groupby("curve", sort=False) if len(t) else ():
        colour = sheet.colour(curve)
        for e_ts, x_ts, e_px, x_px in zip(
            g["entry_ts"], g["exit_ts"], g["entry_price"], g["exit_price"], strict=True
        ):
            ax_px.plot([e_ts, x_ts], [e_px, x_px], color=colour, lw=0.8, ls=":")
        for side, marker in (("buy", "^"), ("sell", "v")):
            s = g[g["side"] == side]
            if len(s):
                ax_px.scatter(s["entry_ts"], s["entry_price"], marker=marker, s=60, color=colour, edgecolors="#222",
                              linewidths=0.6, zorder=3)  # fmt: skip
        ax_px.scatter(g["exit_ts"], g["exit_price"], marker="o", s=50, zorder=3,
                      c=[reasons[reason(r)] for r in g["exit_reason"]], edgecolors=colour, linewidths=1.5)  # fmt: skip
    if len(t):
        keys = [Line2D([], [], color="#444", lw=1, label=f"{sheet.price_symbol} close")]
        keys += [Line2D([], [], ls="", marker=m, color="#bbb", mec="#222", ms=8, label=f"{s} entry")
                 for s, m in (("buy", "^"), ("sell", "v"))]  # fmt: skip
        keys += [
            Line2D([], [], ls="", marker="o", color=c, mec="#222", ms=7, label=f"exit: {r}")
            for r, c in reasons.items()
        ]
        keys += [Line2D([], [], ls="", marker="o", mfc="none", mec=sheet.colour(c), ms=7, label=f"outline: {c}")
                 for c in t["curve"].unique()]  # fmt: skip
        outside(ax_px, ncols=2, handles=keys)
    if not sheet.price_bars.empty or len(t):
        dates(ax_px)
    ax_px.set_ylabel("price")
    ax_px.set_xlabel("time (UTC)")
    if sheet.price_note:
        note(ax_px, sheet.price_note, blank=sheet.price_bars.empty and t.empty)

    # P&L by module (legend outside the bars).
    ax_mod.set_title("P&L by contributing module (each trade split equally)")
    mp = sheet.module_pnl
    if mp.empty:
        note(ax_mod, NO_TRADES)
    else:
        order = mp.groupby("module")["pnl"].sum().sort_values().index.tolist()  # best at the top
        shown = list(dict.fromkeys(mp["curve"]))
        height = 0.8 / len(shown)
        for i, curve in enumerate(shown):
            m = mp[mp["curve"] == curve].set_index("module").reindex(order)["pnl"].fillna(0.0)
            ys = [k + 0.4 - height * (i + 0.5) for k in range(len(order))]
            ax_mod.barh(ys, m.to_numpy(), height=height, color=sheet.colour(curve), label=curve)
        ax_mod.set_yticks(range(len(order)), order)
        ax_mod.axvline(0, color="#999", lw=0.8)
        ax_mod.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        outside(ax_mod)
    ax_mod.set_xlabel("P&L")
    ax_mod.set_ylabel("module")

    # Health over time with the gate.
    ax_h.set_title("Health over time, with the trade filter's gate")
    h = sheet.health
    if h.empty:
        note(ax_h, sheet.health_note or "no health recorded")
    else:
        for module, g in h.groupby("module", sort=True):
            overall = module == "overall"
            ax_h.plot(g["ts"], g["score"], lw=2.2 if overall else 0.9, color="#222" if overall else None,
                      alpha=1 if overall else 0.7, label=f"{module} health",
                      marker="o" if len(g) <= FEW_POINTS else None, ms=4)  # fmt: skip
        index = pd.DatetimeIndex(sorted(h["ts"].unique()))
        for label, level in sheet.gates.items():
            s = _gate_series(level, index)
            ax_h.plot(s.index, s.to_numpy(), color="#c0392b", lw=1.4, ls="--" if "overall" in label else ":",
                      label=label)  # fmt: skip
        ax_h.set_ylim(0, 100)
        dates(ax_h)
        outside(ax_h)
    ax_h.set_ylabel("health (0-100)")
    ax_h.set_xlabel("time (UTC)")

    for ax in axs.flat:
        ax.grid(alpha=0.3)
    return fig


def write_sheet(sheet: Sheet, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """``out_dir/<name>.html`` (one self-contained page, works offline) and ``out_dir/<name>.png`` (the same
    panels); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, png_path = out / f"{name}.html", out / f"{name}.png"
    write_html(sheet, html_path)
    write_png(sheet, png_path)
    return html_path, png_path


def write_png(sheet: Sheet, path: Path) -> None:
    png_figure(sheet).savefig(path, dpi=PNG_DPI)
