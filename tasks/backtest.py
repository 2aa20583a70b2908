"""Prefect tasks of the backtest: replay history through the code that trades live.

Two passes over the replayed bars, both in scratch warehouses under ``data/backtests/<run_id>/``:

1. **Model timeline** (``models.duckdb``): the scratch warehouse starts with the warm-up history and
   grows bar by bar, as ingest and the features flow would have filled it (written in batches before
   each retrain, the only step of the timeline that reads those tables back: ``ScratchAppends``). At each
   bar the scheduled flows run on their cadence in simulated time (``BacktestSettings``): retrain
   (walk-forward, calibration, champion/challenger) in the scratch warehouse; benchmark from running sums
   of the newly labelled predictions (``TimelineBenchmarks``, rows written as the flow writes them);
   thresholds, health and alerts in memory (``models.health_timeline.HealthTimeline``: the metric
   history, learned thresholds and open alerts carried from bar to bar). Both are the same numbers as the
   flows' full recompute over the scratch warehouse (``tests/flows/test_model_timeline.py``), each with
   ``now`` = the bar, so they only see what existed then; the champions' predictions for the bar are made
   and gated as the decision flow does. What the decision step reads of all that (champions, health and
   alerts, module stats, the learned stop cap) is kept per bar.
2. **Modes** (``<mode>.duckdb``): a copy of the timeline's warehouse with an empty paper account; each
   bar runs ``tasks.decide.run_bar`` (the live decision bar: reconcile, stop moves, filter, size, exit
   plan, order gate, brackets to the local paper broker, which fills them against the bars) with the
   mode's settings and the model inputs in force at that bar.

Look-ahead: pass 1 cannot read the future (it is not in the warehouse yet), except the benchmark's labels,
computed once per retrain from the history's bars and each counted only from the bar its horizon ends
(the flow's rows at every pass are the test); pass 2's warehouse holds the
whole period, but every read of run_bar is keyed by the bar (features; predictions, put back as they
stood at the bar, since a later retrain rewrites earlier walk-forward predictions) or comes from the
pass-1 snapshot, and the broker only steps bars up to the decision bar. tests/flows/test_backtest_flow.py
changes the future and checks nothing before it moves.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from brokers.reconcile import bracket_state
from brokers.simulated import SimulatedBroker
from brokers.trader import BarMarket, GateVerdict, Recorder, Trader, replay
from expectations.frame_gate import check_rules, gate_rows
from models import backtest as mb
from models import decision as dm
from models import engine as me
from models.evaluation import BenchmarkAccumulator, attach_labels, side_exit_columns
from models.features import FEATURE_SET_VERSION
from models.fills import FillCosts
from models.health import OVERALL, overall_drivers, schedule_hours
from models.health_timeline import HealthSnapshot, HealthTimeline, MarketFrames, threshold_for
from models.labels import BarrierProfile
from models.signals.ensemble import combine, ensemble_p_up
from models.signals.volatility import vol_state
from models.trade_filter import gate_block_counts, health_gated
from models.training import FitCache, live_predictions, side_values
from qtrader import artifacts as qa
from qtrader.calendar import in_session, interval_minutes, is_daily
from qtrader.progress import report
from qtrader.settings import Settings, load_settings
from tasks.backtest_report import write_report
from tasks.benchmark import (
    benchmark_table_rows,
    benchmark_windows,
    exit_profile,
    load_labelled_predictions,
    score_modules,
)
from tasks.decide import (
    SignalSource,
    bar_signals,
    preconditions,
    predict_bar,
    read_health,
    view_of,
)
from tasks.health import health_pass, monitored_modules, thresholds_pass
from tasks.resources import warehouse
from tasks.retrain import Champion, load_champions, score_params
from warehouse import backtest as wb
from warehouse import decisions as wd
from warehouse.db import Warehouse, pinned
from warehouse.models import PREDICTION_COLUMNS, load_predictions, write_benchmarks

# ------------------------------------------------------------------------------------------------- plan


def periods_per_year(interval: str) -> float:
    """Bars in a trading year: 252 sessions, times the bars of a 6.5-hour session when intraday."""
    return 252.0 if is_daily(interval) else 252.0 * (390 / interval_minutes(interval))


def cadence(settings: Settings, interval: str) -> dict[str, int]:
    b, d = settings.backtest, is_daily(interval)
    return {
        "retrain": b.retrain_every_bars_daily if d else b.retrain_every_bars_intraday,
        "benchmark": b.benchmark_every_bars_daily if d else b.benchmark_every_bars_intraday,
        "thresholds": b.thresholds_every_bars_daily if d else b.thresholds_every_bars_intraday,
        "health": b.health_every_bars_daily if d else b.health_every_bars_intraday,
    }


def fit_reuse_retrains(settings: Settings, interval: str) -> int:
    """Retrains a split model is kept for reuse (``FitCache``): a split's training rows come back when the
    test blocks have moved by a whole block, ``test_window / retrain cadence`` retrains later."""
    r = settings.retrain
    test = r.test_window_bars_daily if is_daily(interval) else r.test_window_bars_intraday
    return max(1, math.ceil(test / cadence(settings, interval)["retrain"]))


def replay_times(
    times: pd.DatetimeIndex, start: pd.Timestamp | None, end: pd.Timestamp | None, warmup: int
) -> pd.DatetimeIndex:
    """The bars to replay: from ``start`` (default: after ``warmup`` bars) to ``end``, warm-up kept before."""
    if len(times) <= warmup + 1:
        raise ValueError(
            f"{len(times)} bar times stored: a backtest needs more than backtest.warmup_bars={warmup} of "
            "history before its first bar (ingest more history or lower warmup_bars)"
        )
    first = times[warmup] if start is None else max(start, times[warmup])
    chosen = times[(times >= first) & ((times <= end) if end is not None else True)]
    if len(chosen) == 0:
        raise ValueError(f"no bars to replay between {first} and {end}")
    return chosen


def scratch_overrides(
    settings: Settings, interval: str, folder: Path, user: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Settings of every scratch warehouse: the run's own overrides (``user``), its own data dir (model
    artifacts), one interval, the local paper broker with the backtest's costs, and the retrain's
    predictions gate in memory (the same verdicts as Great Expectations, without its cost per retrain;
    a scratch warehouse's Data Docs are not looked at) and its members trained in
    ``backtest.retrain_module_threads`` threads."""
    b = settings.backtest
    every = cadence(settings, interval)["retrain"]
    family = "daily" if is_daily(interval) else "intraday"
    return mb.deep_merge(user or {}, {
        # model staleness is measured against the retrain schedule the backtest keeps, not the live one
        "health": {f"retrain_schedule_hours_{family}": schedule_hours(every, interval)},
        "data_dir": folder,
        "intervals": [interval],
        "broker": "local",
        "paper": {
            "starting_cash": b.starting_cash, "slippage_bps": b.slippage_bps,
            "commission_per_share": b.commission_per_share, "commission_bps": b.commission_bps,
            "interval": interval,
        },
        "decision": {"interval": interval},
        "retrain": {"predictions_gate": "in_memory", "module_threads": b.retrain_module_threads},
    })  # fmt: skip


