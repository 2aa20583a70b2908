"""The numbers behind the account and backtest reports, without I/O.

Conventions, the same as the backtest's scorecard (``models.backtest.scorecard``): per-bar returns of the
equity curve with the starting equity as the bar before the first; Sharpe annualised with the bars of a
trading year, risk-free 0; drawdown against the running peak, the starting equity counting as a peak.
Monthly returns compound the bars of each calendar month (UTC), the way QuantStats' ``monthly_returns``
and empyrical's ``aggregate_returns(..., "monthly")`` do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from models.backtest import base_mode
from models.health import OVERALL

# What each backtest mode means, in a trader's words (the settings are in models/backtest.py).
MODE_NOTES: dict[str, str] = {
    "static": "the old system: fixed TP1 1R / TP2 2.5R / TP3 4R, stop 1.5 ATR, no health gate, "
    "uniform sizing, raw confidence",
    "adaptive": "every enhancement on (the live defaults)",
    "no_adaptive_exits": "adaptive, but fixed take-profit/stop profile",
    "no_health_gating": "adaptive, but the filter ignores module and overall health",
    "no_performance_sizing": "adaptive, but every trade sized alike whatever the module's record",
    "no_calibration": "adaptive, but the filter ranks on raw (uncalibrated) confidence",
    "no_predictive_tightening": "adaptive, but alerts do not tighten stops",
    "signals": "your --signals entries through qtrader's sizing, exits and fills",
}
BENCHMARK = "buy & hold"


def mode_note(mode: str) -> str:
    """What a mode means; a sweep variant (``adaptive[exits.tp1_atr=2]``) is its mode's note and its point."""
    base = base_mode(mode)
    note = MODE_NOTES.get(base, "custom settings")
    return f"{note}, with {mode[len(base) + 1 : -1]}" if mode != base else note


# Curves closer than this (in currency, at every bar) are drawn as one line.
SAME_CURVE_ATOL = 0.005
MIN_ROLLING_WINDOW = 5


