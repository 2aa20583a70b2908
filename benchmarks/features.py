"""Feature throughput: compute_features_many on 500 symbols x 10 years of daily random-walk bars (~1.26M rows).

Generation is excluded from the timing. Target on a 2-core machine: <= 10 s. Labels (make_labels) are timed
too, for reference.

    .venv/bin/python benchmarks/features.py [--symbols 500] [--years 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, peak_rss_mib  # noqa: E402
from models.features import WARMUP_BARS, compute_features_many, feature_columns  # noqa: E402
from models.labels import make_labels  # noqa: E402
from qtrader.calendar import expected_bars  # noqa: E402

TARGET_S = 10.0
END = pd.Timestamp("2026-10-30", tz="UTC")


def random_walk_bars(symbols: int, years: int, seed: int) -> pd.DataFrame:
    """Daily OHLCV random walks on XNYS sessions, every symbol at its own price and volatility."""
    ts = expected_bars("1d", END - pd.DateOffset(years=years), END)
    n, rng = len(ts), np.random.default_rng(seed)
    price = np.exp(rng.uniform(np.log(5), np.log(500), symbols))[:, None]
    vol = rng.uniform(0.008, 0.04, symbols)[:, None]
    c = price * np.exp(np.cumsum(rng.normal(0, 1, (symbols, n)) * vol, axis=1))
    o = np.concatenate([price, c[:, :-1]], axis=1) * np.exp(rng.normal(0, 1, (symbols, n)) * vol / 4)
    hi = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 1, (symbols, n))) * vol / 2)
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 1, (symbols, n))) * vol / 2)
    return pd.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], n),
            "interval": "1d",
            "ts": np.tile(ts, symbols),
            "open": o.ravel(),
            "high": hi.ravel(),
            "low": lo.ravel(),
            "close": c.ravel(),
            "volume": rng.lognormal(13, 0.7, symbols * n).round(),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    bars = random_walk_bars(args.symbols, args.years, args.seed)
    gen_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    feats = compute_features_many(bars)
    feat_s = time.perf_counter() - t1
    rss_after_features = peak_rss_mib()

    t2 = time.perf_counter()
    make_labels(bars, atr=None)
    label_s = time.perf_counter() - t2

    rows = len(bars)
    finite = np.isfinite(feats[feature_columns()[:5]].to_numpy()).mean()
    print(f"machine: {describe()}")
    print(
        f"bars: {args.symbols} symbols x {args.years} years daily = {rows:,} rows (generated in {gen_s:.1f} s)"
    )
    print(
        f"features: {len(feature_columns())} columns, WARMUP_BARS={WARMUP_BARS}, finite share (first 5) {finite:.3f}"
    )
    verdict = "OK" if feat_s <= TARGET_S else "SLOWER THAN TARGET"
    print(
        f"compute_features_many: {feat_s:.2f} s wall, {rows / feat_s:,.0f} rows/s "
        f"(target <= {TARGET_S:.0f} s: {verdict}); peak RSS {rss_after_features:,.0f} MiB"
    )
    print(f"make_labels (for reference): {label_s:.2f} s wall, {rows / label_s:,.0f} rows/s")
    print(f"peak RSS overall: {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
