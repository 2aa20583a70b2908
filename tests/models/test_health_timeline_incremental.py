"""The health timeline's incremental pieces equal the full recompute they replace, on random inputs.

Each test drives the incremental code over a random clock (forwards, and back) and compares it at every
step with the plain computation over the same rows that the health flow makes (or that the timeline made
before it kept state between runs), to 1e-9 or exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from models import health as h
from models import health_timeline as ht
from qtrader.settings import HealthSettings, Settings

CFG = HealthSettings()


def _features(rng: np.random.Generator, n_bars: int, symbols: int, cols: list[str]) -> pd.DataFrame:
    """Feature rows of ``n_bars`` daily bars, some symbols missing on some bars, some values NaN."""
    times = pd.date_range("2024-01-01", periods=n_bars, freq="D", tz="UTC")
    rows = [(f"S{j}", t) for t in times for j in range(symbols) if rng.random() > 0.1]
    f = pd.DataFrame(rows, columns=["symbol", "ts"]).assign(interval="1d")
    for i, c in enumerate(cols):
        x = rng.normal(0.02 * i, 1.0 + 0.1 * i, len(f)).cumsum() / 20 + rng.normal(0, 1, len(f))
        x[rng.random(len(f)) < 0.05] = np.nan
        f[c] = x
    return f


def _old_recent(idx, interval: str, now: pd.Timestamp, bars: int) -> pd.DataFrame:
    """The timeline's recent rows before the per-bar counts: the window's rows as a frame."""
    f, ts, times = idx.features[interval]
    k = int(np.searchsorted(times, now.value, side="right"))
    if k == 0:
        return f.iloc[0:0]
    lo = int(np.searchsorted(ts, times[max(0, k - bars)], side="left"))
    hi = int(np.searchsorted(ts, times[k - 1], side="right"))
    return f.iloc[lo:hi]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drift_from_per_bar_counts_equals_the_window_recount(seed):
    rng = np.random.default_rng(seed)
    cols = ["a", "b", "c", "d", "e"]
    feats = _features(rng, 160, 12, cols)
    frames = ht.MarketFrames(bars=pd.DataFrame(columns=["symbol", "interval", "ts"]), features=feats,
                             predictions=pd.DataFrame(columns=["module", "interval", "predicted_at"]),
                             registry=pd.DataFrame())  # fmt: skip
    idx = ht._index(frames)
    times = idx.features["1d"][2]
    # two references (two champions' training windows), one of them without a column the rows have
    refs = [
        h.DriftReference.from_frame(feats.iloc[:600], cols, CFG.drift_tail, 20),
        h.DriftReference.from_frame(feats.iloc[300:900], ["b", "d", "e"], CFG.drift_tail, 20),
    ]
    clock = [*range(0, 160, 1), *rng.integers(0, 160, 40)]  # bar by bar, then jumps back and forth
    compared = 0
    for k in clock:
        now = pd.Timestamp(int(times[k]), tz="UTC")
        bars = int(rng.integers(1, 40))
        mine = ht._recent_features(idx, "1d", now, bars)
        old = _old_recent(idx, "1d", now, bars)
        pd.testing.assert_frame_equal(mine.rows(), old)
        for ref in refs:
            for min_rows in (1, 30):
                a = h.out_of_range_shares(ref, mine, min_rows)
                b = h.out_of_range_shares(ref, old, min_rows)
                pd.testing.assert_series_equal(a, b, check_exact=False, rtol=0, atol=1e-12)
                compared += len(b)
    assert compared > 1000


def test_sorted_quantile_is_numpys_quantile():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        v = np.sort(np.round(rng.lognormal(0, 1, int(rng.integers(1, 400))), int(rng.integers(0, 3))))
        q = float(rng.choice([0.95, 0.5, rng.random()]))
        assert ht.sorted_quantile(v, q) == np.quantile(v, q)


def _old_predictions_at(frames: ht.MarketFrames, now: pd.Timestamp) -> pd.DataFrame:
    """The timeline's newest predict runs before it fed rows as they become readable: every row scanned."""
    rows = []
    for (module, interval), g in frames.predictions.groupby(["module", "interval"], sort=True):
        g = g.sort_values("predicted_at", kind="stable")
        p = g["p_up"].to_numpy(dtype="float64")
        ok = np.isfinite(p) & (p >= 0) & (p <= 1)
        codes, runs = pd.factorize(g["run_id"])
        ts, at, stored = ht._ns(g["ts"]), ht._ns(g["predicted_at"]), ht._ns(g["stored_at"])
        lat = g["predict_latency_ms"].to_numpy(dtype="float64")
        seen = np.flatnonzero((ts <= now.value) & (stored <= now.value))
        if len(seen) == 0:
            continue
        last = seen[-1]
        valid = seen[ok[seen]]
        run = seen[codes[seen] == codes[last]]
        run_lat = lat[run][ok[run]]
        rows.append(
            {
                "module": module, "interval": interval,
                "newest_ts": pd.Timestamp(int(ts[valid].max()), tz="UTC") if len(valid) else pd.NaT,
                "run_id": runs[codes[last]], "predicted_at": pd.Timestamp(int(at[last]), tz="UTC"),
                "rows": int(ok[run].sum()), "bad": 0, "quarantined": int((~ok[run]).sum()),
                "latency_p95_ms": float(np.quantile(run_lat, 0.95)) if len(run_lat) else np.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=ht._EMPTY_PRED)


def _predictions(rng: np.random.Generator, n_bars: int) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Predictions of three modules: walk-forward runs made at a retrain for earlier bars (readable at
    once), live runs made bar by bar, and a retrain's period readable bar by bar (``stored_at`` = bar),
    with failed rows (NaN or out-of-range P(up)) and some NaN latencies."""
    times = pd.date_range("2024-01-01", periods=n_bars, freq="D", tz="UTC")
    parts = []
    for module in ("a", "b", "c"):
        for r, start in enumerate(range(0, n_bars, 25)):
            made = times[start]
            back = times[max(0, start - 20) : start]  # walk-forward rows of earlier bars
            ahead = times[start : start + 25]  # the period, each row readable from its bar
            for bars, stored in ((back, [made] * len(back)), (ahead, list(ahead))):
                for sym in ("X", "Y", "Z"):
                    if not len(bars) or rng.random() < 0.2:
                        continue
                    n = len(bars)
                    p = rng.random(n)
                    p[rng.random(n) < 0.1] = np.nan
                    p[rng.random(n) < 0.05] = 1.5
                    lat = rng.lognormal(1, 0.5, n).round(1)
                    lat[rng.random(n) < 0.03] = np.nan
                    parts.append(pd.DataFrame({
                        "symbol": sym, "interval": "1d", "ts": bars, "module": module, "model_version": r,
                        "p_up": p, "predict_latency_ms": lat, "run_id": f"{module}-r{r}",
                        "predicted_at": made, "stored_at": stored,
                    }))  # fmt: skip
    return pd.concat(parts, ignore_index=True), times


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_newest_predict_runs_fed_as_they_become_readable_equal_the_full_scan(seed):
    rng = np.random.default_rng(seed)
    preds, times = _predictions(rng, 120)
    frames = ht.MarketFrames(bars=pd.DataFrame(columns=["symbol", "interval", "ts"]),
                             features=pd.DataFrame(columns=["symbol", "interval", "ts"]), predictions=preds,
                             registry=pd.DataFrame())  # fmt: skip
    idx = ht._index(frames)
    clock = [*times, *rng.choice(times, 30), *times[60:]]  # bar by bar, then back and forth
    seen_runs = set()
    for now in clock:
        for now_ in (now - pd.Timedelta(hours=1), now):
            mine, old = ht._predictions_at(idx, now_), _old_predictions_at(frames, now_)
            pd.testing.assert_frame_equal(mine, old, check_exact=True)
            seen_runs |= set(old["run_id"])
    assert len(seen_runs) > 10


@pytest.mark.parametrize("seed", [0, 1])
def test_newest_benchmark_rows_give_the_health_flows_pick_of_the_whole_table(seed):
    """The timeline keeps the newest benchmark row per (module, interval, window) instead of the whole
    table: at every clock from a pass on, the health flow's pick (``_benchmarks_at``) is the same."""
    from tasks.backtest import newest_benchmarks

    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=80, freq="D", tz="UTC")

    def pass_rows(t: pd.Timestamp) -> pd.DataFrame:
        keys = [(m, iv, w) for m in ("a", "b", "c") for iv in ("1d", "5m") for w in ("30d", "24h", "all")]
        keys = [k for k in keys if rng.random() > 0.3]  # a module without labels yet writes no row
        return pd.DataFrame({
            "module": [k[0] for k in keys], "interval": [k[1] for k in keys], "window_name": [k[2] for k in keys],
            "accuracy": rng.random(len(keys)), "n": rng.integers(1, 500, len(keys)), "coverage": rng.random(len(keys)),
            "auc": rng.random(len(keys)), "computed_at": t, "run_id": f"b-{t:%m%d}",
        })  # fmt: skip

    stored = pass_rows(times[0] - pd.Timedelta(days=3))  # as read at a retrain
    full, compact = stored.copy(), stored.copy()
    for t in times[::3]:
        written = pass_rows(t)
        full = pd.concat([full, written], ignore_index=True)
        compact = newest_benchmarks(compact, written)
        assert len(compact) <= 18
        for now in (t, t + pd.Timedelta(days=1)):
            # one row per (module, interval): health reads them by key, in any order
            a, b = (ht._benchmarks_at(f, now, CFG).sort_values(["module", "interval"]).reset_index(drop=True)
                    for f in (compact, full))  # fmt: skip
            assert len(b)
            pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_module_stats_kept_per_pass_equal_the_warehouse_read(warehouse_path):
    """The decision step's module stats (newest accuracy, score and exit hit rates of the source module in
    its window), carried from pass to pass, equal ``latest_module_stats`` over the table the passes wrote."""
    from qtrader.settings import load_settings
    from tasks.backtest import latest_module_stats, module_stats_after, stats_window
    from tasks.benchmark import benchmark_table_rows
    from warehouse.models import write_benchmarks

    s = load_settings(warehouse=str(warehouse_path))
    source, window = s.decision.source_module, stats_window(s, "1d")
    rng = np.random.default_rng(0)
    stats = None
    for k, t in enumerate(pd.date_range("2024-01-01", periods=25, freq="5D", tz="UTC")):
        keys = [(m, w) for m in (source, "regime") for w in (window, "all") if rng.random() > 0.35]
        nan = rng.random(len(keys)) < 0.2
        bench = pd.DataFrame({"module": [m for m, _ in keys], "window_name": [w for _, w in keys], "window_end": t,
                              "n": rng.integers(1, 100, len(keys)), "accuracy": np.where(nan, np.nan, rng.random(len(keys))),
                              "performance_score": rng.random(len(keys)) * 100})  # fmt: skip
        ex = bench[["module", "window_name"]].assign(
            basis="labels",
            n=5,
            tp1_rate=rng.random(len(keys)),
            tp2_rate=np.where(nan, np.nan, 0.2),
            tp3_rate=0.1,
        )
        ex = ex[rng.random(len(ex)) > 0.3]  # a module with labels but no exit outcome yet
        b, e = benchmark_table_rows("1d", bench, ex, f"b{k}", t)
        write_benchmarks(warehouse_path, b, e)
        stats = (
            latest_module_stats(s, warehouse_path, "1d")
            if stats is None
            else module_stats_after(s, "1d", stats, b, e)
        )
        assert stats == latest_module_stats(s, warehouse_path, "1d"), f"pass {k}"
    assert stats["accuracy"] is not None and stats["tp1"] is not None


