"""Backtest flow: load history -> model timeline in simulated time -> replay each mode through the live
decision bar -> record backtest_runs / trades / equity -> report and table artifact (tasks/backtest.py)."""

from __future__ import annotations

import time

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from models import backtest as mb
from qtrader import allocator
from qtrader.calendar import utc
from qtrader.orchestration import INTERVAL_CHOICES, run_form, run_name
from qtrader.progress import report as progress
from qtrader.runners import task_runner
from qtrader.settings import load_settings
from tasks.backtest import (
    backtest_report,
    external_signals,
    load_history,
    model_timeline,
    publish_backtest,
    read_signals,
    record_backtest,
    replay_mode,
    replay_plans,
    replay_times,
    signals_overrides,
)
from tasks.failures import publish_failure
from tasks.ingest import new_run_id


@flow(
    name="backtest",
    description="Replay history through the live decision code: static vs adaptive and the ablations.",
    flow_run_name=run_name("backtest", "interval", "modes"),
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def backtest(
    interval: str | None = None,
    start: str | None = None,
    end: str | None = None,
    symbols: list[str] | None = None,
    modes: list[str] | None = None,
    sweep: dict[str, list] | None = None,
    signals: str | None = None,
    warehouse: str | None = None,
    overrides: dict | None = None,
    report: bool = True,
    report_symbol: str | None = None,
) -> dict:
    """Backtest ``modes`` (default ``backtest.modes``) on ``interval`` bars from ``start`` to ``end``.

    Args:
        interval: Bar interval; empty: backtest.interval (1d).
        start: First replayed bar; empty: after backtest.warmup_bars of history.
        end: Last replayed bar; empty: the newest stored.
        symbols: Symbols to replay; empty: every stored symbol.
        modes: Modes to compare; empty: backtest.modes, or adaptive alone with a sweep.
        sweep: A grid of settings the replay reads, e.g. {"exits.tp1_atr": [1.5, 2.0]}: each mode is also
            replayed at every point, as mode "adaptive[exits.tp1_atr=1.5]" (docs/backtest.md).
        signals: A CSV/Parquet file of your own entries (symbol, ts, side), replayed as mode "signals"
            through qtrader's exits and fills (alone unless modes are given).
        warehouse: DuckDB file; empty: the configured warehouse (data/warehouse.duckdb).
        overrides: Settings to override, e.g. {"backtest": {"retrain_every_bars_daily": 63}}.
        report: Write the HTML and PNG report.
        report_symbol: Symbol whose price shows the trade markers; empty: backtest.report_symbol.
    """
    log = get_run_logger()
    settings = load_settings(warehouse=warehouse, **(overrides or {}))
    cfg = settings.backtest
    allocator.tune(cfg.malloc_arenas, cfg.malloc_mmap_threshold_kib)  # before the run's threads start
    interval = interval or cfg.interval
    default = [mb.ADAPTIVE] if sweep else [] if signals else cfg.modes
    chosen = mb.check_modes(modes if modes is not None else default)
    replays = replay_plans(settings, chosen, sweep, overrides)
    run_id = new_run_id("backtest")
    started_at = pd.Timestamp.now(tz="UTC")

    clock = time.perf_counter()
    progress("backtest: load", 0, 1)
    history = load_history(settings, interval, symbols, utc(end) if end else None)
    entries = read_signals(signals, history) if signals else None
    times = replay_times(history.times, utc(start) if start else None, utc(end) if end else None,
                         cfg.warmup_bars)  # fmt: skip
    folder = settings.data_dir / "backtests" / run_id
    log.info("backtest %s: %d %s bars from %s to %s, modes %s", run_id, len(times), interval, times[0],
             times[-1], ", ".join([*replays, *(["signals"] if signals else [])]))  # fmt: skip

    stages = {"load": time.perf_counter() - clock}
    progress("backtest: load", 1, 1)
    timeline = model_timeline(settings, interval, quote(history), times, folder, run_id, overrides)
    stages.update(timeline.stages)
    plans = [(m, o, None) for m, o in replays.items()]
    if entries is not None:
        plans.append((mb.SIGNALS, signals_overrides(settings), external_signals(entries)))
    # Modes are independent replays of one timeline: they fan out through the configured task runner
    # (threads, or a Dask cluster); each writes only its own results file, the run record is written once.
    with task_runner(settings) as runner:
        futures = [
            runner.submit(
                replay_mode,
                parameters={
                    "settings": settings,
                    "timeline": quote(timeline),
                    "history": quote(history),
                    "mode": m,
                    "overrides": o,
                    "run_id": run_id,
                    "signal_source": src,
                },
            )  # fmt: skip
            for m, o, src in plans
        ]
        results = [f.result() for f in futures]
    stages.update({f"replay {r.mode}": r.seconds for r in results})
    progress("backtest: write", 0, 1)
    runs = record_backtest(
        settings, run_id, timeline, results, started_at, int(history.bars["symbol"].nunique()), stages
    )
    progress("backtest: write", 1, 1)

    paths = backtest_report(settings, run_id, folder, report_symbol or cfg.report_symbol) if report else None
    table = publish_backtest(runs, run_id, paths)
    return {
        "run_id": run_id,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "interval": interval,
        "start": str(times[0]),
        "end": str(times[-1]),
        "bars": len(times),
        "modes": [r.mode for r in results],
        "model_runs": timeline.runs,
        "timeline_seconds": round(timeline.seconds, 1),
        "mode_seconds": {r.mode: round(r.seconds, 1) for r in results},
        "table": table,
        "report": paths,
        "scratch": str(folder),
        "warehouse": str(settings.warehouse),
    }


run_form(backtest, choices={"interval": INTERVAL_CHOICES, "modes": mb.MODES})
