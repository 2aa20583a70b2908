"""Retrain flow: load features + labels -> walk-forward each module -> calibrate -> champion vs challenger
-> register, gate and record predictions -> summary artifacts. One interval per run."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from models.training import ENSEMBLE, FitCache
from qtrader import progress
from qtrader.calendar import utc
from qtrader.orchestration import INTERVAL_CHOICES, run_form, run_name
from qtrader.settings import Settings, load_settings
from tasks.failures import publish_failure
from tasks.ingest import new_run_id
from tasks.retrain import (
    Trained,
    build_predictions_docs,
    gate_predictions,
    load_champions,
    load_training_data,
    publish_retrain_summary,
    record_retrain,
    register_models,
    train_ensemble,
    train_module,
    training_config,
)


@flow(
    name="retrain",
    description="Walk-forward retrain of the signal modules with champion/challenger promotion.",
    flow_run_name=run_name("retrain", "interval"),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def retrain(
    interval: str = "1d",
    modules: list[str] | None = None,
    warehouse: str | None = None,
    now: str | None = None,
    overrides: dict | None = None,
) -> dict:
    """Retrain ``modules`` (default: the configured members and the ensemble) on ``interval`` bars.

    Args:
        interval: Bar interval whose modules are retrained.
        modules: Modules to retrain; empty: the configured members and the ensemble.
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        now: Tests and backfills: the registry's clock; the data window is always the newest stored bars.
        overrides: Settings to override for this run, e.g. {"trade_filter": {"min_confidence": 0.52}}.
    """
    return retrain_body(interval, modules, warehouse, now, overrides)


def retrain_body(
    interval: str = "1d",
    modules: list[str] | None = None,
    warehouse: str | None = None,
    now: str | None = None,
    overrides: dict | None = None,
    fits: FitCache | None = None,
) -> dict:
    """The retrain flow's work, for a caller already inside a flow or task: the backtest's model timeline
    runs it on its scratch warehouse with one ``FitCache`` across its retrains (a split whose training
    rows did not change is not refitted; the same models). Arguments as ``retrain``'s."""
    log = get_run_logger()
    settings = load_settings(warehouse=warehouse, **(overrides or {}))
    clock = utc(now) if now else pd.Timestamp.now(tz="UTC")
    run_id = new_run_id("retrain")
    members, with_ensemble = _modules(settings, modules)
    config = training_config(settings, interval)

    with progress.step(f"load {interval}"):
        data, plan = load_training_data(settings, interval, config)
        champions, versions = load_champions(settings, interval, clock)
    if fits is not None:
        fits.begin(data, plan)
    trained: dict[str, Trained] = {}
    failed: list[str] = []
    watched, total = f"train {interval}", len(members) + int(with_ensemble)  # the CLI's bar: one per module
    progress.report(watched, 0, total)

    def train(name: str) -> Trained | None:
        return train_module(
            name, data, plan, config, settings, champions.get(name), versions.get(name, 0) + 1, fits
        )

    for done, (name, result) in enumerate(_in_threads(members, train, settings.retrain.module_threads), 1):
        progress.report(watched, done, total)
        if result is None:
            failed.append(name)
        else:
            trained[name] = result
    if with_ensemble:
        result = train_ensemble(
            dict(trained),
            data,
            plan,
            config,
            settings,
            champions.get(ENSEMBLE),
            versions.get(ENSEMBLE, 0) + 1,
        )
        progress.report(watched, total, total)
        if result is None:
            failed.append(ENSEMBLE)
        else:
            trained[ENSEMBLE] = result
    if not trained:
        raise RuntimeError(f"retrain {interval}: no module could be trained ({', '.join(failed)})")

    with progress.step(f"record {interval}"):  # register, gate and write the predictions, Data Docs
        record = register_models(settings, interval, trained, data, plan, config, run_id, clock)
        in_memory = settings.retrain.predictions_gate == "in_memory"
        gated = gate_predictions(record.predictions, run_id, in_memory)
        written = record_retrain(settings, record, gated, versions, run_id)
        docs = build_predictions_docs(settings, gated)
    publish_retrain_summary(interval, run_id, record, failed, gated)
    promoted = [t.candidate.run.module for t in trained.values() if t.decision.promoted]
    log.info(
        "retrain %s: %d modules trained, promoted: %s; %d predictions written",
        interval, len(trained), ", ".join(promoted) or "none", written,
    )  # fmt: skip
    return {
        "run_id": run_id,
        "interval": interval,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "newest_labelled": str(data.newest_labelled),
        "train_window_bars": plan.train_window,
        "changes": record.changes.to_dict("records"),
        "promoted": promoted,
        "failed": failed,
        "predictions_written": written,
        "predictions_quarantined": len(gated.quarantined),
        "dq_docs": docs,
        "warehouse": str(settings.warehouse),
    }


run_form(retrain, choices={"interval": INTERVAL_CHOICES})


def _in_threads(names: list[str], train: Callable[[str], Any], threads: int) -> Iterator[tuple[str, Any]]:
    """(name, train(name)) in ``names`` order, ``threads`` modules at a time (``retrain.module_threads``).
    Each module is seeded and fitted on its own data, so the results do not depend on the count; each
    thread runs in a copy of the caller's context, so the task runs keep their flow (as Prefect's own
    thread pool does)."""
    if threads <= 1 or len(names) <= 1:
        for name in names:
            yield name, train(name)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(names)), thread_name_prefix="retrain") as pool:
        futures = [pool.submit(contextvars.copy_context().run, train, name) for name in names]
        for name, future in zip(names, futures, strict=True):
            yield name, future.result()


def _modules(settings: Settings, modules: list[str] | None) -> tuple[list[str], bool]:
    """(member modules, whether to build the ensemble). The ensemble combines the members of this run."""
    if modules is None:
        return list(settings.signal.members), settings.signal.ensemble
    from models.signals import MODULES

    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        raise ValueError(f"unknown modules {unknown}; known: {sorted(MODULES)}")
    return [m for m in modules if m != ENSEMBLE], ENSEMBLE in modules
