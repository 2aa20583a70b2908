"""The process's Great Expectations runtime, shared by every gate.

Importing GX and creating a context cost seconds, so one ephemeral context is made per process and every
suite validates through it. Validation uses result_format COMPLETE so the failing rows' positions come
back (``unexpected_index_list``); each expectation's ``meta.rule`` names the qtrader rule it enforces.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations.docs import DocsItem

log = logging.getLogger(__name__)

RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
# Big per-row lists are consumed by the gates, then dropped from kept results (Data Docs, memory).
BULKY_RESULT_KEYS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")

# GX contexts are not thread-safe: one lock around creating and using the process's context.
LOCK = threading.RLock()
_context: Any = None
_warming: threading.Thread | None = None
_batch_definitions: dict[str, Any] = {}


class GateError(RuntimeError):
    """A suite itself is broken (an expectation raised, or no row indexes came back)."""


def context() -> Any:
    global _context
    with LOCK:
        if _context is None:
            started = time.perf_counter()
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            logging.getLogger("great_expectations").setLevel(logging.WARNING)
            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            ctx.data_sources.add_pandas("qtrader")
            _context = ctx
            log.info("Great Expectations context ready in %.1fs", time.perf_counter() - started)
        return _context


def warm_up() -> None:
    """Make the context on a background thread (GX's import included: 3-25 s, most of it scipy and
    altair pulled in by GX itself), so a command that will gate data pays for it while it waits on the
    Prefect server or fetches bars. ``context()`` then finds it made, or waits for it under the lock."""
    global _warming
    with LOCK:
        if _context is not None or _warming is not None:
            return

        def run() -> None:
            try:
                context()
            except Exception:  # noqa: BLE001 - the gate's own context() call raises it where it matters
                log.debug("GX warm-up failed", exc_info=True)

        _warming = threading.Thread(target=run, name="gx-warm-up", daemon=True)
        _warming.start()


def batch_definition(asset: str) -> Any:
    """A whole-dataframe batch definition for ``asset`` (one per suite), made once."""
    with LOCK:
        if asset not in _batch_definitions:
            source = context().data_sources.get("qtrader")
            _batch_definitions[asset] = source.add_dataframe_asset(
                asset
            ).add_batch_definition_whole_dataframe("whole")
        return _batch_definitions[asset]


def make_suite(raw: dict[str, Any], name: str | None = None, expectations: list[dict] | None = None) -> Any:
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=name or raw["name"],
        expectations=copy.deepcopy(expectations if expectations is not None else raw["expectations"]),
    )


def register_suite(raw: dict[str, Any]) -> None:
    """Keep the whole suite in the context so Data Docs render its page."""
    with LOCK:
        suites = context().suites
        try:
            suites.get(raw["name"])
        except Exception:  # noqa: BLE001 - GX raises its own not-found type
            suites.add(make_suite(raw))


def validate(frame: pd.DataFrame, asset: str, suite: Any, params: dict[str, Any] | None = None) -> Any:
    # The validator that Batch.validate and ValidationDefinition.run both use. Called directly it loads
    # (and fingerprints) the frame once; Batch.validate loads it twice, ~0.1 s each at 1M rows.
    from great_expectations.validator.v1_validator import Validator

    with LOCK:
        validator = Validator(
            batch_definition(asset), result_format=RESULT_FORMAT, batch_parameters={"dataframe": frame}
        )
        return validator.validate_expectation_suite(suite, expectation_parameters=params or {})


def raised(info: dict | None) -> str | None:
    """The exception message in a GX exception_info: flat, or keyed by metric id (as GX 1.x does)."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = [
        v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(sorted(set(map(str, messages)))) or None


def failing_rows(suite_result: Any, n: int, positions: dict[str, np.ndarray]) -> None:
    """OR each expectation's unexpected rows into ``positions[rule]`` (boolean arrays of length n)."""
    for r in suite_result.results:
        cfg = r.expectation_config
        error = raised(r.exception_info)
        if error:
            # A broken expectation must stop the gate, not pass or reject rows by accident.
            raise GateError(f"{cfg.type}({cfg.kwargs.get('column')}) raised: {error}")
        rule = cfg.meta["rule"]
        mask = positions.setdefault(rule, np.zeros(n, dtype=bool))
        if r.success:
            continue
        idx = r.result.get("unexpected_index_list")
        if idx is None or len(idx) != r.result.get("unexpected_count"):
            raise GateError(
                f"{cfg.type}({cfg.kwargs.get('column')}) failed without a complete unexpected_index_list"
            )
        mask[np.asarray(idx, dtype=np.int64)] = True


def observed(res: dict) -> str:
    if "observed_value" in res:
        return str(res["observed_value"])
    count, total = res.get("unexpected_count", 0), res.get("element_count", 0)
    sample = f": {res.get('partial_unexpected_list', [])}" if count else ""
    return f"{count} unexpected of {total}{sample}"


def dq_rows(
    validation: Any,
    suite_name: str,
    severity: dict[str, str],
    run_id: str,
    stage: str,
    validated_at: pd.Timestamp,
) -> list[dict[str, Any]]:
    """One ``dq_results`` row per expectation result."""
    rows = []
    for r in validation.results:
        cfg, res = r.expectation_config, r.result or {}
        rows.append(
            {
                "run_id": run_id,
                "stage": stage,
                "suite": suite_name,
                "expectation": cfg.type,
                "rule": cfg.meta["rule"],
                "severity": severity[cfg.meta["rule"]],
                "column_name": cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list", []) or []),
                "success": bool(r.success),
                "observed_value": observed(res),
                "element_count": res.get("element_count"),
                "unexpected_count": res.get("unexpected_count"),
                "validated_at": validated_at,
            }
        )
    return rows


def slim(results: Iterable[Any]) -> None:
    for r in results:
        for k in BULKY_RESULT_KEYS:
            (r.result or {}).pop(k, None)


def build_docs(items: Iterable[DocsItem], docs_dir: str | Path) -> Path:
    """Add validations to the offline Data Docs site ``docs_dir`` (expectations/docs.py); returns its
    index.html. Earlier validations in the site are kept and listed."""
    from expectations.docs import write_site

    started = time.perf_counter()
    index = write_site(items, docs_dir)
    log.debug("Data Docs at %s in %.2fs", index, time.perf_counter() - started)
    return index