def static_exits(settings: Settings) -> dict[str, float]:
    b = settings.backtest
    return {"tp1_atr": b.static_tp1_atr, "tp2_atr": b.static_tp2_atr, "tp3_atr": b.static_tp3_atr,
            "stop_atr": b.static_stop_atr}  # fmt: skip


# ------------------------------------------------------------------------------------------------- load


@task(name="load-backtest-history", cache_policy=NO_CACHE)
def load_history(settings: Settings, interval: str, symbols: list[str] | None, end) -> wb.History:
    bars, feats = wb.load_history(
        warehouse(settings), interval, FEATURE_SET_VERSION, symbols=symbols, end=end,
    )  # fmt: skip
    if bars.empty:
        raise ValueError(f"no {interval} bars in {settings.warehouse}: run `qtrader ingest` first")
    if feats.empty:
        raise ValueError(f"no {interval} features in {settings.warehouse}: run the features flow first")
    if symbols:
        missing = sorted(set(symbols) - set(bars["symbol"]))
        if missing:
            raise ValueError(f"unknown symbols {missing}: no {interval} bars stored for them")
    get_run_logger().info(
        "history: %d bars and %d feature rows of %d symbols, %s to %s",
        len(bars), len(feats), bars["symbol"].nunique(), bars["ts"].min(), bars["ts"].max(),
    )  # fmt: skip
    return wb.History(bars, feats)


def read_signals(path: str | Path, history: wb.History) -> pd.DataFrame:
    """The user's entries (CSV or Parquet: symbol, ts, side), checked against the stored bars."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"signals file {path} does not exist")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"signals file {path} could not be read: {exc}") from exc
    return mb.validate_signals(frame, history.bars, source=str(path))


def external_signals(entries: pd.DataFrame) -> SignalSource:
    """A signal source that emits the user's entries at their bars (consensus EXTERNAL, confidence 1)."""
    by_ts = {ts: g for ts, g in entries.groupby("ts")}

    def source(ts: pd.Timestamp, features: pd.DataFrame) -> list[dm.Signal]:
        rows = by_ts.get(ts)
        if rows is None or features.empty:
            return []
        feats = features.set_index("symbol")
        states = dict(zip(features["symbol"], vol_state(features).to_numpy(), strict=True))
        out = []
        for sym, direction in zip(rows["symbol"], rows["direction"], strict=True):
            if sym not in feats.index:
                continue  # no gated features at this bar: nothing the exit planner could price
            f = feats.loc[sym]
            atr = float(f["atr_14"]) if pd.notna(f["atr_14"]) else None
            out.append(
                dm.Signal(str(sym), int(direction), mb.EXTERNAL, 1, 1, "external", 1.0, 1.0, 1.0,
                          float(f["bar_close"]), atr, str(states[sym]), {})
            )  # fmt: skip
        return out

    return source


# ---------------------------------------------------------------------------------------- model timeline


@dataclass
class Snapshot:
    """What the decision step reads of the model side at one bar."""

    champions: dict[str, Champion]
    health: me.HealthView
    model: me.ModelView | None  # None: no usable source champion (the bar is refused)
    # What the modes read of the bar's gated features: the close, the ATR and the volatility-state inputs
    # (prices for stop management; what a user's own entries are planned from).
    features: pd.DataFrame
    signals: dm.SignalBatch | list[dm.Signal] = field(default_factory=list)  # compact: many bars are kept
    # bar_prices(features), made by the first replay that reads the bar: every mode reads the same
    prices: dict[str, float] | None = None

    def bar_prices(self) -> dict[str, float]:
        if self.prices is None:
            self.prices = bar_prices(self.features)
        return self.prices


@dataclass
class Timeline:
    interval: str
    times: pd.DatetimeIndex
    scratch: Path
    folder: Path
    snapshots: dict[pd.Timestamp, Snapshot]
    overrides: dict[str, Any] = field(default_factory=dict)  # the scratch warehouses' settings
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # each bar's, as they stood at the bar
    runs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # recompute=True only: the health view each bar would read from the flows' full recompute over the
    # scratch warehouse (thresholds and health passes), to compare with the in-memory one
    recomputed: dict[pd.Timestamp, me.HealthView] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # seconds: retrains and the rest of the timeline
    # recompute=True only: per benchmark pass, (incremental rows, the benchmark flow's full recompute over
    # the scratch warehouse), each a (benchmarks, exit_stats) pair, to compare
    benchmark_checks: dict[pd.Timestamp, tuple] = field(default_factory=dict)
    # recompute=True only: each bar's signals made bar by bar (predict_bar, bar_signals), to compare with
    # the snapshots' (period_signals)
    signal_checks: dict[pd.Timestamp, dm.SignalBatch | list] = field(default_factory=dict)


def _due(i: int, every: int) -> bool:
    return every > 0 and i % every == 0


