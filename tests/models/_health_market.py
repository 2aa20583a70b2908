"""A market with a working system on it, in memory, for the health property tests.

``build`` makes the frames a health run reads (``models.health_timeline.MarketFrames``) for a synthetic
market (sources/synthetic.py: trend, market-wide regimes, the planted component) as the live system and
the backtest leave them:

- bars and their features (models/features.py; intraday rows with their daily context);
- six member modules predicting every bar (the decision flow's predictions), each from the planted
  component with its own strength and noise, with a recorded predict latency; a module abstains
  (P(up) exactly 0.5) when its edge is under 0.02;
- the ensemble (models/signals/ensemble.combine of the members) written only by the retrains, as the
  retrain flow writes it (the decision flow combines the members itself and stores no ensemble rows);
- a retrain every ``retrain_every`` bars that registers a version of every module: the first one and
  every third one promoted (a new training window), the others kept as challengers while the champion
  is confirmed;
- benchmarks every ``benchmark_every`` bars (accuracy of the called predictions over the window);

and ``Fault`` changes those frames from a bar on. ``run`` drives ``HealthTimeline`` over the clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.features import compute_features_many
from models.health_timeline import HealthTimeline, MarketFrames
from models.signals.ensemble import combine, ensemble_p_up
from qtrader.calendar import is_daily
from sources.base import FetchRequest
from sources.synthetic import SyntheticSource, close_zscore, planted_tilt

MEMBERS = ["patterns", "volatility", "regime", "selector", "imbalance", "direction"]
ENSEMBLE = "ensemble"
MODULES = [*MEMBERS, ENSEMBLE]
END = pd.Timestamp("2026-10-30", tz="UTC")
# (strength of the planted tilt in P(up), noise sd, base p95 latency in ms) per member
PROFILE = {
    "patterns": (0.04, 0.03, 3.0), "volatility": (0.06, 0.03, 2.0), "regime": (0.08, 0.04, 2.5),
    "selector": (0.10, 0.04, 1.5), "imbalance": (0.05, 0.03, 2.0), "direction": (0.12, 0.05, 6.0),
}  # fmt: skip
ABSTAIN_EDGE = 0.02
CREEP_BARS = 156  # latency_creep: two sessions of 5-minute bars from 1x to 5x


@dataclass(frozen=True)
class Fault:
    kind: str  # data_stops | raises | nan | latency_x5 | latency_creep | coin_flip | shift
    module: str | None = None  # None: the whole market
    at: int = 0  # bar index (in the bar times) from which the fault holds


@dataclass
class Market:
    interval: str
    times: pd.DatetimeIndex  # every bar time (the clock)
    frames: MarketFrames
    first_eval: int  # index of the first bar after the warm-up (the first retrain)
    retrain_every: int
    meta: dict = field(default_factory=dict)


def synthetic(
    interval: str, n_symbols: int, *, years: float = 4.0, sessions: int = 30, seed: int = 7,
    trend: float = 0.0, market_regime: bool = False, signal_strength: float = 0.12,
) -> pd.DataFrame:  # fmt: skip
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    if is_daily(interval):
        start = END - pd.Timedelta(days=int(365.25 * years))
    else:
        start = END - pd.Timedelta(days=int(sessions * 7 / 5) + 3)
    src = SyntheticSource(seed=seed, signal_strength=signal_strength, trend=trend, market_regime=market_regime,
                          trend_start=start.tz_localize(None), now=END + pd.Timedelta(days=1))  # fmt: skip
    bars = src.fetch(FetchRequest(symbols, interval, start, END)).bars
    return bars.sort_values(["symbol", "ts"]).reset_index(drop=True)


def shifted(bars: pd.DataFrame, at_ts: pd.Timestamp, vol: float = 3.0, drift_sd: float = 0.5) -> pd.DataFrame:
    """From ``at_ts`` on, every bar's log return is ``vol`` x larger and drifts ``drift_sd`` of its own
    standard deviation per bar (a shift in the distribution of returns and volatility)."""
    out = []
    for _, g in bars.groupby("symbol", sort=False):
        g = g.copy()
        lc = np.log(g["close"].to_numpy())
        r = np.diff(lc, prepend=lc[0])
        after = (g["ts"] >= at_ts).to_numpy()
        sd = r[~after][1:].std()
        r2 = np.where(after, vol * r + drift_sd * sd, r)
        new = lc[0] + np.cumsum(r2) - r2[0]
        ratio = np.exp(new - lc)
        for c in ("open", "high", "low", "close"):
            g[c] = g[c] * ratio
        out.append(g)
    return pd.concat(out, ignore_index=True)


def _member_p_up(features: pd.DataFrame, bars: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """P(up) per member for every feature row, from the planted component of the bar's close."""
    z = np.concatenate([close_zscore(g["close"].to_numpy()) for _, g in bars.groupby("symbol", sort=True)])
    key = bars.sort_values(["symbol", "ts"])[["symbol", "ts"]].assign(z=z)
    zz = features[["symbol", "ts"]].merge(key, on=["symbol", "ts"], how="left")["z"].to_numpy()
    tilt = planted_tilt(np.nan_to_num(zz))
    out = {}
    for i, m in enumerate(MEMBERS):
        strength, noise, _ = PROFILE[m]
        rng = np.random.default_rng([seed, i, 11])
        p = np.clip(0.5 + strength * tilt + noise * rng.standard_normal(len(tilt)), 0.01, 0.99)
        out[m] = np.where(np.abs(p - 0.5) < ABSTAIN_EDGE, 0.5, p)
    return out


