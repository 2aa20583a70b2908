"""Ensemble: combine the modules' P(up) into a direction, a consensus type and a raw confidence.

Per row (``combine``):

- a module **votes** when its P(up) is known, its weight is positive, and ``|p - 0.5| >= min_edge``;
  it votes up when ``p > 0.5`` and down when ``p < 0.5``;
- ``voters`` = number of voting modules; the **majority side** is the side with more votes (by count,
  so a single heavy module cannot outvote the others); ``agree`` = votes for that side;
- ``f = agree / voters`` and the consensus type is, first match wins:
  **NONE** if ``voters < min_voters``; **UNANIMOUS** if ``f == 1``; **STRONG** if ``f >= strong``
  (0.75); **WEAK** if ``f > weak`` (0.5); **SPLIT** otherwise (a tie);
- ``direction`` = +1 / -1 for the majority side, 0 for SPLIT and NONE;
- ``confidence`` = weighted mean, over the agreeing voters, of their probability for the ensemble's
  side (P(up) for up, 1 - P(up) for down), so it lies in [0.5 + min_edge, 1]; 0 when direction is 0;
- ``contributors`` = the agreeing modules' names, comma-separated in column order (P&L attribution).

Weights (e.g. from benchmarked accuracy, see ``accuracy_weights``) only scale the confidence and, at
zero, remove a module from the vote. Missing names weigh 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import numpy as np
import pandas as pd

from models.signals.base import NO_OPINION, SignalModule, check_frame, stack_proba
from qtrader.settings import DEFAULT_SIGNAL_MEMBERS, SignalSettings


class ConsensusType(str, Enum):  # noqa: UP042 - the project convention (STYLE.md) is str, Enum
    UNANIMOUS = "UNANIMOUS"
    STRONG = "STRONG"
    WEAK = "WEAK"
    SPLIT = "SPLIT"
    NONE = "NONE"


_S = SignalSettings()  # the defaults' only home is qtrader/settings.py
DEFAULT_MIN_EDGE = _S.ensemble_min_edge
DEFAULT_STRONG = _S.ensemble_strong
DEFAULT_WEAK = _S.ensemble_weak
DEFAULT_MIN_VOTERS = _S.ensemble_min_voters
DEFAULT_MEMBERS = tuple(DEFAULT_SIGNAL_MEMBERS)
COMBINED_COLUMNS = ["direction", "consensus", "confidence", "voters", "agree", "contributors"]


def combine(
    probas: pd.DataFrame,
    weights: Mapping[str, float] | None = None,
    min_edge: float = DEFAULT_MIN_EDGE,
    strong: float = DEFAULT_STRONG,
    weak: float = DEFAULT_WEAK,
    min_voters: int = DEFAULT_MIN_VOTERS,
) -> pd.DataFrame:
    """One row per input row: direction, consensus, confidence, voters, agree, contributors."""
    names = [str(c) for c in probas.columns]
    p = probas.to_numpy(dtype="float64", na_value=np.nan)
    w = np.array([float((weights or {}).get(name, 1.0)) for name in names])
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)

    votes = np.isfinite(p) & (np.abs(p - 0.5) >= min_edge) & (w > 0)[None, :]
    up = votes & (p > 0.5)
    down = votes & (p < 0.5)
    n_up, n_down = up.sum(axis=1), down.sum(axis=1)
    voters = n_up + n_down
    agree = np.maximum(n_up, n_down)
    side = np.sign(n_up - n_down).astype(np.int8)
    frac = np.divide(agree, voters, out=np.zeros(len(p)), where=voters > 0)

    consensus = np.select(
        [voters < min_voters, frac >= 1.0, frac >= strong, frac > weak],
        [
            ConsensusType.NONE.value,
            ConsensusType.UNANIMOUS.value,
            ConsensusType.STRONG.value,
            ConsensusType.WEAK.value,
        ],
        default=ConsensusType.SPLIT.value,
    ).astype(object)
    direction = np.where(np.isin(consensus, [ConsensusType.NONE.value, ConsensusType.SPLIT.value]), 0, side)

    agreeing = np.where(direction[:, None] > 0, up, down) & (direction[:, None] != 0)
    side_p = np.where(direction[:, None] > 0, p, 1.0 - p)
    weight = agreeing * w[None, :]
    total = weight.sum(axis=1)
    confidence = np.divide(
        (weight * np.nan_to_num(side_p)).sum(axis=1), total, out=np.zeros(len(p)), where=total > 0
    )

    return pd.DataFrame(
        {
            "direction": direction.astype(np.int8),
            "consensus": consensus,
            "confidence": confidence,
            "voters": voters.astype(np.int64),
            "agree": np.where(direction != 0, agree, 0).astype(np.int64),
            "contributors": _contributors(agreeing, names),
        },
        index=probas.index,
    )


def _contributors(agreeing: np.ndarray, names: list[str]) -> np.ndarray:
    """Comma-joined names per row, built once per distinct agreement pattern rather than once per row."""
    if len(names) > 62:
        raise ValueError("combine supports at most 62 modules")
    # Each row's agreement pattern as one int64 key, a bit per module.
    keys = agreeing.astype(np.int64) @ (np.int64(1) << np.arange(len(names), dtype=np.int64))
    unique, inverse = np.unique(keys, return_inverse=True)
    labels = np.array(
        [",".join(n for i, n in enumerate(names) if (int(key) >> i) & 1) for key in unique], dtype=object
    )
    return labels[inverse.reshape(-1)]


def accuracy_weights(
    accuracy: Mapping[str, float], floor: float = _S.accuracy_weight_floor
) -> dict[str, float]:
    """Module weights from benchmarked accuracy: ``max(accuracy - floor, 0)``, scaled so the best is 1.

    A module at or below ``floor`` (a coin flip by default) gets weight 0 and so stops voting. When no
    module beats the floor every module weighs 1 (no evidence to prefer any).
    """
    edges = {
        name: max(float(acc) - floor, 0.0) if np.isfinite(acc) else 0.0 for name, acc in accuracy.items()
    }
    best = max(edges.values(), default=0.0)
    if best <= 0:
        return dict.fromkeys(accuracy, 1.0)
    return {name: edge / best for name, edge in edges.items()}


def ensemble_p_up(combined: pd.DataFrame) -> pd.Series:
    """The ensemble's P(up): its confidence on its side (0.5 when it has no direction)."""
    direction = combined["direction"].to_numpy()
    confidence = combined["confidence"].to_numpy(dtype="float64")
    p_up = np.where(direction > 0, confidence, np.where(direction < 0, 1.0 - confidence, NO_OPINION))
    return pd.Series(p_up, index=combined.index, name="p_up")


