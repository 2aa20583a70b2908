"""A row-level gate for stage outputs (features, predictions, order batches).

Each suite in ``suites/<name>.json`` carries ``meta.rule`` and ``meta.severity`` on every expectation.
Great Expectations decides which rows fail; critical rules quarantine those rows, warnings only record.
A caller may pass ``derive`` to add columns that turn a rule into a simple column expectation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations import runtime

SUITES_DIR = Path(__file__).resolve().parent / "suites"
WARNING_COLUMNS = ["symbol", "ts", "rule", "severity", "detail"]
DQ_COLUMNS = [
    "run_id", "stage", "suite", "expectation", "rule", "severity", "column_name",
    "success", "observed_value", "element_count", "unexpected_count", "validated_at",
]  # fmt: skip


@dataclass(frozen=True)
class FrameSuite:
    name: str
    raw: dict[str, Any]
    rules: tuple[str, ...]  # suite order: the priority when a row breaks several rules
    severity: dict[str, str]
    gx_suite: Any


@functools.cache
def load_frame_suite(name: str) -> FrameSuite:
    raw, rules, severity = read_suite(name)
    return FrameSuite(raw["name"], raw, rules, severity, runtime.make_suite(raw))


@functools.cache
def read_suite(name: str) -> tuple[dict[str, Any], tuple[str, ...], dict[str, str]]:
    """The suite's JSON, its rules in suite order and their severities (no Great Expectations needed)."""
    path = SUITES_DIR / f"{name}.json"
    raw = json.loads(path.read_text())
    rules: list[str] = []
    severity: dict[str, str] = {}
    for e in raw["expectations"]:
        meta = e.get("meta") or {}
        rule, sev = meta.get("rule"), meta.get("severity")
        if not rule or sev not in ("critical", "warning"):
            raise ValueError(f"{path}: {e['type']} needs meta.rule and meta.severity critical|warning")
        if severity.setdefault(rule, sev) != sev:
            raise ValueError(f"{path}: rule {rule!r} has two severities")
        if rule not in rules:
            rules.append(rule)
    return raw, tuple(rules), severity


@dataclass
class FrameGateResult:
    suite: str
    stage: str
    run_id: str
    passed: pd.DataFrame
    quarantined: pd.DataFrame  # the failing rows + rule, severity, detail
    dq_results: pd.DataFrame
    failures: dict[str, int]  # rule -> failing rows
    validation: Any
    # Rows that broke a warning rule (kept): the frame's symbol/ts (when it has them), rule, severity, detail.
    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=WARNING_COLUMNS))

    @property
    def ok(self) -> bool:
        return self.quarantined.empty

    def summary_lines(self) -> list[str]:
        lines = []
        q = self.quarantined
        if not q.empty and "symbol" in q:
            for symbol, g in q.groupby("symbol", sort=True):
                counts = ", ".join(f"{r} x{n}" for r, n in g["rule"].value_counts().sort_index().items())
                lines.append(f"{symbol}: {self.stage} quarantined {len(g)} rows ({counts})")
        elif not q.empty:
            counts = ", ".join(f"{r} x{n}" for r, n in q["rule"].value_counts().sort_index().items())
            lines.append(f"{self.stage}: quarantined {len(q)} rows ({counts})")
        for rule, n in self.failures.items():
            if n and self.severity_of(rule) == "warning":
                lines.append(f"{self.stage}: warning {rule} on {n} rows")
        return lines

    def severity_of(self, rule: str) -> str:
        return read_suite(self.suite)[2][rule]  # the suite's JSON: no Great Expectations import