def _accuracy(p: np.ndarray, label: np.ndarray) -> tuple[float, int, float]:
    ok = np.isfinite(p) & np.isfinite(label)
    p, label = p[ok], label[ok]
    called = p != 0.5
    if not called.any():
        return np.nan, int(len(p)), 0.0
    acc = float(((p[called] > 0.5) == (label[called] > 0.5)).mean())
    return acc, int(len(p)), float(called.mean())


def build(
    bars: pd.DataFrame,
    *,
    retrain_every: int,
    benchmark_every: int,
    warmup: int,
    faults: tuple[Fault, ...] = (),
    seed: int = 3,
    train_bars: int = 750,
    embargo: int = 6,
    valid_bars: int | None = None,
    latency_noise: float = 0.1,
) -> Market:
    interval = str(bars["interval"].iloc[0])
    daily = is_daily(interval)
    times = pd.DatetimeIndex(np.sort(bars["ts"].unique()))
    valid_bars = valid_bars or (63 if daily else 78)
    for f in faults:
        if f.kind == "shift":
            bars = shifted(bars, times[f.at])
    features = compute_features_many(
        bars[["symbol", "interval", "ts", "open", "high", "low", "close", "volume"]]
    )
    if not daily:  # the daily context of each intraday row, from the same market's daily bars
        from models.features import add_daily_context

        syms = sorted(bars["symbol"].unique())
        src = SyntheticSource(seed=7, now=END + pd.Timedelta(days=1))
        dbars = src.fetch(FetchRequest(syms, "1d", times[0] - pd.Timedelta(days=500), END)).bars
        features = add_daily_context(features, compute_features_many(dbars))
    features = features.sort_values(["ts", "symbol"]).reset_index(drop=True)
    # labels: did the next bar close higher
    b = bars.sort_values(["symbol", "ts"])
    nxt = b.groupby("symbol")["close"].shift(-1)
    labels = b[["symbol", "ts"]].assign(label=np.where(nxt.notna(), (nxt > b["close"]).astype(float), np.nan))
    p_up = _member_p_up(features, bars, seed)
    keys = features[["symbol", "ts"]].copy()
    lab = keys.merge(labels, on=["symbol", "ts"], how="left")["label"].to_numpy()
    t_index = pd.Series(np.arange(len(times)), index=times)
    bar_i = t_index.reindex(keys["ts"]).to_numpy()
    rng = np.random.default_rng([seed, 99])
    lat_noise = np.exp(latency_noise * rng.standard_normal((len(MEMBERS), len(times))))

    def fault_for(kind: str, module: str | None) -> Fault | None:
        return next((f for f in faults if f.kind == kind and f.module in (module, None)), None)

    # member predictions, one run per bar (the decision flow)
    preds = []
    for i, m in enumerate(MEMBERS):
        p = p_up[m].copy()
        lat = PROFILE[m][2] * lat_noise[i, bar_i]
        keep = np.ones(len(p), dtype=bool)
        if (f := fault_for("coin_flip", m)) is not None:
            coin = np.random.default_rng([seed, i, 5]).uniform(0.35, 0.65, len(p))
            p = np.where(bar_i >= f.at, coin, p)
        if (f := fault_for("nan", m)) is not None:
            p = np.where(bar_i >= f.at, np.nan, p)
        if (f := fault_for("latency_x5", m)) is not None:
            lat = np.where(bar_i >= f.at, 5 * lat, lat)
        if (f := fault_for("latency_creep", m)) is not None:  # 1x to 5x over CREEP_BARS bars, then 5x
            lat = lat * (1 + 4 * np.clip((bar_i - f.at) / CREEP_BARS, 0, 1))
        if (f := fault_for("raises", m)) is not None:
            keep &= bar_i < f.at
        p_up[m] = np.where(keep, p, np.nan) if fault_for("raises", m) else p
        preds.append(
            pd.DataFrame({
                "symbol": keys["symbol"].to_numpy()[keep], "interval": interval, "ts": keys["ts"].to_numpy()[keep],
                "module": m, "model_version": 1, "p_up": p[keep], "predict_latency_ms": lat[keep],
                "run_id": [f"decide-{t}" for t in bar_i[keep]], "predicted_at": keys["ts"].to_numpy()[keep],
            })
        )  # fmt: skip

    # retrains: every module registers a version; the first and every third retrain promote
    probas = pd.DataFrame({m: p_up[m] for m in MEMBERS})
    ens_p = ensemble_p_up(combine(probas)).to_numpy()
    p_up[ENSEMBLE] = ens_p
    registry, confirmations = [], []
    champion: dict[str, dict] = {}
    for k, r in enumerate(range(warmup, len(times), retrain_every)):
        t_r = times[r]
        run_id = f"retrain-{k}"
        train_end = times[max(0, r - valid_bars - embargo)]
        train_start = times[max(0, r - valid_bars - embargo - train_bars)]
        valid = (bar_i > r - valid_bars - 1) & (bar_i < r)  # labels known by the retrain
        for m in MODULES:
            if (f := fault_for("raises", m)) is not None and r >= f.at:
                continue
            acc, n, cov = _accuracy(p_up[m][valid], lab[valid])
            promote = k % 3 == 0 or m not in champion
            version = k + 1
            row = {
                "module": m, "interval": interval, "version": version, "trained_at": t_r,
                "train_start": train_start, "train_end": train_end, "feature_set_version": "v1",
                "metrics": json.dumps({"accuracy": acc, "n": n, "coverage": cov}),
                "status": "champion" if promote else "challenger", "run_id": run_id,
            }  # fmt: skip
            registry.append(row)
            if promote:
                champion[m] = row
            else:
                confirmations.append({"module": m, "interval": interval, "version": champion[m]["version"],
                                      "confirmed_at": t_r, "run_id": run_id})  # fmt: skip
        # the retrain writes the ensemble's predictions (walk-forward and the newest bars)
        span = (bar_i > r - retrain_every) & (bar_i <= r)
        if (f := fault_for("raises", ENSEMBLE)) is None or r < f.at:
            preds.append(
                pd.DataFrame({
                    "symbol": keys["symbol"].to_numpy()[span], "interval": interval,
                    "ts": keys["ts"].to_numpy()[span], "module": ENSEMBLE, "model_version": k + 1,
                    "p_up": ens_p[span], "predict_latency_ms": 4.0, "run_id": run_id, "predicted_at": t_r,
                })
            )  # fmt: skip
    predictions = pd.concat(preds, ignore_index=True).sort_values("predicted_at", kind="stable")

    # benchmarks: accuracy of the called predictions over the window ending at the newest labelled bar
    window = pd.Timedelta("30d" if daily else "24h")
    bench = []
    all_p = {m: p_up[m] for m in MODULES}
    for j in range(warmup, len(times), benchmark_every):
        end = times[j - 1]  # the bar before the clock is the newest labelled one
        inside = ((keys["ts"] > end - window) & (keys["ts"] <= end)).to_numpy()
        for m in MODULES:
            sel = inside
            if m == ENSEMBLE:  # only the bars the retrains wrote
                sel = inside & (bar_i <= max([r for r in range(warmup, len(times), retrain_every) if r <= j]))
            acc, n, cov = _accuracy(all_p[m][sel], lab[sel])
            if n == 0 or not np.isfinite(acc):
                continue
            bench.append({"module": m, "interval": interval, "window_name": "30d" if daily else "24h",
                          "accuracy": acc, "n": n, "coverage": cov, "computed_at": times[j]})  # fmt: skip
    frames = MarketFrames(
        bars=bars[["symbol", "interval", "ts", "close"]]
        .sort_values("ts", kind="stable")
        .reset_index(drop=True),
        features=features,
        predictions=predictions.reset_index(drop=True),
        registry=pd.DataFrame(registry),
        confirmations=pd.DataFrame(
            confirmations, columns=["module", "interval", "version", "confirmed_at", "run_id"]
        ),
        benchmarks=pd.DataFrame(bench),
    )
    if (f := fault_for("data_stops", None)) is not None:
        stop = times[f.at]
        frames.bars = frames.bars[frames.bars["ts"] < stop]
        frames.features = frames.features[frames.features["ts"] < stop]
        frames.predictions = frames.predictions[frames.predictions["ts"] < stop]
    return Market(interval, times, frames, warmup, retrain_every)


def run(market: Market, settings, *, every: int = 1, start: int | None = None) -> pd.DataFrame:
    """The timeline over the market's clock: one row per health run (overall and every module's score)."""
    tl = HealthTimeline(settings, MODULES, [market.interval])
    rows = []
    for i in range(start if start is not None else market.first_eval, len(market.times), every):
        snap = tl.step(market.frames, market.times[i])
        row = {"i": i, "ts": market.times[i], "overall": snap.overall, **snap.scores}
        for m, a in snap.assessments.items():
            row[f"{m}.capped_by"] = a.health.capped_by
        for m, g in snap.gates.items():
            row[f"{m}.gate"] = g.value
        row["alerts"] = [(e.module, e.metric, e.severity.value, e.time_to_threshold_hours)
                         for e in snap.evaluations if e.severity is not None]  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)
