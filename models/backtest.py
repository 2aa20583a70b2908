"""Backtest modes and their scorecard (pure: no I/O).

Modes are settings overrides, so a backtest runs exactly the live decision code under another policy:

- ``adaptive``: every enhancement of seed 000 on (the live defaults);
- ``no_<enhancement>``: one enhancement off (an ablation);
- ``static``: all of them off with seed 002's old exit profile (TP1 1R, TP2 2.5R, TP3 4R in ATR units,
  stop 1.5 ATR): no health gating, uniform sizing, raw confidence, fixed exits, no predictive tightening.

``scorecard`` turns a mode's closed trades and per-bar equity into the seed-style row.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# Each enhancement and the settings that switch it off.
ENHANCEMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "adaptive_exits": {"exits": {"adaptive": False}},
    "health_gating": {"trade_filter": {"health_gating": False}},
    "performance_sizing": {"sizing": {"performance_sizing": False}},
    "calibration": {"decision": {"calibrated_confidence": False}},
    "predictive_tightening": {"exits": {"predictive": False}},
}
EXTERNAL = "EXTERNAL"  # the consensus of a user's own entry (--signals)
STATIC = "static"
ADAPTIVE = "adaptive"
SIGNALS = "signals"
MODES = [STATIC, ADAPTIVE, *[f"no_{e}" for e in ENHANCEMENTS]]


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def mode_overrides(
    mode: str, static_exits: Mapping[str, float], policy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Settings overrides of ``mode`` on top of ``policy`` (overrides shared by every mode).

    ``static_exits``: ExitSettings fields of the old profile (tp1_atr, tp2_atr, tp3_atr, stop_atr).
    """
    out = deep_merge({}, policy or {})
    if mode == ADAPTIVE:
        return out
    if mode == STATIC:
        for off in ENHANCEMENTS.values():
            out = deep_merge(out, off)
        return deep_merge(out, {"exits": dict(static_exits)})
    if mode.startswith("no_") and mode[3:] in ENHANCEMENTS:
        return deep_merge(out, ENHANCEMENTS[mode[3:]])
    raise ValueError(f"unknown backtest mode {mode!r}; known: {', '.join(MODES)}")


# The signals mode: the user's entries are taken as they are (no consensus, confidence or health gate on
# them; the rest of the filter, sizing, exits and fills are qtrader's).
SIGNALS_POLICY: dict[str, dict[str, Any]] = {
    "trade_filter": {"allowed_consensus": [EXTERNAL], "min_confidence": 0.0, "health_gating": False},
    "sizing": {"performance_sizing": False},
}

_SIDES = {"buy": 1, "long": 1, "1": 1, "+1": 1, "sell": -1, "short": -1, "-1": -1}