class EnsembleModule(SignalModule):
    """The member modules fitted together, combined with ``combine``; P(up) from ``ensemble_p_up``.

    ``member_params`` maps a member name to its constructor parameters; every member gets this
    ensemble's ``random_state`` unless its parameters say otherwise.
    """

    def __init__(
        self,
        members: tuple[str, ...] = DEFAULT_MEMBERS,
        member_params: dict[str, dict] | None = None,
        weights: dict[str, float] | None = None,
        min_edge: float = DEFAULT_MIN_EDGE,
        strong: float = DEFAULT_STRONG,
        weak: float = DEFAULT_WEAK,
        min_voters: int = DEFAULT_MIN_VOTERS,
        random_state: int | None = 0,
    ):
        self.members = members
        self.member_params = member_params
        self.weights = weights
        self.min_edge = min_edge
        self.strong = strong
        self.weak = weak
        self.min_voters = min_voters
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> EnsembleModule:
        # Imported here: the registry imports this module to register the ensemble itself.
        from models.signals.registry import make_module

        X = check_frame(X)
        if "ensemble" in self.members:
            raise ValueError("an ensemble cannot contain itself")
        self.modules_ = {}
        for name in self.members:
            params = {"random_state": self.random_state, **(self.member_params or {}).get(name, {})}
            self.modules_[name] = make_module(name, **params).fit(X, y, fwd_ret=fwd_ret)
        self._mark_fitted()
        return self

    def module_probas(self, X: pd.DataFrame) -> pd.DataFrame:
        """P(up) of every member, one column per member."""
        return pd.DataFrame(
            {name: m.predict_proba(X)[:, 1] for name, m in self.modules_.items()}, index=X.index
        )

    def decide(self, X: pd.DataFrame) -> pd.DataFrame:
        """``combine`` of the members' P(up), with the members' columns alongside."""
        probas = self.module_probas(X)
        combined = combine(probas, self.weights, self.min_edge, self.strong, self.weak, self.min_voters)
        return pd.concat([combined, probas.add_prefix("p_")], axis=1)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        probas = self.module_probas(check_frame(X))
        combined = combine(probas, self.weights, self.min_edge, self.strong, self.weak, self.min_voters)
        return stack_proba(ensemble_p_up(combined).to_numpy())
