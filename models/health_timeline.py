"""Health over time from in-memory frames: the health flow's inputs at any clock, and a stepper that
keeps the metric history, the learned thresholds and the open alerts between runs.

Pure (no I/O): ``inputs_at`` builds, from frames held in memory, the same ``HealthInputs`` that
``warehouse.health.read_health_inputs`` reads from a warehouse at ``now`` (tests check they agree; its
recent feature rows are a ``RecentFeatures`` window that counts drift bar by bar), and
``HealthTimeline.step`` does what the thresholds and health flows do at one clock: learn thresholds from
the metric history so far, score every module, evaluate the alerts, append the new metric points. The
property tests drive it bar by bar over synthetic markets; a backtest can do the same instead of
re-reading its scratch warehouse at every bar.

Frames (``MarketFrames``), each sorted by its time column:

- ``bars``: symbol, interval, ts, close
- ``features``: symbol, interval, ts and the feature columns
- ``predictions``: symbol, interval, ts, module, model_version, p_up, predict_latency_ms, run_id,
  predicted_at (a row whose p_up is not a finite probability is counted as an error, as the predictions
  gate would quarantine it); optional ``stored_at``: when the row became readable (default its
  ``predicted_at``). A frame that is the predictions table as stored (a backtest rebuilds it at each
  retrain, when stored rows change) sets ``stored_at`` to the bar, so a run whose ``predicted_at`` comes
  from another clock is read as the SQL reads it (``warehouse.health.read_health_inputs``).
- ``registry``: module, interval, version, trained_at, train_start, train_end, feature_set_version,
  metrics (dict: the validation metrics), status ('champion' once promoted, 'challenger' otherwise),
  run_id, confirmed_at (NaT: the retrain that evaluated a champion and kept it, see ``confirmations``)
- ``confirmations``: module, interval, version, confirmed_at, run_id: a retrain kept the champion
- ``benchmarks``: module, interval, window_name, accuracy, n, coverage, computed_at
- ``dq``: interval, validated_at, failing, checked (critical verdicts of the input gates)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.alerts import AlertChanges, Evaluation, evaluate_series
from models.health import (
    HEALTH_METRIC,
    OVERALL,
    DriftReference,
    Gate,
    HealthInputs,
    ModuleAssessment,
    assess_module,
    health_gates,
    measure,
    out_of_range_flags,
    overall_score,
)
from models.thresholds import LearnedThreshold, MetricSpec, default_threshold, learn_threshold, metric_specs
from qtrader.calendar import is_daily, utc

_EMPTY_PRED = ["module", "interval", "newest_ts", "run_id", "predicted_at", "rows", "bad", "quarantined",
               "latency_p95_ms"]  # fmt: skip


@dataclass
class MarketFrames:
    bars: pd.DataFrame
    features: pd.DataFrame
    predictions: pd.DataFrame
    registry: pd.DataFrame
    confirmations: pd.DataFrame = field(default_factory=pd.DataFrame)
    benchmarks: pd.DataFrame = field(default_factory=pd.DataFrame)
    dq: pd.DataFrame = field(default_factory=pd.DataFrame)


def _upto(frame: pd.DataFrame, column: str, now: pd.Timestamp) -> pd.DataFrame:
    if frame is None or frame.empty:
        return frame if frame is not None else pd.DataFrame()
    return frame[frame[column] <= now]


def champions_at(registry: pd.DataFrame, confirmations: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """The champion of each (module, interval) at ``now``: the newest promoted version trained by then,
    with ``confirmed_at``, the newest retrain by then that evaluated it and kept it (NaT if none)."""
    reg = _upto(registry, "trained_at", now)
    if reg.empty:
        return reg.assign(confirmed_at=pd.Series(dtype="datetime64[ns, UTC]"))
    promoted = reg[reg["status"] == "champion"]
    champs = promoted.sort_values("version").groupby(["module", "interval"], sort=True).tail(1)
    conf = _upto(confirmations, "confirmed_at", now)
    if conf is None or conf.empty:
        return champs.assign(confirmed_at=pd.NaT)
    last = conf.groupby(["module", "interval", "version"], as_index=False)["confirmed_at"].max()
    return champs.merge(last, on=["module", "interval", "version"], how="left")


def _failed_runs(registry: pd.DataFrame, now: pd.Timestamp, recent_runs: int) -> pd.DataFrame:
    """Per (module, interval): how many of the newest retrain runs registered nothing for it."""
    reg = _upto(registry, "trained_at", now)
    if reg.empty:
        return pd.DataFrame(columns=["module", "interval", "failed"])
    runs = reg.groupby(["interval", "run_id"], as_index=False)["trained_at"].min()
    rows = []
    for interval, g in runs.groupby("interval"):
        recent = g.sort_values("trained_at").tail(recent_runs)
        mine = reg[reg["interval"] == interval]
        for module, m in mine.groupby("module"):
            first = m["trained_at"].min()
            due = recent[recent["trained_at"] >= first]
            failed = int((~due["run_id"].isin(set(m["run_id"]))).sum())
            rows.append({"module": module, "interval": interval, "failed": failed})
    return pd.DataFrame(rows, columns=["module", "interval", "failed"])


def _ns(values) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8


class _Index:
    """Sorted arrays of the large frames, built once per MarketFrames, so a run reads slices."""

    def __init__(self, frames: MarketFrames) -> None:
        self.registry_memo: dict = {}
        # (the benchmarks frame, rows by now, _benchmarks_at, its computed_at sorted in ns)
        self.benchmarks_memo: tuple | None = None
        self.features: dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = {}
        self.arrays: dict[str, np.ndarray] = {}  # the features' values, for drift counts
        # per (drift reference, feature positions): the counts of each bar's rows, filled as windows reach it
        self.drift_counts: dict[tuple[int, tuple[int, ...]], tuple] = {}
        for interval, f in frames.features.groupby("interval", sort=False):
            by = ["ts", "symbol"] if "symbol" in f.columns else ["ts"]  # the warehouse sample's order
            f = f.sort_values(by, kind="stable").reset_index(drop=True)
            ts = _ns(f["ts"])
            # one float64 block: slices and column picks are cheap (the key columns are not compared)
            values = f.drop(columns=[c for c in ("symbol", "interval", "ts") if c in f.columns]).astype(
                "float64"
            )
            self.features[str(interval)] = (values, ts, np.unique(ts))
            self.arrays[str(interval)] = values.to_numpy()
        self.bars = {str(iv): np.sort(_ns(g["ts"])) for iv, g in frames.bars.groupby("interval", sort=False)}
        self.seen: dict[tuple[str, str], _PredictionsSeen] = {}
        for (module, interval), g in frames.predictions.groupby(["module", "interval"], sort=True):
            g = g.sort_values("predicted_at", kind="stable")
            p = g["p_up"].to_numpy(dtype="float64")
            codes, runs = pd.factorize(g["run_id"])
            stored = g["stored_at"] if "stored_at" in g.columns else g["predicted_at"]
            self.seen[(str(module), str(interval))] = _PredictionsSeen(
                _ns(g["ts"]), _ns(g["predicted_at"]), np.isfinite(p) & (p >= 0) & (p <= 1),
                g["predict_latency_ms"].to_numpy(dtype="float64"), codes, np.asarray(runs), _ns(stored),
            )  # fmt: skip


def _index(frames: MarketFrames) -> _Index:
    idx = getattr(frames, "_index", None)
    if idx is None:
        idx = _Index(frames)
        object.__setattr__(frames, "_index", idx)
    return idx


def sorted_quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear) of sorted values without NaN, from the two values around the
    rank: the same interpolation of the same pair, so the same float, without partitioning them all."""
    rank = (len(values) - 1) * q
    lo = int(np.floor(rank))
    return float(np.quantile(values[lo : lo + 2], rank - lo))


