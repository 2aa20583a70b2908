"""Walk-forward training: data preparation, the split plan, and calibration / ensemble weights that only
ever use earlier test blocks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models.features import FINITE_FROM_ROW, compute_features_many, feature_columns
from models.labels import BarrierProfile, make_labels
from models.training import (
    EnsembleConfig,
    TrainingConfig,
    calibrate_walk_forward,
    config_hash,
    module_params,
    plan_walk_forward,
    prepare_training_data,
    side_values,
    train_candidate,
    walk_forward_ensemble,
    walk_forward_module,
)
from sources.base import FetchRequest
from sources.synthetic import SyntheticSource

CONFIG = TrainingConfig(
    label_horizon=1, n_splits=3, train_window=300, min_train_window=100, test_window=40, embargo=2,
    calibration_min_samples=20,
)  # fmt: skip


def _loader_frame(n_symbols: int = 4, days: int = 900) -> pd.DataFrame:
    """What warehouse.models.load_training_frame returns: bars, bar_number, has_features, features."""
    end = pd.Timestamp("2026-10-30", tz="UTC")
    bars = (
        SyntheticSource(seed=3)
        .fetch(FetchRequest([f"T{i}" for i in range(n_symbols)], "1d", end - pd.Timedelta(days=days), end))
        .bars
    )
    bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    feats = compute_features_many(bars)
    frame = bars.copy()
    frame["bar_number"] = frame.groupby("symbol").cumcount()
    frame["has_features"] = True
    return pd.concat([frame, feats[feature_columns()]], axis=1)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _loader_frame()


@pytest.fixture(scope="module")
def prepared(frame):
    data = prepare_training_data(frame, CONFIG)
    return data, plan_walk_forward(data.keys["ts"], CONFIG)


def test_prepare_keeps_warm_labelled_rows_and_sets_fresh_ones_apart(frame, prepared):
    data, _ = prepared
    last = frame["ts"].max()
    assert data.newest_labelled == frame.loc[frame["ts"] < last, "ts"].max()
    assert (data.fresh_keys["ts"] == last).all() and len(data.fresh_keys) == frame["symbol"].nunique()
    n_warm = (frame["bar_number"] >= FINITE_FROM_ROW).sum()
    assert len(data.X) + len(data.fresh_X) == n_warm
    assert list(data.X.columns) == feature_columns() and np.isfinite(data.y).all()
    labels = make_labels(frame, BarrierProfile(horizon=CONFIG.label_horizon), atr=frame["atr_14"])
    expected = labels.loc[(frame["bar_number"] >= FINITE_FROM_ROW) & labels["label_up"].notna(), "label_up"]
    np.testing.assert_array_equal(data.y, expected.to_numpy())


def test_a_bar_without_features_does_not_shift_its_neighbours_labels(frame, prepared):
    data, _ = prepared
    holed = frame.copy()
    gap = holed.index[(holed["symbol"] == "T1") & (holed["bar_number"] == 500)][0]
    holed.loc[gap, "has_features"] = False
    holed.loc[gap, feature_columns()] = np.nan
    other = prepare_training_data(holed, CONFIG)
    assert len(other.X) == len(data.X) - 1
    keep = ~((data.keys["symbol"] == "T1") & (data.keys["ts"] == frame.loc[gap, "ts"])).to_numpy()
    np.testing.assert_array_equal(other.y, data.y[keep])


def test_plan_shrinks_the_training_window_to_the_history_and_refuses_too_little(prepared):
    data, plan = prepared
    n_times = data.keys["ts"].nunique()
    assert plan.train_window == min(CONFIG.train_window, n_times - 3 - 3 * 40)
    assert len(plan.splits) == 3 and (plan.block >= 0).sum() == 3 * 40 * data.keys["symbol"].nunique()
    train, valid = plan.splits[-1]
    assert data.keys["ts"].iloc[train].max() < data.keys["ts"].iloc[valid].min()
    with pytest.raises(ValueError, match="ingest more history"):
        plan_walk_forward(data.keys["ts"], TrainingConfig(**{**CONFIG.__dict__, "min_train_window": 10_000}))


def test_final_model_is_the_last_split_model_and_retraining_is_deterministic(prepared):
    data, plan = prepared
    params = module_params("imbalance", None, CONFIG)
    a = walk_forward_module("imbalance", params, data, plan)
    b = walk_forward_module("imbalance", params, data, plan)
    np.testing.assert_array_equal(a.p_up, b.p_up)
    valid = plan.validation_rows
    np.testing.assert_array_equal(a.final_estimator.predict_proba(data.X.iloc[valid])[:, 1], a.p_up[valid])
    assert np.isnan(a.p_up[plan.block < 0]).all() and np.isfinite(a.p_up[plan.block >= 0]).all()
    assert module_params("patterns", {"min_support": 5}, CONFIG) == {
        "random_state": 0, "label_horizon": 1, "min_support": 5,
    }  # fmt: skip


def test_calibration_of_a_block_uses_only_earlier_blocks(prepared):
    data, plan = prepared
    rng = np.random.default_rng(1)
    p = np.where(plan.block >= 0, rng.uniform(0.3, 0.7, len(data.y)), np.nan)
    base = calibrate_walk_forward(p, data.y, data.keys["ts"], plan, CONFIG)
    changed = p.copy()
    last = plan.block == 2
    changed[last] = 1.0 - changed[last]  # rewrite the newest block
    other = calibrate_walk_forward(changed, data.y, data.keys["ts"], plan, CONFIG)
    early = (plan.block >= 0) & (plan.block < 2)
    np.testing.assert_array_equal(base.p_up_calibrated[early], other.p_up_calibrated[early])
    np.testing.assert_array_equal(base.seed_accuracy[early], other.seed_accuracy[early])
    first = plan.block == 0
    assert (base.seed_accuracy[first] == CONFIG.seed_accuracy_prior).all()
    np.testing.assert_array_equal(base.p_up_calibrated[first], p[first])  # nothing earlier: identity
    assert base.calibrator is not None  # the stored map is fitted on every block


def test_side_values_keep_no_opinion_and_mirror_down_calls():
    p_cal, seed, fitted = side_values(np.array([0.5, 0.8, 0.2]), None, 0.6)
    np.testing.assert_allclose(p_cal, [0.5, 0.8, 0.2])
    np.testing.assert_allclose(seed, [0.5, 0.66, 0.66])  # docs/modules.md: raw 0.8, accuracy 0.6 -> 0.66
    np.testing.assert_allclose(fitted, [0.5, 0.8, 0.8])


def test_ensemble_weighs_members_by_their_earlier_accuracy_only(prepared):
    data, plan = prepared
    members = {
        name: walk_forward_module(name, module_params(name, None, CONFIG), data, plan)
        for name in ("imbalance", "selector", "volatility")
    }
    base = walk_forward_ensemble(members, data, plan, config=EnsembleConfig())
    assert set(base.weights) == set(members) and max(base.weights.values()) == 1.0
    assert base.final_estimator.weights == base.weights
    valid = plan.validation_rows
    np.testing.assert_array_equal(
        base.final_estimator.predict_proba(data.X.iloc[valid])[:, 1], base.p_up[valid]
    )
    members["selector"].p_up[plan.block == 2] = 0.99  # a wild newest block changes nothing before it
    other = walk_forward_ensemble(members, data, plan, config=EnsembleConfig())
    early = plan.block < 2
    np.testing.assert_array_equal(
        np.nan_to_num(base.p_up[early], nan=-1), np.nan_to_num(other.p_up[early], nan=-1)
    )


def test_config_hash_follows_params_config_and_features():
    features = feature_columns()
    h = config_hash("direction", {"max_iter": 100}, CONFIG, features)
    assert h == config_hash("direction", {"max_iter": 100}, CONFIG, features)
    assert h != config_hash("direction", {"max_iter": 101}, CONFIG, features)
    assert h != config_hash(
        "direction", {"max_iter": 100}, TrainingConfig(**{**CONFIG.__dict__, "embargo": 3}), features
    )
    assert h != config_hash("direction", {"max_iter": 100}, CONFIG, features[:-1])


def test_train_candidate_reports_validation_and_walk_forward_metrics(prepared):
    data, plan = prepared
    c = train_candidate("selector", module_params("selector", None, CONFIG), data, plan, CONFIG)
    assert c.metrics["n"] == len(plan.validation_rows)
    assert c.walk_forward_metrics["n"] == (plan.block >= 0).sum()
    assert 0 <= c.metrics["performance_score"] <= 100


def test_calibration_orders_its_pairs_by_time_as_the_timestamps_do(prepared):
    """calibrate_walk_forward sorts each holdout's (confidence, hit) pairs by time on int64 keys
    (``time_order_keys``) rather than on an object array of Timestamps: the same pairs in the same order,
    ties (every symbol's bar at one timestamp) kept in row order."""
    from models.training import _pairs, time_order_keys

    data, plan = prepared
    rng = np.random.default_rng(5)
    p = rng.choice([0.3, 0.45, 0.5, 0.55, 0.7], len(data.y))  # ties and no-opinion rows
    ts = data.keys["ts"]
    shuffled = ts.sample(frac=1.0, random_state=1).reset_index(drop=True)  # rows out of time order
    for stamps in (ts, shuffled, ts.dt.tz_convert("America/New_York")):
        objects = pd.to_datetime(stamps, utc=True).to_numpy()  # what the pairs were sorted on before
        assert objects.dtype == object
        for rows in [plan.block == k for k in range(len(plan.splits))] + [plan.block >= 0]:
            new, old = _pairs(p, data.y, time_order_keys(stamps), rows), _pairs(p, data.y, objects, rows)
            np.testing.assert_array_equal(new[0], old[0])
            np.testing.assert_array_equal(new[1], old[1])


def test_reused_split_fits_give_the_models_a_refit_gives(monkeypatch):
    """FitCache over a run of retrains 20 bars apart with a full training window (test blocks of 40 bars:
    split k of one retrain is split k + 1 two retrains on): every module's walk-forward, calibration,
    metrics and final model (its pickle) equal those of retrains that fit every split afresh."""
    import pickle

    from models.training import FitCache, canonical_json, evaluate_candidate
    from tasks.retrain import bars_needed

    frame = _loader_frame(n_symbols=3, days=1300)
    stamps = np.sort(frame["ts"].unique())
    need = bars_needed(CONFIG)
    cache = FitCache(keep=2)
    modules = ["direction", "imbalance", "patterns", "selector"]
    for j in range(5):
        now = stamps[-1 - 20 * (4 - j)]
        window = stamps[stamps <= now][-need:]
        data = prepare_training_data(frame[frame["ts"].isin(window)].reset_index(drop=True), CONFIG)
        plan = plan_walk_forward(data.keys["ts"], CONFIG)
        assert plan.train_window == CONFIG.train_window  # a full window: the splits move, their rows repeat
        cache.begin(data, plan)
        for name in modules:
            params = module_params(name, None, CONFIG)
            fresh = train_candidate(name, params, data, plan, CONFIG)
            reused = evaluate_candidate(
                walk_forward_module(name, params, data, plan, cache), data, plan, CONFIG
            )
            np.testing.assert_array_equal(reused.run.p_up, fresh.run.p_up, err_msg=f"{name}, retrain {j}")
            for field in ("p_up_calibrated", "confidence_seed", "confidence_calibrated", "seed_accuracy"):
                np.testing.assert_array_equal(
                    getattr(reused.calibration, field), getattr(fresh.calibration, field)
                )
            assert reused.calibration.method == fresh.calibration.method
            for got, want in (
                (reused.metrics, fresh.metrics),
                (reused.walk_forward_metrics, fresh.walk_forward_metrics),
            ):
                assert canonical_json(got) == canonical_json(want)  # exact floats, NaN as null
            assert pickle.dumps(reused.run.final_estimator) == pickle.dumps(fresh.run.final_estimator)
    # retrains 2-4 reuse 2 of their 3 splits; the first two (and every newest split) are fitted
    assert (cache.hits, cache.fits) == (3 * 2 * len(modules), (2 * 3 + 3) * len(modules))


def test_split_digests_read_each_training_row_once(prepared, monkeypatch):
    """Consecutive splits share most training rows: the digests hash them in pieces, each once (not once
    per split containing it), and a split's digest still follows its own rows' values only."""
    import hashlib

    import models.training as training

    data, plan = prepared
    hashed = []

    class Counting:
        def __init__(self, make):
            self.make = make

        def __call__(self, data=b"", **kw):
            h = self.make(**kw)
            wrapped = type("H", (), {})()
            wrapped.update = lambda b: (hashed.append(memoryview(b).nbytes), h.update(b))[1]
            wrapped.digest, wrapped.hexdigest = h.digest, h.hexdigest
            wrapped.update(data)
            return wrapped

    counting = type("hashlib", (), {"sha256": Counting(hashlib.sha256), "blake2b": Counting(hashlib.blake2b)})
    monkeypatch.setattr(training, "hashlib", counting)
    digests = training.split_digests(data, plan)
    row_bytes = sum(data.X[c].to_numpy().itemsize for c in data.X.columns) + 16  # + label, forward return
    union = len(np.unique(np.concatenate([train for train, _ in plan.splits])))
    each = sum(len(train) for train, _ in plan.splits)
    assert union < 0.6 * each  # the splits overlap: hashing per split would read most rows twice or more
    # whole pieces once; a window's cut pieces at its ends again (here ~1.4x the rows; per split: 2.2x)
    assert sum(hashed) < 0.7 * each * row_bytes, (sum(hashed), union * row_bytes, each * row_bytes)
    monkeypatch.undo()

    # a value in the newest split's training rows only changes that split's digest
    only_last = np.setdiff1d(plan.splits[-1][0], np.concatenate([t for t, _ in plan.splits[:-1]]))
    X = data.X.copy()
    X.iloc[only_last[0], 0] += 1.0
    changed = training.split_digests(replace(data, X=X), plan)
    assert changed[:-1] == digests[:-1] and changed[-1] != digests[-1]
    # the same rows at other positions (a retrain later) give the same digests
    shifted = replace(
        data, keys=pd.concat([data.keys.iloc[:5], data.keys]).reset_index(drop=True),
        X=pd.concat([data.X.iloc[:5], data.X]).reset_index(drop=True),
        y=np.concatenate([data.y[:5], data.y]), fwd_ret=np.concatenate([data.fwd_ret[:5], data.fwd_ret]),
    )  # fmt: skip
    moved = [(train + 5, test + 5) for train, test in plan.splits]
    assert training.split_digests(shifted, replace(plan, splits=moved)) == digests


def test_prediction_frames_keep_the_timestamps_as_the_keys_hold_them():
    """prediction_frame takes the keys' ts column as it is (not through an object array of Timestamps, which
    cost ~0.2 s a module a retrain): the same frame, dtype and unit included."""
    from models.training import prediction_frame

    for unit in ("ns", "us"):
        stamps = pd.Series(pd.date_range("2024-01-01", periods=40, freq="D", tz="UTC"))
        keys = pd.DataFrame(
            {"symbol": "AAA", "interval": "1d", "ts": stamps.astype(f"datetime64[{unit}, UTC]")}
        )
        keys = keys.astype({"symbol": "str", "interval": "str"}).iloc[3::2]  # an index that is not 0..n-1
        p = np.linspace(0.1, 0.9, len(keys))
        got = prediction_frame(
            keys, p, p, p, p, 0.55, 0.2, module="m", version=2, kind="live", label_horizon=1
        )
        want = got.assign(ts=pd.DataFrame({"ts": keys["ts"].to_numpy()})["ts"])  # through the Timestamps
        assert str(got["ts"].dtype) == f"datetime64[{unit}, UTC]"
        pd.testing.assert_frame_equal(got, want, check_exact=True)