def validate_signals(frame: pd.DataFrame, bars: pd.DataFrame, *, source: str = "signals") -> pd.DataFrame:
    """(symbol, ts, side) rows -> (symbol, ts UTC, direction +1/-1), or a ValueError naming every problem.

    Each entry must name a stored symbol and one of its bar times (daily bars: the session date); side is
    buy/long/1 or sell/short/-1; a (symbol, ts) pair appears once.
    """
    missing = [c for c in ("symbol", "ts", "side") if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected symbol, ts, side")
    if frame.empty:
        raise ValueError(f"{source}: no entries")
    out = frame[["symbol", "ts", "side"]].copy()
    out["symbol"] = out["symbol"].astype(str).str.strip()
    ts = pd.to_datetime(out["ts"], utc=True, errors="coerce")
    problems = []
    bad_ts = ts.isna()
    if bad_ts.any():
        problems.append(f"unparseable ts on row(s) {(out.index[bad_ts] + 2).tolist()[:10]}")
    out["ts"] = ts
    out["direction"] = out["side"].astype(str).str.strip().str.lower().map(_SIDES)
    bad_side = out["direction"].isna()
    if bad_side.any():
        problems.append(
            f"side must be buy/sell (or long/short, 1/-1): row(s) {(out.index[bad_side] + 2).tolist()[:10]}"
        )
    known = set(bars["symbol"].astype(str))
    unknown = sorted(set(out["symbol"]) - known)
    if unknown:
        problems.append(f"unknown symbol(s) {unknown[:10]} (no bars stored)")
    dup = out.duplicated(["symbol", "ts"], keep=False) & ~bad_ts
    if dup.any():
        problems.append(f"duplicate (symbol, ts) on row(s) {(out.index[dup] + 2).tolist()[:10]}")
    if not problems:
        stored = pd.MultiIndex.from_arrays([bars["symbol"].astype(str), pd.to_datetime(bars["ts"], utc=True)])
        keys = pd.MultiIndex.from_arrays([out["symbol"], out["ts"]])
        off = ~keys.isin(stored)
        if off.any():
            first = out[off].iloc[0]
            problems.append(
                f"{int(off.sum())} entr(ies) not on a stored bar, e.g. {first['symbol']} at {first['ts']} "
                "(row numbers are the file's lines)"
            )
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return out[["symbol", "ts", "direction"]].sort_values(["ts", "symbol"]).reset_index(drop=True)


# A parameter sweep varies only settings the replay reads (the decision engine, its orders, the simulated
# broker's costs): every variant reuses the one model timeline (retrains, predictions, health), which the
# other sections shape. Entries are a section (every field of it) or one section.field.
SWEEPABLE = ("trade_filter", "sizing", "exits", "orders", "paper", "decision.allow_short",
             "decision.calibrated_confidence")  # fmt: skip


def sweep_value(text: str) -> Any:
    """One value as typed on the command line: JSON (numbers, true/false, lists, quoted strings), else the
    text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def parse_sweep(items: Sequence[str]) -> dict[str, list[Any]]:
    """``section.field=v1,v2,...`` (or ``section.field=[v1, v2]`` in JSON, for values that hold commas) per
    item -> {"section.field": [v1, v2, ...]}. Raises ValueError naming the item."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ValueError(f"--sweep {item!r}: expected section.field=v1,v2 (e.g. exits.tp1_atr=1.5,2,2.5)")
        text = values.strip()
        parsed = sweep_value(text) if text.startswith("[") else [sweep_value(v) for v in text.split(",")]
        if not isinstance(parsed, list) or not parsed:
            raise ValueError(f"--sweep {item!r}: the values must be a non-empty list")
        if key in out:
            raise ValueError(f"--sweep {key}: given twice")
        out[key] = parsed
    return out


def check_sweep(sweep: Mapping[str, Sequence[Any]], max_variants: int) -> dict[str, list[Any]]:
    """The sweep's keys are sweepable section.field paths with at least one value, at most ``max_variants``
    points (backtest.max_sweep_variants); ValueError otherwise."""
    out: dict[str, list[Any]] = {}
    for key, values in sweep.items():
        parts = str(key).split(".")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--sweep {key}: expected section.field (e.g. exits.tp1_atr)")
        if parts[0] not in SWEEPABLE and key not in SWEEPABLE:
            raise ValueError(
                f"--sweep {key}: only settings the replay reads can be swept ({', '.join(SWEEPABLE)}); "
                "the others change the model timeline every variant shares: run one backtest per value"
            )
        vals = list(values) if isinstance(values, list | tuple) else [values]
        if not vals:
            raise ValueError(f"--sweep {key}: no values")
        out[str(key)] = vals
    points = math.prod(len(v) for v in out.values())
    if points > max_variants:
        raise ValueError(
            f"--sweep: {points} variants per mode, more than backtest.max_sweep_variants = {max_variants}; "
            "narrow the grid or raise the setting"
        )
    return out


def sweep_points(sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The grid's points in order (the first key varies slowest), each {"section.field": value}."""
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep[k] for k in keys))]


