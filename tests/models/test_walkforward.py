from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from models.signals import ImbalanceModule
from models.walkforward import out_of_sample_predictions, promote, walk_forward_splits


def _panel(n_symbols: int = 3, n_times: int = 300, seed: int = 0) -> pd.Series:
    """Bar timestamps of a multi-symbol panel, rows shuffled (flows need not sort)."""
    times = pd.bdate_range("2020-01-01", periods=n_times, tz="UTC")
    ts = pd.Series(np.tile(times, n_symbols))
    return ts.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_splits_keep_purge_and_embargo_gaps_and_time_order():
    ts = _panel()
    purge, embargo = 5, 3
    splits = walk_forward_splits(
        ts, n_splits=4, train_window=100, test_window=20, purge=purge, embargo=embargo
    )
    times = np.sort(ts.unique())
    pos = {t: i for i, t in enumerate(times)}
    assert len(splits) == 4
    previous_test_end = None
    for train, test in splits:
        train_pos = np.array([pos[t] for t in ts.iloc[train]])
        test_pos = np.array([pos[t] for t in ts.iloc[test]])
        first, last = test_pos.min(), test_pos.max()
        assert last - first + 1 == 20
        # no training bar inside the purge + embargo window before the block, nor at/after it
        assert train_pos.max() == first - purge - embargo - 1
        assert not np.any((train_pos >= first - purge - embargo) & (train_pos <= last + embargo))
        assert len(np.unique(train_pos)) == 100
        # whole timestamps: every symbol's bar at a test time is in the test block
        assert len(test) == 20 * 3 and len(train) == 100 * 3
        if previous_test_end is not None:
            assert first == previous_test_end + 1  # contiguous, in time order
        previous_test_end = last
    assert previous_test_end == len(times) - 1


def test_expanding_window_and_too_short_history():
    ts = _panel(n_symbols=1, n_times=50)
    splits = walk_forward_splits(ts, n_splits=2, train_window=None, test_window=10, purge=2)
    assert [len(train) for train, _ in splits] == [28, 38]
    with pytest.raises(ValueError, match="cannot hold"):
        walk_forward_splits(ts, n_splits=4, train_window=20, test_window=10, purge=2)
    with pytest.raises(ValueError):
        walk_forward_splits(ts, n_splits=0, train_window=20, test_window=10)


def test_out_of_sample_predictions_clone_per_split_and_leave_untested_rows_nan():
    rng = np.random.default_rng(0)
    n_times, n_symbols = 400, 2
    ts = pd.Series(np.repeat(pd.bdate_range("2020-01-01", periods=n_times, tz="UTC"), n_symbols))
    X = pd.DataFrame(
        {c: rng.standard_normal(len(ts)) for c in ("clv", "clv_volume_imbalance_5")}
        | {c: rng.standard_normal(len(ts)) for c in ("clv_volume_imbalance_20", "up_volume_share_20")}
    )
    y = pd.Series((X["clv"] + rng.standard_normal(len(ts)) > 0).astype(float))
    splits = walk_forward_splits(ts, n_splits=3, train_window=200, test_window=50, purge=5)
    module = ImbalanceModule()
    oos = out_of_sample_predictions(module, X, y, splits)
    tested = np.concatenate([test for _, test in splits])
    assert oos.iloc[tested].notna().all()
    assert oos.drop(index=oos.index[tested]).isna().all()
    assert not hasattr(module, "model_")  # the template itself is never fitted
    accuracy = ((oos.iloc[tested] > 0.5) == y.iloc[tested].astype(bool)).mean()
    assert accuracy > 0.6

    # per-row fit params follow the split; a plain sklearn classifier works too
    plain = out_of_sample_predictions(
        LogisticRegression(), X, y, splits, fit_params={"sample_weight": np.ones(len(X))}
    )
    assert plain.iloc[tested].between(0, 1).all()


def test_promotion_needs_the_margin_in_the_metrics_direction():
    champion = {"auc": 0.55, "log_loss": 0.690}
    ok, reason = promote(champion, {"auc": 0.56, "log_loss": 0.689}, metric="auc", margin=0.005)
    assert ok and "beats" in reason
    ok, reason = promote(champion, {"auc": 0.553}, metric="auc", margin=0.005)
    assert not ok and "does not beat" in reason
    assert not promote(champion, {"auc": 0.555}, metric="auc", margin=0.005)[0]  # a tie keeps the champion
    assert not promote(champion, {"auc": 0.50}, metric="auc", margin=0.0)[0]
    # loss metrics: lower is better
    assert promote(champion, {"log_loss": 0.680}, metric="log_loss", margin=0.005)[0]
    assert not promote(champion, {"log_loss": 0.688}, metric="log_loss", margin=0.005)[0]
    assert not promote(champion, {"log_loss": 0.700}, metric="log_loss", margin=0.0)[0]
    # no champion yet, or no challenger metric
    assert promote(None, {"auc": 0.51})[0]
    assert not promote(champion, {"auc": float("nan")})[0]
    with pytest.raises(ValueError, match="unknown promotion metric"):
        promote(champion, {"auc": 0.6}, metric="sharpe")
