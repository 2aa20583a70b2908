"""Scale-out: the task-runner setting, symbol batches, and the features flow on threads and on a real
local Dask cluster giving the same rows (docs/scale-out.md)."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from qtrader.runners import DASK_MISSING, make_task_runner, symbol_batches
from qtrader.settings import ScaleOutSettings, Settings, TaskRunnerName, load_settings
from sources.base import BAR_COLUMNS
from tests.flows._market import synthetic_bars
from warehouse.db import query_df
from warehouse.ingest import IngestRun, write_ingest

N_SYMBOLS = 5  # batch size 2: batches of 2, 2 and 1 symbols
FEATURE_KEY = ["symbol", "interval", "ts"]


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch, tmp_path):
    empty = tmp_path / "empty.toml"  # an existing, empty file: no qtrader.toml of the working directory
    empty.write_text("")
    monkeypatch.setenv("QTRADER_CONFIG", str(empty))
    for name in ("TASK_RUNNER", "MAX_WORKERS", "DASK_ADDRESS", "DASK_N_WORKERS", "SYMBOL_BATCH_SIZE"):
        monkeypatch.delenv(f"QTRADER_SCALE_OUT__{name}", raising=False)


# ------------------------------------------------------------------------------------------- settings


def test_scale_out_defaults_to_threads_and_reads_the_environment(monkeypatch):
    default = Settings().scale_out
    assert default.task_runner == TaskRunnerName.threads
    assert default.dask_address is None and default.symbol_batch_size == 50

    monkeypatch.setenv("QTRADER_SCALE_OUT__TASK_RUNNER", "dask")
    monkeypatch.setenv("QTRADER_SCALE_OUT__DASK_ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("QTRADER_SCALE_OUT__SYMBOL_BATCH_SIZE", "7")
    monkeypatch.setenv("QTRADER_SCALE_OUT__MAX_WORKERS", "3")
    cfg = load_settings().scale_out
    assert cfg.task_runner == TaskRunnerName.dask
    assert cfg.dask_address == "tcp://10.0.0.5:8786"
    assert (cfg.symbol_batch_size, cfg.max_workers) == (7, 3)
    assert load_settings().masked()["scale_out"]["task_runner"] == "dask"  # what `qtrader config` prints


def test_scale_out_rejects_bad_values():
    with pytest.raises(ValidationError, match="task_runner"):
        ScaleOutSettings(task_runner="ray")
    with pytest.raises(ValidationError, match="symbol_batch_size"):
        ScaleOutSettings(symbol_batch_size=0)
    with pytest.raises(ValidationError, match="unknown_field|extra"):
        ScaleOutSettings(unknown_field=1)


def test_make_task_runner_builds_what_the_settings_say():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    threads = make_task_runner(Settings(scale_out={"max_workers": 3}))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3

    remote = make_task_runner(Settings(scale_out={"task_runner": "dask", "dask_address": "tcp://h:8786"}))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://h:8786"

    local = make_task_runner(Settings(scale_out={"task_runner": "dask", "dask_n_workers": 4}))
    assert local.address is None and local.cluster_class == "distributed.LocalCluster"
    assert local.cluster_kwargs == {"n_workers": 4, "threads_per_worker": 1, "processes": True}


def test_dask_without_prefect_dask_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import prefect_dask now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install qtrader\[dask\]") as err:
        make_task_runner(Settings(scale_out={"task_runner": "dask"}))
    assert str(err.value) == DASK_MISSING
    make_task_runner(Settings())  # threads need nothing extra


def test_symbol_batches_are_sorted_distinct_and_cover_every_symbol():
    assert symbol_batches(["E", "A", "D", "B", "C", "A"], 2) == [["A", "B"], ["C", "D"], ["E"]]
    assert symbol_batches(["B", "A"], 50) == [["A", "B"]]
    assert symbol_batches([], 3) == []
    with pytest.raises(ValueError, match="batch size"):
        symbol_batches(["A"], 0)


def test_dask_workers_are_pointed_at_the_flows_temporary_server(prefect_harness):
    """With no PREFECT_API_URL (the CLI's temporary server) each Dask worker would start its own server;
    the runner ships the flow client's address instead."""
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from qtrader.runners import _api_for_dask_workers

    @flow
    def probe() -> tuple[str | None, str | None]:
        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            before = PREFECT_API_URL.value()
            with _api_for_dask_workers():
                return before, PREFECT_API_URL.value()

    before, shipped = probe()
    assert not before and shipped == PREFECT_API_URL.value()


# ------------------------------------------------------------------------- the features flow, batched


@pytest.fixture(scope="module")
def bars_warehouse(tmp_path_factory) -> Path:
    """Gated bars only (no features yet): 5 symbols, 3 years daily and 6 sessions of 5-minute bars."""
    path = tmp_path_factory.mktemp("scale_out") / "bars.duckdb"
    now = pd.Timestamp("2026-10-31", tz="UTC")
    empty = pd.DataFrame().reindex(columns=["run_id"])
    for interval, years in (("1d", 3.0), ("5m", 0.025)):
        bars = synthetic_bars(N_SYMBOLS, years, interval=interval)[BAR_COLUMNS]
        run = IngestRun(
            run_id=f"ingest-{interval}",
            source="synthetic",
            interval=interval,
            symbols=sorted(bars["symbol"].unique()),
            started_at=now,
            finished_at=now,
            rows_in=len(bars),
            rows_written=len(bars),
        )
        rows = bars.assign(source="synthetic", run_id=run.run_id, ingested_at=now)
        write_ingest(path, run, rows, empty, empty)
    return path


def _run_features(src: Path, folder: Path, monkeypatch, **scale_out: object) -> tuple[dict, pd.DataFrame]:
    """The features flow on a copy of ``src`` with QTRADER_SCALE_OUT__* set; (result, stored rows)."""
    from flows.features import features

    folder.mkdir()
    db = folder / "warehouse.duckdb"
    shutil.copy(src, db)
    monkeypatch.setenv("QTRADER_DATA_DIR", str(folder / "data"))
    for key, value in scale_out.items():
        monkeypatch.setenv(f"QTRADER_SCALE_OUT__{key.upper()}", str(value))
    result = features(warehouse=str(db))
    rows = query_df(db, "SELECT * FROM features ORDER BY symbol, interval, ts")
    return result, rows.drop(columns=["run_id", "computed_at"])


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.fixture(scope="module")
def one_batch(bars_warehouse, tmp_path_factory, prefect_harness) -> tuple[dict, pd.DataFrame]:
    with pytest.MonkeyPatch.context() as mp:
        empty = tmp_path_factory.mktemp("config") / "empty.toml"
        empty.write_text("")
        mp.setenv("QTRADER_CONFIG", str(empty))
        return _run_features(
            bars_warehouse,
            tmp_path_factory.mktemp("one") / "run",
            mp,
            task_runner="threads",
            symbol_batch_size=100,
        )


def test_threads_in_batches_of_two_equal_one_batch(bars_warehouse, one_batch, tmp_path, monkeypatch):
    single, expected = one_batch
    batched, rows = _run_features(bars_warehouse, tmp_path / "run", monkeypatch, symbol_batch_size=2)
    assert [s["batches"] for s in single["intervals"]] == [1, 1]
    assert [s["batches"] for s in batched["intervals"]] == [3, 3]
    assert [s["written"] for s in batched["intervals"]] == [s["written"] for s in single["intervals"]]
    assert set(rows["interval"]) == {"1d", "5m"} and rows["d_rsi_14"][rows["interval"] == "5m"].notna().all()
    _same_rows(rows, expected)


@pytest.fixture
def _quiet_dask():
    """The scheduler and nannies live in this process and log every worker start and stop at INFO."""
    names = (
        "distributed",
        "distributed.scheduler",
        "distributed.nanny",
        "distributed.core",
        "distributed.http.proxy",
    )
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("_quiet_dask")
def test_a_local_dask_cluster_gives_the_same_rows_as_threads(
    bars_warehouse, one_batch, tmp_path, monkeypatch
):
    distributed = pytest.importorskip("distributed")
    # Two worker processes, as on two machines: the batches are pickled to them and back.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        result, rows = _run_features(
            bars_warehouse,
            tmp_path / "run",
            monkeypatch,
            task_runner="dask",
            dask_address=cluster.scheduler_address,
            symbol_batch_size=2,
        )
        with distributed.Client(cluster) as client:
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert result["task_runner"] == "dask"
    assert sum(executed.values()) == sum(s["batches"] for s in result["intervals"]) == 6
    _same_rows(rows, one_batch[1])
