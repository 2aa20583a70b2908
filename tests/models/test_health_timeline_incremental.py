"""The health timeline's incremental pieces equal the full recompute they replace, on random inputs.

Each test drives the incremental code over a random clock (forwards, and back) and compares it at every
step with the plain computation over the same rows that the health flow makes (or that the timeline made
before it kept state between runs), to 1e-9 or exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import health as h
from models import health_timeline as ht
from qtrader.settings import HealthSettings

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
