"""Volatility structure engine: the volatility state (for exits), expansion odds, and a directional view.

Volatility state per bar (``vol_state``), with ``atr_pct_rank_252`` as a percentile rank in [0, 1]:

- **HIGH_VOLATILITY** if ``atr_pct_rank_252 >= high_rank`` or ``rv_ratio_5_20 >= burst_ratio``
  (the level is in the top of its year, or short-term realised vol just jumped above the 20-bar one);
- **LOW_VOLATILITY** else if ``atr_pct_rank_252 <= low_rank`` and ``rv_ratio_20_60 <= calm_ratio``
  (the level is in the bottom of its year and not rising);
- **NORMAL** otherwise, including bars with missing inputs (the neutral state: exits keep their defaults).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import pandas as pd

from models.signals.base import (
    LinearSignalModule,
    check_frame,
    float_matrix,
    linear_pipeline,
    optional_array,
    require_columns,
)
from models.signals.columns import VOL_STRUCTURE

DEFAULT_HIGH_RANK = 0.80
DEFAULT_LOW_RANK = 0.20
DEFAULT_BURST_RATIO = 1.5
DEFAULT_CALM_RATIO = 1.0


class VolState(str, Enum):  # noqa: UP042 - the project convention (STYLE.md) is str, Enum
    HIGH_VOLATILITY = "HIGH_VOLATILITY"
    NORMAL = "NORMAL"
    LOW_VOLATILITY = "LOW_VOLATILITY"


def vol_state(
    features: pd.DataFrame,
    high_rank: float = DEFAULT_HIGH_RANK,
    low_rank: float = DEFAULT_LOW_RANK,
    burst_ratio: float = DEFAULT_BURST_RATIO,
    calm_ratio: float = DEFAULT_CALM_RATIO,
) -> pd.Series:
    """The volatility state per bar (rule in the module docstring); values are ``VolState`` strings."""
    inputs = ("atr_pct_rank_252", "rv_ratio_5_20", "rv_ratio_20_60")
    require_columns(features, inputs, "vol_state")
    values = float_matrix(features, inputs)
    rank, burst, trend = values[:, 0], values[:, 1], values[:, 2]
    high = (rank >= high_rank) | (burst >= burst_ratio)
    low = ~high & (rank <= low_rank) & (trend <= calm_ratio)
    state = np.where(high, VolState.HIGH_VOLATILITY.value, VolState.NORMAL.value).astype(object)
    state[low] = VolState.LOW_VOLATILITY.value
    return pd.Series(state, index=features.index, name="vol_state")


class VolatilityModule(LinearSignalModule):
    """Directional view: logistic regression of label_up on the volatility-structure features.

    Expansion: with ``fwd_ret`` passed to ``fit``, a second logistic regression on the same features
    learns P(expansion), where a bar "expands" when its forward move relative to current volatility,
    ``|fwd_ret| / rv_20``, exceeds that ratio's median over the training rows (scale-free: a constant
    annualisation factor in rv_20 cancels against the median).
    """

    def __init__(
        self,
        columns: tuple[str, ...] = VOL_STRUCTURE,
        high_rank: float = DEFAULT_HIGH_RANK,
        low_rank: float = DEFAULT_LOW_RANK,
        burst_ratio: float = DEFAULT_BURST_RATIO,
        calm_ratio: float = DEFAULT_CALM_RATIO,
        C: float = 1.0,
        clip_z: float = 5.0,
        max_nan_fraction: float = 0.5,
        random_state: int | None = 0,
    ):
        self.columns = columns
        self.high_rank = high_rank
        self.low_rank = low_rank
        self.burst_ratio = burst_ratio
        self.calm_ratio = calm_ratio
        self.C = C
        self.clip_z = clip_z
        self.max_nan_fraction = max_nan_fraction
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> VolatilityModule:
        design, complete, _ = self._fit_linear(X, y)
        self.expansion_model_ = None
        self.expansion_threshold_ = float("nan")
        fwd = optional_array(fwd_ret, len(X), "fwd_ret")
        if fwd is not None:
            require_columns(X, ("rv_20",), "VolatilityModule")
            rv = float_matrix(X, ("rv_20",))[:, 0]
            ratio = np.abs(fwd) / np.where(rv > 0, rv, np.nan)
            rows = complete & np.isfinite(ratio)
            if rows.sum() >= 2:
                self.expansion_threshold_ = float(np.median(ratio[rows]))
                target = (ratio[rows] > self.expansion_threshold_).astype(np.int8)
                if len(np.unique(target)) == 2:
                    model = linear_pipeline(self.C, self.clip_z, self.random_state)
                    self.expansion_model_ = model.fit(design[rows], target)
        return self

    def vol_state(self, X: pd.DataFrame) -> pd.Series:
        return vol_state(X, self.high_rank, self.low_rank, self.burst_ratio, self.calm_ratio)

    def predict_expansion_proba(self, X: pd.DataFrame) -> pd.Series:
        """P(the forward move is larger than usual for the current volatility); NaN where not scorable."""
        if getattr(self, "expansion_model_", None) is None:
            raise ValueError("VolatilityModule: expansion needs fit(X, y, fwd_ret=...)")
        X = check_frame(X)
        design = float_matrix(X, self.columns_)
        complete = ~np.isnan(design).any(axis=1)
        out = np.full(len(X), np.nan)
        if complete.any():
            out[complete] = self.expansion_model_.predict_proba(design[complete])[:, 1]
        return pd.Series(out, index=X.index, name="p_expansion")
