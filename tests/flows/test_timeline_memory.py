"""The model timeline's memory stays bounded as retrains accumulate (issue 13: the full run's peak RSS
grew with every monthly retrain, 6 GiB at 61 retrains).

The timeline runs as the backtest flow calls it: as a task, so the retrain's own tasks are nested in it.
At the end of each retrain the live ``TrainingData`` objects are counted: the retrain's own (its
``data`` local), and none of the retrains before it.
"""

from __future__ import annotations

import gc
from pathlib import Path

from prefect import flow
from prefect.utilities.annotations import quote

from models.training import TrainingData
from qtrader import progress
from tests.flows.conftest import data_dir
from tests.golden.record import POLICY, SYMBOLS, build_market

BARS, EVERY = 12, 3
OVERRIDES = {"backtest": {"policy": POLICY, "retrain_every_bars_daily": EVERY}}


@flow(name="model-timeline-memory-test")
def _timeline(db: str, folder: str):
    from qtrader.settings import load_settings
    from tasks.backtest import load_history, model_timeline

    s = load_settings(warehouse=db, **OVERRIDES)
    history = load_history.fn(s, "1d", SYMBOLS, None)
    times = history.times[-BARS:]
    return model_timeline(s, "1d", quote(history), times, Path(folder), "bt-mem", OVERRIDES)


def test_a_retrain_lets_the_previous_retrains_data_go(tmp_path, prefect_harness):
    alive: list[int] = []

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage.startswith("record ") and done == total:  # the retrain's last step has run
            gc.collect()
            alive.append(sum(type(o) is TrainingData for o in gc.get_objects()))

    db = build_market(tmp_path)
    with data_dir(tmp_path / "data"), progress.listening(on_stage):
        timeline = _timeline(str(db), str(tmp_path / "scratch"))
    assert timeline.runs["retrain"] == BARS // EVERY
    assert alive == [1] * (BARS // EVERY), f"TrainingData alive at the end of each retrain: {alive}"