def bar_returns(equity: pd.Series, starting_equity: float) -> pd.Series:
    """Per-bar simple returns, the starting equity being the value before the first bar."""
    values = equity.astype(float).to_numpy()
    prev = np.concatenate([[float(starting_equity)], values[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(prev != 0, values / prev - 1.0, np.nan)
    return pd.Series(out, index=equity.index)


def cumulative_return(equity: pd.Series, starting_equity: float) -> pd.Series:
    return equity.astype(float) / float(starting_equity) - 1.0


def drawdown(equity: pd.Series, starting_equity: float) -> pd.Series:
    values = equity.astype(float).to_numpy()
    peak = np.maximum.accumulate(np.concatenate([[float(starting_equity)], values]))[1:]
    return pd.Series(values / peak - 1.0, index=equity.index)


def buy_and_hold(closes: pd.DataFrame, starting_equity: float, index: pd.Index | None = None) -> pd.Series:
    """Equal-weight buy-and-hold of ``closes``' symbols (columns; rows are bar times): the starting
    equity split equally at each symbol's first close and held. Values on ``index`` (default: the
    closes' rows), each symbol's last close carried forward over missing bars; a symbol joins at its
    first close (its share waits in cash until then). No costs."""
    if closes.empty or closes.shape[1] == 0:
        raise ValueError("buy and hold needs the close of at least one symbol")
    closes = closes.sort_index().astype(float)
    if index is not None:
        closes = closes.reindex(closes.index.union(index)).ffill().reindex(index)
    else:
        closes = closes.ffill()
    first = closes.apply(lambda s: s.dropna().iloc[0] if s.notna().any() else np.nan)
    held = first.dropna()
    if held.empty:
        raise ValueError("buy and hold: no symbol has a close in the span")
    share = float(starting_equity) / len(held)
    units = share / held
    cols = closes[held.index]
    value = cols.mul(units, axis=1)
    # Before a symbol's first close its share is cash.
    value = value.where(cols.notna(), share)
    return value.sum(axis=1).rename(BENCHMARK)


def identical_groups(curves: Mapping[str, pd.Series], atol: float = SAME_CURVE_ATOL) -> list[list[str]]:
    """Groups of curve names whose values are equal at every point (within ``atol``), in the given
    order; each group's first name stands for it. Curves of different lengths or times differ."""
    groups: list[list[str]] = []
    for name, curve in curves.items():
        values = curve.astype(float).to_numpy()
        for g in groups:
            ref = curves[g[0]]
            if len(ref) == len(curve) and ref.index.equals(curve.index):
                r = ref.astype(float).to_numpy()
                same_nan = np.isnan(r) == np.isnan(values)
                close = np.isclose(r, values, rtol=0.0, atol=atol, equal_nan=True)
                if bool(same_nan.all() and close.all()):
                    g.append(name)
                    break
        else:
            groups.append([name])
    return groups


def monthly_returns(equity: pd.Series, starting_equity: float) -> pd.Series:
    """Compounded return per calendar month (UTC) with a bar, indexed by the month's first day
    (QuantStats' ``monthly_returns``; months without a bar are left out, not shown as 0%)."""
    import quantstats as qs

    if equity.empty:
        return pd.Series(dtype=float)
    idx = pd.DatetimeIndex(equity.index)
    idx = (idx.tz_convert("UTC") if idx.tz is not None else idx).tz_localize(None)
    rets = bar_returns(pd.Series(equity.to_numpy(), index=idx), starting_equity)
    grid = qs.stats.monthly_returns(rets, eoy=False, compounded=True, prepare_returns=False)
    out = {}
    months = {(t.year, t.month) for t in idx}
    for year, row in grid.iterrows():
        for k, value in enumerate(row.to_numpy(dtype=float), start=1):
            if (int(year), k) in months:
                out[pd.Timestamp(year=int(year), month=k, day=1)] = float(value)
    return pd.Series(out, dtype=float).sort_index()


def rolling_window(n_bars: int, periods_per_year: float) -> int:
    """The rolling Sharpe's window: ~3 months of bars (63 daily), at most a third of the run, at least
    ``MIN_ROLLING_WINDOW`` bars."""
    quarter = int(round(periods_per_year / 4))
    return max(MIN_ROLLING_WINDOW, min(quarter, n_bars // 3))


def rolling_sharpe(returns: pd.Series, window: int, periods_per_year: float) -> pd.Series:
    """Annualised Sharpe over the trailing ``window`` bars, risk-free 0 (QuantStats' ``rolling_sharpe``;
    NaN until the window is full, and where its returns do not vary)."""
    import quantstats as qs

    r = returns.astype(float)
    out = qs.stats.rolling_sharpe(
        r, rolling_period=window, periods_per_year=periods_per_year, prepare_returns=False
    )
    std = r.rolling(window).std()
    return out.where(std > 1e-12)


def summary(equity: pd.Series, starting_equity: float, periods_per_year: float) -> dict[str, float | None]:
    """Total return, CAGR, annualised volatility, Sharpe, Sortino and max drawdown of one curve
    (QuantStats' definitions, risk-free 0; the same Sharpe and Sortino as the backtest's scorecard)."""
    import quantstats as qs

    if equity.empty:
        return dict.fromkeys(("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown"))
    idx = pd.DatetimeIndex(equity.index)
    idx = (idx.tz_convert("UTC") if idx.tz is not None else idx).tz_localize(None)
    r = bar_returns(pd.Series(equity.to_numpy(dtype=float), index=idx), starting_equity)
    ppy = int(round(periods_per_year))
    varies = len(r) > 1 and float(r.std()) > 1e-12

    def num(x) -> float | None:
        x = float(x)
        return x if math.isfinite(x) else None

    years = len(r) / periods_per_year
    total = float(equity.iloc[-1]) / float(starting_equity) - 1.0
    return {
        "total_return": total,
        "cagr": num((1 + total) ** (1 / years) - 1) if years > 0 and total > -1 else None,
        "volatility": num(qs.stats.volatility(r, periods=ppy, prepare_returns=False)) if varies else None,
        "sharpe": num(qs.stats.sharpe(r, periods=ppy)) if varies else None,
        "sortino": num(qs.stats.sortino(r, periods=ppy)) if varies else None,
        "max_drawdown": float(drawdown(equity, starting_equity).min()),
    }


def trade_return_bins(pnl_pct: pd.Series, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of per-trade returns: counts and bin edges (edges span the data, at least +-0.1%)."""
    x = pnl_pct.astype(float).dropna().to_numpy()
    if len(x) == 0:
        return np.zeros(0, dtype=int), np.zeros(0)
    lo, hi = float(min(x.min(), -0.001)), float(max(x.max(), 0.001))
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    return counts, edges


def fmt_pct(value, digits: int = 2, signed: bool = True) -> str:
    """A percentage with no "-0.00%": a value that rounds to zero prints as 0.00%."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "n/a"
    v = float(value) * 100.0
    if round(v, digits) == 0:
        return f"{0:.{digits}f}%"
    return f"{v:{'+' if signed else ''}.{digits}f}%"


def fmt_money(value, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "n/a"
    v = float(value)
    if round(v, digits) == 0:
        return f"{0:,.{digits}f}"
    return f"{v:{'+' if signed else ''},.{digits}f}"


def same_curve_note(groups: Sequence[Sequence[str]]) -> str | None:
    """A sentence naming the curves drawn as one, or None."""
    merged = [g for g in groups if len(g) > 1]
    if not merged:
        return None
    parts = [f"{g[0]} = {', '.join(g[1:])}" for g in merged]
    return "Identical equity curves, drawn as one line: " + "; ".join(parts) + "."


def gate_lines(health: pd.DataFrame, filter_gates: Mapping[str, float]) -> dict[str, float | pd.Series]:
    """The health panel's gate lines: the gate each overall score was compared with, over time, when the
    health rows carry one (``gate``, ``gate_source``: migration 008), else the trade filter's settings."""
    if len(health) and "gate" in health.columns and health["gate"].notna().any():
        recorded = health[health["gate"].notna()]
        overall = recorded[recorded["module"] == OVERALL]
        src = overall if len(overall) else recorded
        line = src.groupby("ts")["gate"].max().astype(float)
        kinds = sorted(src["gate_source"].dropna().unique()) if "gate_source" in src.columns else []
        return {f"overall gate ({', '.join(kinds) or 'recorded'}, per health run)": line}
    return {f"{k} ({v:g}, trade filter)": float(v) for k, v in filter_gates.items()}
