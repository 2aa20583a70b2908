"""Strategy selector: momentum or mean reversion per market regime, learned from the training rows.

Two fixed signal scores, each the mean of two inputs standardised by their training spread (so symbols
and intervals pool) and clipped to +-``clip_z``:

- **momentum**: ``mean(ret_20 / s, trend_slope_50 / s)`` - positive means up;
- **mean reversion**: ``-mean((bb_pctb_20 - 0.5) / s, (rsi_14 - 50) / s)`` - stretched up means down.

``fit`` measures, per regime (``market_regime``), each strategy's hit rate (sign of the score vs
label_up, over bars with a non-zero score) and keeps the better one; a regime with fewer than
``min_support`` bars uses ``default_strategy``. P(up) = sigmoid(k * score) of the chosen strategy, with
the slope ``k`` fitted per regime by a 1-D logistic regression without intercept and floored at 0 (a
strategy that loses in a regime gives no opinion there rather than being silently inverted).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from models.signals.base import (
    NO_OPINION,
    SignalModule,
    check_frame,
    float_matrix,
    label_array,
    require_columns,
    sigmoid,
    stack_proba,
)
from models.signals.regime import DEFAULT_ADX_MIN, DEFAULT_SLOPE_MIN, REGIMES, regime_codes


class Strategy(str, Enum):  # noqa: UP042 - the project convention (STYLE.md) is str, Enum
    MOMENTUM = "momentum"
    MEAN_REVERSION = "mean_reversion"


STRATEGIES: tuple[str, ...] = (Strategy.MOMENTUM.value, Strategy.MEAN_REVERSION.value)
# Inputs of each score and the neutral value they are measured from.
_CENTERS = {"ret_20": 0.0, "trend_slope_50": 0.0, "bb_pctb_20": 0.5, "rsi_14": 50.0}


class StrategySelector(SignalModule):
    def __init__(
        self,
        adx_min: float = DEFAULT_ADX_MIN,
        slope_min: float = DEFAULT_SLOPE_MIN,
        min_support: int = 100,
        default_strategy: str = Strategy.MOMENTUM.value,
        clip_z: float = 5.0,
        random_state: int | None = 0,
    ):
        self.adx_min = adx_min
        self.slope_min = slope_min
        self.min_support = min_support
        self.default_strategy = default_strategy
        self.clip_z = clip_z
        self.random_state = random_state

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        """(rows, 2) momentum and mean-reversion scores; NaN where an input is missing."""
        z = {
            col: np.clip(
                (float_matrix(X, (col,))[:, 0] - center) / self.scales_[col], -self.clip_z, self.clip_z
            )
            for col, center in _CENTERS.items()
        }
        momentum = (z["ret_20"] + z["trend_slope_50"]) / 2.0
        reversion = -(z["bb_pctb_20"] + z["rsi_14"]) / 2.0
        return np.column_stack([momentum, reversion])

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> StrategySelector:
        X = check_frame(X)
        require_columns(X, tuple(_CENTERS), "StrategySelector")
        if self.default_strategy not in STRATEGIES:
            raise ValueError(f"default_strategy must be one of {STRATEGIES}, got {self.default_strategy!r}")
        label_ok, labels = label_array(y, len(X))
        self.scales_ = {}
        for col, center in _CENTERS.items():
            values = float_matrix(X.loc[label_ok], (col,))[:, 0] - center
            spread = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
            self.scales_[col] = spread if spread > 0 else 1.0
        scores = self._scores(X)
        codes = regime_codes(X, self.adx_min, self.slope_min)
        direction = 2.0 * labels - 1.0
        records = []
        self.strategy_index_ = np.zeros(len(REGIMES), dtype=np.int64)
        self.slope_ = np.zeros(len(REGIMES))
        for r, regime in enumerate(REGIMES):
            in_regime = label_ok & (codes == r) & ~np.isnan(scores).any(axis=1)
            n = int(in_regime.sum())
            hit = []
            for s in range(len(STRATEGIES)):
                called = in_regime & (scores[:, s] != 0)
                hit.append(
                    float((np.sign(scores[called, s]) == direction[called]).mean())
                    if called.any()
                    else np.nan
                )
            if n >= self.min_support and not np.isnan(hit).all():
                chosen = int(np.nanargmax(hit))
            else:
                chosen = STRATEGIES.index(self.default_strategy)
            slope = 0.0
            if n > 0 and len(np.unique(labels[in_regime])) == 2:
                fit = LogisticRegression(fit_intercept=False, max_iter=200, random_state=self.random_state)
                fit.fit(scores[in_regime, chosen : chosen + 1], labels[in_regime])
                slope = max(float(fit.coef_[0, 0]), 0.0)
            self.strategy_index_[r] = chosen
            self.slope_[r] = slope
            records.append((regime, n, hit[0], hit[1], STRATEGIES[chosen], slope))
        self.strategies_ = pd.DataFrame.from_records(
            records,
            columns=["regime", "n", "momentum_hit_rate", "mean_reversion_hit_rate", "strategy", "slope"],
        )
        self._mark_fitted()
        return self

    def strategy_for(self, X: pd.DataFrame) -> pd.Series:
        """The strategy chosen for each bar's regime; NaN where the regime is unknown."""
        X = check_frame(X)
        codes = regime_codes(X, self.adx_min, self.slope_min)
        names = np.array([STRATEGIES[i] for i in self.strategy_index_] + [None], dtype=object)
        return pd.Series(names[codes], index=X.index, name="strategy")  # code -1 picks the trailing None

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        X = check_frame(X)
        codes = regime_codes(X, self.adx_min, self.slope_min)
        scores = self._scores(X)
        known = codes >= 0
        chosen = np.zeros(len(X))
        chosen[known] = scores[known, self.strategy_index_[codes[known]]]
        slope = np.where(known, self.slope_[np.where(known, codes, 0)], 0.0)
        p_up = np.where(known & np.isfinite(chosen), sigmoid(slope * np.nan_to_num(chosen)), NO_OPINION)
        p_up[slope * np.nan_to_num(chosen) == 0.0] = NO_OPINION
        return stack_proba(p_up)
