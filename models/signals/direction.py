"""Direction module: gradient-boosted trees on every numeric feature column.

Sized for the daily retrain (100 symbols x 5 years x ~110 features in a few seconds on 2 cores): shallow
trees with large leaves (daily returns are noisy: min_samples_leaf 500 beat 200 out of sample on the
synthetic market), coarse bins, a fixed number of iterations. No early stopping: its validation split is random, which
on time series would score on rows interleaved with the training rows. Trees take NaN natively, so every
row is scored (warm-up rows fall into the learned missing-value branches).

Threads: ``n_threads`` caps OpenMP while fitting and predicting (default 1). Measured on the 2-core
runner with other work running, two OpenMP threads were 5-20x *slower* than one (threads spin at
barriers while their peer is descheduled); parallelism is better spent across modules or symbols.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from models.signals.base import SignalModule, check_frame, label_array, require_columns, stack_proba


class DirectionModule(SignalModule):
    def __init__(
        self,
        columns: tuple[str, ...] | None = None,
        max_iter: int = 100,
        learning_rate: float = 0.05,
        max_depth: int | None = 4,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 500,
        l2_regularization: float = 1.0,
        max_bins: int = 63,
        n_threads: int | None = 1,
        random_state: int | None = 0,
    ):
        self.columns = columns
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.n_threads = n_threads
        self.random_state = random_state

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        values = np.array(X.loc[:, self.columns_].to_numpy(dtype="float32", na_value=np.nan), copy=True)
        values[~np.isfinite(values)] = np.nan
        return values

    def fit(self, X: pd.DataFrame, y: object, fwd_ret: object = None) -> DirectionModule:
        X = check_frame(X)
        if self.columns is None:
            # Every numeric or boolean column; identifiers (symbol, interval, ts) are not numeric.
            self.columns_ = [str(c) for c in X.select_dtypes(include=["number", "bool"]).columns]
        else:
            require_columns(X, self.columns, "DirectionModule")
            self.columns_ = list(self.columns)
        label_ok, labels = label_array(y, len(X))
        if len(np.unique(labels[label_ok])) < 2:
            raise ValueError("DirectionModule: needs both classes among the labelled rows")
        model = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_bins=self.max_bins,
            early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.model_ = model.fit(self._matrix(X)[label_ok], labels[label_ok])
        self.n_train_ = int(label_ok.sum())
        self._mark_fitted()
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        X = check_frame(X)
        require_columns(X, self.columns_, "DirectionModule")
        if len(X) == 0:
            return stack_proba(np.empty(0))
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            return stack_proba(self.model_.predict_proba(self._matrix(X))[:, 1])