def test_rows_by_key_are_to_dicts_records():
    """``_by_key`` reads columns as lists instead of ``to_dict("records")``: the same first row per key."""
    frame = pd.DataFrame({
        "module": ["a", "b", "a", "c"], "interval": ["1d", "1d", "1d", "5m"], "version": [1, 2, 3, 4],
        "rows": [10.0, np.nan, 3.0, 4.0], "at": pd.to_datetime(["2024-01-01", None, "2024-01-02", "2024-01-03"], utc=True),
        "metrics": [{"accuracy": 0.5}, None, "{}", {"n": 3}], "ok": [True, False, True, True],
        "name": pd.array(["x", None, "y", "z"], dtype="string"),
    })  # fmt: skip
    frame["n"] = pd.array([None, 2, 3, 4], dtype="Int64")
    want: dict = {}
    for row in frame.to_dict("records"):
        want.setdefault((str(row["module"]), str(row["interval"])), row)
    got = h._by_key(frame)
    assert list(got) == list(want)
    for k in want:
        assert got[k].keys() == want[k].keys()
        for c, v in want[k].items():
            w = got[k][c]
            assert (
                (pd.isna(v) and pd.isna(w)) if not isinstance(v, dict) and pd.isna(v) is True else w == v
            ), c
            assert type(w) is type(v), (c, type(w), type(v))


