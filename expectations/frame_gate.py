"""A row-level gate for stage outputs (features, predictions, order batches).

Each suite in ``suites/<name>.json`` carries ``meta.rule`` and ``meta.severity`` on every expectation.
Great Expectations decides which rows fail; critical rules quarantine those rows, warnings only record.
A caller may pass ``derive`` to add columns that turn a rule into a simple column expectation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations import runtime

SUITES_DIR = Path(__file__).resolve().parent / "suites"
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
    return FrameSuite(raw["name"], raw, tuple(rules), severity, runtime.make_suite(raw))


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
        return load_frame_suite(self.suite).severity[rule]


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
    frame = frame.reset_index(drop=True)
    view = frame if derive is None else derive(frame).reset_index(drop=True)
    if len(view) != len(frame):
        raise ValueError("derive must keep one row per input row")
    n = len(frame)
    validated_at = now if now is not None else pd.Timestamp.now(tz="UTC")
    runtime.register_suite(spec.raw)
    validation = runtime.validate(view, spec.name, spec.gx_suite, params)
    masks: dict[str, np.ndarray] = {}
    runtime.failing_rows(validation, n, masks)
    critical = [r for r in spec.rules if spec.severity[r] == "critical"]
    bad = np.zeros(n, dtype=bool)
    primary = np.full(n, "", dtype=object)
    for rule in critical:
        m = masks.get(rule, np.zeros(n, dtype=bool))
        primary = np.where(m & ~bad, rule, primary)
        bad |= m
    broke = np.full(n, "", dtype=object)
    for rule in spec.rules:
        m = masks.get(rule, np.zeros(n, dtype=bool)) & bad & (primary != rule)
        broke = np.where(m, np.where(broke == "", rule, broke + ", " + rule), broke)
    quarantined = frame[bad].copy()
    quarantined["rule"] = primary[bad]
    quarantined["severity"] = "critical"
    quarantined["detail"] = [
        f"{p} failed" + (f"; also broke: {b}" if b else "")
        for p, b in zip(primary[bad], broke[bad], strict=True)
    ]
    dq = pd.DataFrame(
        runtime.dq_rows(validation, spec.name, spec.severity, run_id, stage, validated_at), columns=DQ_COLUMNS
    ).astype({"element_count": "Int64", "unexpected_count": "Int64"})
    runtime.slim(validation.results)
    _stamp(validation, run_id, validated_at)
    return FrameGateResult(
        suite=spec.name,
        stage=stage,
        run_id=run_id,
        passed=frame[~bad].reset_index(drop=True),
        quarantined=quarantined.reset_index(drop=True),
        dq_results=dq,
        failures={r: int(m.sum()) for r, m in masks.items()},
        validation=validation,
    )


def _between(values: pd.Series, kw: dict[str, Any]) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    ok = np.ones(len(v), dtype=bool)
    lo, hi = kw.get("min_value"), kw.get("max_value")
    with np.errstate(invalid="ignore"):
        if lo is not None:
            ok &= (v > lo) if kw.get("strict_min") else (v >= lo)
        if hi is not None:
            ok &= (v < hi) if kw.get("strict_max") else (v <= hi)
    return ~ok & ~np.isnan(v)  # GX skips missing values here (not-null is its own expectation)


# The expectation types a frame suite may use on the in-memory path, each as row-failure mask.
_CHECKS: dict[str, Callable[[pd.DataFrame, dict[str, Any]], np.ndarray]] = {
    "expect_column_values_to_not_be_null": lambda f, kw: f[kw["column"]].isna().to_numpy(),
    "expect_column_values_to_be_between": lambda f, kw: _between(f[kw["column"]], kw),
    "expect_column_values_to_be_in_set": lambda f, kw: (
        ~f[kw["column"]].isin(kw["value_set"]) & f[kw["column"]].notna()
    ).to_numpy(),
    "expect_compound_columns_to_be_unique": lambda f, kw: f.duplicated(
        kw["column_list"], keep=False
    ).to_numpy(),
}


def check_rules(
    frame: pd.DataFrame, suite: str, *, derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None
) -> dict[str, int]:
    """Failing rows per rule of ``suites/<suite>.json``, evaluated in pandas: the same rules as
    ``gate_frame`` without Great Expectations' start-up cost, for the backtest's bar-by-bar order gate
    (tests/expectations/test_gate.py checks both give the same verdicts). Only the expectation types of
    ``_CHECKS``; a suite with another type raises."""
    spec = load_frame_suite(suite)
    view = frame.reset_index(drop=True) if derive is None else derive(frame.reset_index(drop=True))
    masks: dict[str, np.ndarray] = {}
    for e in spec.raw["expectations"]:
        check = _CHECKS.get(e["type"])
        if check is None:
            raise ValueError(f"suite {suite}: {e['type']} has no in-memory check; use gate_frame")
        rule = e["meta"]["rule"]
        m = check(view, e["kwargs"]) if len(view) else np.zeros(0, dtype=bool)
        masks[rule] = masks.get(rule, np.zeros(len(view), dtype=bool)) | m
    return {r: int(m.sum()) for r, m in masks.items()}


def _stamp(validation: Any, run_id: str, at: pd.Timestamp) -> None:
    from great_expectations.core.run_identifier import RunIdentifier

    run_time = at.to_pydatetime()
    validation.meta["run_id"] = RunIdentifier(run_name=run_id, run_time=run_time)
    validation.meta["validation_time"] = run_time


def build_frame_docs(results: list[FrameGateResult], docs_dir: str | Path) -> Path:
    items = [runtime.DocsItem(r.suite, r.validation, f"{r.stage}-{r.run_id}") for r in results]
    return runtime.build_docs(items, docs_dir)
