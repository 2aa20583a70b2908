"""The raw-bars data-quality gate: Great Expectations decides, pandas only derives columns.

``suites/bars_raw.json`` is the single source of truth for which rows fail. pandas adds derived columns
(``price_min``, ``high_margin``, ``dup_rank``, ``gap_bars``, ...) so every rule is a simple column
expectation, and GX's ``unexpected_index_list`` (result_format COMPLETE) names the failing rows.

Validation runs in two passes over one suite, split by ``meta.scope``:

1. row rules on every input row;
2. series rules (gaps, stale last bar, big moves) on the rows that passed *every* row rule, so a NaN
   close or a duplicate never makes its neighbours look like a gap or a big move. (A row kept despite a
   warning-severity row rule is still left out of the series.)

Severity (``GateSettings.severity``): a critical row rule quarantines the row; a critical series rule
blocks the symbol (all its rows go to quarantine with that rule); a warning is recorded and the rows are
kept. One exception: a later duplicate of a (symbol, interval, ts) key can never be written, so it is
quarantined whatever the severity of ``duplicate_timestamp`` (the first occurrence in delivery order wins).

Quarantine holds one row per rejected input row: ``rule`` is the rule that rejected it (the blocking rule
for a blocked symbol, else the first failing critical row rule in suite order) and ``detail`` describes it
and lists the other rules the row broke. So ``len(passed) + len(quarantined) == len(bars)`` always.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations import runtime
from qtrader import progress
from qtrader.calendar import expected_bars, in_session, is_daily, utc
from qtrader.settings import GateSettings, Severity
from sources.base import BAR_COLUMNS, PRICE_COLUMNS

log = logging.getLogger(__name__)

SUITE_PATH = Path(__file__).resolve().parent / "suites" / "bars_raw.json"
ROW, SERIES = "row", "series"
QUARANTINE_COLUMNS = [*BAR_COLUMNS, "rule", "severity", "detail"]
WARNING_COLUMNS = ["symbol", "interval", "ts", "rule", "severity", "detail", "value"]
DQ_COLUMNS = [
    "run_id", "stage", "suite", "expectation", "rule", "severity", "column_name",
    "success", "observed_value", "element_count", "unexpected_count", "validated_at",
]  # fmt: skip
_DEFAULT_SEVERITY: dict[str, Severity] = GateSettings().severity
# What stale_last_bar judges a symbol's last bar against: one time, one per symbol, or the batch's newest.
Reference = pd.Timestamp | Mapping[str, pd.Timestamp] | None
CRITICAL, WARNING = Severity.critical.value, Severity.warning.value


# --------------------------------------------------------------------------------------------- suite


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    raw: dict[str, Any]  # the JSON as checked in
    rules: tuple[str, ...]  # distinct rules in suite order: the priority when a row breaks several
    scope: dict[str, str]  # rule -> row | series
    column: dict[str, str]  # rule -> column of its last expectation (the value shown in findings)

    def rules_in(self, scope: str) -> list[str]:
        return [r for r in self.rules if self.scope[r] == scope]

    def expectations_in(self, scope: str) -> list[dict[str, Any]]:
        return [e for e in self.raw["expectations"] if e["meta"]["scope"] == scope]


@functools.cache
def load_suite(path: Path = SUITE_PATH) -> SuiteSpec:
    """Read and check the suite JSON: every expectation names a known rule and a scope."""
    raw = json.loads(Path(path).read_text())
    rules: list[str] = []
    scope: dict[str, str] = {}
    column: dict[str, str] = {}
    for e in raw["expectations"]:
        meta = e.get("meta") or {}
        rule, sc = meta.get("rule"), meta.get("scope")
        if rule not in _DEFAULT_SEVERITY:
            raise ValueError(f"{path}: {e['type']} has unknown meta.rule {rule!r}")
        if sc not in (ROW, SERIES) or scope.setdefault(rule, sc) != sc:
            raise ValueError(f"{path}: rule {rule!r} needs one meta.scope of 'row' or 'series', got {sc!r}")
        if rule not in rules:
            rules.append(rule)
        column[rule] = e["kwargs"]["column"]
    missing = sorted(set(_DEFAULT_SEVERITY) - set(rules))
    if missing:
        raise ValueError(f"{path}: no expectation for rules {missing}")
    return SuiteSpec(raw["name"], raw, tuple(rules), scope, column)


def severities(settings: GateSettings) -> dict[str, str]:
    """Rule -> 'critical' | 'warning'. A partial map (e.g. from qtrader.toml) overrides the defaults."""
    unknown = sorted(set(settings.severity) - set(_DEFAULT_SEVERITY))
    if unknown:
        raise ValueError(f"gate.severity has unknown rules {unknown}; known: {sorted(_DEFAULT_SEVERITY)}")
    merged = {**_DEFAULT_SEVERITY, **settings.severity}
    return {rule: Severity(sev).value for rule, sev in merged.items()}


def tolerances(interval: str, settings: GateSettings) -> dict[str, float]:
    """The suite's $PARAMETER values for this interval family."""
    daily = is_daily(interval)
    return {
        "max_gap_bars": settings.max_gap_bars_daily if daily else settings.max_gap_bars_intraday,
        "max_stale_bars": settings.max_stale_bars_daily if daily else settings.max_stale_bars_intraday,
        "max_abs_return": settings.max_abs_return_daily if daily else settings.max_abs_return_intraday,
    }


