"""The task runner that per-symbol-batch work goes through: threads by default, Dask when configured.

A flow builds its runner from ``settings.scale_out`` when it runs (``task_runner(settings)``) and submits
its batch tasks to it, so a CLI call, ``qtrader serve`` and a deployment run on a worker all honour the
setting without a different flow object per call site. Only pure computation is submitted: DuckDB allows
one writing process per file, so the flow process reads the warehouse, hands each batch its data, and
writes the gathered results itself (docs/scale-out.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from qtrader.settings import Settings, TaskRunnerName

DASK_MISSING = (
    "task_runner = 'dask' needs prefect-dask, which is not installed: pip install qtrader[dask] "
    "(or set QTRADER_SCALE_OUT__TASK_RUNNER=threads)"
)


def symbol_batches(symbols: Sequence[str], size: int) -> list[list[str]]:
    """Distinct symbols, sorted, in consecutive batches of at most ``size``.

    Sorted so that the concatenated batch results come back in the order one batch would give.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    ordered = sorted(set(symbols))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def make_task_runner(settings: Settings) -> TaskRunner:
    """A new (not yet started) task runner as ``settings.scale_out`` describes it."""
    cfg = settings.scale_out
    if cfg.task_runner == TaskRunnerName.threads:
        return ThreadPoolTaskRunner(max_workers=cfg.max_workers or os.cpu_count() or 1)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(DASK_MISSING) from exc
    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    cluster_kwargs: dict[str, Any] = {"threads_per_worker": cfg.dask_threads_per_worker, "processes": True}
    if cfg.dask_n_workers:
        cluster_kwargs["n_workers"] = cfg.dask_n_workers
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


@contextmanager
def task_runner(settings: Settings) -> Iterator[TaskRunner]:
    """The configured task runner, started; for use inside a flow run. Stops it (and any temporary
    Dask cluster) on exit."""
    runner = make_task_runner(settings)
    with ExitStack() as stack:
        if settings.scale_out.task_runner == TaskRunnerName.dask:
            stack.enter_context(_api_for_dask_workers())
        stack.enter_context(runner)
        yield runner


@contextmanager
def _api_for_dask_workers() -> Iterator[None]:
    """Point Dask workers at the Prefect API this flow run uses.

    Task runs on a Dask worker report to the API named in the settings shipped with each task. With no
    PREFECT_API_URL (the CLI's temporary server) that is empty, and every worker process would start a
    temporary server of its own; the flow's client knows the server's address, so pass that instead.
    A remote cluster cannot reach a temporary server on 127.0.0.1: set PREFECT_API_URL to a real one.
    """
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = FlowRunContext.get()
    if PREFECT_API_URL.value() or ctx is None or ctx.client is None:
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: str(ctx.client.api_url).rstrip("/")}):
        yield