class _RunRows:
    """One predict run's rows readable so far: valid and failed counts, the valid rows' latencies sorted
    (NaN latencies counted apart: one makes the p95 NaN, as ``np.quantile``)."""

    def __init__(self) -> None:
        self.ok = self.bad = self.nan = 0
        self.latency = np.empty(0)

    def add(self, ok: np.ndarray, latency: np.ndarray) -> None:
        self.ok += int(ok.sum())
        self.bad += int((~ok).sum())
        lat = latency[ok]
        nan = np.isnan(lat)
        self.nan += int(nan.sum())
        lat = np.sort(lat[~nan])
        self.latency = np.insert(self.latency, np.searchsorted(self.latency, lat), lat)

    def p95(self) -> float:
        if self.nan:
            return np.nan
        return sorted_quantile(self.latency, 0.95) if len(self.latency) else np.nan


class _PredictionsSeen:
    """One (module, interval)'s predictions readable at a clock (bar and ``stored_at`` both by then), fed
    in the order they become readable: a run adds the rows that became readable since the last one instead
    of scanning every row. The newest run is the readable row latest in ``predicted_at`` order; a clock
    earlier than the last one starts over."""

    def __init__(self, ts, at, ok, lat, codes, runs, stored) -> None:
        self.ts, self.at, self.ok, self.lat, self.codes, self.runs = ts, at, ok, lat, codes, runs
        ready = np.maximum(ts, stored)
        self.order = np.argsort(ready, kind="stable")
        self.ready = ready[self.order]
        self._start(np.iinfo(np.int64).min)

    def _start(self, now: int) -> None:
        self.now, self.fed, self.last, self.newest = now, 0, -1, None
        self.run_rows: dict[int, _RunRows] = {}

    def at_clock(self, now: int) -> tuple[int, int | None, _RunRows] | None:
        """(the newest row's position, the newest validly predicted bar in ns or None, its run's rows)."""
        if now < self.now:
            self._start(now)
        self.now = now
        upto = int(np.searchsorted(self.ready, now, side="right"))
        if upto > self.fed:
            new = self.order[self.fed : upto]
            self.fed = upto
            self.last = max(self.last, int(new.max()))
            valid = new[self.ok[new]]
            if len(valid):
                newest = int(self.ts[valid].max())
                self.newest = newest if self.newest is None else max(self.newest, newest)
            codes = self.codes[new]
            for code in np.unique(codes):
                rows = new[codes == code]
                self.run_rows.setdefault(int(code), _RunRows()).add(self.ok[rows], self.lat[rows])
        if self.last < 0:
            return None
        return self.last, self.newest, self.run_rows[int(self.codes[self.last])]