# ------------------------------------------------------------------------------------------------ GX


def _validate(frame: pd.DataFrame, scope: str, params: dict[str, float]) -> Any:
    spec = load_suite()
    runtime.register_suite(spec.raw)
    return runtime.validate(frame, spec.name, _scope_suite(scope), params)


@functools.cache
def _scope_suite(scope: str) -> Any:
    """The JSON suite's expectations of one meta.scope, as a GX suite (made once)."""
    spec = load_suite()
    return runtime.make_suite(spec.raw, name=f"{spec.name}.{scope}", expectations=spec.expectations_in(scope))


_failing_rows = runtime.failing_rows


# ------------------------------------------------------------------------------------- derived columns


def _finite_or_nan(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, np.nan)


def _join_where(names: Iterable[str], masks: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Per row, the names whose mask is set, comma-separated (vectorised over rows)."""
    out = np.full(size, "", dtype=object)
    for name, mask in zip(names, masks, strict=True):
        out = np.where(mask, np.where(out == "", name, out + ", " + name), out)
    return out


def _num(x: np.ndarray) -> np.ndarray:
    return np.char.mod("%g", np.asarray(x, dtype=np.float64)).astype(object)


@dataclass
class _Batch:
    """One gate call: the input rows, their derived columns (aligned with input positions) and verdicts."""

    bars: pd.DataFrame  # BAR_COLUMNS, RangeIndex = input position
    interval: str
    exchange: str
    spec: SuiteSpec
    severity: dict[str, str]
    params: dict[str, float]
    codes: np.ndarray  # symbol code per row; codes follow sorted symbol names
    symbols: np.ndarray  # code -> symbol
    t: np.ndarray  # ts as int64 ns UTC
    order: np.ndarray  # positions sorted by (symbol, ts, delivery position)
    newest_before: np.ndarray  # int64 ns: newest ts of the symbol delivered up to this row
    row_frame: pd.DataFrame  # what the row expectations see
    series: dict[str, np.ndarray] = field(default_factory=dict)  # series columns, NaN where not evaluated
    reference_ns: np.ndarray | None = None  # per symbol code: what its last bar is judged against (ns UTC)
    fails: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> failing rows (GX's verdict)

    @property
    def n(self) -> int:
        return len(self.bars)

    @classmethod
    def derive(
        cls, bars: pd.DataFrame, interval: str, exchange: str, spec: SuiteSpec, severity, params
    ) -> _Batch:
        n = len(bars)
        codes, symbols = pd.factorize(bars["symbol"], sort=True, use_na_sentinel=False)
        codes = codes.astype(np.int64, copy=False)
        t = bars["ts"].array.asi8
        # Rank timestamps through their distinct values (a few thousand): (symbol, ts) becomes one int64
        # key that sorts and segments without overflow.
        tcodes, tuniq = pd.factorize(t)
        by_time = np.argsort(tuniq, kind="stable")
        tsorted = tuniq[by_time]
        trank = np.empty(len(tuniq), dtype=np.int64)
        trank[by_time] = np.arange(len(tuniq))
        nu = max(len(tuniq), 1)
        key = codes * nu + trank[tcodes]
        order = np.argsort(key, kind="stable")
        steps = np.arange(n)

        # duplicate_timestamp: rank among equal (symbol, ts) keys, in delivery order.
        ks = key[order]
        run_start = np.maximum.accumulate(np.where(np.r_[True, ks[1:] != ks[:-1]], steps, 0)) if n else steps
        dup_rank = np.empty(n, dtype=np.int64)
        dup_rank[order] = steps - run_start

        # timestamp_decreasing: running max per symbol in delivery order (codes dominate the key, so one
        # cumulative max over the symbol-grouped rows never crosses symbols).
        by_symbol = np.argsort(codes, kind="stable")
        running = np.maximum.accumulate(key[by_symbol]) if n else key
        newest_before = np.empty(n, dtype=np.int64)
        newest_before[by_symbol] = tsorted[running - codes[by_symbol] * nu] if n else running
        behind = newest_before > t
        # Seconds only as a readable value; the boolean decides, so a 1 ns step still fails.
        lag_s = (newest_before - np.where(behind, t, newest_before)) / 1e9
        ts_behind_s = np.where(behind, np.maximum(lag_s, 1e-9), 0.0)

        # outside_session: once per distinct timestamp.
        distinct = pd.DatetimeIndex(tuniq.view("M8[ns]")).tz_localize("UTC")
        in_sess = np.asarray(in_session(distinct, interval, exchange), dtype=bool)[tcodes]

        # Non-finite values count as missing: inf is no more a price than NaN is.
        o, h, lo, c, v = (
            _finite_or_nan(bars[col].to_numpy(np.float64)) for col in [*PRICE_COLUMNS, "volume"]
        )
        frame = pd.DataFrame(
            {
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": v,
                "price_min": np.fmin(np.fmin(o, h), np.fmin(lo, c)),  # NaN only when no price is present
                "high_margin": h - np.fmax(o, c),
                "low_margin": np.fmin(o, c) - lo,
                "dup_rank": dup_rank,
                "ts_behind_s": ts_behind_s,
                "in_session": in_sess,
            }
        )
        return cls(
            bars, interval, exchange, spec, severity, params, codes, np.asarray(symbols, dtype=object), t, order,
            newest_before, frame,
        )  # fmt: skip

    def series_frame(self, valid: np.ndarray, reference_end: Reference) -> pd.DataFrame:
        """Series columns over the valid rows in (symbol, ts) order; the index is the input position."""
        self.series = {col: np.full(self.n, np.nan) for col in ("gap_bars", "stale_bars", "abs_return")}
        ov = self.order[valid[self.order]]  # unique (symbol, ts): later duplicates failed a row rule
        if len(ov) == 0:
            return pd.DataFrame({col: [] for col in self.series}, dtype=np.float64)
        cv, tv = self.codes[ov], self.t[ov]
        first = np.r_[True, cv[1:] != cv[:-1]]
        last = np.r_[cv[1:] != cv[:-1], True]
        newest = pd.Timestamp(tv.max(), tz="UTC")
        self.reference_ns = self._reference_ns(reference_end, newest)
        ref_max = pd.Timestamp(int(self.reference_ns.max()), tz="UTC")
        grid = expected_bars(
            self.interval, pd.Timestamp(tv.min(), tz="UTC"), max(ref_max, newest), self.exchange
        )
        grid_ns = grid.as_unit("ns").asi8

        # gap_bars: expected bars strictly between a bar and the previous bar of its symbol. Off-grid
        # stamps can put two bars in one slot, hence the floor at 0.
        slot = np.searchsorted(grid_ns, tv, side="left")
        gap = np.maximum(np.r_[0, np.diff(slot)] - 1.0, 0.0)
        gap[first] = np.nan

        # stale_bars: expected bars after the symbol's last bar, up to and including its reference end.
        stale = np.full(len(ov), np.nan)
        ref_slot = np.searchsorted(grid_ns, self.reference_ns[cv[last]], side="right")
        stale[last] = np.maximum(ref_slot - np.searchsorted(grid_ns, tv[last], side="right"), 0)

        close = self.row_frame["close"].to_numpy()[ov]
        prev = np.r_[np.nan, close[:-1]]
        prev[first] = np.nan
        abs_return = np.abs(close / prev - 1.0)

        out = pd.DataFrame({"gap_bars": gap, "stale_bars": stale, "abs_return": abs_return}, index=ov)
        for col in self.series:
            self.series[col][ov] = out[col].to_numpy()
        return out

    def _reference_ns(self, reference_end: Reference, newest: pd.Timestamp) -> np.ndarray:
        """Per symbol code, the time its last bar is judged against (ns UTC); the batch's newest by default."""
        out = np.full(len(self.symbols), newest.as_unit("ns").value, dtype=np.int64)
        if isinstance(reference_end, Mapping):
            for i, sym in enumerate(self.symbols):
                if sym in reference_end:
                    out[i] = utc(reference_end[sym]).as_unit("ns").value
        elif reference_end is not None:
            out[:] = utc(reference_end).as_unit("ns").value
        return out

    def value(self, rule: str, idx: np.ndarray) -> np.ndarray:
        """The checked column's value for ``rule`` at ``idx`` (for findings and ranking)."""
        col = self.spec.column[rule]
        src = self.series[col] if col in self.series else self.row_frame[col].to_numpy()
        return np.asarray(src[idx], dtype=np.float64)

    def ts_text(self, ns: np.ndarray) -> np.ndarray:
        fmt = "%Y-%m-%d" if is_daily(self.interval) else "%Y-%m-%d %H:%M UTC"
        return np.asarray(
            pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("M8[ns]")).strftime(fmt), dtype=object
        )

    def describe(self, rule: str, idx: np.ndarray) -> np.ndarray:
        """Why each row in ``idx`` broke ``rule``, as text (vectorised: failing subsets can be large)."""
        f, p, k = self.row_frame, self.params, len(idx)

        def col(name: str) -> np.ndarray:
            return f[name].to_numpy()[idx]

        if rule == "price_not_null":
            return "missing or non-finite: " + _join_where(
                PRICE_COLUMNS, (np.isnan(col(c)) for c in PRICE_COLUMNS), k
            )
        if rule == "price_positive":
            return "non-positive: " + _join_where(PRICE_COLUMNS, (col(c) <= 0 for c in PRICE_COLUMNS), k)
        if rule == "high_ge_open_close":
            return (
                "high " + _num(col("high")) + " < max(open, close) " + _num(col("high") - col("high_margin"))
            )
        if rule == "low_le_open_close":
            return "low " + _num(col("low")) + " > min(open, close) " + _num(col("low") + col("low_margin"))
        if rule == "volume_non_negative":
            return "volume " + _num(self.bars["volume"].to_numpy(np.float64)[idx])
        if rule == "duplicate_timestamp":
            nth = (col("dup_rank") + 1).astype(str).astype(object)
            return "occurrence #" + nth + " of this (symbol, interval, ts); the first is kept"
        if rule == "timestamp_decreasing":
            before = self.ts_text(self.newest_before[idx])
            return "ts " + self.ts_text(self.t[idx]) + " is earlier than " + before + " delivered before it"
        if rule == "outside_session":
            return np.full(k, f"not a {self.exchange} {self.interval} bar slot", dtype=object)
        if rule == "gap_beyond_tolerance":
            at = self.ts_text(self.t[idx])
            tol = f"; tolerance {p['max_gap_bars']:g}"
            return _num(self.series["gap_bars"][idx]) + " expected bars missing before the bar of " + at + tol
        if rule == "stale_last_bar":
            ref = self.ts_text(self.reference_ns[self.codes[idx]])
            tol = f"; tolerance {p['max_stale_bars']:g}"
            return (
                "last bar " + self.ts_text(self.t[idx]) + ", " + _num(self.series["stale_bars"][idx])
                + " expected bars missing before " + ref + tol
            )  # fmt: skip
        if rule == "move_beyond_limit":
            pct = np.char.mod("%.0f%%", self.series["abs_return"][idx] * 100).astype(object)
            return (
                "|return| " + pct + " on " + self.ts_text(self.t[idx]) + f"; limit {p['max_abs_return']:.0%}"
            )
        return np.full(k, rule, dtype=object)

    def also_broke(self, idx: np.ndarray, primary: np.ndarray) -> np.ndarray:
        """'; also broke: a, b' listing the other rules each row failed, or ''."""
        rules = self.spec.rules
        also = _join_where(rules, (self.fails[r][idx] & (primary != r) for r in rules), len(idx))
        return np.where(also == "", "", "; also broke: " + also)


