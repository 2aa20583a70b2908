"""Run a task tracked (a Prefect task run: the flows) or as its plain function (the backtest's inner loop,
where thousands of bars would otherwise mean tens of thousands of task runs and artifacts)."""

from __future__ import annotations

from typing import Any


def step(task: Any, tracked: bool = True) -> Any:
    return task if tracked else task.fn
