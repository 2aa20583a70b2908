"""Order-flow imbalance module: logistic regression of label_up on the bar-based imbalance proxies.

Daily and 5-minute bars carry no order book, so the "orderbook imbalance" of the plan is proxied from
bars: the close-location value (where the close sits in the bar's range) and its volume-weighted sums.
"""

from __future__ import annotations

import pandas as pd

from models.signals.base import LinearSignalModule
from models.signals.columns import IMBALANCE


class ImbalanceModule(LinearSignalModule):
    def __init__(
        self,
        columns: tuple[str, ...] = IMBALANCE,
        C: float = 1.0,
        clip_z: float = 5.0,
        max_nan_fraction: float = 0.5,
        random_state: int | None = 0,
    ):
        self.columns = columns
        self.C = C
        self.clip_z = clip_z
        self.max_nan_fraction = max_nan_fraction
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> ImbalanceModule:
        self._fit_linear(X, y)
        return self