# -------------------------------------------------------------------------------------------- result


@dataclass
class GateResult:
    passed: pd.DataFrame  # BAR_COLUMNS, deduplicated, sorted by symbol, ts: the rows to write
    quarantined: pd.DataFrame  # QUARANTINE_COLUMNS, one row per rejected input row
    dq_results: pd.DataFrame  # DQ_COLUMNS, one row per expectation
    blocked_symbols: dict[str, str]  # symbol -> critical series rule that blocked it
    warnings: pd.DataFrame  # WARNING_COLUMNS: warning-severity findings (rows kept)
    interval: str
    run_id: str
    stage: str
    rows_in: int
    symbol_rows: dict[str, int] = field(default_factory=dict)  # input rows of each affected symbol
    blocked_detail: dict[str, str] = field(default_factory=dict)  # symbol -> why it was blocked
    # The GX result of the whole suite (both passes; bulky per-row lists removed), for Data Docs.
    validation: Any = None
    gate_s: float = 0.0

    def summary_lines(self) -> list[str]:
        """One line per affected symbol: block or quarantined rows by rule, then warnings."""
        q, w = self.quarantined, self.warnings
        q_counts = q.groupby(["symbol", "rule"], sort=True).size() if len(q) else pd.Series(dtype=int)
        q_symbols = set(q_counts.index.get_level_values(0)) if len(q) else set()
        w_groups = dict(tuple(w.groupby("symbol", sort=True))) if len(w) else {}
        lines = []
        for sym in sorted(set(self.blocked_symbols) | q_symbols | set(w_groups)):
            total = self.symbol_rows.get(sym, 0)
            parts = []
            if sym in self.blocked_symbols:
                why = self.blocked_detail.get(sym, "")
                parts.append(f"BLOCKED by {self.blocked_symbols[sym]} ({why}): all {total} rows quarantined")
            elif sym in q_symbols:
                per_rule = q_counts.loc[sym]
                rules = ", ".join(f"{rule} x{k}" for rule, k in per_rule.items())
                parts.append(f"quarantined {int(per_rule.sum())} of {total} rows ({rules})")
            for rule, g in w_groups[sym].groupby("rule", sort=True) if sym in w_groups else ():
                parts.append(f"warning {rule} x{len(g)}{_warning_note(rule, g)}")
            lines.append(f"{sym}: " + "; ".join(parts))
        return lines