def predict_period(
    champions: dict[str, Champion],
    members: list[str],
    features: pd.DataFrame,
    interval: str,
    run_id: str,
    now: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every member champion's predictions for the bars until the next retrain, gated in one batch.

    The same champion and the same point-in-time features give the same numbers bar by bar or at once,
    and the predictions suite checks rows one by one; batching only saves a gate call per bar. Rows go
    into the scratch warehouse when their bar arrives.
    """
    frames = []
    feats = features.reset_index(drop=True)
    keys = feats[["symbol", "ts"]].assign(interval=interval)
    for m in members:
        art = champions[m].artifact
        frame = live_predictions(art, keys, feats)
        frame["out_of_sample"] = (feats["ts"] > pd.Timestamp(art.train_end)).to_numpy()
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=PREDICTION_COLUMNS), pd.DataFrame()
    gated = gate_rows(  # the suite's rules in memory, as the retrains' gate here (scratch_overrides)
        pd.concat(frames, ignore_index=True), suite="predictions", run_id=run_id, stage="predictions"
    )
    return gated.passed.assign(run_id=run_id, predicted_at=now), gated.dq_results


class TimelineBenchmarks:
    """The benchmark flow's rows at each pass of the timeline, from running sums (``BenchmarkAccumulator``)
    instead of a full recompute over every stored prediction: a pass costs what its newly known labels cost.

    ``reset`` after each retrain (the only step that rewrites stored predictions) labels every prediction
    the scratch warehouse holds or will hold until the next retrain, once, from the history's bars: a
    label depends on the bars up to its horizon only, so it is the one the flow computes at any bar where
    the horizon is over; each row is fed to the sums at the first bar that knows it (``label_known_at``,
    ``exit_known_at``: the bar ``horizon`` bars after the prediction's, on the symbol's own calendar).
    """

    def __init__(self, s: Settings, interval: str, history: wb.History, windows: list[str]) -> None:
        self.s, self.interval, self.history, self.windows = s, interval, history, windows
        self.acc: BenchmarkAccumulator | None = None
        self.bars = label_bars(history, interval)
        self.cache: dict = {}  # the bars' labels per horizon: made once per run, not per retrain

    def reset(self, predictions: pd.DataFrame) -> None:
        self.acc = BenchmarkAccumulator(self.windows, self.s.benchmark.ece_bins, score_params(self.s))
        rows = known_at(predictions, self.bars, exit_profile(self.s), self.cache)
        self.labels = rows.dropna(subset=["label_known_at"]).sort_values("label_known_at", kind="stable")
        exits = rows.dropna(subset=["exit_known_at"]).sort_values("exit_known_at", kind="stable")
        # the calls' side outcomes made once per retrain, fed by slices (they are row by row)
        self.exits = side_exit_columns(exits, keep=["exit_known_at"])
        self.fed = [0, 0]

    def rows(self, t: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(benchmarks, exit_stats) as the benchmark flow would score them at ``t``."""
        for k, (frame, col, add) in enumerate(
            (
                (self.labels, "label_known_at", self.acc.add_labels),
                (self.exits, "exit_known_at", self.acc.add_exit_rows),
            )
        ):
            upto = int(frame[col].searchsorted(t, side="right"))
            if upto > self.fed[k]:
                add(frame.iloc[self.fed[k] : upto])
                self.fed[k] = upto
        if self.acc.newest_labelled() is None:
            raise ValueError(
                "no prediction has a known label yet: benchmark again once their horizon is over"
            )
        return self.acc.rows()


def label_bars(history: wb.History, interval: str) -> pd.DataFrame:
    """The history's bars with the features' atr_14, by symbol and ts, as ``load_bars_with_atr`` reads
    them (a label at a bar depends on the bars up to its horizon only: labelling against the whole
    history gives the flow's labels wherever the horizon is over)."""
    bars = history.bars[history.bars["interval"] == interval]
    f = history.features
    if "feature_set_version" in f.columns:
        f = f[f["feature_set_version"] == FEATURE_SET_VERSION]
    keys = ["symbol", "interval", "ts"]
    return (
        bars.merge(f[keys + ["atr_14"]], on=keys, how="left")
        .sort_values(["symbol", "ts"], kind="stable")
        .reset_index(drop=True)
    )


def known_at(
    predictions: pd.DataFrame, bars: pd.DataFrame, profile: BarrierProfile, cache: dict | None = None
) -> pd.DataFrame:
    """``attach_labels`` of ``predictions`` over ``bars`` (``label_bars``), with the bar at which each
    row's label (``label_known_at``) and exit outcome (``exit_known_at``) become known (NaT: never in
    the history). ``cache``: ``attach_labels``' labels of these bars, kept between calls."""
    out = attach_labels(predictions, bars, profile, cache)
    pos = bars[["symbol", "ts"]].assign(_pos=range(len(bars)))
    last = pos.groupby("symbol")["_pos"].transform("max").to_numpy()
    pos["_last"] = last
    at = out[["symbol", "ts"]].merge(pos, on=["symbol", "ts"], how="left")
    ts = pd.DatetimeIndex(bars["ts"])

    def lead(horizon, known) -> pd.Series:
        p = at["_pos"].to_numpy(dtype="float64") + np.asarray(horizon, dtype="float64")
        ok = known & np.isfinite(p) & (p <= at["_last"].to_numpy(dtype="float64"))
        idx = np.where(ok, p, 0).astype(np.int64)
        return pd.Series(ts[idx], index=out.index).where(ok)

    out["label_known_at"] = lead(out["label_horizon"].to_numpy(), out["label_up"].notna().to_numpy())
    outcome = out["long_outcome"]
    known = (outcome.notna() & (outcome.astype(str) != "<NA>")).to_numpy()
    out["exit_known_at"] = lead(profile.horizon, known)
    return out


@task(name="model-timeline", cache_policy=NO_CACHE)
def model_timeline(
    settings: Settings,
    interval: str,
    history: wb.History,
    times: pd.DatetimeIndex,
    folder: Path,
    run_id: str,
    user_overrides: dict[str, Any] | None = None,
    *,
    recompute: bool = False,
) -> Timeline:
    """Pass 1 (module docstring): the scheduled flows' work in simulated time, bar by bar.

    Retrain runs as its flow (monthly: its summary artifact is worth having); benchmark runs its flow's
    body untracked (``tracked=False``), without a task run or artifact per bar; thresholds, health and
    alerts step in memory. ``recompute``: also run the thresholds and health flows' bodies over the
    scratch warehouse at their cadence and keep what the bar would read from them
    (``Timeline.recomputed``), the full recompute the in-memory timeline is tested against.
    """
    from flows.retrain import retrain_body

    log = get_run_logger()
    started = time.perf_counter()
    over = scratch_overrides(settings, interval, folder, user_overrides)
    path = folder / "models.duckdb"
    bars0, feats0 = history.upto(times[0] - pd.Timedelta(microseconds=1))
    wb.seed_scratch(path, bars0, feats0)
    s = load_settings(warehouse=path, **over)
    every = cadence(settings, interval)
    windows = benchmark_windows(s, interval, None)
    runs = dict.fromkeys(["retrain", "benchmark", "thresholds", "health", "predictions"], 0)
    source = s.decision.source_module
    snapshots: dict[pd.Timestamp, Snapshot] = {}
    champions: dict[str, Champion] = {}
    pending = pd.DataFrame(columns=PREDICTION_COLUMNS)
    seen: list[pd.DataFrame] = []
    retrain_at = [i for i in range(len(times)) if _due(i, every["retrain"])] or [0]
    health = HealthTimeline(s, monitored_modules(s), list(s.intervals))
    frames: MarketFrames | None = None
    view, stats, recomputed = me.HealthView(None, None, {}), None, {}
    retrain_seconds = 0.0
    fits = FitCache(keep=fit_reuse_retrains(s, interval))
    bench = TimelineBenchmarks(s, interval, history, windows)
    checks: dict[pd.Timestamp, tuple] = {}
    signal_checks: dict[pd.Timestamp, dm.SignalBatch | list] = {}
    scratch = ScratchAppends(path)
    with pinned(path), quiet_task_logs():
        for i, t in enumerate(times):
            scratch.bar(*history.at(t))
            if i in retrain_at or not champions:
                r0 = time.perf_counter()
                scratch.flush()
                retrain_body(interval, None, str(path), t.isoformat(), over, fits)
                commit_nested_tasks()
                champions, _ = load_champions.fn(s, interval)
                runs["retrain"] += 1
                members = [
                    m for m in s.signal.members if m in champions and champions[m].artifact is not None
                ]
                nxt = next((j for j in retrain_at if j > i), len(times))
                period = history.features[history.features["ts"].isin(times[i:nxt])]
                pending, dq = predict_period(champions, members, period, interval, run_id, t)
                pending_at = dict(tuple(pending.groupby("ts", sort=False)))  # a slice per bar, not a scan
                frames, stats = market_frames(path, history, pending), None
                readable = stored_and_pending(path, interval, pending)
                bench.reset(readable)
                # what predictions_at(t) reads after the bar's append: the stored rows of each bar of the
                # period and the period's own (nothing else writes predictions until the next retrain)
                period_rows = readable[readable["ts"].isin(times[i:nxt])]
                by_ts, empty = dict(tuple(period_rows.groupby("ts", sort=False))), readable.iloc[:0]
                signals_at = period_signals(s, champions, history, times[i:nxt], period_rows)
                retrain_seconds += time.perf_counter() - r0
            else:
                dq = None
            bar_predictions = pending_at.get(t, pending.iloc[:0])
            runs["predictions"] += scratch.predictions(bar_predictions, dq)
            if _due(i, every["benchmark"]):
                rows = bench.rows(t)
                written, exits = benchmark_table_rows(interval, *rows, f"{run_id}-b{i}", t)
                scratch.benchmarks(written, exits)
                if recompute:
                    scratch.flush()
                    checks[t] = (
                        rows,
                        score_modules.fn(s, load_labelled_predictions.fn(s, interval), windows)[:2],
                    )
                frames.benchmarks = newest_benchmarks(frames.benchmarks, written)
                if stats is not None:
                    stats = module_stats_after(s, interval, stats, written, exits)
                runs["benchmark"] += 1
            learn = _due(i, every["thresholds"])
            runs["thresholds"] += learn
            if _due(i, every["health"]):
                view = health_view_at(s, health, health.step(frames, t, learn=learn))
                runs["health"] += 1
            elif learn:
                health.learn(t)
            if recompute:
                scratch.flush()
                recomputed[t] = recompute_health(s, path, t, every, i, run_id)
            if stats is None and source in champions:  # after a retrain: read once, then kept per pass
                scratch.flush()  # the passes' rows so far
                stats = latest_module_stats(s, path, interval)
            asof = by_ts.get(t, empty)
            seen.append(asof)
            snapshots[t] = snapshot(s, interval, t, champions, history, asof, run_id, view,
                                    stop_cap(s, health), stats, signals_at.get(t))  # fmt: skip
            if recompute:
                signal_checks[t] = snapshot(s, interval, t, champions, history, asof, run_id, view,
                                            stop_cap(s, health), stats).signals  # fmt: skip
            report("backtest: models", i + 1, len(times))
        scratch.flush()  # the modes' warehouses are copies of it
    seconds = time.perf_counter() - started
    log.info(
        "model timeline over %d bars in %.1fs (retrains %.1fs, %d of %d split fits reused; %s); source module %s",
        len(times), seconds, retrain_seconds, fits.hits, fits.hits + fits.fits,
        ", ".join(f"{k} {v}" for k, v in runs.items()), source,
    )  # fmt: skip
    as_of = pd.concat([f for f in seen if len(f)], ignore_index=True) if any(len(f) for f in seen) else None
    stages = {"retrains": retrain_seconds, "model timeline": seconds - retrain_seconds}
    return Timeline(interval, times, path, folder, snapshots, over, as_of, runs, seconds, recomputed, stages,
                    checks, signal_checks)  # fmt: skip


class ScratchAppends:
    """The bars, features and predictions each bar adds to the scratch warehouse, and the benchmark
    passes' rows, written in batches: the retrain (and the recompute, in tests) is the only reader of
    those tables during the timeline, so ``flush`` runs before it, and once at the end, instead of three
    DuckDB transactions per bar and one per pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bars: list[pd.DataFrame] = []
        self.features: list[pd.DataFrame] = []
        self.preds: list[pd.DataFrame] = []
        self.dq: list[pd.DataFrame] = []
        self.bench: list[tuple[pd.DataFrame, pd.DataFrame]] = []

    def bar(self, bars: pd.DataFrame, features: pd.DataFrame) -> None:
        self.bars.append(bars)
        self.features.append(features)

    def predictions(self, predictions: pd.DataFrame, dq_results: pd.DataFrame | None) -> int:
        self.preds.append(predictions)
        if dq_results is not None and len(dq_results):
            self.dq.append(dq_results)
        return len(predictions)

    def benchmarks(self, benchmarks: pd.DataFrame, exits: pd.DataFrame) -> None:
        self.bench.append((benchmarks, exits))

    def flush(self) -> None:
        def joined(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
            frames = [f for f in frames if len(f)]
            return pd.concat(frames, ignore_index=True) if frames else None

        bars, feats = joined(self.bars), joined(self.features)
        if bars is not None or feats is not None:
            wb.append_bar(self.path, *(f if f is not None else pd.DataFrame() for f in (bars, feats)))
        preds, dq = joined(self.preds), joined(self.dq)
        if preds is not None or dq is not None:
            wb.append_predictions(self.path, preds if preds is not None else pd.DataFrame(), dq)
        if self.bench:
            b, e = (joined([pair[k] for pair in self.bench]) for k in (0, 1))
            write_benchmarks(Warehouse(self.path), *(f if f is not None else pd.DataFrame() for f in (b, e)))
        self.bars, self.features, self.preds, self.dq, self.bench = [], [], [], [], []


def stored_and_pending(path: Path, interval: str, pending: pd.DataFrame) -> pd.DataFrame:
    """Every prediction the benchmark flow will read until the next retrain: those stored, and the period's
    (a row the retrain stored for the same key wins, as ``append_predictions`` ignores it)."""
    stored = load_predictions(Warehouse(path), interval)
    new = pending.reindex(columns=stored.columns)
    if len(stored) and len(new):
        key = ["symbol", "interval", "ts", "module"]
        new = new[~pd.MultiIndex.from_frame(new[key]).isin(pd.MultiIndex.from_frame(stored[key]))]
    out = pd.concat([f for f in (stored, new) if len(f)], ignore_index=True)
    return out.assign(ts=pd.to_datetime(out["ts"], utc=True))


def market_frames(path: Path, history: wb.History, pending: pd.DataFrame) -> MarketFrames:
    """What the health flow reads of the scratch warehouse, in memory, after a retrain: the history's bars
    and features, the registry, and the predictions as stored plus the period's predictions, each
    readable from its bar on (``stored_at``; a row the retrain stored for the same key wins, as
    ``append_predictions`` ignores it). Rebuilt at each retrain: the only step that rewrites stored rows."""
    registry, stored, benchmarks = wb.model_state(path)
    confirmations = registry.loc[registry["confirmed_at"].notna(),
                                 ["module", "interval", "version", "confirmed_at", "run_id"]]  # fmt: skip
    cols = ["symbol", "interval", "ts", "module", "model_version", "p_up", "predict_latency_ms", "run_id",
            "predicted_at"]  # fmt: skip
    new = pending.reindex(columns=cols)
    if len(stored) and len(new):
        key = ["symbol", "interval", "ts", "module"]
        known = pd.MultiIndex.from_frame(stored[key])
        new = new[~pd.MultiIndex.from_frame(new[key]).isin(known)]
    predictions = pd.concat([f for f in (stored.reindex(columns=cols), new) if len(f)], ignore_index=True)
    if len(predictions):
        predictions["ts"] = pd.to_datetime(predictions["ts"], utc=True)
        predictions["predicted_at"] = pd.to_datetime(predictions["predicted_at"], utc=True)
    else:
        predictions = pd.DataFrame(columns=cols)
    predictions["stored_at"] = predictions["ts"]
    features = history.features.drop(
        columns=[c for c in ("feature_set_version", "run_id", "computed_at") if c in history.features.columns]
    )
    return MarketFrames(
        bars=history.bars[["symbol", "interval", "ts", "close"]], features=features, predictions=predictions,
        registry=registry.drop(columns=["confirmed_at"]), confirmations=confirmations, benchmarks=benchmarks,
    )  # fmt: skip


def newest_benchmarks(stored: pd.DataFrame, written: pd.DataFrame) -> pd.DataFrame:
    """The newest row of each (module, interval, window) of the benchmarks table (``stored``: as
    ``market_frames`` read it, or this function's previous result) after a pass ``written``: the rows
    the health flow picks from the whole table at any clock from the pass on (a pass writes one row per
    module and window, at the bar), so the frame it scans each bar stays one pass long."""
    cols = ["module", "interval", "window_name", "accuracy", "n", "coverage", "computed_at", "run_id"]
    parts = [f.reindex(columns=cols) for f in (stored, written) if len(f)]
    if not parts:
        return stored
    both = pd.concat(parts, ignore_index=True)
    both["computed_at"] = pd.to_datetime(both["computed_at"], utc=True)
    return (
        both.sort_values("computed_at", kind="stable")
        .groupby(["module", "interval", "window_name"], sort=True)
        .tail(1)
        .reset_index(drop=True)
    )


def health_view_at(s: Settings, timeline: HealthTimeline, run: HealthSnapshot) -> me.HealthView:
    """What the decision bar reads of a health run: ``read_health`` of the rows the flow would store
    (``health_rows``), made from the run's values without the rows' frame (the view reads the score,
    the baseline and the drivers, as JSON text read back, of each module and of the overall row)."""

    def baseline(module: str) -> float | None:
        t = run.thresholds.get((module, "health_score"))
        return None if t is None or t.is_default else float(t.value)

    def score(x) -> float | None:
        return None if x is None or x != x else float(x)  # the frame's NaN for None, read back as None

    def drivers(d) -> Any:
        return None if d is None else json.loads(d if isinstance(d, str) else json.dumps(d, default=str))

    weights = s.health.module_weights
    rows = [(m, score(a.health.score), baseline(m), a.health.drivers()) for m, a in run.assessments.items()]
    rows.append((OVERALL, score(run.overall), baseline(OVERALL),
                 overall_drivers({m: a.health for m, a in run.assessments.items()}, weights)))  # fmt: skip
    # read_health's order: overall first, then by score, no score first, then by module
    rows.sort(key=lambda r: (r[0] != OVERALL, r[1] is not None, 0.0 if r[1] is None else r[1], r[0]))
    mods = {str(m): v for m, v, _, _ in rows}
    overall = mods.pop(OVERALL, None)
    return me.HealthView(
        pd.Timestamp(run.now).tz_convert("UTC"), overall, mods, tuple(timeline.active_alerts()),
        {str(m): b for m, _, b, _ in rows}, {str(m): drivers(d) for m, _, _, d in rows},
    )  # fmt: skip


def stop_cap(s: Settings, timeline: HealthTimeline) -> float:
    """The learned ``stop_distance_atr`` of the exit planner's module (its default until learned)."""
    d = s.decision
    return threshold_for(
        timeline.thresholds, timeline.specs, d.stop_threshold_module, "stop_distance_atr"
    ).value


def stats_window(s: Settings, interval: str) -> str:
    d = s.decision
    return d.benchmark_window_daily if is_daily(interval) else d.benchmark_window_intraday


def latest_module_stats(s: Settings, path: Path, interval: str) -> dict[str, float | None]:
    return wd.latest_module_stats(
        Warehouse(path), s.decision.source_module, interval, stats_window(s, interval)
    )


def module_stats_after(
    s: Settings, interval: str, stats: dict[str, float | None], benchmarks: pd.DataFrame, exits: pd.DataFrame
) -> dict[str, float | None]:
    """``latest_module_stats`` after a benchmark pass wrote ``benchmarks`` and ``exits`` at the bar, from
    the stats before it: the pass's rows are the newest (exit rows are all 'labels' rows here), and a
    module or window the pass has no row for keeps its previous values."""
    source, window = s.decision.source_module, stats_window(s, interval)
    out = dict(stats)
    for frame, pairs in ((benchmarks, {"accuracy": "accuracy", "performance_score": "performance_score"}),
                         (exits, {"tp1": "tp1_rate", "tp2": "tp2_rate", "tp3": "tp3_rate"})):  # fmt: skip
        row = frame[(frame["module"] == source) & (frame["window_name"] == window)]
        if len(row):
            for k, c in pairs.items():
                v = row[c].iloc[-1]
                out[k] = None if v is None or pd.isna(v) else float(v)
    return out


def recompute_health(
    s: Settings, path: Path, t: pd.Timestamp, every: dict, i: int, run_id: str
) -> me.HealthView:
    """The thresholds and health flows' bodies over the scratch warehouse at ``t`` (on their cadence), and
    the health the bar reads back from it."""
    if _due(i, every["thresholds"]):
        thresholds_pass(s, t, f"{run_id}-t{i}", tracked=False)
    if _due(i, every["health"]):
        health_pass(s, t, f"{run_id}-h{i}", tracked=False)
    return read_health(Warehouse(path))


def snapshot(
    s: Settings,
    interval: str,
    t: pd.Timestamp,
    champions: dict[str, Champion],
    history: wb.History,
    asof: pd.DataFrame,
    run_id: str,
    health: me.HealthView,
    cap: float,
    stats: dict[str, float | None] | None,
    signals: dm.SignalBatch | None = None,
) -> Snapshot:
    """The model side at bar ``t`` and the bar's signals, as the live decision bar would compute them
    (``signals``: made already for the bar by ``period_signals``)."""
    source = s.decision.source_module
    usable = source in champions and champions[source].artifact is not None
    model = view_of(source, champions[source], stats, cap) if usable else None
    features = bar_features(history, t)
    slim = features[[c for c in SNAPSHOT_FEATURES if c in features.columns]]
    if not usable or features.empty:
        return Snapshot(dict(champions), health, model, slim)
    if signals is not None:
        return Snapshot(dict(champions), health, model, slim, signals)
    members = [m for m in s.signal.members if m in champions and champions[m].artifact is not None]
    preds = predict_bar(champions, members, {"features": features, "predictions": asof}, interval, t, run_id,
                        lambda: t)  # fmt: skip
    signals = dm.SignalBatch.of(bar_signals(s, champions[source], preds, features))
    return Snapshot(dict(champions), health, model, slim, signals)


SNAPSHOT_FEATURES = ["symbol", "bar_close", "atr_14", "atr_pct_rank_252", "rv_ratio_5_20", "rv_ratio_20_60"]


def period_signals(
    s: Settings,
    champions: dict[str, Champion],
    history: wb.History,
    times: pd.DatetimeIndex,
    rows: pd.DataFrame,
) -> dict[pd.Timestamp, dm.SignalBatch]:
    """The signals ``snapshot`` makes at each of ``times`` (a retrain period), made for the whole period
    at once: ``rows`` are the predictions readable at those bars (``by_ts``'s rows). A bar where a member
    has no stored row for one of its symbols (``predict_bar`` would predict and gate it), or more than
    one, is left out: ``snapshot`` makes its signals bar by bar. Every step of ``bar_signals`` is row by
    row (``combine``, the calibrator, ``vol_state``), so one call over the period's rows gives each bar's
    numbers exactly (tests/flows/test_model_timeline.py compares them)."""
    source = s.decision.source_module
    if source not in champions or champions[source].artifact is None:
        return {}
    members = [m for m in s.signal.members if m in champions and champions[m].artifact is not None]
    frames = [f for f in (bar_features(history, t) for t in times) if len(f)]
    if not frames or not members:
        return {}
    feats = pd.concat(frames, ignore_index=True)
    keys = pd.MultiIndex.from_arrays([feats["ts"], feats["symbol"].astype(str)])
    n, k = len(feats), len(members)
    values = np.full((n, k), np.nan)
    detail: list[list[dict | None]] = [[None] * k for _ in range(n)]
    bad = np.zeros(n, dtype=bool)  # a missing or repeated member row: its bar goes through predict_bar
    by_module = dict(tuple(rows.groupby("module", sort=False))) if len(rows) else {}
    for j, m in enumerate(members):
        g = by_module.get(m)
        if g is None:
            bad[:] = True
            break
        pos = keys.get_indexer(pd.MultiIndex.from_arrays([g["ts"], g["symbol"].astype(str)]))
        found = pos >= 0
        pos, g = pos[found], g[found.tolist()] if not found.all() else g
        counts = np.bincount(pos, minlength=n)
        bad |= counts != 1
        pu = g["p_up"].to_numpy()
        values[pos, j] = pu.astype(float)
        for r, u, c, v in zip(pos.tolist(), pu, g["p_up_calibrated"].to_numpy(), g["model_version"].to_numpy(),
                              strict=True):  # fmt: skip
            detail[r][j] = {
                "p_up": round(float(u), 4),
                "p_up_calibrated": round(float(c), 4),
                "version": int(v),
            }
    ts = feats["ts"].to_numpy()
    bad_ts = set(pd.DatetimeIndex(feats["ts"][bad]).tolist()) if bad.any() else set()
    ens, sig = champions[source].artifact, s.signal
    combined = combine(
        pd.DataFrame(values, columns=members), getattr(ens, "weights", None), sig.ensemble_min_edge,
        sig.ensemble_strong, sig.ensemble_weak, sig.ensemble_min_voters,
    )  # fmt: skip
    p_up = ensemble_p_up(combined).to_numpy(dtype="float64")
    _, seed, fitted = side_values(p_up, ens.calibrator, ens.seed_accuracy)
    direction = combined["direction"].to_numpy()
    no_call = direction == 0
    finite = lambda x: np.where(np.isfinite(x), x, np.nan)  # noqa: E731 - Signal's _num, then NaN
    seed, fitted = finite(np.where(no_call, np.nan, seed)), finite(np.where(no_call, np.nan, fitted))
    raw = np.where(no_call, np.nan, combined["confidence"].to_numpy(dtype="float64"))
    atr = finite(feats["atr_14"].to_numpy(dtype="float64", na_value=np.nan))
    close = feats["bar_close"].to_numpy(dtype="float64")
    states = [str(x) for x in vol_state(feats).to_numpy()]
    symbols = feats["symbol"].astype(str).tolist()
    consensus = combined["consensus"].astype(str).tolist()
    contributors = combined["contributors"].astype(str).tolist()
    voters = combined["voters"].to_numpy().astype(np.int64)
    agree = combined["agree"].to_numpy().astype(np.int64)
    direction = direction.astype(int).astype(np.int64)
    jsons = [dm.p_up_json(dict(zip(members, d, strict=True))) for d in detail]
    out: dict[pd.Timestamp, dm.SignalBatch] = {}
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
        t = pd.Timestamp(feats["ts"].iat[a])
        if t in bad_ts:
            continue
        out[t] = dm.SignalBatch(
            symbols[a:b], direction[a:b], consensus[a:b], voters[a:b], agree[a:b], contributors[a:b],
            raw[a:b], seed[a:b], fitted[a:b], close[a:b], atr[a:b], states[a:b], jsons[a:b],
        )  # fmt: skip
    return out


def bar_features(history: wb.History, t: pd.Timestamp) -> pd.DataFrame:
    """The bar's features with its close, as ``warehouse.decisions.bar_frame`` reads them live: one merge
    over the whole history, made once and kept on it, then a slice per bar."""
    frames = getattr(history, "_bar_features", None)
    if frames is None:
        feats, bars = history.features, history.bars
        drop = [c for c in ("feature_set_version", "run_id", "computed_at") if c in feats.columns]
        merged = feats.drop(columns=drop).merge(
            bars[["symbol", "interval", "ts", "close"]].rename(columns={"close": "bar_close"}),
            on=["symbol", "interval", "ts"],
        )
        frames = {
            ts: g.sort_values("symbol", kind="stable").reset_index(drop=True)
            for ts, g in merged.groupby("ts", sort=False)
        }
        frames[None] = merged.iloc[:0].reset_index(drop=True)
        history._bar_features = frames
    if t in frames:
        return frames[t]
    feats = history.at(t)[1]
    return feats if feats.empty else frames[None]


@contextmanager
def quiet_task_logs():
    """The inner loop's tasks log per bar at INFO; over thousands of bars only warnings are worth sending."""
    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def commit_nested_tasks() -> None:
    """Commit the transactions of the tasks run so far inside the current task, and let them go.

    Prefect keeps a nested task run's transaction (its staged result and, through its rollback hook, the
    task run engine with its parameters) as a child of the calling task's until that one commits. The
    model timeline is one task: every retrain's training data, candidates and predictions stayed alive to
    its end (about 45 MiB a retrain at 50 symbols; 6 GiB peak RSS at 61 retrains). They are committed as
    the parent's commit would (the tasks are NO_CACHE: nothing is written), only earlier."""
    txn = get_transaction()
    if txn is None:
        return
    for child in txn.children:
        child.commit()
    txn.children.clear()


# ------------------------------------------------------------------------------------------------ modes


@dataclass
class ModeResult:
    mode: str
    overrides: dict[str, Any]
    scratch: Path
    trades: pd.DataFrame
    equity: pd.DataFrame
    notional: float
    commission: float
    open_trades: int
    refused: int
    seconds: float
    reasons: dict[str, int]
    gate_blocks: pd.DataFrame  # models.trade_filter.gate_block_counts of the mode's decisions
    write_seconds: float = 0.0  # of ``seconds``: writing the mode's results file


@task(name="replay-mode", cache_policy=NO_CACHE)
def replay_mode(
    settings: Settings,
    timeline: Timeline,
    history: wb.History,
    mode: str,
    overrides: dict[str, Any],
    run_id: str,
    signal_source: SignalSource | None = None,
) -> ModeResult:
    """Pass 2 (module docstring): the live decision engine and trader over the timeline, with this mode's
    settings, against a simulated broker in memory; the records go to the mode's results file at the end."""
    log = get_run_logger()
    started = time.perf_counter()
    interval = timeline.interval
    s = load_settings(
        warehouse=timeline.folder / f"{mode}.duckdb", **mb.deep_merge(timeline.overrides, overrides)
    )
    now = [timeline.times[0]]
    p = s.paper
    broker = SimulatedBroker.new(
        p.starting_cash, FillCosts(p.slippage_bps, p.commission_per_share, p.commission_bps), interval=interval,
        tick=s.orders.tick, clock=lambda: now[0].to_pydatetime(), feed=wb.HistoryFeed(history),
    )  # fmt: skip
    trader = Trader(broker, me.EngineConfig.from_settings(s, broker.name), order_gate)
    spill = DecisionSpill(timeline.folder / f"{mode}.duckdb")
    records = Recorder(broker.name, spill)
    reasons: dict[str, int] = {}
    warned: list[str] = []
    opens = market_opens(timeline.times, interval, s.exchange)

    def market_at(t: pd.Timestamp) -> BarMarket | list[str]:
        now[0] = t
        snap = timeline.snapshots[t]
        problems = preconditions(s, None, interval, [t], snap.champions, snap.health, t, check_data=False)
        if snap.features.empty:
            problems.append(f"bar {t:%Y-%m-%d %H:%M} {interval}: no gated feature rows")
        if problems:
            if not warned:
                warned.append(t)
                log.warning("%s: bar %s refused: %s", mode, t, "; ".join(problems))
            return problems
        feats = snap.features
        return BarMarket(
            ts=t, interval=interval, market_open=opens[t],
            signals=signal_source(t, feats) if signal_source is not None else snap.signals,
            prices=snap.bar_prices(),
            health=snap.health, model=snap.model,
        )  # fmt: skip

    def on_bar(i: int, t: pd.Timestamp, outcome) -> None:
        if outcome is not None:
            for k, v in outcome.result.reasons().items():
                reasons[k] = reasons.get(k, 0) + v
        report(f"backtest: {mode}", i + 1, len(timeline.times))

    refused = replay(trader, timeline.times, market_at, records, run_id, on_bar=on_bar)
    frames = records.frames()
    w0 = time.perf_counter()
    path = write_records(records, frames, spill.path, broker, fresh=False)
    write_seconds = time.perf_counter() - w0 + spill.seconds
    blocks = spill.gate_blocks(frames["decisions"])
    res = wb.mode_results(path, broker.name)
    seconds = time.perf_counter() - started
    log.info(
        "%s: %d closed trades, %d open, %d refused bars in %.1fs; candidates: %s", mode, len(res["trades"]),
        res["open_trades"], refused, seconds, ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none",
    )  # fmt: skip
    return ModeResult(mode, overrides, path, res["trades"], res["equity"], res["notional"], res["commission"],
                      res["open_trades"], refused, seconds, reasons, blocks, write_seconds)  # fmt: skip


def market_opens(times: pd.DatetimeIndex, interval: str, exchange: str) -> dict[pd.Timestamp, bool]:
    """``tasks.decide.market_open`` of every bar of ``times`` in one calendar lookup (~1 ms a bar alone)."""
    return dict(zip(times, in_session(times, interval, exchange).tolist(), strict=True))


def bar_prices(features: pd.DataFrame) -> dict[str, float]:
    """Each symbol's close at the bar, as the stop manager reads it (str -> float)."""
    symbols = features["symbol"].astype(str).tolist()
    return dict(zip(symbols, features["bar_close"].astype(float).tolist(), strict=True))


def order_gate(columns) -> GateVerdict:
    """The orders suite's rules checked on the batch's columns bar by bar (expectations.frame_gate.check_rules:
    the suite's own rules without Great Expectations' cost per call)."""
    failures = check_rules(columns, "orders", derive=dm.order_gate_derived)
    return GateVerdict(not any(failures.values()), failures)


def write_records(
    records: Recorder, frames: dict[str, pd.DataFrame], path: Path, broker, *, fresh: bool = True
) -> Path:
    """A mode's results file (warehouse.backtest.write_mode_records) from what its replay recorded
    (``frames``: ``records.frames()``; ``fresh=False`` after a DecisionSpill into the same file)."""
    return wb.write_mode_records(
        path, **frames, order_records=order_record_rows(records.sent, broker, records.broker), fresh=fresh
    )


class DecisionSpill:
    """A Recorder's ``spill``: each chunk of a mode's decisions goes to its results file as the replay
    makes it, and only the rows the gate-block counts read (a health rule failed) stay in memory."""

    def __init__(self, path: Path) -> None:
        self.path = wb.new_mode_records(path)
        self.gated: list[pd.DataFrame] = []
        self.rows = 0
        self.seconds = 0.0  # spent writing

    def __call__(self, decisions: pd.DataFrame) -> None:
        t0 = time.perf_counter()
        self.rows += wb.append_mode_decisions(self.path, decisions)
        self.gated.append(health_gated(decisions))
        self.seconds += time.perf_counter() - t0

    def gate_blocks(self, rest: pd.DataFrame) -> pd.DataFrame:
        """gate_block_counts over every decision of the mode: the spilled chunks' gated rows and ``rest``."""
        parts = [f for f in (*self.gated, rest) if len(f)]
        return gate_block_counts(pd.concat(parts, ignore_index=True) if parts else rest)


def order_record_rows(sent, broker, name: str) -> pd.DataFrame:
    """``order_records`` of the brackets a mode sent, with their state at the end of the replay."""
    rows = []
    for s, t in sent:
        o = broker.get_order_by_client_id(s.planned.bracket.client_order_id)
        b = s.planned.bracket
        rows.append({"client_order_id": b.client_order_id, "broker": name, "broker_order_id": o.id,
                     "strategy": None, "symbol": b.symbol, "side": b.side.value, "qty": b.qty,
                     "leg": f"tp{s.planned.leg}", "bar_ts": t, "take_profit": b.take_profit, "stop_price": b.stop,
                     "status": bracket_state(o), "origin": "submitted", "note": None, "recorded_at": t,
                     "updated_at": t})  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ record


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def result_frames(
    settings: Settings, run_id: str, timeline: Timeline, results: list[ModeResult], started_at, finished_at
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """backtest_runs, backtest_trades and backtest_equity rows of every mode."""
    start_eq = float(settings.backtest.starting_cash)
    ppy = periods_per_year(timeline.interval)
    runs, trades, equity = [], [], []
    for r in results:
        card = mb.scorecard(r.trades, r.equity, starting_equity=start_eq, periods_per_year=ppy,
                            notional=r.notional)  # fmt: skip
        runs.append(
            {
                "run_id": run_id, "mode": r.mode, "interval": timeline.interval,
                "start_ts": timeline.times[0], "end_ts": timeline.times[-1], "bars": len(timeline.times),
                "symbols": None, "overrides": json.dumps(r.overrides, default=str, sort_keys=True),
                "scratch": str(r.scratch), "starting_equity": start_eq, "open_trades": r.open_trades,
                "commission": r.commission, "refused_bars": r.refused, "started_at": started_at,
                "finished_at": finished_at, **{k: _clean(v) for k, v in card.items()},
                "health_blocked": r.gate_blocks.attrs.get("candidates", 0),
                "health_blocked_only": int(r.gate_blocks["only"].sum()),
                "gate_blocks": r.gate_blocks.to_json(orient="records"),
            }
        )  # fmt: skip
        t = r.trades
        if len(t):
            tt = t.reindex(columns=["decision_id", "symbol", "side", "decided_at", "entry_ts", "exit_ts", "qty",
                                    "entry_price", "exit_price", "pnl", "r_multiple", "exit_reason", "legs",
                                    "consensus", "confidence_calibrated", "contributors"]).copy()  # fmt: skip
            for c in ("entry_price", "exit_price", "pnl", "r_multiple", "confidence_calibrated"):
                tt[c] = pd.to_numeric(tt[c], errors="coerce").astype(float)
            tt["pnl_pct"] = tt["pnl"] / (tt["qty"].astype(float) * tt["entry_price"])
            trades.append(tt.assign(run_id=run_id, mode=r.mode))
        e = r.equity
        if len(e):
            equity.append(
                e.assign(run_id=run_id, mode=r.mode, drawdown=mb.drawdown(e["equity"], start_eq).to_numpy())
            )
    runs_df = pd.DataFrame(runs)
    return (
        runs_df,
        pd.concat(trades, ignore_index=True) if trades else pd.DataFrame(columns=["run_id"]),
        pd.concat(equity, ignore_index=True) if equity else pd.DataFrame(columns=["run_id"]),
    )


@task(name="record-backtest", cache_policy=NO_CACHE)
def record_backtest(
    settings: Settings,
    run_id: str,
    timeline: Timeline,
    results: list[ModeResult],
    started_at,
    n_symbols: int,
    stages: dict[str, float] | None = None,
) -> pd.DataFrame:
    """The run record: backtest_runs / trades / equity rows, and ``stages`` (seconds per stage, in order)
    with this write's own time added as ``write`` and the wall time so far as ``total``."""
    w0 = time.perf_counter()
    finished_at = pd.Timestamp.now(tz="UTC")
    runs, trades, equity = result_frames(settings, run_id, timeline, results, started_at, finished_at)
    runs["symbols"] = n_symbols
    stages = dict(stages or {})
    stages["write"] = time.perf_counter() - w0  # the frames; the insert below is not in it
    stages["total"] = (finished_at - pd.Timestamp(started_at)).total_seconds() + stages["write"]
    rows = pd.DataFrame(
        [
            {"run_id": run_id, "stage": k, "seconds": float(v), "position": i}
            for i, (k, v) in enumerate(stages.items())
        ]
    )
    counts = wb.write_results(warehouse(settings), runs, trades, equity, rows)
    get_run_logger().info(
        "recorded backtest %s in %s: %s; seconds per stage: %s", run_id, settings.warehouse, counts,
        ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
    )  # fmt: skip
    return runs


# ------------------------------------------------------------------------------------------------ table


def _fmt(value: Any, kind: str, signed: bool = False) -> str:
    """One table cell: fixed precision, thousands separators, never "-0.0%" (qtrader.artifacts)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return {
        "pct": lambda: qa.percent(value, 1, signed=signed),
        "pct2": lambda: qa.percent(value, 2, signed=signed),
        "num": lambda: qa.number(value, 2, signed=signed),
        "num1": lambda: qa.number(value, 1, signed=signed),
        "int": lambda: ("+" if signed and round(value) > 0 else "") + qa.count(value),
    }[kind]()


def table_rows(
    runs: pd.DataFrame, *, with_diff: bool = True, diff_only: bool = False
) -> list[dict[str, str]]:
    """The seed-style table: each mode's metrics, with (or only) the difference from the static mode."""
    diff = mb.versus(runs)
    out = []
    for _, r in runs.iterrows():
        if diff_only and (r["mode"] == mb.STATIC or r["mode"] not in diff.index):
            continue
        row = {"mode": str(r["mode"])}
        for col, title, kind in mb.TABLE_COLUMNS:
            v = r[col]
            v = None if v is None or pd.isna(v) else float(v)
            d = diff.loc[r["mode"], col] if r["mode"] in diff.index and col in diff.columns else None
            d_txt = _fmt(float(d), kind, signed=True) if d is not None and pd.notna(d) else "n/a"
            if diff_only:
                row[title] = d_txt
            elif with_diff and r["mode"] != mb.STATIC and d is not None and pd.notna(d):
                row[title] = f"{_fmt(v, kind)} ({d_txt})"
            else:
                row[title] = _fmt(v, kind)
        out.append(row)
    return out


def gate_lines(runs: pd.DataFrame) -> list[str]:
    """Per mode, what the health gate blocked: per rule the candidates it failed (alone), and the component
    that drove the blocked scores down most often."""
    out = [
        "Gate blocks: candidates the health gate failed (those it alone kept out), per rule and top driver:"
    ]
    for r in runs.to_dict("records"):
        raw = r.get("gate_blocks")
        if not isinstance(raw, str):
            continue
        parts = [f"{b['rule']} {b['any']} ({b['only']})" + (f", mostly {b['top_driver']}" if b["top_driver"] else "")
                 for b in json.loads(raw) if b["any"]]  # fmt: skip
        out.append(f"- {r['mode']}: " + ("; ".join(parts) if parts else "none"))
    return out if len(out) > 1 else []


def table_markdown(runs: pd.DataFrame, run_id: str, report_paths: tuple[str, str] | None) -> str:
    """The backtest artifact: a human title, each mode's metrics, their difference from static in a second
    table (two narrow tables instead of one with "value (difference)" cells), absolute report links."""
    head = ["Mode", *[t for _, t, _ in mb.TABLE_COLUMNS]]
    numeric = head[1:]

    def cells(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{"Mode": r["mode"], **{h: r[h] for h in numeric}} for r in rows]

    r0 = runs.iloc[0]
    daily = str(r0["interval"]).endswith("d")
    start, end = qa.short_ts(r0["start_ts"], date_only=daily), qa.short_ts(r0["end_ts"], date_only=daily)
    md = [
        f"# Backtest: {r0['interval']} bars {start} to {end}",
        "",
        f"run `{run_id}`; {qa.count(r0['bars'])} bars, {qa.count(r0['symbols'])} symbols; costs included.",
        "",
        *qa.md_table(cells(table_rows(runs, with_diff=False)), head, numeric),
    ]
    diff = table_rows(runs, diff_only=True)
    if diff:
        md += ["", f"## Difference from {mb.STATIC}", "", *qa.md_table(cells(diff), head, numeric)]
    md += ["", *gate_lines(runs)]
    if report_paths:
        md += ["", f"Report: {qa.file_link(report_paths[0])} and {qa.file_link(report_paths[1])}"]
    return "\n".join(md)


@task(name="publish-backtest", cache_policy=NO_CACHE)
def publish_backtest(runs: pd.DataFrame, run_id: str, report_paths: tuple[str, str] | None) -> str:
    md = table_markdown(runs, run_id, report_paths)
    create_markdown_artifact(key="backtest", markdown=md, description=f"Backtest {run_id}")
    return md


@task(name="backtest-report", cache_policy=NO_CACHE)
def backtest_report(settings: Settings, run_id: str, folder: Path, symbol: str | None) -> tuple[str, str]:
    html, png = write_report(settings.warehouse, run_id, folder, symbol=symbol)  # fmt: skip
    get_run_logger().info("backtest report: %s and %s", html, png)
    return str(html), str(png)


def mode_settings(settings: Settings, modes: list[str]) -> dict[str, dict[str, Any]]:
    return {m: mb.mode_overrides(m, static_exits(settings), settings.backtest.policy) for m in modes}


def replay_plans(
    settings: Settings,
    modes: list[str],
    sweep: dict[str, list[Any]] | None,
    overrides: dict[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """Every replay of a run and its settings overrides: each mode, then each mode at each point of the
    ``sweep`` grid (models.backtest.sweep_variants). The grid's values are checked here, before the model
    timeline starts, against the settings the run loads (``overrides`` included)."""
    plans = mode_settings(settings, modes)
    if not sweep:
        return plans
    grid = mb.check_sweep(sweep, settings.backtest.max_sweep_variants)
    mb.check_sweep_values(
        grid, lambda o: load_settings(warehouse=settings.warehouse, **mb.deep_merge(overrides or {}, o))
    )
    return {**plans, **mb.sweep_variants(modes, plans, grid)}


def signals_overrides(settings: Settings) -> dict[str, Any]:
    return mb.deep_merge(settings.backtest.policy, mb.SIGNALS_POLICY)
