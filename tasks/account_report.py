"""The account report: the paper account's record as one self-contained HTML page (Plotly, offline) and
a matplotlib PNG with the same panels (tasks/report_views.py, the backtest report's tearsheet).

What it shows: the account's % return from its snapshots (its fills as markers on the curve) against an
equal-weight buy-and-hold of the symbols it traded, drawdown, monthly returns, rolling Sharpe, the
distribution of per-snapshot returns, one symbol's close with the account's entries and exits, P&L by
contributing module, health over time with the gate each score was compared with, and the closed
trades. Cash is not drawn: it swings with every entry and exit while equity barely moves, and on one
axis it flattens the equity line; the subtitle gives the cash now. Read with one read-only connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from models import report as mr
from tasks.backtest_report import module_pnl, trade_list
from tasks.report_views import NO_TRADES, Sheet, write_sheet
from warehouse.db import WarehouseLike, connect

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = "1d"  # the bars of the benchmark and price panel when no decision names one
__all__ = ["AccountData", "account_data", "account_sheet", "write_account_report"]


@dataclass(frozen=True)
class AccountData:
    broker: str
    interval: str
    symbol: str | None  # the price panel's symbol
    snapshots: pd.DataFrame  # ts, cash, equity
    fills: pd.DataFrame  # ts, symbol, side, role, qty, price, commission
    trades: pd.DataFrame  # v_trades rows (closed trades)
    bars: pd.DataFrame  # ts, close of ``symbol``
    benchmark: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    benchmark_symbols: list[str] = field(default_factory=list)
    health: pd.DataFrame = field(default_factory=pd.DataFrame)  # ts, module, score (+ gate, gate_source)


def _most_traded(fills: pd.DataFrame) -> str | None:
    if fills.empty:
        return None
    counts = fills.groupby("symbol").size().reset_index(name="n")
    return str(counts.sort_values(["n", "symbol"], ascending=[False, True]).iloc[0]["symbol"])


def account_data(
    warehouse: WarehouseLike, broker: str, *, symbol: str | None = None, interval: str | None = None
) -> AccountData:
    """Read the account's snapshots, fills, closed trades, health and the bars the report draws.

    ``interval`` defaults to the one the account's decisions were made on (the most common), else 1d;
    ``symbol`` to the symbol with the most fills. Raises ``ValueError`` without snapshots, or for a
    symbol with neither bars nor fills."""
    with connect(warehouse, read_only=True) as con:
        snaps = con.execute(
            "SELECT ts, cash, equity FROM account_snapshots WHERE broker = ? ORDER BY ts", [broker]
        ).df()
        if snaps.empty:
            raise ValueError(f"no {broker} account snapshots yet: run `qtrader decide` first")
        fills = con.execute(
            "SELECT ts, symbol, side, role, qty, price, commission FROM broker_fills WHERE broker = ? "
            "ORDER BY ts, symbol, role",
            [broker],
        ).df()
        trades = con.execute(
            "SELECT * FROM v_trades WHERE broker = ? ORDER BY exit_ts, symbol", [broker]
        ).df()
        if interval is None:
            row = con.execute(
                "SELECT interval FROM decisions WHERE broker = ? GROUP BY interval ORDER BY count(*) DESC, "
                "interval LIMIT 1",
                [broker],
            ).fetchall()
            interval = row[0][0] if row else DEFAULT_INTERVAL
        start, end = snaps["ts"].min(), snaps["ts"].max()
        if symbol is None:
            symbol = _most_traded(fills)
        if symbol is None:  # an account that never traded: the first symbol with bars over its span
            symbol = con.execute(
                "SELECT min(symbol) FROM bars WHERE interval = ? AND ts BETWEEN ? AND ?",
                [interval, start, end],
            ).fetchall()[0][0]
        bars = pd.DataFrame(columns=["ts", "close"])
        if symbol is not None:
            bars = con.execute(
                "SELECT ts, close FROM bars WHERE symbol = ? AND interval = ? AND ts BETWEEN ? AND ? ORDER BY ts",
                [symbol, interval, start, end],
            ).df()
            if bars.empty and not (fills["symbol"] == symbol).any():
                raise ValueError(
                    f"symbol {symbol!r} has no {interval} bars between {start:%Y-%m-%d} and {end:%Y-%m-%d} "
                    f"and no {broker} fills"
                )
        traded = sorted(fills["symbol"].unique()) if len(fills) else []
        closes = con.execute(
            "SELECT ts, symbol, close FROM bars WHERE interval = ? AND ts BETWEEN ? AND ? "
            "AND list_contains(?, symbol) ORDER BY ts",
            [interval, start, end, traded],
        ).df()
        cols = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'health'"
        ).fetchall()}  # fmt: skip
        extra = [c for c in ("gate", "gate_source") if c in cols]
        # From the first snapshot on, with no upper bound: health runs on the wall clock, and a replay's
        # snapshots carry the (older) bar times.
        health = con.execute(
            f"SELECT {', '.join(['ts', 'module', 'score', *extra])} FROM health "
            "WHERE ts >= ? AND score IS NOT NULL ORDER BY ts, module",
            [start],
        ).df()

    benchmark = pd.Series(dtype=float)
    if len(closes):
        wide = closes.pivot_table(index="ts", columns="symbol", values="close", aggfunc="last")
        benchmark = mr.buy_and_hold(wide, float(snaps["equity"].iloc[0]), pd.DatetimeIndex(snaps["ts"]))
    return AccountData(
        broker=broker,
        interval=interval,
        symbol=symbol,
        snapshots=snaps,
        fills=fills,
        trades=trades,
        bars=bars,
        benchmark=benchmark,
        benchmark_symbols=sorted(closes["symbol"].unique()) if len(closes) else [],
        health=health,
    )


def _periods_per_year(interval: str) -> float:
    from qtrader.calendar import interval_minutes, is_daily

    return 252.0 if is_daily(interval) else 252.0 * (390 / interval_minutes(interval))


def account_sheet(data: AccountData) -> Sheet:
    """The account's tearsheet (the same panels and tables as a backtest's)."""
    from qtrader.settings import FilterSettings

    snaps = data.snapshots
    label = f"account ({data.broker})"
    equity = pd.Series(snaps["equity"].astype(float).to_numpy(), index=pd.DatetimeIndex(snaps["ts"]))
    start_eq = float(equity.iloc[0])
    start, end = equity.index.min(), equity.index.max()
    traded = sorted(data.fills["symbol"].unique()) if len(data.fills) else []
    title = (
        f"Paper account ({data.broker}) · {start:%Y-%m-%d} to {end:%Y-%m-%d} · "
        f"{len(traded)} symbol{'' if len(traded) == 1 else 's'} traded"
    )
    subtitle = (
        f"{len(snaps):,} snapshots; starting equity {start_eq:,.0f}, equity now {equity.iloc[-1]:,.2f} "
        f"({mr.fmt_pct(equity.iloc[-1] / start_eq - 1)}), cash now {float(snaps['cash'].iloc[-1]):,.2f}; "
        f"{len(data.fills):,} fills, {len(data.trades):,} closed trades"
    )
    notes = [
        f"{label}: equity from the account's snapshots (one per decision run), as % return on the first; "
        "markers are its fills. Cash is not drawn (it swings with each entry and exit).",
    ]
    if len(data.benchmark):
        notes.append(
            f"{mr.BENCHMARK}: equal weights of the {len(data.benchmark_symbols)} symbols the account traded "
            f"({', '.join(data.benchmark_symbols[:12])}{', ...' if len(data.benchmark_symbols) > 12 else ''}) "
            f"bought at the first snapshot's close with the same starting equity, no costs"
        )
    else:
        notes.append(
            f"{mr.BENCHMARK}: not drawn (no fills, or no {data.interval} bars of the traded symbols)"
        )

    markers = data.fills.rename(columns={"role": "kind"})[
        ["ts", "kind", "symbol", "side", "qty", "price"]
    ].copy()
    markers["kind"] = markers["kind"].fillna("manual")
    markers["price"] = markers["price"].astype(float)

    trades = data.trades.copy()
    if len(trades):
        trades["curve"] = label
        trades["mode"] = label
        trades["pnl"] = trades["pnl"].astype(float)
        trades["pnl_pct"] = trades["pnl"] / (
            trades["qty"].astype(float) * trades["entry_price"].astype(float)
        )
    price_trades = trades[trades["symbol"] == data.symbol] if len(trades) else trades
    mp = module_pnl(trades) if len(trades) else module_pnl(pd.DataFrame())
    mp["curve"] = label

    defaults = FilterSettings()
    gates = mr.gate_lines(
        data.health,
        {"overall gate": defaults.min_overall_health, "module gate": defaults.min_module_health},
    )
    price_note = None
    if data.symbol is None:
        price_note = f"no {data.interval} bars and {NO_TRADES}"
    elif data.fills.empty:
        price_note = "the account has no fills yet"
    elif price_trades.empty:
        price_note = f"{NO_TRADES} in {data.symbol}"
    return Sheet(
        title=title,
        subtitle=subtitle,
        interval=data.interval,
        periods_per_year=_periods_per_year(data.interval),
        starting_equity=start_eq,
        curves={label: equity},
        benchmark=data.benchmark if len(data.benchmark) else None,
        notes=notes,
        metrics=_metrics(label, equity, data.benchmark, trades, start_eq, _periods_per_year(data.interval)),
        markers=markers,
        price_symbol=data.symbol,
        price_bars=data.bars,
        price_trades=price_trades,
        price_note=price_note,
        module_pnl=mp,
        health=data.health[["ts", "module", "score"]] if len(data.health) else pd.DataFrame(),
        gates=gates,
        health_note="no health run since the first snapshot (qtrader health --run)",
        trade_list=trade_list(trades, data.interval).drop(columns="mode") if len(trades) else pd.DataFrame(),
        trade_list_note=f"{len(trades):,} closed trades; open positions are in `qtrader account`",
    )


def _metrics(label, equity, benchmark, trades, start_eq: float, ppy: float) -> pd.DataFrame:
    rows = []
    for name, curve in ((label, equity), (mr.BENCHMARK, benchmark)):
        if not len(curve):
            continue
        s = mr.summary(curve, start_eq, ppy)
        row = {
            "": name,
            "return": mr.fmt_pct(s["total_return"]),
            "CAGR": mr.fmt_pct(s["cagr"]) if len(curve) / ppy >= 1 else "n/a (< 1 year)",
            "Sharpe": "n/a" if s["sharpe"] is None else f"{s['sharpe']:.2f}",
            "Sortino": "n/a" if s["sortino"] is None else f"{s['sortino']:.2f}",
            "max DD": mr.fmt_pct(s["max_drawdown"], signed=False),
            "volatility": mr.fmt_pct(s["volatility"], signed=False),
        }
        if name == label:
            wins = trades["pnl"] > 0 if len(trades) else pd.Series(dtype=bool)
            row |= {
                "trades": f"{len(trades):,}",
                "win rate": mr.fmt_pct(wins.mean(), 1, signed=False) if len(trades) else "n/a",
                "P&L": mr.fmt_money(trades["pnl"].sum(), signed=True) if len(trades) else "n/a",
            }
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def write_account_report(
    warehouse: WarehouseLike,
    broker: str,
    out_dir: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/account.html`` (one self-contained page, works offline) and ``out_dir/account.png``
    (the same panels); returns their paths."""
    data = account_data(warehouse, broker, symbol=symbol, interval=interval)
    html_path, png_path = write_sheet(account_sheet(data), out_dir, "account")
    log.info("account report for %s: %s, %s", broker, html_path, png_path)
    return html_path, png_path