def _warning_note(rule: str, g: pd.DataFrame) -> str:
    if rule == "move_beyond_limit":
        return f" (max |return| {g['value'].max():.0%})"
    if rule == "gap_beyond_tolerance":
        return f" (max gap {g['value'].max():g} bars)"
    if rule == "stale_last_bar":
        return f" ({g['detail'].iloc[0]})"
    return ""


# ---------------------------------------------------------------------------------------------- gate


def _check_input(bars: pd.DataFrame, interval: str) -> pd.DataFrame:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars frame is missing columns {missing}")
    if not isinstance(bars["ts"].dtype, pd.DatetimeTZDtype):
        raise ValueError(f"bars.ts must be tz-aware UTC timestamps, got {bars['ts'].dtype}")
    seen = pd.unique(bars["interval"])
    if len(seen) > 1 or (len(seen) == 1 and seen[0] != interval):
        raise ValueError(f"gate for interval {interval!r} got rows with intervals {sorted(map(str, seen))}")
    out = bars[BAR_COLUMNS].reset_index(drop=True)
    if str(out["ts"].dtype) != "datetime64[ns, UTC]":
        out["ts"] = out["ts"].dt.tz_convert("UTC").dt.as_unit("ns")
    return out


def gate_bars(
    bars: pd.DataFrame,
    *,
    interval: str,
    settings: GateSettings,
    run_id: str,
    reference_end: Reference,
    exchange: str = "XNYS",
    stage: str = "raw_bars",
    now: pd.Timestamp | None = None,
) -> GateResult:
    """Validate a canonical raw bars frame (sources.base.BAR_COLUMNS, one interval) with bars_raw.json.

    ``reference_end`` is what a symbol's last bar is judged against by stale_last_bar: the window end that
    was asked for, or the time the data was meant to reach (``as_of``); a mapping gives it per symbol (a
    folder of history files: each file's own end); ``None`` means the newest valid bar of the batch.
    ``now`` stamps ``validated_at`` (default: the clock).
    """
    started = time.perf_counter()
    spec = load_suite()
    sev = severities(settings)
    params = tolerances(interval, settings)
    validated_at = utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
    # The CLI's progress bar: row rules, series rules, verdicts.
    watched = f"gate {interval}" if stage == "raw_bars" else f"gate {stage} {interval}"
    progress.report(watched, 0, 3)
    b = _Batch.derive(_check_input(bars, interval), interval, exchange, spec, sev, params)
    n = b.n

    # Pass 1: row rules on every row. Pass 2: series rules on the rows that passed every row rule.
    row_result = _validate(b.row_frame, ROW, params)
    _failing_rows(row_result, n, b.fails)
    progress.report(watched, 1, 3)
    valid = ~_any_of([b.fails[r] for r in spec.rules_in(ROW)], n)
    series_result = _validate(b.series_frame(valid, reference_end), SERIES, params)
    _failing_rows(series_result, n, b.fails)
    progress.report(watched, 2, 3)

    # Later duplicates are quarantined whatever their severity: their key is already taken.
    rejecting = [r for r in spec.rules_in(ROW) if sev[r] == CRITICAL or r == "duplicate_timestamp"]
    rejected = _any_of([b.fails[r] for r in rejecting], n)
    block_rule, blocked_detail = _blocks(b)
    quarantined_mask = rejected | (block_rule[b.codes] != "")

    quarantined = _quarantine_frame(b, quarantined_mask, block_rule, blocked_detail, rejecting)
    warnings = _warnings_frame(b)
    keep = b.order[~quarantined_mask[b.order]]
    in_place = len(keep) == n and bool((keep == np.arange(n)).all())  # already sorted, nothing rejected
    passed = b.bars if in_place else b.bars.take(keep).reset_index(drop=True)
    if len(passed) + len(quarantined) != n:
        raise AssertionError(f"gate lost rows: {n} in, {len(passed)} passed + {len(quarantined)} quarantined")

    validation = _combined_validation(
        spec, row_result, series_result, params, run_id, stage, interval, validated_at
    )
    affected = set(quarantined["symbol"]) | set(warnings["symbol"])
    rows_per_symbol = np.bincount(b.codes, minlength=len(b.symbols))
    result = GateResult(
        passed=passed,
        quarantined=quarantined,
        dq_results=_dq_frame(validation, spec, sev, run_id, stage, validated_at),
        blocked_symbols={str(b.symbols[i]): str(r) for i, r in enumerate(block_rule) if r},
        warnings=warnings,
        interval=interval,
        run_id=run_id,
        stage=stage,
        rows_in=n,
        symbol_rows={str(s): int(rows_per_symbol[i]) for i, s in enumerate(b.symbols) if s in affected},
        blocked_detail=blocked_detail,
        validation=validation,
        gate_s=time.perf_counter() - started,
    )
    progress.report(watched, 3, 3)
    log.debug(
        "gate %s %s: %d rows, %d passed, %d quarantined, %d symbols blocked, %d warnings in %.2fs",
        stage, interval, n, len(passed), len(quarantined), len(result.blocked_symbols), len(warnings), result.gate_s,
    )  # fmt: skip
    return result