def _prepared(
    frame: pd.DataFrame, derive: Callable[[pd.DataFrame], pd.DataFrame] | None, now: pd.Timestamp | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """The frame with a fresh index, the view the rules read (``derive``d, one row per input row) and the
    validation time."""
    frame = frame.reset_index(drop=True)
    view = frame if derive is None else derive(frame).reset_index(drop=True)
    if len(view) != len(frame):
        raise ValueError("derive must keep one row per input row")
    return frame, view, now if now is not None else pd.Timestamp.now(tz="UTC")


def gate_frame(
    frame: pd.DataFrame,
    *,
    suite: str,
    run_id: str,
    stage: str,
    params: dict[str, Any] | None = None,
    derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    now: pd.Timestamp | None = None,
) -> FrameGateResult:
    """Validate ``frame`` with ``suites/<suite>.json``; quarantine rows failing critical rules."""
    spec = load_frame_suite(suite)
    frame, view, validated_at = _prepared(frame, derive, now)
    n = len(frame)
    runtime.register_suite(spec.raw)
    validation = runtime.validate(view, spec.name, spec.gx_suite, params)
    masks: dict[str, np.ndarray] = {}
    runtime.failing_rows(validation, n, masks)
    dq = pd.DataFrame(
        runtime.dq_rows(validation, spec.name, spec.severity, run_id, stage, validated_at), columns=DQ_COLUMNS
    ).astype({"element_count": "Int64", "unexpected_count": "Int64"})
    runtime.slim(validation.results)
    _stamp(validation, run_id, validated_at)
    return _gated(frame, spec.name, spec.rules, spec.severity, masks, dq, run_id, stage, validation)


def gate_rows(
    frame: pd.DataFrame,
    *,
    suite: str,
    run_id: str,
    stage: str,
    derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    now: pd.Timestamp | None = None,
) -> FrameGateResult:
    """``gate_frame`` without Great Expectations: the suite's rules checked on the frame's columns
    (``_CHECKS``), for a gate that runs on every live decision bar (its predictions and order batch),
    where a GX validation cost about a second each. The same passed and quarantined rows, failures and
    ``dq_results`` rows (observed_value in the same words); no GX validation object, so no Data Docs page.
    Only suites whose expectation types all have an in-memory check; parameters are not supported.
    tests/expectations/test_gate.py checks it against ``gate_frame``."""
    raw, rules, severity = read_suite(suite)
    frame, view, validated_at = _prepared(frame, derive, now)
    n = len(frame)
    cols = {c: _values(view[c]) for c in view.columns}
    masks: dict[str, np.ndarray] = {}
    rows = []
    for e in raw["expectations"]:
        check = _CHECKS.get(e["type"])
        if check is None:
            raise ValueError(f"suite {suite}: {e['type']} has no in-memory check; use gate_frame")
        kw, rule = e["kwargs"], e["meta"]["rule"]
        read = cols
        if e["type"] not in _TIME_AS_INT and any(cols[c].dtype.kind == "M" for c in _columns(kw)):
            read = {**cols, **{c: view[c].to_numpy() for c in _columns(kw)}}  # the Timestamps, as before
        m = check(read, kw) if n else np.zeros(0, dtype=bool)
        masks[rule] = masks.get(rule, np.zeros(n, dtype=bool)) | m
        bad = int(m.sum())
        names = kw.get("column_list") or [kw["column"]]
        shown = np.flatnonzero(m)[: runtime.RESULT_FORMAT["partial_unexpected_count"]]
        sample = [
            (dict(zip(names, vals, strict=True)) if "column_list" in kw else vals[0])
            for vals in zip(*(view[c].iloc[shown].to_numpy().tolist() for c in names), strict=True)
        ]  # fmt: skip
        rows.append({
            "run_id": run_id, "stage": stage, "suite": raw["name"], "expectation": e["type"], "rule": rule,
            "severity": severity[rule], "column_name": kw.get("column") or ",".join(kw.get("column_list", [])),
            "success": bad == 0,
            "observed_value": runtime.observed(
                {"unexpected_count": bad, "element_count": n, "partial_unexpected_list": sample}
            ),
            "element_count": n, "unexpected_count": bad, "validated_at": validated_at,
        })  # fmt: skip
    dq = pd.DataFrame(rows, columns=DQ_COLUMNS).astype(
        {"element_count": "Int64", "unexpected_count": "Int64"}
    )
    return _gated(frame, raw["name"], rules, severity, masks, dq, run_id, stage, None)


def _gated(
    frame: pd.DataFrame,
    suite: str,
    rules: tuple[str, ...],
    severity: Mapping[str, str],
    masks: dict[str, np.ndarray],
    dq: pd.DataFrame,
    run_id: str,
    stage: str,
    validation: Any,
) -> FrameGateResult:
    """Rows failing a critical rule quarantined (the first rule in suite order named), warnings kept."""
    n = len(frame)
    critical = [r for r in rules if severity[r] == "critical"]
    bad = np.zeros(n, dtype=bool)
    primary = np.full(n, "", dtype=object)
    for rule in critical:
        m = masks.get(rule, np.zeros(n, dtype=bool))
        primary = np.where(m & ~bad, rule, primary)
        bad |= m
    broke = np.full(n, "", dtype=object)
    for rule in rules:
        m = masks.get(rule, np.zeros(n, dtype=bool)) & bad & (primary != rule)
        broke = np.where(m, np.where(broke == "", rule, broke + ", " + rule), broke)
    quarantined = frame[bad].copy()
    quarantined["rule"] = primary[bad]
    quarantined["severity"] = "critical"
    quarantined["detail"] = [
        f"{p} failed" + (f"; also broke: {b}" if b else "")
        for p, b in zip(primary[bad], broke[bad], strict=True)
    ]
    warned = [
        frame.loc[masks[r], [c for c in ("symbol", "ts") if c in frame]].assign(
            rule=r, severity="warning", detail=f"{r} failed (warning: row kept)"
        )
        for r in rules
        if severity[r] == "warning" and r in masks and masks[r].any()
    ]
    warnings = (
        pd.concat(warned, ignore_index=True).reindex(columns=WARNING_COLUMNS)
        if warned
        else pd.DataFrame(columns=WARNING_COLUMNS)
    )
    return FrameGateResult(
        suite=suite,
        stage=stage,
        run_id=run_id,
        passed=frame[~bad].reset_index(drop=True),
        quarantined=quarantined.reset_index(drop=True),
        dq_results=dq,
        failures={r: int(m.sum()) for r, m in masks.items()},
        validation=validation,
        warnings=warnings,
    )


def _between(values: np.ndarray, kw: dict[str, Any]) -> np.ndarray:
    v = np.asarray(values, dtype="float64")
    ok = np.ones(len(v), dtype=bool)
    lo, hi = kw.get("min_value"), kw.get("max_value")
    with np.errstate(invalid="ignore"):
        if lo is not None:
            ok &= (v > lo) if kw.get("strict_min") else (v >= lo)
        if hi is not None:
            ok &= (v < hi) if kw.get("strict_max") else (v <= hi)
    return ~ok & ~np.isnan(v)  # GX skips missing values here (not-null is its own expectation)


def _missing(values: np.ndarray) -> np.ndarray:
    # Floats as before; anything else (objects, timestamps, ints) through pandas' idea of missing (on the
    # array itself: a Series around it costs ~0.1 ms, per bar in the backtest's order gate).
    return np.isnan(values) if values.dtype.kind == "f" else pd.isna(values)


def _values(column: pd.Series) -> np.ndarray:
    """A column as the in-memory checks read it. Timestamps with a zone stay datetime64 (UTC): as an
    object array of Timestamps they cost more to build and hash than every check on the rest (a retrain's
    ~90k prediction rows); the null and uniqueness checks read them as such (a NaT is null, and equal to
    another NaT in a key, as pd.NaT is), the other checks and the failure samples get the Timestamps."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert(None).to_numpy()
    return column.to_numpy()


def _columns(kw: Mapping[str, Any]) -> list[str]:
    return list(kw.get("column_list") or [kw["column"]])


def _duplicated(cols: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    keys = list(zip(*((cols[c].view("i8") if cols[c].dtype.kind == "M" else cols[c]).tolist() for c in names),
                    strict=True))  # fmt: skip
    seen: dict[tuple, int] = {}
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
    return np.array([seen[k] > 1 for k in keys], dtype=bool)


# The expectation types whose check reads a zoned timestamp column as datetime64 (``_values``).
_TIME_AS_INT = ("expect_column_values_to_not_be_null", "expect_compound_columns_to_be_unique")

# The expectation types a frame suite may use on the in-memory path, each as a row-failure mask.
_CHECKS: dict[str, Callable[[Mapping[str, np.ndarray], dict[str, Any]], np.ndarray]] = {
    "expect_column_values_to_not_be_null": lambda c, kw: _missing(c[kw["column"]]),
    "expect_column_values_to_be_between": lambda c, kw: _between(c[kw["column"]], kw),
    "expect_column_values_to_be_in_set": lambda c, kw: (
        ~np.isin(c[kw["column"]], list(kw["value_set"])) & ~_missing(c[kw["column"]])
    ),
    "expect_compound_columns_to_be_unique": lambda c, kw: _duplicated(c, kw["column_list"]),
}


def check_rules(
    columns: Mapping[str, np.ndarray],
    suite: str,
    *,
    derive: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
) -> dict[str, int]:
    """Failing rows per rule of ``suites/<suite>.json`` on columns held as arrays: the same rules as
    ``gate_frame`` without Great Expectations' cost per call, for the backtest's bar-by-bar order gate
    (tests/expectations/test_gate.py checks both give the same verdicts). Only the expectation types of
    ``_CHECKS``; a suite with another type raises. ``derive`` adds columns, as ``gate_frame``'s does."""
    raw, _, _ = read_suite(suite)
    cols = {k: np.asarray(v) for k, v in columns.items()}
    if derive is not None:
        cols.update(derive(cols))
    n = len(next(iter(cols.values()))) if cols else 0
    masks: dict[str, np.ndarray] = {}
    for e in raw["expectations"]:
        check = _CHECKS.get(e["type"])
        if check is None:
            raise ValueError(f"suite {suite}: {e['type']} has no in-memory check; use gate_frame")
        rule = e["meta"]["rule"]
        m = check(cols, e["kwargs"]) if n else np.zeros(0, dtype=bool)
        masks[rule] = masks.get(rule, np.zeros(n, dtype=bool)) | m
    return {r: int(m.sum()) for r, m in masks.items()}


def _stamp(validation: Any, run_id: str, at: pd.Timestamp) -> None:
    from great_expectations.core.run_identifier import RunIdentifier

    run_time = at.to_pydatetime()
    validation.meta["run_id"] = RunIdentifier(run_name=run_id, run_time=run_time)
    validation.meta["validation_time"] = run_time


def build_frame_docs(results: list[FrameGateResult], docs_dir: str | Path) -> Path:
    """Add the results' validations to the offline Data Docs site ``docs_dir``; returns its index.html."""
    items = [
        runtime.DocsItem(
            r.suite,
            r.validation,
            f"{r.stage}-{r.run_id}",
            severity=load_frame_suite(r.suite).severity,
            findings=pd.concat([r.quarantined, r.warnings], ignore_index=True),
        )
        for r in results
    ]
    return runtime.build_docs(items, docs_dir)
