"""Market regime (bull / bear / sideways): the rule other stages reuse, and the risk-mode predictor.

The rule (``market_regime``), from features known at the bar:

- **bull**: ``adx_14 >= adx_min`` and ``trend_slope_50 > slope_min``
- **bear**: ``adx_14 >= adx_min`` and ``trend_slope_50 < -slope_min``
- **sideways**: otherwise (no trend strong enough, or a slope within ``+-slope_min``)
- unknown (NaN) when either input is missing (warm-up).

ADX 20 is Wilder's usual "trending" threshold; ``slope_min = 0`` makes the rule independent of how
trend_slope_50 is scaled (only its sign is used).

The risk-mode predictor (``RegimeModule``) forecasts the *forward* regime instead: a multinomial logistic
regression on trend features, trained against the regime of the forward return (see its docstring).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import pandas as pd

from models.signals.base import (
    NO_OPINION,
    SignalModule,
    check_frame,
    float_matrix,
    label_array,
    linear_pipeline,
    optional_array,
    require_columns,
    stack_proba,
    usable_columns,
)
from models.signals.columns import TREND

DEFAULT_ADX_MIN = 20.0
DEFAULT_SLOPE_MIN = 0.0


class Regime(str, Enum):  # noqa: UP042 - the project convention (STYLE.md) is str, Enum
    BULL = "bull"
    BEAR = "bear"
    SIDEWAYS = "sideways"


# Integer codes used internally (index into REGIMES); -1 = unknown.
REGIMES: tuple[str, ...] = (Regime.BULL.value, Regime.BEAR.value, Regime.SIDEWAYS.value)
UNKNOWN = -1


def regime_codes(
    features: pd.DataFrame, adx_min: float = DEFAULT_ADX_MIN, slope_min: float = DEFAULT_SLOPE_MIN
) -> np.ndarray:
    """The rule as int8 codes: 0 bull, 1 bear, 2 sideways, -1 unknown."""
    require_columns(features, ("adx_14", "trend_slope_50"), "market_regime")
    values = float_matrix(features, ("adx_14", "trend_slope_50"))
    adx, slope = values[:, 0], values[:, 1]
    trending = adx >= adx_min
    codes = np.full(len(features), 2, dtype=np.int8)
    codes[trending & (slope > slope_min)] = 0
    codes[trending & (slope < -slope_min)] = 1
    codes[np.isnan(adx) | np.isnan(slope)] = UNKNOWN
    return codes


def market_regime(
    features: pd.DataFrame, adx_min: float = DEFAULT_ADX_MIN, slope_min: float = DEFAULT_SLOPE_MIN
) -> pd.Series:
    """The rule regime per bar: 'bull' / 'bear' / 'sideways', NaN where the inputs are missing."""
    codes = regime_codes(features, adx_min, slope_min)
    labels = np.array([*REGIMES, None], dtype=object)[codes]  # code -1 picks the trailing None
    return pd.Series(labels, index=features.index, name="regime")


class RegimeModule(SignalModule):
    """Risk-mode predictor: P(bull), P(bear), P(sideways) of the forward move, and P(up) from them.

    Target. With ``fwd_ret`` (the forward return over the label horizon) passed to ``fit``: bull when
    ``fwd_ret > q``, bear when ``fwd_ret < -q``, sideways otherwise, where ``q`` is the
    ``sideways_quantile`` quantile of ``|fwd_ret|`` over the training rows (scale-free, so symbols and
    intervals pool; the default 1/3 gives three roughly equal classes). Without ``fwd_ret`` the target
    degrades to bull = label_up, bear = not label_up (P(sideways) is then 0).

    P(up) = sum over regimes of P(regime) * up_rate(regime), where up_rate is the share of label_up among
    the training rows of that forward regime: 1 for bull and 0 for bear when the label and fwd_ret share
    the horizon, and about 0.5 for sideways, i.e. ``P(bull) + ~0.5 * P(sideways)``.
    """

    def __init__(
        self,
        columns: tuple[str, ...] = TREND,
        sideways_quantile: float = 1 / 3,
        C: float = 1.0,
        clip_z: float = 5.0,
        max_nan_fraction: float = 0.5,
        random_state: int | None = 0,
    ):
        self.columns = columns
        self.sideways_quantile = sideways_quantile
        self.C = C
        self.clip_z = clip_z
        self.max_nan_fraction = max_nan_fraction
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> RegimeModule:
        X = check_frame(X)
        require_columns(X, self.columns, "RegimeModule")
        label_ok, labels = label_array(y, len(X))
        fwd = optional_array(fwd_ret, len(X), "fwd_ret")
        self.columns_ = usable_columns(X.loc[label_ok], self.columns, self.max_nan_fraction)
        design = float_matrix(X, self.columns_)
        rows = label_ok & ~np.isnan(design).any(axis=1)
        if fwd is not None:
            rows &= ~np.isnan(fwd)
            self.sideways_band_ = float(np.quantile(np.abs(fwd[rows]), self.sideways_quantile))
            target = np.full(len(X), 2, dtype=np.int8)
            target[fwd > self.sideways_band_] = 0
            target[fwd < -self.sideways_band_] = 1
        else:
            self.sideways_band_ = float("nan")
            target = np.where(labels == 1, 0, 1).astype(np.int8)
        if len(np.unique(target[rows])) < 2:
            raise ValueError("RegimeModule: needs at least two forward regimes in the training rows")
        self.model_ = linear_pipeline(self.C, self.clip_z, self.random_state).fit(design[rows], target[rows])
        self.up_rate_ = {
            REGIMES[k]: float(labels[rows][target[rows] == k].mean()) if (target[rows] == k).any() else 0.5
            for k in range(len(REGIMES))
        }
        self.n_train_ = int(rows.sum())
        self._mark_fitted()
        return self

    def predict_regime_proba(self, X: pd.DataFrame) -> pd.DataFrame:
        """P(bull), P(bear), P(sideways) per row; NaN for rows with missing inputs."""
        X = check_frame(X)
        design = float_matrix(X, self.columns_)
        complete = ~np.isnan(design).any(axis=1)
        out = np.full((len(X), len(REGIMES)), np.nan)
        if complete.any():
            proba = self.model_.predict_proba(design[complete])
            out[complete] = 0.0
            for j, k in enumerate(self.model_.classes_):
                out[complete, int(k)] = proba[:, j]
        return pd.DataFrame(out, index=X.index, columns=list(REGIMES))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        regimes = self.predict_regime_proba(X).to_numpy()
        up_rate = np.array([self.up_rate_[r] for r in REGIMES])
        p_up = regimes @ up_rate
        return stack_proba(np.where(np.isnan(p_up), NO_OPINION, p_up))