def _any_of(masks: list[np.ndarray], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for m in masks:
        out |= m
    return out


def _blocks(b: _Batch) -> tuple[np.ndarray, dict[str, str]]:
    """Symbol code -> blocking rule ('' if none), and symbol -> why. The first critical series rule wins."""
    block_rule = np.full(len(b.symbols), "", dtype=object)
    detail: dict[str, str] = {}
    for rule in b.spec.rules_in(SERIES):
        if b.severity[rule] != CRITICAL or not b.fails[rule].any():
            continue
        rows = np.flatnonzero(b.fails[rule])
        # The worst failing row of each symbol describes its block.
        worst = pd.Series(b.value(rule, rows), index=rows).groupby(b.codes[rows]).idxmax()
        worst = worst[block_rule[worst.index.to_numpy()] == ""]
        block_rule[worst.index.to_numpy()] = rule
        detail.update(
            zip(map(str, b.symbols[worst.index.to_numpy()]), b.describe(rule, worst.to_numpy()), strict=True)
        )
    return block_rule, detail


def _quarantine_frame(
    b: _Batch, mask: np.ndarray, block_rule: np.ndarray, blocked_detail: dict[str, str], rejecting: list[str]
) -> pd.DataFrame:
    idx = b.order[mask[b.order]]  # by symbol, ts, delivery position
    primary = block_rule[b.codes[idx]]
    blocked = primary != ""
    for rule in reversed(rejecting):  # reversed: the first failing rule in suite order is written last
        primary = np.where(~blocked & b.fails[rule][idx], rule, primary)
    detail = np.full(len(idx), "", dtype=object)
    detail[blocked] = (
        [blocked_detail[str(s)] for s in b.symbols[b.codes[idx[blocked]]]] if blocked.any() else []
    )
    for rule in rejecting:
        sel = ~blocked & (primary == rule)
        if sel.any():
            detail[sel] = b.describe(rule, idx[sel])
    out = b.bars.take(idx).reset_index(drop=True)
    out["rule"] = pd.Series(primary, dtype=object)
    out["severity"] = out["rule"].map(b.severity).astype(object)
    out["detail"] = pd.Series(detail + b.also_broke(idx, primary), dtype=object)
    return out[QUARANTINE_COLUMNS]


def _warnings_frame(b: _Batch) -> pd.DataFrame:
    parts = []
    for rule in b.spec.rules:
        # A warning-severity duplicate is already in quarantine under its own rule.
        if b.severity[rule] != WARNING or rule == "duplicate_timestamp" or not b.fails[rule].any():
            continue
        idx = np.flatnonzero(b.fails[rule])
        idx = idx[np.lexsort((b.t[idx], b.codes[idx]))]
        part = b.bars.loc[idx, ["symbol", "interval", "ts"]].reset_index(drop=True)
        part["rule"], part["severity"] = rule, WARNING
        part["detail"] = pd.Series(b.describe(rule, idx), dtype=object)
        part["value"] = b.value(rule, idx)
        parts.append(part)
    if parts:
        return pd.concat(parts, ignore_index=True)[WARNING_COLUMNS]
    empty = b.bars.loc[[], ["symbol", "interval", "ts"]].reset_index(drop=True)
    text = pd.Series(dtype=object)
    return empty.assign(rule=text, severity=text, detail=text, value=pd.Series(dtype=np.float64))


def _combined_validation(
    spec, row_result, series_result, params, run_id, stage, interval, validated_at
) -> Any:
    """One ExpectationSuiteValidationResult for the whole suite, as a single pass would have given."""
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier

    results = [*row_result.results, *series_result.results]
    runtime.slim(results)
    ok = sum(bool(r.success) for r in results)
    combined = ExpectationSuiteValidationResult(
        success=ok == len(results),
        results=results,
        suite_name=spec.name,
        suite_parameters=dict(params),
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": ok,
            "unsuccessful_expectations": len(results) - ok,
            "success_percent": 100.0 * ok / len(results),
        },
        meta={**row_result.meta, "qtrader": {"run_id": run_id, "stage": stage, "interval": interval}},
        batch_id=row_result.batch_id,
    )
    # Set after construction, as ValidationDefinition.run does: the constructor wants plain JSON in meta.
    run_time = validated_at.to_pydatetime()
    combined.meta["run_id"] = RunIdentifier(run_name=run_id, run_time=run_time)
    combined.meta["validation_time"] = run_time
    return combined


