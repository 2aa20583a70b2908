"""Shared plumbing of the signal modules: frame checks, label handling and the P(up) contract.

Every module is a scikit-learn classifier over the feature frame (a DataFrame with the column names of
models/features.py, one row per bar). ``predict_proba(X)`` returns columns [P(down), P(up)] for classes
[0, 1]; a row the module cannot score (warm-up NaNs, unknown regime) gets exactly 0.5, which the ensemble
reads as "no vote".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.signals.columns import LEAKAGE_PREFIXES

NO_OPINION = 0.5


def check_frame(X: object) -> pd.DataFrame:
    """The feature frame, refusing arrays (columns are read by name) and label columns (leakage)."""
    if not isinstance(X, pd.DataFrame):
        raise TypeError(
            f"signal modules take the feature DataFrame with named columns, got {type(X).__name__}"
        )
    leaked = [c for c in X.columns if str(c).startswith(LEAKAGE_PREFIXES)]
    if leaked:
        raise ValueError(f"label columns in the feature frame: {leaked}; pass labels as y / fwd_ret")
    return X


def require_columns(X: pd.DataFrame, columns: Sequence[str], module: str) -> None:
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise KeyError(f"{module}: feature frame lacks columns {missing}")


def label_array(y: object, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(usable mask, 0/1 labels). NaN labels (the last bars, whose horizon is not over) are unusable."""
    if isinstance(y, pd.Series | pd.Index):
        values = y.to_numpy(dtype="float64", na_value=np.nan)
    else:
        values = np.asarray(y, dtype="float64")
    if values.ndim != 1 or len(values) != n_rows:
        raise ValueError(f"y must be 1-D with {n_rows} rows, got shape {values.shape}")
    mask = np.isfinite(values)
    if not np.isin(values[mask], (0.0, 1.0)).all():
        raise ValueError("y must hold 0/1 labels (label_up) or NaN")
    labels = np.zeros(n_rows, dtype=np.int8)
    labels[mask] = values[mask].astype(np.int8)
    return mask, labels


def optional_array(values: object, n_rows: int, name: str) -> np.ndarray | None:
    """An optional per-row fit input (e.g. fwd_ret) as float64, NaN where missing."""
    if values is None:
        return None
    if isinstance(values, pd.Series):
        out = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        out = np.asarray(values, dtype="float64")
    if out.shape != (n_rows,):
        raise ValueError(f"{name} must be 1-D with {n_rows} rows, got shape {out.shape}")
    return np.where(np.isfinite(out), out, np.nan)


def float_matrix(X: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The columns as float64 with +-inf turned into NaN (a ratio over a zero volatility is 'unknown')."""
    values = np.array(X.loc[:, list(columns)].to_numpy(dtype="float64", na_value=np.nan), copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def usable_columns(X: pd.DataFrame, columns: Sequence[str], max_nan_fraction: float) -> list[str]:
    """Columns with at most ``max_nan_fraction`` missing values in the training rows.

    A column that is mostly NaN (e.g. daily-context features on a frame where they are not filled) would
    otherwise drop nearly every row from a module that needs complete rows.
    """
    if len(X) == 0:
        return list(columns)
    nan_fraction = np.isnan(float_matrix(X, columns)).mean(axis=0)
    return [c for c, f in zip(columns, nan_fraction, strict=True) if f <= max_nan_fraction]


def stack_proba(p_up: np.ndarray) -> np.ndarray:
    p_up = np.clip(np.asarray(p_up, dtype="float64"), 0.0, 1.0)
    return np.column_stack([1.0 - p_up, p_up])


def logit(p: np.ndarray | float, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype="float64")))


class SignalModule(ClassifierMixin, BaseEstimator):
    """Common behaviour: classes [0, 1], ``predict`` at P(up) > 0.5, ``p_up`` as a Series."""

    def _mark_fitted(self) -> None:
        self.classes_ = np.array([0, 1])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(np.int64)

    def p_up(self, X: pd.DataFrame) -> pd.Series:
        return pd.Series(self.predict_proba(X)[:, 1], index=X.index, name="p_up")


class ClipTransformer(TransformerMixin, BaseEstimator):
    """Clip standardised features so one extreme bar (a split, a data error) cannot dominate a linear fit."""

    def __init__(self, bound: float = 5.0):
        self.bound = bound

    def fit(self, X: np.ndarray, y: object = None) -> ClipTransformer:
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.clip(X, -self.bound, self.bound)


def linear_pipeline(C: float, clip_z: float, random_state: int | None) -> Pipeline:
    """Standardise, clip, logistic regression (multinomial when the target has three classes)."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("clip", ClipTransformer(clip_z)),
            ("logit", LogisticRegression(C=C, max_iter=500, random_state=random_state)),
        ]
    )


class LinearSignalModule(SignalModule):
    """Logistic regression of label_up on a fixed column group; rows with missing inputs are not scored.

    Subclasses declare their parameters in ``__init__`` (scikit-learn reads the signature); they all have
    ``columns``, ``C``, ``clip_z``, ``max_nan_fraction`` and ``random_state``.
    """

    columns: tuple[str, ...]
    C: float
    clip_z: float
    max_nan_fraction: float
    random_state: int | None

    def _fit_linear(self, X: pd.DataFrame, y: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fit the directional model; returns (design matrix, complete-row mask, labels) for reuse."""
        X = check_frame(X)
        name = type(self).__name__
        require_columns(X, self.columns, name)
        label_ok, labels = label_array(y, len(X))
        self.columns_ = usable_columns(X.loc[label_ok], self.columns, self.max_nan_fraction)
        if not self.columns_:
            raise ValueError(f"{name}: every input column is mostly NaN in the training rows")
        design = float_matrix(X, self.columns_)
        complete = ~np.isnan(design).any(axis=1)
        rows = complete & label_ok
        if len(np.unique(labels[rows])) < 2:
            raise ValueError(f"{name}: needs both classes among {int(rows.sum())} complete training rows")
        self.model_ = linear_pipeline(self.C, self.clip_z, self.random_state).fit(design[rows], labels[rows])
        self.n_train_ = int(rows.sum())
        self._mark_fitted()
        return design, complete, labels

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        X = check_frame(X)
        design = float_matrix(X, self.columns_)
        complete = ~np.isnan(design).any(axis=1)
        p_up = np.full(len(X), NO_OPINION)
        if complete.any():
            p_up[complete] = self.model_.predict_proba(design[complete])[:, 1]
        return stack_proba(p_up)
