"""Walk-forward evaluation with purging and embargo, out-of-sample predictions, and champion promotion.

Splits are made on the **unique bar timestamps** (positions 0..U-1 in time order), so a panel of many
symbols is split by time, never by row: all symbols' bars at one timestamp land on the same side.

For split k (k = 0..n_splits-1) the test block is ``test_window`` consecutive timestamps; the blocks tile
the last ``n_splits * test_window`` timestamps in time order. With the test block starting at position
``a``:

- **purge**: a bar at position i has a label over positions i+1 .. i+purge (``purge`` = the label horizon
  in bars), so it overlaps the test block when ``i >= a - purge``; those bars are dropped from training;
- **embargo**: ``embargo`` more bars before the purged ones are dropped too, so serially correlated
  features (trailing windows, persistent regimes) do not straddle the boundary. (López de Prado places
  the embargo *after* the test block because his folds train on both sides of it; a trailing
  walk-forward never trains on bars after its test block, so the gap is placed on the only side that
  exists. No split ever trains on a bar at or after its own test block.)
- **training** = the ``train_window`` timestamps ending at ``a - purge - embargo - 1`` (all earlier
  timestamps when ``train_window`` is None: an expanding window).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from qtrader.settings import RetrainSettings

Split = tuple[np.ndarray, np.ndarray]

HIGHER_IS_BETTER = frozenset({"auc", "accuracy", "precision", "recall", "performance_score"})
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})
DEFAULT_PROMOTION_METRIC = RetrainSettings().promotion_metric  # defaults: RetrainSettings'
DEFAULT_PROMOTION_MARGIN = RetrainSettings().promotion_margin
# 0.555 - 0.55 is 0.00500000000000004 in floats; a tie at the margin must stay a tie.
_FLOAT_TOLERANCE = 1e-12


def timestamp_positions(ts: object) -> np.ndarray:
    """Each row's position among the sorted unique timestamps (0 = earliest)."""
    codes, _ = pd.factorize(pd.Series(ts) if not isinstance(ts, pd.Series) else ts, sort=True)
    if (codes < 0).any():
        raise ValueError("walk-forward timestamps contain missing values")
    return codes


def walk_forward_splits(
    ts: object,
    n_splits: int,
    train_window: int | None,
    test_window: int,
    purge: int = 0,
    embargo: int = 0,
) -> list[Split]:
    """``[(train_rows, test_rows), ...]`` in time order; rows are positions into ``ts`` (for ``.iloc``).

    Windows, ``purge`` and ``embargo`` count unique timestamps (bars), as defined in the module docstring.
    Raises ValueError when the history is too short for the first split's full training window.
    """
    if n_splits < 1 or test_window < 1 or purge < 0 or embargo < 0:
        raise ValueError("n_splits and test_window must be >= 1; purge and embargo >= 0")
    if train_window is not None and train_window < 1:
        raise ValueError("train_window must be >= 1 or None (expanding)")
    positions = timestamp_positions(ts)
    n_times = int(positions.max()) + 1 if len(positions) else 0
    first_test = n_times - n_splits * test_window
    gap = purge + embargo
    needed = train_window if train_window is not None else 1
    if first_test - gap < needed:
        raise ValueError(
            f"{n_times} timestamps cannot hold {n_splits} test blocks of {test_window} after a gap of {gap} "
            f"and a training window of {needed}"
        )
    order = np.argsort(positions, kind="stable")
    sorted_pos = positions[order]

    def rows(lo: int, hi: int) -> np.ndarray:  # rows with timestamp position in [lo, hi)
        i, j = np.searchsorted(sorted_pos, [lo, hi])
        return np.sort(order[i:j])

    splits = []
    for k in range(n_splits):
        start = first_test + k * test_window
        train_end = start - gap
        train_start = 0 if train_window is None else train_end - train_window
        splits.append((rows(train_start, train_end), rows(start, start + test_window)))
    return splits


def _slice(value: Any, idx: np.ndarray, n_rows: int) -> Any:
    """Per-row fit inputs (Series / arrays of length n_rows) follow the split; anything else passes as is."""
    if isinstance(value, pd.Series | pd.DataFrame) and len(value) == n_rows:
        return value.iloc[idx]
    if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n_rows:
        return value[idx]
    return value


def out_of_sample_predictions(
    estimator: Any,
    X: pd.DataFrame,
    y: object,
    splits: Sequence[Split],
    fit_params: Mapping[str, Any] | None = None,
) -> pd.Series:
    """P(up) for every test row, from a fresh ``clone(estimator)`` fitted on that split's training rows.

    Rows in no test block are NaN. ``fit_params`` (e.g. ``{"fwd_ret": ...}``) are sliced like ``y``.
    """
    y_values = y if isinstance(y, pd.Series) else np.asarray(y)
    out = np.full(len(X), np.nan)
    for train_idx, test_idx in splits:
        if len(train_idx) == 0 or len(test_idx) == 0:
            continue
        params = {k: _slice(v, train_idx, len(X)) for k, v in (fit_params or {}).items()}
        model = clone(estimator).fit(X.iloc[train_idx], _slice(y_values, train_idx, len(X)), **params)
        out[test_idx] = model.predict_proba(X.iloc[test_idx])[:, 1]
    return pd.Series(out, index=X.index, name="p_up")


def promote(
    champion_metrics: Mapping[str, float] | None,
    challenger_metrics: Mapping[str, float],
    metric: str = DEFAULT_PROMOTION_METRIC,
    margin: float = DEFAULT_PROMOTION_MARGIN,
) -> tuple[bool, str]:
    """Whether the challenger replaces the champion, and why.

    Both metric sets must be out-of-sample on the same rows. The improvement is ``challenger - champion``
    for higher-is-better metrics (auc, accuracy, precision, recall, performance_score) and
    ``champion - challenger`` for losses (log_loss, brier, ece); the challenger is promoted only when the
    improvement is strictly greater than ``margin`` (a tie keeps the champion). With no champion (or a
    champion whose metric is missing) a challenger with a finite metric is promoted.
    """
    if metric in HIGHER_IS_BETTER:
        sign = 1.0
    elif metric in LOWER_IS_BETTER:
        sign = -1.0
    else:
        raise ValueError(f"unknown promotion metric {metric!r}")
    challenger = float(challenger_metrics.get(metric, np.nan))
    if not np.isfinite(challenger):
        return False, f"challenger {metric} is missing"
    champion = float((champion_metrics or {}).get(metric, np.nan))
    if not np.isfinite(champion):
        return True, f"no champion {metric}; challenger {metric} {challenger:.4f} promoted"
    improvement = sign * (challenger - champion)
    promoted = improvement > margin + _FLOAT_TOLERANCE
    verdict = "beats" if promoted else "does not beat"
    reason = (
        f"challenger {metric} {challenger:.4f} vs champion {champion:.4f}: improvement {improvement:+.4f} "
        f"{verdict} margin {margin:.4f}"
    )
    return promoted, reason