def _old_learn(tl: ht.HealthTimeline, now: pd.Timestamp) -> dict:
    """The thresholds flow in memory before thresholds were kept for unchanged series: all relearned."""
    from models.thresholds import learn_threshold

    t = tl.settings.thresholds
    window = tl._window((now - pd.Timedelta(days=t.history_days)).value, now.value)
    watched = sorted(set(tl.settings.alerts.metrics) | {"latency_ms"})
    keys = set(window) | {(m, x) for m in tl.modules for x in watched}
    return {
        (m, x): learn_threshold(window.get((m, x), (None, np.empty(0)))[1], tl.specs[x], t)
        for m, x in sorted(keys)
        if x in tl.specs
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_thresholds_kept_for_unchanged_series_equal_relearning_them_all(seed):
    from qtrader.settings import load_settings

    s = load_settings(thresholds={"min_history": 5, "history_days": 20})
    tl = ht.HealthTimeline(s, ["a", "b"], ["1d"])
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=90, freq="D", tz="UTC")
    metrics = ["latency_ms", "accuracy", "health_score", "model_age_hours", "data_lag_bars"]
    for k, now in enumerate(times):
        points = []
        for m in ("a", "b", "c"):  # "c": a module with history but not monitored
            for x in metrics:
                if rng.random() < 0.3:
                    continue
                # latency and accuracy stamped at their event (often the same fact again), others at now
                at = times[max(0, k - int(rng.integers(0, 6)))] if x in ("latency_ms", "accuracy") else now
                v = float(np.round(rng.normal(50, 10), 0)) if rng.random() > 0.05 else np.nan
                points.append({"module": m, "metric": x, "ts": at, "value": v})
        tl._append(pd.DataFrame(points, columns=["module", "metric", "ts", "value"]))
        for clock in (now, now - pd.Timedelta(days=int(rng.integers(0, 30)))):
            tl.learn(clock)
            assert tl.thresholds == _old_learn(tl, clock), f"bar {k} at {clock}"
    assert sum(not v.is_default for v in tl.thresholds.values()) > 5