def _predictions_at(idx: _Index, now: pd.Timestamp) -> pd.DataFrame:
    """Per (module, interval): the newest validly predicted bar, and the newest predict run (a run whose
    every row failed, and was quarantined, included) with its rows, failed rows and p95 latency."""
    rows = []
    for (module, interval), seen in idx.seen.items():
        state = seen.at_clock(now.value)
        if state is None:
            continue
        last, newest, run = state
        rows.append(
            {
                "module": module, "interval": interval,
                "newest_ts": pd.Timestamp(newest, tz="UTC") if newest is not None else pd.NaT,
                "run_id": seen.runs[seen.codes[last]], "predicted_at": pd.Timestamp(int(seen.at[last]), tz="UTC"),
                "rows": run.ok, "bad": 0, "quarantined": run.bad, "latency_p95_ms": run.p95(),
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=_EMPTY_PRED)


def _benchmarks_at(benchmarks: pd.DataFrame, now: pd.Timestamp, cfg) -> pd.DataFrame:
    cols = ["module", "interval", "accuracy", "n", "coverage", "computed_at"]
    b = _upto(benchmarks, "computed_at", now)
    if b is None or b.empty:
        return pd.DataFrame(columns=cols)
    wanted = np.where(
        [is_daily(iv) for iv in b["interval"]], cfg.accuracy_window_daily, cfg.accuracy_window_intraday
    )
    b = b[b["window_name"].to_numpy() == wanted]
    return b.sort_values("computed_at").groupby(["module", "interval"], sort=True).tail(1)[cols]


def _benchmarks_memo(idx: _Index, benchmarks: pd.DataFrame, now: pd.Timestamp, cfg) -> pd.DataFrame:
    """``_benchmarks_at``, recomputed only when the rows stored by ``now`` change: the table grows at
    every benchmark pass, and scanning all of it at every bar made a run quadratic in bars."""
    if benchmarks is None or benchmarks.empty:
        return _benchmarks_at(benchmarks, now, cfg).reset_index(drop=True)
    memo = idx.benchmarks_memo
    if memo is None or memo[0] is not benchmarks:  # the frame's stamps sorted once (NaT is never by now)
        stamps = pd.to_datetime(benchmarks["computed_at"], utc=True)
        stamps = np.sort(_ns(stamps[stamps.notna()]))
        memo = (benchmarks, None, None, stamps)
    k = int(np.searchsorted(memo[3], now.value, side="right"))
    if memo[1] != k:
        memo = (benchmarks, k, _benchmarks_at(benchmarks, now, cfg).reset_index(drop=True), memo[3])
    idx.benchmarks_memo = memo
    return memo[2]


class RecentFeatures:
    """The feature rows of the newest bars up to a clock, for ``out_of_range_shares``: it counts a window
    as the sum of its bars' counts, each bar counted once per drift reference (a window slides by one bar
    per run, so a run counts one bar's rows instead of the whole window's). The counts are integers: the
    sums, hence the shares, are those of the window's rows counted at once."""

    def __init__(self, idx: _Index, interval: str, first: int, end: int) -> None:
        f, ts, times = idx.features[interval]
        self.idx, self.interval, self.first, self.end = idx, interval, first, end
        self.columns = f.columns
        self.empty = end <= first

    def rows(self) -> pd.DataFrame:
        f, ts, times = self.idx.features[self.interval]
        if self.empty:
            return f.iloc[0:0]
        lo = int(np.searchsorted(ts, times[self.first], side="left"))
        hi = int(np.searchsorted(ts, times[self.end - 1], side="right"))
        return f.iloc[lo:hi]

    def out_of_range_counts(self, ref: DriftReference, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
        f, ts, times = self.idx.features[self.interval]
        key = (id(ref), tuple(keep))
        state = self.idx.drift_counts.get(key)
        if state is None:  # the reference is kept in the state: its id stays its own
            n_bars = len(times)
            cols = f.columns.get_indexer([ref.columns[i] for i in keep])
            state = (ref, cols, np.zeros((n_bars, len(keep)), np.int64), np.zeros((n_bars, len(keep)), np.int64),
                     np.zeros(n_bars, bool))  # fmt: skip
            self.idx.drift_counts[key] = state
        _, cols, outside, finite, done = state
        todo = np.flatnonzero(~done[self.first : self.end]) + self.first
        if len(todo):
            a, b = int(todo[0]), int(todo[-1]) + 1
            bounds = np.searchsorted(ts, times[a:b], side="left")
            lo, hi = int(bounds[0]), int(np.searchsorted(ts, times[b - 1], side="right"))
            starts = np.append(bounds, hi) - lo
            flags = out_of_range_flags(ref, keep, self.idx.arrays[self.interval][lo:hi, cols])
            for counts, flag in zip((outside, finite), flags, strict=True):
                c = np.vstack([np.zeros((1, len(keep)), np.int64), np.cumsum(flag, axis=0, dtype=np.int64)])
                counts[a:b] = c[starts[1:]] - c[starts[:-1]]
            done[a:b] = True
        return outside[self.first : self.end].sum(axis=0), finite[self.first : self.end].sum(axis=0)


def _recent_features(
    idx: _Index, interval: str, now: pd.Timestamp, bars: int
) -> RecentFeatures | pd.DataFrame:
    """Feature rows of the newest ``bars`` bar times up to ``now``."""
    if interval not in idx.features:
        return pd.DataFrame()
    _, _, times = idx.features[interval]
    k = int(np.searchsorted(times, now.value, side="right"))
    return RecentFeatures(idx, interval, max(0, k - bars), k)


def _train_sample(idx: _Index, interval: str, start, end, max_rows: int) -> pd.DataFrame:
    if interval not in idx.features:
        return pd.DataFrame()
    f, ts, _ = idx.features[interval]
    f = f.iloc[int(np.searchsorted(ts, start.value, "left")) : int(np.searchsorted(ts, end.value, "right"))]
    # every k-th row by (ts, symbol), as warehouse.health._feature_frames samples it
    return f.iloc[:: math.ceil(len(f) / max_rows)] if len(f) > max_rows else f


def inputs_at(
    frames: MarketFrames,
    now: pd.Timestamp,
    modules: Sequence[str],
    default_intervals: Sequence[str],
    cfg,
    train_cache: dict | None = None,
    combined: Mapping[str, tuple[tuple[str, ...], int]] | None = None,
) -> HealthInputs:
    """The health flow's inputs at ``now`` (``cfg``: HealthSettings), from frames held in memory.

    ``train_cache`` (a dict the caller keeps) holds each champion's training-window sample across calls.
    ``combined``: {module: (members, min_voters)} of a module combined from others (the ensemble).
    """
    now = utc(now)
    idx = _index(frames)
    k_reg = int((frames.registry["trained_at"] <= now).sum()) if len(frames.registry) else 0
    k_conf = int((frames.confirmations["confirmed_at"] <= now).sum()) if len(frames.confirmations) else 0
    memo = idx.registry_memo.get((k_reg, k_conf))
    if memo is None:
        champions = champions_at(frames.registry, frames.confirmations, now)
        # each champion's feature window, read once per registry change instead of a row loop per run
        windows = [
            (row.interval, utc(row.train_start), utc(row.train_end)) for row in champions.itertuples(index=False)
        ]  # fmt: skip
        memo = (champions.reset_index(drop=True), _failed_runs(frames.registry, now, cfg.error_recent_runs),
                windows)  # fmt: skip
        idx.registry_memo = {(k_reg, k_conf): memo}
    champions, failed_runs, windows = memo
    newest = {}
    for interval, ts in idx.bars.items():
        k = int(np.searchsorted(ts, now.value, side="right"))
        if k:
            newest[interval] = pd.Timestamp(int(ts[k - 1]), tz="UTC")
    features: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}
    cache = train_cache if train_cache is not None else {}
    for key in windows:
        if key in features:
            continue
        if key not in cache:
            cache[key] = _train_sample(idx, *key, cfg.drift_max_rows)
        recent_bars = cfg.drift_recent_bars_daily if is_daily(key[0]) else cfg.drift_recent_bars_intraday
        features[key] = (cache[key], _recent_features(idx, key[0], now, recent_bars))
    # a window no champion trains on any more goes: its sample is a view that keeps a whole feature frame alive
    for key in [k for k in cache if k not in features]:
        del cache[key]
    dq: dict[str, tuple[float, float]] = {}
    if frames.dq is not None and len(frames.dq):
        for interval, g in _upto(frames.dq, "validated_at", now).groupby("interval"):
            g = g.sort_values("validated_at").tail(cfg.dq_recent_runs)
            dq[str(interval)] = (float(g["failing"].sum()), float(g["checked"].sum()))
    return HealthInputs(
        modules=list(dict.fromkeys([*modules, *champions["module"]])) if len(champions) else list(modules),
        default_intervals=list(default_intervals),
        champions=champions,  # the memo's frame: measure keys its rows once per registry change
        newest_bars={str(k): utc(v) for k, v in newest.items()},
        predictions=_predictions_at(idx, now),
        failed_runs=failed_runs,
        benchmarks=_benchmarks_memo(idx, frames.benchmarks, now, cfg),
        features=features,
        dq=dq,
        combined=dict(combined or {}),
    )


# ------------------------------------------------------------------------------------------- the stepper


@dataclass
class HealthSnapshot:
    """One health run: the module assessments, the overall score, the gates, the alerts evaluated."""

    now: pd.Timestamp
    assessments: dict[str, ModuleAssessment]
    overall: float | None
    gates: dict[str, Gate]  # per module and OVERALL: the trade filter's gate at this run
    points: pd.DataFrame  # the metric points this run added (module, metric, ts, value)
    evaluations: list[Evaluation]
    changes: AlertChanges
    thresholds: dict[tuple[str, str], LearnedThreshold]

    @property
    def scores(self) -> dict[str, float | None]:
        return {m: a.health.score for m, a in self.assessments.items()}


def threshold_for(
    thresholds: Mapping[tuple[str, str], LearnedThreshold],
    specs: Mapping[str, MetricSpec],
    module: str,
    metric: str,
) -> LearnedThreshold:
    return thresholds.get((module, metric)) or default_threshold(specs[metric])


def combined_modules(settings) -> dict[str, tuple[tuple[str, ...], int]]:
    """Modules whose output is combined from other modules' predictions at decision time: the ensemble."""
    sig = settings.signal
    return {"ensemble": (tuple(sig.members), sig.ensemble_min_voters)} if sig.ensemble else {}


def score_inputs(
    inputs: HealthInputs,
    now: pd.Timestamp,
    settings,
    thresholds: Mapping[tuple[str, str], LearnedThreshold],
    references: dict | None = None,
) -> tuple[dict[str, ModuleAssessment], float | None, pd.DataFrame]:
    """Every module's assessment, the overall score and the metric points of one health run."""
    cfg, specs = settings.health, metric_specs(settings)
    measured = measure(inputs, now, cfg, exchange=settings.exchange, references=references)
    assessments = {
        module: assess_module(
            module, per_interval, cfg, threshold_for(thresholds, specs, module, "latency_ms").value
        )
        for module, per_interval in measured.items()
    }
    overall = overall_score({m: a.health.score for m, a in assessments.items()}, cfg.module_weights)
    points = [
        {"module": m, "metric": metric, "ts": at if at is not None else now, "value": value}
        for m, a in assessments.items()
        for metric, (value, at) in a.metrics.items()
    ]
    if overall is not None:
        points.append({"module": OVERALL, "metric": HEALTH_METRIC, "ts": now, "value": overall})
    return assessments, overall, pd.DataFrame(points, columns=["module", "metric", "ts", "value"])


def trade_gates(settings, modules, thresholds: Mapping[tuple[str, str], LearnedThreshold]) -> dict[str, Gate]:
    """The trade filter's gate of every module and of the overall score (OVERALL), from the learned
    health_score baselines in ``thresholds``."""
    f = settings.trade_filter
    return health_gates(
        modules, thresholds, overall_seed=f.min_overall_health, module_seed=f.min_module_health,
        floor=settings.health.kill_floor, learned=f.learned_gates,
    )  # fmt: skip


class HealthTimeline:
    """The thresholds and health flows at successive clocks, with their state kept in memory.

    ``settings``: a Settings (its health, thresholds, alerts and trade_filter sections are used). The
    metric history is kept per (module, metric) as arrays of (event time in ns, value); a point with the
    same event time replaces the earlier one, as in ``metric_history``.
    """

    def __init__(self, settings, modules: Sequence[str], intervals: Sequence[str]) -> None:
        self.settings = settings
        self.specs = metric_specs(settings)
        self.modules = list(modules)
        self.intervals = list(intervals)
        self.combined = combined_modules(settings)
        self.series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.thresholds: dict[tuple[str, str], LearnedThreshold] = {}
        self.open_alerts: dict[tuple[str, str], str] = {}
        # alert_id -> what the alerts table holds of an open alert (as warehouse.health.write_health keeps it)
        self.alerts: dict[str, dict] = {}
        self._train_cache: dict = {}
        self._learned: dict = {}  # (module, metric) -> (series arrays, window bounds, the threshold learned)
        self._references: dict = {}

    def active_alerts(self) -> list[dict]:
        """Open alerts (module, metric, time_to_threshold_hours, reason, severity) in ``v_active_alerts``'s
        order: soonest breach first (no estimate last), then module, metric; a missing estimate is NaN, as
        a NULL read from the table."""
        keep = ["module", "metric", "time_to_threshold_hours", "reason", "severity"]
        rows = [
            {**{k: a[k] for k in keep},
             "time_to_threshold_hours": float("nan") if a["time_to_threshold_hours"] is None
             else float(a["time_to_threshold_hours"])}
            for a in self.alerts.values()
        ]  # fmt: skip
        return sorted(
            rows,
            key=lambda r: (np.isnan(r["time_to_threshold_hours"]), np.nan_to_num(r["time_to_threshold_hours"]),
                           r["module"], r["metric"]),
        )  # fmt: skip

    def history(self) -> pd.DataFrame:
        """The metric history so far (module, metric, ts, value)."""
        frames = [
            pd.DataFrame({"module": m, "metric": x, "ts": pd.to_datetime(ts, utc=True), "value": v})
            for (m, x), (ts, v) in self.series.items()
        ]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["module", "metric", "ts", "value"])
        )

    def _append(self, points: pd.DataFrame) -> None:
        if points.empty:
            return
        ns = pd.DatetimeIndex(pd.to_datetime(points["ts"], utc=True)).as_unit("ns").asi8
        for (m, x), at, v in zip(zip(points["module"], points["metric"], strict=True), ns,
                                 points["value"].to_numpy(dtype="float64"), strict=True):  # fmt: skip
            ts, vals = self.series.get((m, x), (np.empty(0, dtype=np.int64), np.empty(0)))
            if len(ts) and ts[-1] == at:
                if vals[-1] == v or (np.isnan(vals[-1]) and np.isnan(v)):
                    continue  # the same fact read again: the series is unchanged (its thresholds too)
                vals = vals.copy()
                vals[-1] = v
            elif len(ts) and ts[-1] > at:  # an older fact read again: replace it in place, or insert
                pos = int(np.searchsorted(ts, at))
                if pos < len(ts) and ts[pos] == at:
                    vals = vals.copy()
                    vals[pos] = v
                else:
                    ts, vals = np.insert(ts, pos, at), np.insert(vals, pos, v)
            else:
                ts, vals = np.append(ts, at), np.append(vals, v)
            self.series[(m, x)] = (ts, vals)

    def _window(self, since_ns: int, until_ns: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        out = {}
        for key, (ts, v) in self.series.items():
            lo, hi = np.searchsorted(ts, since_ns, side="right"), np.searchsorted(ts, until_ns, side="right")
            if hi > lo:
                out[key] = (ts[lo:hi], v[lo:hi])
        return out

    def learn(self, now: pd.Timestamp) -> None:
        """The thresholds flow at ``now``: learn from the trailing points of the metric history."""
        t = self.settings.thresholds
        now = utc(now)
        since = (now - pd.Timedelta(days=t.history_days)).value
        watched = sorted(set(self.settings.alerts.metrics) | {"latency_ms"})
        always = {(m, x) for m in self.modules for x in watched}
        empty = np.empty(0)
        learned = {}
        for key in sorted(set(self.series) | always):
            if key[1] not in self.specs:
                continue
            entry = self.series.get(key)
            lo = hi = 0
            if entry is not None:
                ts, v = entry
                lo, hi = (
                    np.searchsorted(ts, since, side="right"),
                    np.searchsorted(ts, now.value, side="right"),
                )
            if hi <= lo and key not in always:
                continue  # no point in the window, a metric not watched: no threshold (as the flow)
            # a series changes only through _append, which replaces its arrays: the same arrays and window
            # learn the same threshold (most metrics of a bar change; latency and accuracy mostly do not)
            memo = self._learned.get(key)
            if memo is not None and memo[0] is entry and memo[1] == lo and memo[2] == hi:
                learned[key] = memo[3]
                continue
            learned[key] = learn_threshold(entry[1][lo:hi] if hi > lo else empty, self.specs[key[1]], t)
            self._learned[key] = (entry, lo, hi, learned[key])
        self.thresholds = learned

    def step(self, frames: MarketFrames, now: pd.Timestamp, *, learn: bool = True) -> HealthSnapshot:
        """One health run at ``now`` (after the thresholds flow when ``learn``)."""
        now = utc(now)
        if learn:
            self.learn(now)
        cfg = self.settings.health
        inputs = inputs_at(frames, now, self.modules, self.intervals, cfg, self._train_cache, self.combined)
        assessments, overall, points = score_inputs(
            inputs, now, self.settings, self.thresholds, self._references
        )
        self._append(points)
        since = now - pd.Timedelta(hours=self.settings.alerts.lookback_hours)
        evaluations, changes = evaluate_series(
            self._window(since.value, now.value), self.thresholds, self.open_alerts, now, self.settings.alerts,
            self.specs,
        )  # fmt: skip
        for ev in changes.opened:
            aid = f"alert-{ev.module}-{ev.metric}-{now:%Y%m%dT%H%M%S}"
            self.open_alerts[(ev.module, ev.metric)] = aid
            self.alerts[aid] = {"module": ev.module, "metric": ev.metric, "ts": now,
                                "time_to_threshold_hours": ev.time_to_threshold_hours, "reason": ev.reason,
                                "severity": ev.severity.value if ev.severity else None}  # fmt: skip
        for aid, ev in changes.updated:
            if aid in self.alerts:  # inside the resolve band an evaluation keeps the alert's last severity
                rec = self.alerts[aid]
                rec.update(time_to_threshold_hours=ev.time_to_threshold_hours, reason=ev.reason,
                           severity=ev.severity.value if ev.severity else rec["severity"])  # fmt: skip
        closed = {aid for aid, _ in changes.resolved}
        self.open_alerts = {k: v for k, v in self.open_alerts.items() if v not in closed}
        for aid in closed:
            self.alerts.pop(aid, None)
        gates = trade_gates(self.settings, list(assessments), self.thresholds)
        return HealthSnapshot(
            now, assessments, overall, gates, points, evaluations, changes, dict(self.thresholds)
        )
