"""Derived columns that turn the features suite's rules into simple column expectations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.features import DAILY_CONTEXT_COLUMNS, FINITE_FROM_ROW, PATTERN_COLUMNS, feature_dtypes


def features_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame the features suite validates: the features plus

    - ``nonfinite_after_warmup``: non-finite own feature values of a bar with at least FINITE_FROM_ROW
      bars of history before it (``bar_number``), 0 during warm-up. Daily context (d_ columns) may be
      missing where the daily history is shorter than the intraday one, so it is not counted;
    - ``pattern_abs_max``: the largest |value| among the 61 candlestick pattern columns.
    """
    dtypes = feature_dtypes()
    own = [c for c, t in dtypes.items() if str(t) == "float64" and c not in DAILY_CONTEXT_COLUMNS]
    values = frame[own].to_numpy(dtype=np.float64)
    nonfinite = (~np.isfinite(values)).sum(axis=1)
    warm = frame["bar_number"].to_numpy() >= FINITE_FROM_ROW
    patterns = np.abs(frame[PATTERN_COLUMNS].to_numpy(dtype=np.int16)).max(axis=1)
    return frame.assign(nonfinite_after_warmup=np.where(warm, nonfinite, 0), pattern_abs_max=patterns)
