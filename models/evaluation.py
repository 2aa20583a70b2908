"""Benchmarks of stored predictions: classification and calibration metrics per module and window, and exit
statistics on the predicted side. Pure: the benchmark flow (flows/benchmark.py) loads predictions with
their labels and writes what these functions return.

Windows are calendar spans ending at the newest labelled bar ``end``: ``"30d"`` keeps predictions with
``end - 30 days < ts <= end``; ``"all"`` keeps every labelled prediction.

Calibration is scored on the pairs the seed formula is defined on: the confidence of the side the raw
P(up) calls (``confidence_raw`` / ``_seed`` / ``_calibrated``) against whether that side happened, over
the rows with an opinion (direction != 0). ``ece`` / ``brier`` / ``log_loss`` are of raw P(up) against
label_up (``models.metrics.classification_metrics``), and feed ``performance_score``.

Exit statistics come from one basis at a time: ``exit_stats_from_labels`` reads the triple-barrier
outcome of the predicted side (long_* for an up call, short_* for a down call); a later
``exit_stats_from_trades`` will read realized trades and return the same columns with basis 'trades'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from models.calibration import DEFAULT_N_BINS, LOG_LOSS_EPS, brier_score, expected_calibration_error
from models.labels import SIDES, BarrierProfile, make_labels
from models.metrics import classification_metrics, latency_stats, performance_score
from models.signals.base import NO_OPINION

ALL = "all"
BENCHMARK_COLUMNS = [
    "module", "window_name", "window_start", "window_end", "model_version", "n", "coverage", "base_rate",
    "accuracy", "precision", "recall", "auc", "brier", "log_loss", "ece", "ece_raw", "ece_seed",
    "ece_calibrated", "brier_raw", "brier_seed", "brier_calibrated", "latency_p50_ms", "latency_p95_ms",
    "performance_score",
]  # fmt: skip
EXIT_COLUMNS = [
    "module", "window_name", "basis", "n", "tp1_rate", "tp2_rate", "tp3_rate", "stop_rate", "timeout_rate",
    "avg_r",
]  # fmt: skip


BARRIER_FIELDS = ("outcome", "tp1", "tp2", "tp3", "stop", "r")


def attach_labels(
    predictions: pd.DataFrame,
    bars: pd.DataFrame,
    exit_profile: BarrierProfile,
    cache: dict | None = None,
) -> pd.DataFrame:
    """Predictions with ``label_up`` (at each row's own label horizon) and the exit profile's barrier outcomes.

    ``bars``: the bars of the predicted symbols from the first predicted bar on, ordered by symbol and ts,
    with the features' ``atr_14`` (so barriers sit where the labels of training put them). Rows whose
    horizon is not over yet get NaN / None. ``cache``: a dict kept by a caller that labels predictions
    against the same ``bars`` again (the labels of the bars, per horizon, are made once).
    """
    keys = ["symbol", "ts"]
    atr = bars["atr_14"].to_numpy(dtype="float64")
    cache = {} if cache is None else cache

    def labels(profile: BarrierProfile) -> pd.DataFrame:
        if profile not in cache:
            cache[profile] = make_labels(bars, profile, atr=atr)
        return cache[profile]

    exits = labels(exit_profile)
    barrier_cols = [f"{side}_{f}" for side in SIDES for f in BARRIER_FIELDS]
    out = predictions.merge(exits[keys + barrier_cols], on=keys, how="left")
    out["label_up"] = np.nan
    for horizon in sorted(out["label_horizon"].unique()):
        profile = BarrierProfile(
            tp1=exit_profile.tp1, tp2=exit_profile.tp2, tp3=exit_profile.tp3, stop=exit_profile.stop,
            horizon=int(horizon),
        )  # fmt: skip
        rows = (out["label_horizon"] == horizon).to_numpy()
        joined = out.loc[rows, keys].merge(labels(profile)[keys + ["label_up"]], on=keys, how="left")
        out.loc[rows, "label_up"] = joined["label_up"].to_numpy()
    return out


def newest_labelled(frame: pd.DataFrame) -> pd.Timestamp | None:
    """The newest bar with a known label: where every benchmark window ends."""
    known = frame["label_up"].notna()
    return frame.loc[known, "ts"].max() if known.any() else None


def window_span(name: str) -> pd.Timedelta | None:
    """``"30d"`` -> 30 days, ``"24h"`` -> 24 hours, ``"all"`` -> None. Raises ValueError otherwise."""
    if name == ALL:
        return None
    try:
        span = pd.Timedelta(name)
    except ValueError:
        raise ValueError(f"benchmark window {name!r}: use a span like 24h, 7d, 30d, 365d, or 'all'") from None
    if span <= pd.Timedelta(0):
        raise ValueError(f"benchmark window {name!r} must be positive")
    return span


def window_mask(ts: pd.Series, name: str, end: pd.Timestamp) -> tuple[np.ndarray, pd.Timestamp | None]:
    span = window_span(name)
    inside = (ts <= end).to_numpy()
    if span is None:
        return inside, None
    start = end - span
    return inside & (ts > start).to_numpy(), start


def _hits(frame: pd.DataFrame) -> np.ndarray:
    """Whether the raw predicted side happened (up call and label_up 1, or down call and 0)."""
    y = frame["label_up"].to_numpy(dtype="float64")
    up = frame["p_up"].to_numpy(dtype="float64") >= 0.5
    return np.where(up, y, 1.0 - y)


def window_metrics(
    frame: pd.DataFrame, n_bins: int = DEFAULT_N_BINS, score_params: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Metrics of one module's labelled predictions in one window."""
    y = frame["label_up"].to_numpy(dtype="float64")
    metrics = classification_metrics(y, frame["p_up"].to_numpy(dtype="float64"), n_bins=n_bins)
    calls = frame["direction"].to_numpy() != 0
    hit = _hits(frame)[calls]
    for name in ("raw", "seed", "calibrated"):
        confidence = frame[f"confidence_{name}"].to_numpy(dtype="float64")[calls]
        metrics[f"ece_{name}"] = (
            expected_calibration_error(confidence, hit, n_bins) if calls.any() else np.nan
        )
        metrics[f"brier_{name}"] = brier_score(confidence, hit) if calls.any() else np.nan
    p50, p95 = latency_stats(frame["predict_latency_ms"].to_numpy(dtype="float64"))
    metrics["latency_p50_ms"], metrics["latency_p95_ms"] = p50, p95
    metrics["performance_score"] = performance_score(metrics, **dict(score_params or {}))
    return metrics


def benchmark_rows(
    frame: pd.DataFrame,
    windows: Sequence[str],
    end: pd.Timestamp,
    n_bins: int = DEFAULT_N_BINS,
    score_params: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (module, window) with at least one labelled prediction (BENCHMARK_COLUMNS).

    ``frame``: predictions (module, ts, p_up, confidence_raw/_seed/_calibrated, direction,
    predict_latency_ms, model_version) with ``label_up`` (NaN where the horizon is not over yet).
    """
    labelled = frame[frame["label_up"].notna()]
    rows = []
    for module, group in labelled.groupby("module", sort=True):
        for name in windows:
            inside, start = window_mask(group["ts"], name, end)
            part = group[inside]
            if part.empty:
                continue
            metrics = window_metrics(part, n_bins, score_params)
            rows.append(
                {
                    "module": module,
                    "window_name": name,
                    "window_start": start,
                    "window_end": end,
                    "model_version": int(part["model_version"].max()),
                    **metrics,
                }
            )
    return pd.DataFrame(rows, columns=BENCHMARK_COLUMNS)


def _side_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """The predicted side's barrier outcome per call: tp1, tp2, tp3, stop (booleans), outcome, r."""
    up = frame["direction"].to_numpy() > 0
    out = {}
    for col in ("outcome", "tp1", "tp2", "tp3", "stop", "r"):
        out[col] = np.where(
            up, frame[f"long_{col}"].to_numpy(dtype=object), frame[f"short_{col}"].to_numpy(dtype=object)
        )
    return pd.DataFrame(out, index=frame.index)


def exit_stats_from_labels(frame: pd.DataFrame, windows: Sequence[str], end: pd.Timestamp) -> pd.DataFrame:
    """TP1/TP2/TP3 hit rates, stop rate, timeout rate and average R of the calls, per module and window.

    ``frame``: predictions (module, ts, direction) with the triple-barrier columns of
    ``models.labels.make_labels`` (long_* / short_*; outcome None where the horizon is not over). Rows
    without an opinion (direction 0) and without a known outcome are left out.
    """
    calls = frame[(frame["direction"] != 0)]
    if calls.empty:
        return pd.DataFrame(columns=EXIT_COLUMNS)
    side = _side_outcomes(calls)
    known = side["outcome"].notna().to_numpy() & (side["outcome"].astype(str) != "<NA>").to_numpy()
    calls, side = calls[known], side[known]
    rows = []
    for module, idx in calls.groupby("module", sort=True).groups.items():
        group, outcomes = calls.loc[idx], side.loc[idx]
        for name in windows:
            inside, _ = window_mask(group["ts"], name, end)
            part = outcomes[inside]
            if part.empty:
                continue
            outcome = part["outcome"].astype(str)
            rows.append(
                {
                    "module": module,
                    "window_name": name,
                    "basis": "labels",
                    "n": len(part),
                    "tp1_rate": float(part["tp1"].astype(bool).mean()),
                    "tp2_rate": float(part["tp2"].astype(bool).mean()),
                    "tp3_rate": float(part["tp3"].astype(bool).mean()),
                    "stop_rate": float(part["stop"].astype(bool).mean()),
                    "timeout_rate": float((outcome == "timeout").mean()),
                    "avg_r": float(pd.to_numeric(part["r"], errors="coerce").mean()),
                }
            )
    return pd.DataFrame(rows, columns=EXIT_COLUMNS)


# ----------------------------------------------------------------------------------- incremental benchmark
# The backtest benchmarks on a cadence while labels keep arriving: a full recompute re-reads every stored
# prediction (the "all" window grows with history). ``BenchmarkAccumulator`` keeps per module and window
# the sums those metrics are made of and takes only the rows a pass adds (and, in sliding windows, drops),
# so a pass costs what its new rows cost. Its rows equal ``benchmark_rows`` / ``exit_stats_from_labels``
# over the same rows (tests/models/test_evaluation.py, to 1e-9: sums in another order, AUC as the
# Mann-Whitney statistic instead of the ROC trapezoids).


class _SortedValues:
    """A sorted multiset of floats with rank counts (AUC pairs, latency percentiles)."""

    def __init__(self) -> None:
        self.values = np.empty(0)

    def __len__(self) -> int:
        return len(self.values)

    def add(self, v: np.ndarray) -> None:
        if len(v):
            v = np.sort(v)
            self.values = np.insert(self.values, np.searchsorted(self.values, v), v)

    def remove(self, v: np.ndarray) -> None:
        if len(v):
            v = np.sort(v)
            repeat = np.arange(len(v)) - np.searchsorted(v, v)  # k-th copy of an equal value
            self.values = np.delete(self.values, np.searchsorted(self.values, v) + repeat)

    def below(self, v: np.ndarray) -> float:
        """Sum over ``v`` of (values < v) + 0.5 (values == v)."""
        lo, hi = np.searchsorted(self.values, v, "left"), np.searchsorted(self.values, v, "right")
        return float(lo.sum() + 0.5 * (hi - lo).sum())

    def above(self, v: np.ndarray) -> float:
        """Sum over ``v`` of (values > v) + 0.5 (values == v)."""
        lo, hi = np.searchsorted(self.values, v, "left"), np.searchsorted(self.values, v, "right")
        return float((len(self.values) - hi).sum() + 0.5 * (hi - lo).sum())

    def percentile(self, q: float) -> float:
        """``np.percentile(values, q)`` (linear) of the sorted values, without re-sorting them."""
        n = len(self.values)
        rank = q / 100.0 * (n - 1)
        lo = int(np.floor(rank))
        hi = min(lo + 1, n - 1)
        return float(np.percentile(self.values[lo : hi + 1], 100.0 * (rank - lo) if hi > lo else 0.0))


class _Bins:
    """Per equal-width bin of [0, 1]: count, sum of probabilities, sum of outcomes (``reliability_table``)."""

    def __init__(self, n_bins: int) -> None:
        self.n_bins = n_bins
        self.n = np.zeros(n_bins)
        self.p = np.zeros(n_bins)
        self.o = np.zeros(n_bins)
        self.sq = 0.0  # sum of (p - o)^2: the Brier score's numerator

    def update(self, p: np.ndarray, o: np.ndarray, sign: float) -> None:
        keep = np.isfinite(p) & np.isfinite(o)
        p, o = p[keep], o[keep]
        bins = np.minimum((np.clip(p, 0.0, 1.0) * self.n_bins).astype(np.int64), self.n_bins - 1)
        self.n += sign * np.bincount(bins, minlength=self.n_bins)
        self.p += sign * np.bincount(bins, weights=p, minlength=self.n_bins)
        self.o += sign * np.bincount(bins, weights=o, minlength=self.n_bins)
        self.sq += sign * float(((p - o) ** 2).sum())

    def total(self) -> float:
        return float(self.n.sum())

    def ece(self) -> float:
        total = self.total()
        if total == 0:
            return float("nan")
        used = self.n > 0
        n = self.n[used]
        return float((n * np.abs(self.o[used] / n - self.p[used] / n)).sum() / total)

    def brier(self) -> float:
        total = self.total()
        return self.sq / total if total else float("nan")


_COUNTS = ("n", "called", "y", "correct", "tp", "pred_pos", "pos_called", "ll", "calls")


class _BenchmarkSums:
    """What ``window_metrics`` computes, as sums over the rows added minus the rows removed."""

    def __init__(self, n_bins: int) -> None:
        self.c = dict.fromkeys(_COUNTS, 0.0)
        self.p_bins = _Bins(n_bins)
        self.side_bins = {name: _Bins(n_bins) for name in ("raw", "seed", "calibrated")}
        self.pos, self.neg, self.u = _SortedValues(), _SortedValues(), 0.0  # AUC: Mann-Whitney U
        self.latency = _SortedValues()
        self.versions: dict[int, int] = {}

    def update(self, rows: Mapping[str, np.ndarray], sign: float) -> None:
        y_all, p_all = rows["label_up"], rows["p_up"]
        keep = np.isfinite(y_all) & np.isfinite(p_all)
        y, p = y_all[keep], p_all[keep]
        called = p != NO_OPINION
        pred = p > NO_OPINION
        c = self.c
        c["n"] += sign * len(y)
        c["called"] += sign * int(called.sum())
        c["y"] += sign * float(y.sum())
        c["correct"] += sign * int((called & (pred == (y == 1))).sum())
        c["tp"] += sign * int((called & pred & (y == 1)).sum())
        c["pred_pos"] += sign * int((called & pred).sum())
        c["pos_called"] += sign * int((called & (y == 1)).sum())
        q = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
        c["ll"] += sign * float((y * np.log(q) + (1.0 - y) * np.log(1.0 - q)).sum())
        self.p_bins.update(p, y, sign)
        calls = rows["direction"] != 0
        c["calls"] += sign * int(calls.sum())
        hit = np.where(p_all >= 0.5, y_all, 1.0 - y_all)[calls]
        for name, bins in self.side_bins.items():
            bins.update(rows[f"confidence_{name}"][calls], hit, sign)
        self._auc(p[y == 1], p[y != 1], sign)
        lat = rows["predict_latency_ms"]
        (self.latency.add if sign > 0 else self.latency.remove)(lat[np.isfinite(lat)])
        for v, k in zip(*np.unique(rows["model_version"], return_counts=True), strict=True):
            self.versions[int(v)] = self.versions.get(int(v), 0) + int(sign * k)
            if self.versions[int(v)] == 0:
                del self.versions[int(v)]

    def _auc(self, pos: np.ndarray, neg: np.ndarray, sign: float) -> None:
        if sign > 0:  # new negatives first, then new positives against every negative, new negatives
            self.neg.add(neg)  # against the positives held before
            self.u += self.neg.below(pos) + self.pos.above(neg)
            self.pos.add(pos)
        else:
            self.u -= self.neg.below(pos)
            self.pos.remove(pos)
            self.u -= self.pos.above(neg)
            self.neg.remove(neg)

    def empty(self) -> bool:
        return not self.versions

    def metrics(self, score_params: Mapping[str, float] | None) -> dict[str, float]:
        c, nan = self.c, float("nan")
        n = int(round(c["n"]))
        if n == 0:
            keys = (
                "coverage",
                "base_rate",
                "accuracy",
                "precision",
                "recall",
                "auc",
                "brier",
                "log_loss",
                "ece",
            )
            out: dict[str, float] = {"n": 0, **dict.fromkeys(keys, nan)}
        else:
            called = c["called"]
            out = {
                "n": n,
                "coverage": called / n,
                "base_rate": c["y"] / n,
                "accuracy": c["correct"] / called if called else nan,
                "precision": c["tp"] / c["pred_pos"] if called and c["pred_pos"] else nan,
                "recall": c["tp"] / c["pos_called"] if called and c["pos_called"] else nan,
                "auc": self.u / (len(self.pos) * len(self.neg)) if len(self.pos) and len(self.neg) else nan,
                "brier": self.p_bins.brier(),
                "log_loss": -c["ll"] / n,
                "ece": self.p_bins.ece(),
            }
        for name, bins in self.side_bins.items():
            out[f"ece_{name}"] = bins.ece() if c["calls"] else nan
            out[f"brier_{name}"] = bins.brier() if c["calls"] else nan
        has = len(self.latency) > 0
        out["latency_p50_ms"] = self.latency.percentile(50) if has else nan
        out["latency_p95_ms"] = self.latency.percentile(95) if has else nan
        out["performance_score"] = performance_score(out, **dict(score_params or {}))
        return out


class _ExitSums:
    """What ``exit_stats_from_labels`` computes for one module and window, as sums."""

    def __init__(self) -> None:
        self.c = dict.fromkeys(("n", "tp1", "tp2", "tp3", "stop", "timeout", "r", "n_r"), 0.0)

    def update(self, rows: Mapping[str, np.ndarray], sign: float) -> None:
        c, r = self.c, rows["side_r"]
        c["n"] += sign * len(r)
        for k in ("tp1", "tp2", "tp3", "stop"):
            c[k] += sign * int(rows[f"side_{k}"].sum())
        c["timeout"] += sign * int(rows["side_timeout"].sum())
        c["r"] += sign * float(r[np.isfinite(r)].sum())
        c["n_r"] += sign * int(np.isfinite(r).sum())

    def empty(self) -> bool:
        return round(self.c["n"]) == 0

    def metrics(self) -> dict[str, float]:
        c = self.c
        n = int(round(c["n"]))
        out: dict[str, float] = {"n": n}
        for k in ("tp1", "tp2", "tp3", "stop", "timeout"):
            out[f"{k}_rate"] = c[k] / n
        out["avg_r"] = c["r"] / c["n_r"] if c["n_r"] else float("nan")
        return out


def _take(rows: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in rows.items()}


def _concat(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["ts"])]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class _Window:
    """One module's rows in one window: the sums of the rows inside, the rows waiting for the window's end
    to reach them, and (sliding windows) the rows inside by ts, to drop them once the start passes them.

    The rows inside are kept as the chunks they arrived in, each with its oldest ts: a pass looks only at
    the chunks the start reached, instead of joining and splitting every row inside. The rows dropped are
    taken in arrival order, as from the joined rows, so the sums see the same rows in the same order."""

    def __init__(self, span: pd.Timedelta | None, sums: _BenchmarkSums | _ExitSums) -> None:
        self.span = None if span is None else span.value
        self.sums = sums
        self.waiting: list[dict[str, np.ndarray]] = []
        self.inside: list[tuple[int, dict[str, np.ndarray]]] = []  # (oldest ts, rows) in arrival order

    def advance(self, end: int) -> None:
        start = None if self.span is None else end - self.span
        rows = _concat(self.waiting)
        self.waiting = []
        if rows:
            ts = rows["ts"]
            due = ts <= end
            if start is not None:
                due &= ts > start
                later = ts > end
            else:
                later = ~due
            if later.any():
                self.waiting.append(_take(rows, later))
            if due.any():
                new = _take(rows, due)
                self.sums.update(new, 1.0)
                if start is not None:
                    self.inside.append((int(new["ts"].min()), new))
        if start is not None and any(oldest <= start for oldest, _ in self.inside):
            kept, dropped = [], []
            for oldest, chunk in self.inside:
                if oldest > start:
                    kept.append((oldest, chunk))
                    continue
                old = chunk["ts"] <= start
                dropped.append(_take(chunk, old))
                if not old.all():
                    rest = _take(chunk, ~old)
                    kept.append((int(rest["ts"].min()), rest))
            self.inside = kept
            self.sums.update(_concat(dropped), -1.0)


BENCHMARK_INPUTS = ("ts", "p_up", "label_up", "direction", "confidence_raw", "confidence_seed",
                    "confidence_calibrated", "predict_latency_ms", "model_version")  # fmt: skip


SIDE_EXIT_COLUMNS = ("ts", "side_tp1", "side_tp2", "side_tp3", "side_stop", "side_timeout", "side_r")


def side_exit_columns(frame: pd.DataFrame, keep: Sequence[str] = ()) -> pd.DataFrame:
    """The predicted side's exit outcome per call row with a known outcome (``exit_stats_from_labels``'s
    rows): ts, module and side_tp1/_tp2/_tp3/_stop/_timeout (booleans), side_r; and ``frame``'s ``keep``
    columns. Row by row: the rows of a slice of ``frame`` are the same slice of the whole frame's."""
    calls = frame[frame["direction"] != 0]
    side = _side_outcomes(calls)
    known = side["outcome"].notna().to_numpy() & (side["outcome"].astype(str) != "<NA>").to_numpy()
    calls, side = calls[known], side[known]
    out = pd.DataFrame({"module": calls["module"].to_numpy(), "ts": calls["ts"].to_numpy()})
    for k in ("tp1", "tp2", "tp3", "stop"):
        out[f"side_{k}"] = side[k].astype(bool).to_numpy()
    out["side_timeout"] = (side["outcome"].astype(str) == "timeout").to_numpy()
    out["side_r"] = pd.to_numeric(side["r"], errors="coerce").to_numpy(dtype="float64")
    for c in keep:
        out[c] = calls[c].to_numpy()
    return out


def _arrays(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for c in columns:
        if c == "ts":
            out[c] = pd.DatetimeIndex(frame[c]).as_unit("ns").asi8
        elif c in ("direction", "model_version") or c.startswith("side_") and c != "side_r":
            out[c] = frame[c].to_numpy()
        else:
            out[c] = frame[c].to_numpy(dtype="float64", na_value=np.nan)
    return out


class BenchmarkAccumulator:
    """``benchmark_rows`` and ``exit_stats_from_labels`` kept up to date as rows arrive.

    Rows have ``attach_labels``' shape; each is added once to each side, when that side becomes known:
    ``add_labels`` when its ``label_up`` is known (benchmark rows), ``add_exits`` when its exit outcome is
    (exit statistics of the calls). ``rows()`` returns both tables over every row added so far, windows ending at the newest
    labelled bar, as the full recompute over the same rows would.
    """

    def __init__(
        self,
        windows: Sequence[str],
        n_bins: int = DEFAULT_N_BINS,
        score_params: Mapping[str, float] | None = None,
    ) -> None:
        self.windows = list(windows)
        self.spans = {w: window_span(w) for w in self.windows}
        self.n_bins = n_bins
        self.score_params = score_params
        self.bench: dict[str, dict[str, _Window]] = {}
        self.exits: dict[str, dict[str, _Window]] = {}
        self.end: int | None = None

    def _windows(self, store: dict, module: str, sums) -> dict[str, _Window]:
        if module not in store:
            store[module] = {w: _Window(self.spans[w], sums()) for w in self.windows}
        return store[module]

    def add_labels(self, frame: pd.DataFrame) -> None:
        """Rows whose ``label_up`` became known (others are ignored): they count in the benchmark rows."""
        labelled = frame[frame["label_up"].notna()]
        if len(labelled):
            newest = pd.Timestamp(labelled["ts"].max()).as_unit("ns").value
            self.end = newest if self.end is None else max(self.end, newest)
            for module, group in labelled.groupby("module", sort=False):
                rows = _arrays(group, BENCHMARK_INPUTS)
                for w in self._windows(self.bench, module, lambda: _BenchmarkSums(self.n_bins)).values():
                    w.waiting.append(rows)

    def add_exits(self, frame: pd.DataFrame) -> None:
        """Rows whose exit outcome became known (others are ignored): the calls count in the exit stats."""
        self.add_exit_rows(side_exit_columns(frame))

    def add_exit_rows(self, exits: pd.DataFrame) -> None:
        """``add_exits`` of rows already made ``side_exit_columns`` (a caller that adds slices of one frame
        makes them once)."""
        for module, group in exits.groupby("module", sort=False):
            rows = _arrays(group, SIDE_EXIT_COLUMNS)
            for w in self._windows(self.exits, module, _ExitSums).values():
                w.waiting.append(rows)

    def newest_labelled(self) -> pd.Timestamp | None:
        return None if self.end is None else pd.Timestamp(self.end, tz="UTC")

    def rows(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(benchmarks, exit_stats) of every module and window (BENCHMARK_COLUMNS, EXIT_COLUMNS)."""
        if self.end is None:
            return pd.DataFrame(columns=BENCHMARK_COLUMNS), pd.DataFrame(columns=EXIT_COLUMNS)
        end = self.newest_labelled()
        bench, exits = [], []
        for module in sorted(self.bench):
            for name, w in self.bench[module].items():
                w.advance(self.end)
                if w.sums.empty():
                    continue
                start = None if self.spans[name] is None else end - self.spans[name]
                bench.append({"module": module, "window_name": name, "window_start": start, "window_end": end,
                              "model_version": max(w.sums.versions), **w.sums.metrics(self.score_params)})  # fmt: skip
        for module in sorted(self.exits):
            for name, w in self.exits[module].items():
                w.advance(self.end)
                if not w.sums.empty():
                    exits.append(
                        {"module": module, "window_name": name, "basis": "labels", **w.sums.metrics()}
                    )
        return pd.DataFrame(bench, columns=BENCHMARK_COLUMNS), pd.DataFrame(exits, columns=EXIT_COLUMNS)