def _old_health_view_at(s, timeline, run):
    """tasks.backtest.health_view_at before it sorted the rows' values instead of the frame."""
    import json

    from tasks.decide import health_view
    from tasks.health import health_rows

    rows = health_rows(s, run.assessments, run.overall, run.gates, run.thresholds, run.now)
    rows["drivers"] = [
        d if d is None or isinstance(d, str) else json.dumps(d, default=str) for d in rows["drivers"]
    ]
    rows = rows.assign(_o=rows["module"] != "overall").sort_values(
        ["_o", "score", "module"], na_position="first", kind="stable"
    )
    return health_view(rows, tuple(timeline.active_alerts()))


def test_health_view_of_a_run_is_the_one_read_from_its_rows():
    from models.health import Component, ComponentScore, ModuleAssessment, module_score, overall_score
    from models.thresholds import default_threshold, metric_specs
    from qtrader.settings import load_settings
    from tasks.backtest import health_view_at

    s = load_settings()
    cfg = s.health
    rng = np.random.default_rng(0)
    modules = ["patterns", "volatility", "regime", "selector", "imbalance", "direction", "ensemble"]
    tl = ht.HealthTimeline(s, modules, ["1d"])
    for k in range(60):
        assessments = {}
        for m in rng.permutation(modules):
            comps = [
                ComponentScore(c, None if rng.random() < 0.2 else float(rng.choice([100.0, 0.0, rng.uniform(0, 100)])),
                               1.0, 0.0, 1.0, f"{c} detail")
                for c in Component
            ]  # fmt: skip
            if rng.random() < 0.1:
                comps = [ComponentScore(c.name, None, None, 0.0, 1.0, "") for c in comps]  # no score at all
            if rng.random() < 0.2 and assessments:  # a tie with another module's score
                comps = list(next(iter(assessments.values())).health.components)
            assessments[str(m)] = ModuleAssessment(
                module_score(str(m), comps, cfg.weights, cap_margin=cfg.cap_margin), {}
            )
        now = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=k)
        overall = overall_score({m: a.health.score for m, a in assessments.items()}, cfg.module_weights)
        # learned health baselines for some modules and the overall row, defaults for others
        spec = metric_specs(s)["health_score"]
        thresholds = {
            (m, "health_score"): dataclasses.replace(default_threshold(spec), value=float(rng.uniform(20, 90)),
                                                     is_default=bool(rng.random() < 0.3))
            for m in [*modules, "overall"] if rng.random() < 0.6
        }  # fmt: skip
        run = ht.HealthSnapshot(now, assessments, overall, ht.trade_gates(s, list(assessments), thresholds),
                                pd.DataFrame(), [], None, thresholds)  # fmt: skip
        mine, old = health_view_at(s, tl, run), _old_health_view_at(s, tl, run)
        assert mine == old
        assert list(mine.modules) == list(old.modules) and list(mine.drivers) == list(old.drivers)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_drift_summary_is_the_out_of_range_series_mean_max_and_first_feature(seed):
    """Measuring reads (mean, largest, its feature) of the drift shares without their Series: the same
    floats and, among tied features (many shares are exactly 0), the same first one."""
    rng = np.random.default_rng(seed)
    compared = 0
    for _ in range(200):
        cols = [f"f{i}" for i in range(int(rng.integers(1, 40)))]
        train = pd.DataFrame(rng.normal(0, 1, (400, len(cols))), columns=cols)
        recent = pd.DataFrame(rng.normal(rng.choice([0.0, 0.3, 2.0]), 1, (int(rng.integers(0, 80)), len(cols))),
                              columns=cols)  # fmt: skip
        recent[recent > 2.5] = np.nan
        ref = h.DriftReference.from_frame(train, cols, 0.01, 20)
        min_rows = int(rng.choice([1, 30]))
        summary, want = h.drift_summary(ref, recent, min_rows), h.out_of_range_shares(ref, recent, min_rows)
        if not len(want):
            assert summary is None
            continue
        assert summary == (float(want.mean()), float(want.iloc[0]), str(want.index[0]))
        compared += 1
    assert compared > 100