def _dq_frame(validation, spec, sev, run_id, stage, validated_at) -> pd.DataFrame:
    rows = runtime.dq_rows(validation, spec.name, sev, run_id, stage, validated_at)
    return pd.DataFrame(rows, columns=DQ_COLUMNS).astype(
        {"element_count": "Int64", "unexpected_count": "Int64"}
    )


# ------------------------------------------------------------------------------------------ data docs


def build_data_docs(results: GateResult | Iterable[GateResult], docs_dir: str | Path) -> Path:
    """Add the gate results' GX validations to the offline Data Docs site ``docs_dir``; returns its
    index.html. Each page lists the quarantined and warned rows (symbol, ts, rule, severity, detail).

    Re-uses the validation results kept in each GateResult (nothing is validated twice).
    """
    gated = [results] if isinstance(results, GateResult) else list(results)
    spec = load_suite()
    items = [
        runtime.DocsItem(
            spec.name,
            g.validation,
            f"{g.stage}-{g.interval}",
            severity=dict(zip(g.dq_results["rule"], g.dq_results["severity"], strict=True)),
            findings=pd.concat(
                [
                    f[["symbol", "ts", "rule", "severity", "detail"]]
                    for f in (g.quarantined, g.warnings)
                    if len(f)
                ]
                or [g.warnings.reindex(columns=["symbol", "ts", "rule", "severity", "detail"])],
                ignore_index=True,
            ),
        )
        for g in gated
        if g.validation is not None
    ]
    return runtime.build_docs(items, docs_dir)
