"""Benchmark windows, calibration scoring on the predicted side, exit statistics and label attachment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.evaluation import (
    attach_labels,
    benchmark_rows,
    exit_stats_from_labels,
    newest_labelled,
    window_metrics,
    window_span,
)
from models.labels import BarrierProfile, make_labels
from sources.base import FetchRequest
from sources.synthetic import SyntheticSource

END = pd.Timestamp("2026-10-29", tz="UTC")


def test_window_span():
    assert window_span("30d") == pd.Timedelta(days=30) and window_span("24h") == pd.Timedelta(hours=24)
    assert window_span("all") is None
    for bad in ("month", "-3d", "0d"):
        with pytest.raises(ValueError, match="benchmark window"):
            window_span(bad)


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.8, n)
    p[:20] = 0.5  # no opinion
    y = (rng.uniform(size=n) < p).astype(float)
    conf = np.maximum(p, 1 - p)
    return pd.DataFrame(
        {
            "module": "m",
            "ts": END - pd.to_timedelta(np.arange(n) % 100, unit="D"),
            "p_up": p,
            "label_up": y,
            "direction": np.sign(p - 0.5).astype(int),
            "confidence_raw": conf,
            "confidence_seed": np.where(p == 0.5, 0.5, 0.55),
            "confidence_calibrated": conf,
            "predict_latency_ms": rng.uniform(0.01, 0.02, n),
            "model_version": 1 + (np.arange(n) % 2),
        }
    )


def test_benchmark_rows_count_each_window_and_score_the_predicted_side():
    frame = _frame()
    rows = benchmark_rows(frame, ["7d", "30d", "all"], END).set_index("window_name")
    assert rows.loc["7d", "n"] == 7 * 4 and rows.loc["30d", "n"] == 30 * 4 and rows.loc["all", "n"] == 400
    assert rows.loc["all", "window_start"] is None or pd.isna(rows.loc["all", "window_start"])
    assert rows.loc["30d", "window_start"] == END - pd.Timedelta(days=30)
    assert (rows["model_version"] == 2).all()
    # Well-calibrated by construction: raw ECE is small, a constant 0.55 (seed column here) is worse.
    all_ = rows.loc["all"]
    assert all_["ece_raw"] < 0.08 and all_["ece_raw"] == all_["ece_calibrated"]
    assert all_["brier_seed"] > all_["brier_raw"]
    assert all_["latency_p50_ms"] <= all_["latency_p95_ms"]
    assert 0 <= all_["performance_score"] <= 100
    m = window_metrics(frame)
    assert m["coverage"] == pytest.approx(380 / 400)


def test_exit_stats_read_the_predicted_side_and_skip_no_opinion_and_unknown_outcomes():
    frame = pd.DataFrame(
        {
            "module": "m",
            "ts": [END] * 5,
            "direction": [1, -1, 0, 1, -1],
            "long_outcome": ["tp2", "stop", "tp3", None, "tp1"],
            "long_tp1": [True, False, True, None, True],
            "long_tp2": [True, False, True, None, False],
            "long_tp3": [False, False, True, None, False],
            "long_stop": [False, True, False, None, False],
            "long_r": [0.667, -1.0, 0.667, np.nan, 0.667],
            "short_outcome": ["stop", "timeout", "stop", None, "tp1"],
            "short_tp1": [False, False, False, None, True],
            "short_tp2": [False, False, False, None, False],
            "short_tp3": [False, False, False, None, False],
            "short_stop": [True, False, True, None, False],
            "short_r": [-1.0, 0.2, -1.0, np.nan, 0.667],
        }
    )
    stats = exit_stats_from_labels(frame, ["all"], END).iloc[0]
    # Calls: row 0 long tp2, row 1 short timeout, row 4 short tp1 (row 2 no opinion, row 3 unknown).
    assert stats["n"] == 3 and stats["basis"] == "labels"
    assert stats["tp1_rate"] == pytest.approx(2 / 3) and stats["tp2_rate"] == pytest.approx(1 / 3)
    assert (
        stats["tp3_rate"] == 0 and stats["stop_rate"] == 0 and stats["timeout_rate"] == pytest.approx(1 / 3)
    )
    assert stats["avg_r"] == pytest.approx((0.667 + 0.2 + 0.667) / 3)


def test_attach_labels_uses_each_rows_horizon_and_the_exit_profile():
    end = pd.Timestamp("2026-10-30", tz="UTC")
    bars = (
        SyntheticSource(seed=5)
        .fetch(FetchRequest(["AAA", "BBB"], "1d", end - pd.Timedelta(days=120), end))
        .bars
    )
    bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    bars["atr_14"] = (bars["high"] - bars["low"]).rolling(14).mean()
    preds = bars[["symbol", "ts"]].copy()
    preds["label_horizon"] = np.where(preds.index % 2 == 0, 1, 5)
    profile = BarrierProfile(horizon=10)
    out = attach_labels(preds, bars, profile)
    for h in (1, 5):
        truth = make_labels(bars, BarrierProfile(horizon=h), atr=bars["atr_14"])["label_up"]
        rows = (preds["label_horizon"] == h).to_numpy()
        np.testing.assert_array_equal(out.loc[rows, "label_up"].to_numpy(), truth[rows].to_numpy())
    exits = make_labels(bars, profile, atr=bars["atr_14"])
    assert (out["long_outcome"].fillna("-") == exits["long_outcome"].fillna("-")).all()
    assert newest_labelled(out) == bars.loc[out["label_up"].notna(), "ts"].max()


# ------------------------------------------------------------------------- incremental == full recompute


def _timeline_frame(seed: int = 3, bars: int = 160, symbols: int = 4) -> pd.DataFrame:
    """Predictions of three modules on a daily calendar with labels and exit outcomes, and the bar at which
    each becomes known (label horizon per module, an exit horizon of its own)."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2026-01-01", periods=bars, freq="D", tz="UTC")
    rows = []
    for m, horizon in (("a", 1), ("b", 5), ("c", 3)):
        for s in range(symbols):
            n = bars
            p = np.round(rng.uniform(0.2, 0.8, n), 2)  # rounded: ties in the AUC ranks
            p[rng.uniform(size=n) < 0.1] = 0.5
            y = (rng.uniform(size=n) < p).astype(float)
            up = p >= 0.5
            outcome = rng.choice(["tp1", "tp2", "tp3", "stop", "timeout"], n)
            r = rng.normal(0, 1, n)
            r[rng.uniform(size=n) < 0.05] = np.nan
            frame = pd.DataFrame({
                "module": m, "symbol": f"S{s}", "ts": days, "p_up": p, "label_up": y,
                "direction": np.where(p == 0.5, 0, np.where(up, 1, -1)),
                "confidence_raw": np.maximum(p, 1 - p),
                "confidence_seed": np.clip(np.maximum(p, 1 - p) * 0.9, 0.5, 1.0),
                "confidence_calibrated": rng.uniform(0.4, 1.0, n),
                "predict_latency_ms": np.where(rng.uniform(size=n) < 0.05, np.nan, rng.uniform(0.1, 5.0, n)),
                "model_version": 1 + np.arange(n) // 40 + (s % 2),
                "label_known_at": days + pd.Timedelta(days=horizon),
                "exit_known_at": days + pd.Timedelta(days=4),
            })  # fmt: skip
            for side in ("long", "short"):
                o = outcome if side == "long" else rng.choice(["tp1", "stop", "timeout"], n)
                frame[f"{side}_outcome"] = pd.array(o, dtype="str")
                for k in ("tp1", "tp2", "tp3"):
                    frame[f"{side}_{k}"] = pd.array(
                        np.isin(o, ["tp1", "tp2", "tp3"][["tp1", "tp2", "tp3"].index(k) :])
                    )
                frame[f"{side}_stop"] = pd.array(o == "stop")
                frame[f"{side}_r"] = r if side == "long" else -r
            rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def _as_known(frame: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    """The frame as a full recompute at ``t`` sees it: labels and outcomes not known yet are missing."""
    out = frame[frame["ts"] <= t].copy()
    out.loc[out["label_known_at"] > t, "label_up"] = np.nan
    late = out["exit_known_at"] > t
    for side in ("long", "short"):
        out[f"{side}_outcome"] = out[f"{side}_outcome"].astype(object).where(~late, None)
        for k in ("tp1", "tp2", "tp3", "stop"):
            out.loc[late, f"{side}_{k}"] = pd.NA
        out.loc[late, f"{side}_r"] = np.nan
    return out


def _assert_rows_equal(mine: pd.DataFrame, full: pd.DataFrame, what: str) -> None:
    assert list(mine.columns) == list(full.columns)
    assert len(mine) == len(full), f"{what}: {len(mine)} rows, the full recompute {len(full)}"
    for col in full.columns:
        a, b = mine[col].tolist(), full[col].tolist()
        for x, y in zip(a, b, strict=True):
            if isinstance(y, float | np.floating) and isinstance(x, float | np.floating):
                assert (np.isnan(x) and np.isnan(y)) or abs(x - y) <= 1e-9, f"{what} {col}: {x} != {y}"
            else:
                assert (pd.isna(x) and pd.isna(y)) if pd.isna(y) is True else x == y, (
                    f"{what} {col}: {x} != {y}"
                )


def test_the_accumulator_equals_the_full_recompute_at_every_pass():
    from models.evaluation import BenchmarkAccumulator

    frame = _timeline_frame()
    windows = ["7d", "30d", "all"]
    acc = BenchmarkAccumulator(windows, n_bins=10, score_params={"w_accuracy": 0.5, "w_auc": 0.3,
                                                                 "w_calibration": 0.2})  # fmt: skip
    days = sorted(frame["ts"].unique())
    fed_labels = fed_exits = pd.Series(False, index=frame.index)
    passes = 0
    for k, t in enumerate(days):
        if k % 3:
            continue
        labels = (frame["label_known_at"] <= t) & ~fed_labels
        exits = (frame["exit_known_at"] <= t) & ~fed_exits
        acc.add_labels(frame[labels])
        acc.add_exits(frame[exits])
        fed_labels, fed_exits = fed_labels | labels, fed_exits | exits
        known = _as_known(frame, t)
        end = newest_labelled(known)
        assert acc.newest_labelled() == end
        if end is None:
            continue
        bench, ex = acc.rows()
        params = {"w_accuracy": 0.5, "w_auc": 0.3, "w_calibration": 0.2}
        _assert_rows_equal(bench, benchmark_rows(known, windows, end, 10, params), f"pass {k} benchmarks")
        _assert_rows_equal(ex, exit_stats_from_labels(known, windows, end), f"pass {k} exit stats")
        passes += 1
    assert passes > 40


class _JoinedWindow:
    """models.evaluation._Window before it kept the rows inside as chunks (joined and split every pass)."""

    def __init__(self, span, sums) -> None:
        self.span = None if span is None else span.value
        self.sums = sums
        self.waiting, self.inside = [], []

    def advance(self, end: int) -> None:
        from models.evaluation import _concat, _take

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
                    self.inside.append(new)
        if start is not None and self.inside:
            inside = _concat(self.inside)
            old = inside["ts"] <= start
            self.inside = [_take(inside, ~old)] if (~old).any() else []
            if old.any():
                self.sums.update(_take(inside, old), -1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_windows_kept_as_chunks_give_the_joined_windows_rows_exactly(seed):
    """The rows inside a sliding window kept as the chunks they arrived in (a pass splits only those the
    start reached) give bit for bit the rows of the window that joined and split them all every pass:
    the sums see the same rows dropped, in the same order. Rows arrive out of ts order (labels known at
    different horizons), several passes without a new row included."""
    import models.evaluation as ev

    frame = _timeline_frame(seed)
    order = np.random.default_rng(seed).permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    windows = ["7d", "30d", "all"]
    params = {"w_accuracy": 0.5, "w_auc": 0.3, "w_calibration": 0.2}

    class Joined(ev.BenchmarkAccumulator):
        def _windows(self, store, module, sums):
            if module not in store:
                store[module] = {w: _JoinedWindow(self.spans[w], sums()) for w in self.windows}
            return store[module]

    mine = ev.BenchmarkAccumulator(windows, n_bins=10, score_params=params)
    joined = Joined(windows, n_bins=10, score_params=params)
    days = sorted(frame["ts"].unique())
    fed_labels = fed_exits = pd.Series(False, index=frame.index)
    passes = 0
    for k, t in enumerate(days):
        if k % 2:
            continue
        labels = (frame["label_known_at"] <= t) & ~fed_labels
        exits = (frame["exit_known_at"] <= t) & ~fed_exits
        for acc in (mine, joined):
            acc.add_labels(frame[labels])
            acc.add_exits(frame[exits])
        fed_labels, fed_exits = fed_labels | labels, fed_exits | exits
        if mine.newest_labelled() is None:
            continue
        for a, b in zip(mine.rows(), joined.rows(), strict=True):
            assert list(a.columns) == list(b.columns) and len(a) == len(b)
            for col in a.columns:
                x, y = a[col].to_numpy(), b[col].to_numpy()
                if x.dtype.kind == "f":
                    assert x.tobytes() == y.tobytes(), f"pass {k} {col}: {x} != {y}"
                else:
                    assert x.tolist() == y.tolist(), f"pass {k} {col}"
        passes += len(mine.rows()[1]) > 0
    assert passes > 20