@pytest.mark.parametrize("seed", [0, 1])
def test_benchmarks_memo_is_the_pick_at_every_clock(seed):
    """``_benchmarks_memo`` (the frame's stamps sorted once, the pick redone when the rows by the clock
    change) equals ``_benchmarks_at`` at clocks going forwards and back, on a frame kept and on new
    frames, a NaT stamp included."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=40, freq="D", tz="UTC")
    idx = ht._Index(ht.MarketFrames(*(pd.DataFrame(columns=c) for c in (
        ["symbol", "interval", "ts", "close"], ["symbol", "interval", "ts"],
        ["symbol", "interval", "ts", "module", "model_version", "p_up", "predict_latency_ms", "run_id",
         "predicted_at"], ["module"]))))  # fmt: skip

    def table(n: int) -> pd.DataFrame:
        at = pd.Series(times[rng.integers(0, len(times), n)])
        at[rng.random(n) < 0.05] = pd.NaT
        return pd.DataFrame({
            "module": rng.choice(["a", "b"], n), "interval": rng.choice(["1d", "5m"], n),
            "window_name": rng.choice(["30d", "24h", "all"], n), "accuracy": rng.random(n),
            "n": rng.integers(1, 500, n), "coverage": rng.random(n), "computed_at": at,
        })  # fmt: skip

    frame = table(30)
    checked = 0
    for _ in range(200):
        if rng.random() < 0.1:
            frame = table(int(rng.integers(1, 40)))
        now = times[int(rng.integers(0, len(times)))] + pd.Timedelta(hours=int(rng.integers(-12, 12)))
        mine = ht._benchmarks_memo(idx, frame, now, CFG)
        full = ht._benchmarks_at(frame, now, CFG).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, full)
        checked += len(full) > 0
    assert checked > 100


def test_drift_samples_are_kept_for_the_current_champions_only():
    """A backtest's timeline steps through dozens of retrains, each promoting a new training window: the
    drift samples (each a view that keeps a whole feature frame alive) and their references are kept for
    the windows of the champions in force, not for every window seen (issue 13: peak RSS grew with them)."""
    from tests.models import _health_market as hm

    market = hm.build(hm.synthetic("1d", 4, years=3.7), retrain_every=21, benchmark_every=5, warmup=780)
    reg = market.frames.registry
    windows = reg.loc[reg["status"] == "champion", "train_end"].nunique()
    assert windows >= 3  # the market promotes a new window every third retrain
    tl = ht.HealthTimeline(Settings(), hm.MODULES, ["1d"])
    cached, refs = [], []
    for t in market.times[market.first_eval :: 3]:
        tl.step(market.frames, t)
        cached.append(len(tl._train_cache))
        refs.append(len({k[-1] for k in tl._references if k[0] != "rows by key"}))
    assert max(cached) == 1, cached  # every module's champion shares its retrain's window here
    assert max(refs) == 1, refs  # the drift references of that one sample