def point_overrides(point: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in point.items():
        section, field = key.split(".")
        out = deep_merge(out, {section: {field: value}})
    return out


def _label(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def variant_name(mode: str, point: Mapping[str, Any]) -> str:
    """``adaptive[exits.tp1_atr=2.0]``: the mode and the point, also the variant's results file name (so
    characters a file name should not hold become ``_``)."""
    inside = ",".join(f"{k}={_label(v)}" for k, v in point.items())
    return f"{mode}[{re.sub(r'[^A-Za-z0-9._=,+-]', '_', inside)}]"


def base_mode(name: str) -> str:
    """The mode a variant name starts from (the name itself for a plain mode)."""
    return name.split("[", 1)[0]


def sweep_variants(
    modes: Sequence[str],
    mode_overrides_of: Mapping[str, Mapping[str, Any]],
    sweep: Mapping[str, Sequence[Any]],
) -> dict[str, dict[str, Any]]:
    """Each mode x each point of the grid: {variant name: the mode's overrides with the point's on top}."""
    out: dict[str, dict[str, Any]] = {}
    for m in modes:
        for point in sweep_points(sweep):
            out[variant_name(m, point)] = deep_merge(mode_overrides_of[m], point_overrides(point))
    return out


def check_sweep_values(grid: Mapping[str, Sequence[Any]], load: Callable[[dict[str, Any]], object]) -> None:
    """Each value of the grid through the settings' own validation (``load``: overrides -> Settings, raising
    ValueError), so a bad value stops the run before its model timeline, naming the key and the reason."""
    for key, values in grid.items():
        for value in values:
            try:
                load(point_overrides({key: value}))
            except ValueError as exc:
                # the settings' message without its "override <section>" origin
                reason = str(exc).split(": ", 1)[-1]
                raise ValueError(f"--sweep {key}={_label(value)}: {reason}") from None


def check_modes(modes: list[str]) -> list[str]:
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown backtest mode(s) {unknown}; known: {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def scorecard(
    trades: pd.DataFrame,
    equity: pd.DataFrame,
    *,
    starting_equity: float,
    periods_per_year: float,
    notional: float = 0.0,
) -> dict[str, float | int | None]:
    """Win rate, average P&L per trade, Sharpe, Sortino, max drawdown, exposure and turnover.

    ``trades``: closed trades (pnl after costs, qty, entry_price). ``equity``: one row per bar (ts,
    equity, gross). Sharpe and Sortino annualise per-bar equity returns (risk-free 0; Sortino's
    downside deviation over all bars). ``notional``: everything traded (entries and exits).
    """
    n = len(trades)
    pnl = trades["pnl"].astype(float) if n else pd.Series(dtype=float)
    pct = (pnl / (trades["qty"].astype(float) * trades["entry_price"].astype(float))) if n else pnl
    eq = equity["equity"].astype(float).to_numpy() if len(equity) else np.array([starting_equity])
    series = np.concatenate([[starting_equity], eq])
    rets = np.diff(series) / series[:-1]
    sharpe = sortino = None
    if len(rets) > 1 and np.std(rets, ddof=1) > 0:
        sharpe = float(np.mean(rets) / np.std(rets, ddof=1) * math.sqrt(periods_per_year))
        downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
        sortino = float(np.mean(rets) / downside * math.sqrt(periods_per_year)) if downside > 0 else None
    dd = _drawdown(series)
    gross = equity["gross"].astype(float).to_numpy() if len(equity) else np.zeros(1)
    exposure = float(np.mean(gross / np.where(eq > 0, eq, np.nan))) if len(equity) else 0.0
    years = max(len(equity), 1) / periods_per_year
    turnover = notional / float(np.mean(series)) / years if years > 0 else None
    return {
        "trades": n,
        "win_rate": _finite(float((pnl > 0).mean())) if n else None,
        "avg_pnl_pct": _finite(float(pct.mean())) if n else None,
        "avg_pnl": _finite(float(pnl.mean())) if n else None,
        "total_return": float(series[-1] / starting_equity - 1.0),
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": float(dd.min()),
        "exposure": _finite(exposure),
        "turnover": _finite(turnover) if turnover is not None else None,
        "final_equity": float(series[-1]),
    }


def _drawdown(series: np.ndarray) -> np.ndarray:
    """Each point's fall from the running peak (<= 0); ``series`` starts with the starting equity."""
    return series / np.maximum.accumulate(series) - 1.0


def drawdown(equity: pd.Series, starting_equity: float) -> pd.Series:
    """Per-bar drawdown of an equity curve, the starting equity counting as the first peak."""
    series = np.concatenate([[starting_equity], equity.astype(float).to_numpy()])
    return pd.Series(_drawdown(series)[1:], index=equity.index)


TABLE_COLUMNS = [
    ("win_rate", "Win rate", "pct"),
    ("avg_pnl_pct", "Avg P&L/trade", "pct2"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max DD", "pct"),
    ("trades", "Trades", "int"),
    ("exposure", "Exposure", "pct"),
    ("turnover", "Turnover", "num1"),
    ("health_blocked", "Gate blocks", "int"),  # candidates the health gate failed (docs/health.md)
]


def versus(table: pd.DataFrame, baseline: str = STATIC) -> pd.DataFrame:
    """Each metric's difference from the ``baseline`` mode's row (NaN when either side is missing)."""
    if baseline not in set(table["mode"]):
        return pd.DataFrame(index=table["mode"])
    base = table.set_index("mode").loc[baseline]
    cols = [c for c, _, _ in TABLE_COLUMNS]
    t = table.set_index("mode")[cols].apply(pd.to_numeric, errors="coerce")
    return t - pd.to_numeric(base[cols], errors="coerce")
