"""Candlestick pattern module: the edge of each pattern signal per market regime, ranked into tiers.

A *signal* is (pattern, side, regime): the bars where ``sign(cdl_<name>) == side`` (+1 bullish, -1
bearish; the magnitude 1/2 of TA-Lib's confirmation is ignored) and ``market_regime`` is that regime.
Learned from the training rows only (``fit``), so scoring other rows is out of sample:

- ``n``: bars with the signal; ``hit_rate``: share where the move went the signal's way (label_up for
  side +1, not label_up for side -1); ``base_rate``: the same share over *all* bars of that regime.
- ``edge = hit_rate - base_rate``; ``z = (hits - n * base_rate) / sqrt(n * base_rate * (1 - base_rate) * vif)``
  (binomial z-score against the regime's base rate). Labels look ``label_horizon`` bars ahead, so two
  signals less than that many bars apart share part of their outcome and are not independent; with the
  signal firing on a share ``d = n / bars_in_regime`` of bars, the variance inflation is about
  ``vif = 1 + d * (label_horizon - 1)`` (1 for one-bar labels). Cross-sectional correlation (many symbols
  moving together on one date) is not corrected; the strict z thresholds below absorb some of it.
- tier **S** if ``n >= min_support`` and ``edge >= s_edge`` and ``z >= s_z``; else **A** with
  ``a_edge`` / ``a_z``; else **B** with ``b_edge`` / ``b_z``; else **F** (too rare, no edge, or not
  significant). F signals are ignored when predicting.

The z thresholds are strict on purpose: 61 patterns x 2 sides x 3 regimes are ~366 tests per fit, so
z >= 2 would pass ~8 pure-noise signals; z >= 2.5 passes ~2 and z >= 3 about one in two fits.

``predict_proba`` adds, for the patterns active at a bar in the bar's regime, the tier weight times the
log-odds shift of the signal, ``logit(p_k) - logit(base_up)``, where ``p_k`` is the signal's P(up)
shrunk toward the regime's base rate with ``prior_strength`` pseudo-bars; P(up) = sigmoid(sum). A bar
with no active S/A/B signal, or an unknown regime, gets 0.5 (no opinion: the regime's own drift is the
regime module's job, not this one's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.signals.base import (
    NO_OPINION,
    SignalModule,
    check_frame,
    float_matrix,
    label_array,
    logit,
    require_columns,
    sigmoid,
    stack_proba,
)
from models.signals.columns import pattern_columns
from models.signals.regime import DEFAULT_ADX_MIN, DEFAULT_SLOPE_MIN, REGIMES, regime_codes

TIERS = ("S", "A", "B", "F")
SIDES = (1, -1)


def _signs(X: pd.DataFrame, columns: list[str]) -> np.ndarray:
    values = np.nan_to_num(float_matrix(X, columns), nan=0.0)
    return np.sign(values).astype(np.int8)


class PatternModule(SignalModule):
    def __init__(
        self,
        columns: tuple[str, ...] | None = None,
        adx_min: float = DEFAULT_ADX_MIN,
        slope_min: float = DEFAULT_SLOPE_MIN,
        min_support: int = 30,
        s_edge: float = 0.05,
        s_z: float = 4.0,
        a_edge: float = 0.03,
        a_z: float = 3.0,
        b_edge: float = 0.02,
        b_z: float = 2.5,
        weight_s: float = 1.0,
        weight_a: float = 0.75,
        weight_b: float = 0.5,
        prior_strength: float = 20.0,
        label_horizon: int = 20,  # bars label_up looks ahead; models/labels.py's default horizon is 20
        random_state: int | None = 0,
    ):
        self.columns = columns
        self.adx_min = adx_min
        self.slope_min = slope_min
        self.min_support = min_support
        self.s_edge = s_edge
        self.s_z = s_z
        self.a_edge = a_edge
        self.a_z = a_z
        self.b_edge = b_edge
        self.b_z = b_z
        self.weight_s = weight_s
        self.weight_a = weight_a
        self.weight_b = weight_b
        self.prior_strength = prior_strength
        self.label_horizon = label_horizon
        self.random_state = random_state  # unused: the module is deterministic; kept for a uniform API

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> PatternModule:
        X = check_frame(X)
        columns = list(self.columns) if self.columns is not None else pattern_columns(X.columns)
        if not columns:
            raise ValueError("PatternModule: no cdl_* pattern columns in the feature frame")
        require_columns(X, columns, "PatternModule")
        label_ok, labels = label_array(y, len(X))
        codes = regime_codes(X, self.adx_min, self.slope_min)
        rows = label_ok & (codes >= 0)
        signs = _signs(X.loc[rows], columns)
        up = labels[rows].astype(np.float64)
        onehot = (codes[rows][:, None] == np.arange(len(REGIMES))[None, :]).astype(np.float64)
        bars = onehot.sum(axis=0)
        base_up = np.divide(onehot.T @ up, bars, out=np.full(len(REGIMES), 0.5), where=bars > 0)

        weights = {"S": self.weight_s, "A": self.weight_a, "B": self.weight_b, "F": 0.0}
        self.columns_ = columns
        self.base_up_ = dict(zip(REGIMES, base_up.tolist(), strict=True))
        # shift_[side_index, pattern, regime]: weighted log-odds shift the signal adds at predict time.
        self.shift_ = np.zeros((len(SIDES), len(columns), len(REGIMES)))
        records = []
        for s, side in enumerate(SIDES):
            active = (signs == side).astype(np.float64)
            n = active.T @ onehot  # (patterns, regimes)
            ups = active.T @ (onehot * up[:, None])
            hits = ups if side == 1 else n - ups
            base = base_up if side == 1 else 1.0 - base_up  # the base rate of the signal's side
            hit_rate = np.divide(hits, n, out=np.full_like(n, np.nan), where=n > 0)
            edge = hit_rate - base
            density = np.divide(n, bars[None, :], out=np.zeros_like(n), where=bars[None, :] > 0)
            vif = 1.0 + density * max(self.label_horizon - 1, 0)
            spread = np.sqrt(n * base * (1.0 - base) * vif)
            z = np.divide(hits - n * base, spread, out=np.zeros_like(n), where=spread > 0)
            tier = self._tiers(n, edge, z)
            # P(up) of the signal, shrunk toward the regime's base rate so rare signals move P(up) less.
            p_up = (ups + self.prior_strength * base_up) / (n + self.prior_strength)
            tier_weight = np.select([tier == t for t in TIERS], [weights[t] for t in TIERS], 0.0)
            self.shift_[s] = tier_weight * (logit(p_up) - logit(base_up)[None, :])
            for i, name in enumerate(columns):
                for r, regime in enumerate(REGIMES):
                    row = (name, side, regime, int(n[i, r]), hit_rate[i, r], base[r], edge[i, r], z[i, r])
                    records.append((*row, str(tier[i, r])))
        self.tiers_ = pd.DataFrame.from_records(
            records, columns=["pattern", "side", "regime", "n", "hit_rate", "base_rate", "edge", "z", "tier"]
        )
        self.n_train_ = int(rows.sum())
        self._mark_fitted()
        return self

    def _tiers(self, n: np.ndarray, edge: np.ndarray, z: np.ndarray) -> np.ndarray:
        supported = n >= self.min_support
        edge = np.nan_to_num(edge, nan=-1.0)
        return np.select(
            [
                supported & (edge >= self.s_edge) & (z >= self.s_z),
                supported & (edge >= self.a_edge) & (z >= self.a_z),
                supported & (edge >= self.b_edge) & (z >= self.b_z),
            ],
            ["S", "A", "B"],
            default="F",
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        X = check_frame(X)
        require_columns(X, self.columns_, "PatternModule")
        codes = regime_codes(X, self.adx_min, self.slope_min)
        signs = _signs(X, self.columns_)
        score = np.zeros(len(X))
        for r in range(len(REGIMES)):
            in_regime = codes == r
            if not in_regime.any():
                continue
            block = signs[in_regime]
            for s, side in enumerate(SIDES):
                score[in_regime] += (block == side).astype(np.float64) @ self.shift_[s, :, r]
        p_up = np.where(codes >= 0, sigmoid(score), NO_OPINION)
        # Exactly 0.5 when no S/A/B signal is active (sigmoid(0) is 0.5 up to rounding anyway).
        p_up[score == 0.0] = NO_OPINION
        return stack_proba(p_up)

    def active_signals(self, X: pd.DataFrame) -> pd.Series:
        """Comma-separated non-F signals active at each bar (e.g. 'cdl_hammer+'), for review and attribution."""
        X = check_frame(X)
        codes = regime_codes(X, self.adx_min, self.slope_min)
        signs = _signs(X, self.columns_)
        names = np.array(self.columns_, dtype=object)
        out = np.full(len(X), "", dtype=object)
        rows = np.flatnonzero((codes >= 0) & (signs != 0).any(axis=1))
        for i in rows:
            r = codes[i]
            parts = [
                f"{names[j]}{'+' if side == 1 else '-'}"
                for s, side in enumerate(SIDES)
                for j in np.flatnonzero(signs[i] == side)
                if self.shift_[s, j, r] != 0.0
            ]
            out[i] = ",".join(parts)
        return pd.Series(out, index=X.index, name="pattern_signals")
