"""Signal modules on a fake feature frame with the real column names and a planted relation."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from models.signals import (
    MODULES,
    NO_OPINION,
    ConsensusType,
    DirectionModule,
    PatternModule,
    RegimeModule,
    StrategySelector,
    VolatilityModule,
    accuracy_weights,
    combine,
    ensemble_p_up,
    make_module,
    market_regime,
    vol_state,
)
from models.signals.columns import IMBALANCE, TREND, VOL_STRUCTURE

PATTERNS = [f"cdl_p{i:02d}" for i in range(60)] + ["cdl_hammer"]
DAILY = ("ret_20", "rv_20", "adx_14", "trend_slope_50", "sma_ratio_50_200", "atr_pct_rank_252")


def _symbol_features(rng: np.random.Generator, n_bars: int) -> pd.DataFrame:
    """Rolling-window stand-ins for the TA-Lib features of one symbol's random walk (trending spells)."""
    trend = np.sign(pd.Series(rng.standard_normal(n_bars)).rolling(40, min_periods=1).mean()).to_numpy()
    ret = 0.0015 * trend + 0.01 * rng.standard_t(5, n_bars) / np.sqrt(5 / 3)
    c = pd.Series(100 * np.exp(np.cumsum(ret)))
    spread = np.abs(rng.normal(0, 0.008, n_bars)) + 0.002
    h = c * (1 + spread * rng.uniform(0.2, 1.0, n_bars))
    lo = c * (1 - spread * rng.uniform(0.2, 1.0, n_bars))
    vol = pd.Series(rng.lognormal(13, 0.3, n_bars))
    r1 = c.pct_change()
    f = pd.DataFrame({f"ret_{k}": c.pct_change(k) for k in (1, 5, 10, 20)})
    tr = h - lo
    f["atr_14"] = tr.rolling(14).mean()
    f["natr_14"] = 100 * f["atr_14"] / c
    gain, loss = r1.clip(lower=0).rolling(14).mean(), (-r1).clip(lower=0).rolling(14).mean()
    f["rsi_14"] = 100 - 100 / (1 + gain / loss)
    ema12, ema26 = c.ewm(span=12).mean(), c.ewm(span=26).mean()
    f["macd"] = (ema12 - ema26) / c
    f["macd_signal"] = f["macd"].ewm(span=9).mean()
    f["macd_hist"] = f["macd"] - f["macd_signal"]
    rv20 = r1.rolling(20).std()
    strength = (f["ret_20"].abs() / (rv20 * np.sqrt(20))).rolling(5).mean()
    f["adx_14"] = (8 + 25 * strength).clip(5, 70)
    f["plus_di_14"] = 25 + 100 * gain
    f["minus_di_14"] = 25 + 100 * loss
    sma20, sd20 = c.rolling(20).mean(), c.rolling(20).std()
    sma50, sma200 = c.rolling(50).mean(), c.rolling(200).mean()
    f["bb_pctb_20"] = (c - (sma20 - 2 * sd20)) / (4 * sd20)
    f["bb_width_20"] = 4 * sd20 / sma20
    obv = (np.sign(r1.fillna(0)) * vol).cumsum()
    f["obv_slope_20"] = obv.diff(20) / vol.rolling(20).sum()
    f["mfi_14"] = f["rsi_14"].rolling(3).mean()
    f["cci_20"] = (c - sma20) / (0.015 * sd20)
    hh, ll = h.rolling(14).max(), lo.rolling(14).min()
    f["willr_14"] = -100 * (hh - c) / (hh - ll)
    f["stoch_k"] = 100 * (c - ll) / (hh - ll)
    f["stoch_d"] = f["stoch_k"].rolling(3).mean()
    f["sma_ratio_20_50"] = sma20 / sma50
    f["sma_ratio_50_200"] = sma50 / sma200
    f["trend_slope_50"] = (sma50 - sma50.shift(10)) / (10 * sma50)
    for k in (5, 20, 60):
        f[f"rv_{k}"] = r1.rolling(k).std() * np.sqrt(252)
    f["rv_ratio_5_20"] = f["rv_5"] / f["rv_20"]
    f["rv_ratio_20_60"] = f["rv_20"] / f["rv_60"]
    f["atr_pct_rank_252"] = f["atr_14"].rolling(252).rank(pct=True)
    f["vol_of_vol_20"] = f["rv_5"].rolling(20).std()
    clv = ((c - lo) - (h - c)) / (h - lo)
    f["clv"] = clv
    for k in (5, 20):
        f[f"clv_volume_imbalance_{k}"] = (clv * vol).rolling(k).sum() / vol.rolling(k).sum()
    f["up_volume_share_20"] = (vol * (r1 > 0)).rolling(20).sum() / vol.rolling(20).sum()
    active = rng.random((n_bars, len(PATTERNS))) < 0.03
    values = rng.choice(np.array([-2, -1, 1, 2], dtype=np.int8), size=(n_bars, len(PATTERNS)))
    values[:, -1] = np.abs(values[:, -1])  # the hammer is a bullish pattern: values 1 / 2 only
    f = pd.concat([f, pd.DataFrame(np.where(active, values, 0).astype(np.int8), columns=PATTERNS)], axis=1)
    for col in DAILY:  # daily bars: the daily context is the bar's own value
        f[f"d_{col}"] = f[col]
    return f


def fake_frame(
    n_symbols: int = 10, n_bars: int = 2000, seed: int = 0, planted: bool = True
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """(features indexed by (symbol, ts), label_up, fwd_ret).

    Planted: label_up = 1 when ``-z(rsi_14) + z(clv_volume_imbalance_5) + 1.5 * noise > 0``, and with
    probability 0.8 where cdl_hammer fires in the bull regime. Not planted: label_up is a fair coin.
    """
    rng = np.random.default_rng(seed)
    ts = pd.bdate_range("2016-01-04", periods=n_bars, tz="UTC")
    frames = [_symbol_features(rng, n_bars) for _ in range(n_symbols)]
    X = pd.concat(frames, keys=[f"S{i:02d}" for i in range(n_symbols)], names=["symbol", "row"])
    X.index = pd.MultiIndex.from_arrays(
        [X.index.get_level_values("symbol"), np.tile(ts, n_symbols)], names=["symbol", "ts"]
    )
    if planted:
        rsi_z = ((X["rsi_14"] - 50) / 12).fillna(0).to_numpy()
        imb_z = (X["clv_volume_imbalance_5"] / 0.25).fillna(0).to_numpy()
        up = (-rsi_z + imb_z + 1.5 * rng.standard_normal(len(X)) > 0).astype(float)
        hammer = (X["cdl_hammer"].to_numpy() > 0) & (market_regime(X) == "bull").to_numpy()
        up[hammer] = (rng.random(hammer.sum()) < 0.8).astype(float)
    else:
        up = (rng.random(len(X)) < 0.5).astype(float)
    y = pd.Series(up, index=X.index, name="label_up")
    fwd = pd.Series((2 * up - 1) * np.abs(rng.normal(0, 0.02, len(X))), index=X.index, name="fwd_ret_5")
    return X, y, fwd


@pytest.fixture(scope="module")
def planted():
    return fake_frame(planted=True)


@pytest.fixture(scope="module")
def noise():
    return fake_frame(planted=False, seed=1)


def _time_split(X: pd.DataFrame, frac: float = 0.7, gap: int = 5) -> tuple[np.ndarray, np.ndarray]:
    times = np.sort(X.index.get_level_values("ts").unique())
    cut = times[int(frac * len(times))]
    ts = X.index.get_level_values("ts")
    return np.flatnonzero(ts < times[int(frac * len(times)) - gap]), np.flatnonzero(ts >= cut)


def test_fake_frame_has_the_feature_columns(planted):
    X, _, _ = planted
    for col in (*VOL_STRUCTURE, *IMBALANCE, *TREND):
        assert col in X.columns
    assert len([c for c in X.columns if c.startswith("cdl_")]) == 61
    assert set(market_regime(X).dropna().unique()) == {"bull", "bear", "sideways"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_fits_predicts_clones_and_is_deterministic(planted, name):
    X, y, fwd = planted
    train, test = _time_split(X)
    module = make_module(name, random_state=3)
    module.fit(X.iloc[train], y.iloc[train], fwd_ret=fwd.iloc[train])
    proba = module.predict_proba(X.iloc[test])
    assert proba.shape == (len(test), 2)
    assert np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(module.classes_) == [0, 1]

    twin = clone(module)
    assert twin.get_params() == make_module(name, random_state=3).get_params()
    twin.fit(X.iloc[train], y.iloc[train], fwd_ret=fwd.iloc[train])
    np.testing.assert_array_equal(twin.predict_proba(X.iloc[test]), proba)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(module)).predict_proba(X.iloc[test]), proba)


@pytest.mark.parametrize("name", ["volatility", "imbalance", "regime", "selector", "patterns"])
def test_rows_that_cannot_be_scored_get_no_opinion(planted, name):
    X, y, fwd = planted
    module = make_module(name).fit(X, y, fwd_ret=fwd)
    warmup = X.head(3).astype("float64")
    warmup.loc[:, :] = np.nan
    np.testing.assert_array_equal(module.predict_proba(warmup)[:, 1], NO_OPINION)


def test_modules_refuse_label_columns_and_arrays(planted):
    X, y, _ = planted
    with pytest.raises(ValueError, match="label columns"):
        DirectionModule().fit(X.assign(label_up=y), y)
    with pytest.raises(ValueError, match="label columns"):
        make_module("imbalance").fit(X.assign(long_outcome="tp1"), y)
    with pytest.raises(TypeError):
        DirectionModule().fit(X.to_numpy(), y)
    with pytest.raises(KeyError, match="unknown signal module"):
        make_module("astrology")


def test_nan_labels_are_dropped_from_training(planted):
    X, y, _ = planted
    y_tail_missing = y.copy()
    y_tail_missing.iloc[-500:] = np.nan  # the last bars of a frame have no forward label yet
    module = DirectionModule(max_iter=20).fit(X, y_tail_missing)
    assert module.n_train_ == len(X) - 500


def test_direction_beats_a_coin_flip_on_a_planted_relation(planted):
    X, y, _ = planted
    train, test = _time_split(X)
    module = DirectionModule().fit(X.iloc[train], y.iloc[train])
    accuracy = (module.predict(X.iloc[test]) == y.iloc[test].to_numpy()).mean()
    assert accuracy >= 0.60


def test_direction_is_a_coin_flip_on_noise(noise):
    X, y, _ = noise
    train, test = _time_split(X)
    module = DirectionModule().fit(X.iloc[train], y.iloc[train])
    accuracy = (module.predict(X.iloc[test]) == y.iloc[test].to_numpy()).mean()
    assert abs(accuracy - 0.5) <= 0.02


def test_linear_modules_learn_their_planted_inputs(planted):
    X, y, fwd = planted
    train, test = _time_split(X)
    imbalance = make_module("imbalance").fit(X.iloc[train], y.iloc[train])
    accuracy = (imbalance.predict(X.iloc[test]) == y.iloc[test].to_numpy()).mean()
    assert accuracy >= 0.55


def test_pattern_tiers_find_the_planted_pattern_in_its_regime_only(planted):
    X, y, _ = planted
    module = PatternModule().fit(X, y)
    tiers = module.tiers_
    assert list(tiers.columns[:4]) == ["pattern", "side", "regime", "n"]
    hammer = tiers[(tiers["pattern"] == "cdl_hammer") & (tiers["side"] == 1)].set_index("regime")
    assert hammer.loc["bull", "tier"] in {"S", "A"}
    assert hammer.loc["bull", "edge"] > 0.1
    assert hammer.loc["bear", "tier"] == "F"
    assert hammer.loc["sideways", "tier"] == "F"
    # The bearish side of a bullish-only pattern has no support anywhere.
    assert (tiers[(tiers["pattern"] == "cdl_hammer") & (tiers["side"] == -1)]["tier"] == "F").all()


def test_pattern_module_scores_the_planted_pattern_out_of_sample(planted):
    X, y, _ = planted
    train, test = _time_split(X)
    module = PatternModule().fit(X.iloc[train], y.iloc[train])
    Xt = X.iloc[test]
    p = module.predict_proba(Xt)[:, 1]
    fires = (Xt["cdl_hammer"].to_numpy() > 0) & (market_regime(Xt) == "bull").to_numpy()
    assert p[fires].mean() > 0.6
    assert (y.iloc[test].to_numpy()[fires] == 1).mean() > 0.7
    assert "cdl_hammer+" in set(module.active_signals(Xt.iloc[np.flatnonzero(fires)[:5]]))


def test_market_regime_rule():
    rows = pd.DataFrame(
        {"adx_14": [30, 30, 30, 10, np.nan], "trend_slope_50": [0.001, -0.001, 0.0, 0.5, 0.1]},
        index=list("abcde"),
    )
    regime = market_regime(rows)
    assert regime.iloc[:4].tolist() == ["bull", "bear", "sideways", "sideways"]
    assert pd.isna(regime.iloc[4])
    assert market_regime(rows, slope_min=0.01).iloc[:2].tolist() == ["sideways", "sideways"]


def test_vol_state_rule():
    rows = pd.DataFrame(
        {
            "atr_pct_rank_252": [0.9, 0.5, 0.5, 0.1, 0.1, np.nan],
            "rv_ratio_5_20": [1.0, 1.6, 1.0, 1.0, 1.0, np.nan],
            "rv_ratio_20_60": [1.0, 1.0, 1.0, 0.9, 1.2, np.nan],
        }
    )
    assert vol_state(rows).tolist() == [
        "HIGH_VOLATILITY",
        "HIGH_VOLATILITY",
        "NORMAL",
        "LOW_VOLATILITY",
        "NORMAL",
        "NORMAL",
    ]


def test_volatility_module_exposes_state_and_expansion(planted):
    X, y, fwd = planted
    module = VolatilityModule().fit(X, y, fwd_ret=fwd)
    assert set(module.vol_state(X).unique()) <= {"HIGH_VOLATILITY", "NORMAL", "LOW_VOLATILITY"}
    expansion = module.predict_expansion_proba(X).dropna()
    assert len(expansion) > 0.5 * len(X) and expansion.between(0, 1).all()
    with pytest.raises(ValueError, match="fwd_ret"):
        VolatilityModule().fit(X, y).predict_expansion_proba(X)


def test_regime_module_gives_forward_regime_probabilities(planted):
    X, y, fwd = planted
    module = RegimeModule().fit(X, y, fwd_ret=fwd)
    proba = module.predict_regime_proba(X).dropna()
    assert list(proba.columns) == ["bull", "bear", "sideways"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # fwd_ret and label_up share the horizon: bull is always up, bear never.
    assert module.up_rate_["bull"] == 1.0 and module.up_rate_["bear"] == 0.0
    without_fwd = RegimeModule().fit(X, y).predict_regime_proba(X).dropna()
    assert (without_fwd["sideways"] == 0).all()


def test_selector_picks_mean_reversion_where_it_was_planted(planted):
    X, y, _ = planted
    selector = StrategySelector().fit(X, y)
    table = selector.strategies_.set_index("regime")
    assert (table["strategy"] == "mean_reversion").all()
    assert (table["mean_reversion_hit_rate"] > table["momentum_hit_rate"]).all()
    assert set(selector.strategy_for(X).dropna().unique()) == {"mean_reversion"}


def test_ensemble_consensus_types_and_contributors():
    probas = pd.DataFrame(
        {
            "a": [0.70, 0.70, 0.70, 0.70, 0.50, 0.70],
            "b": [0.65, 0.65, 0.65, 0.30, 0.60, np.nan],
            "c": [0.60, 0.60, 0.60, 0.30, 0.52, 0.52],
            "d": [0.80, 0.20, 0.30, 0.70, 0.49, 0.50],
            "e": [np.nan, np.nan, 0.40, np.nan, np.nan, np.nan],
        },
        index=["all", "three_of_four", "three_of_five", "two_two", "one_voter", "alone"],
    )
    out = combine(probas, min_edge=0.05)
    assert out.columns.tolist() == ["direction", "consensus", "confidence", "voters", "agree", "contributors"]
    assert out["consensus"].tolist() == ["UNANIMOUS", "STRONG", "WEAK", "SPLIT", "NONE", "NONE"]
    assert out["direction"].tolist() == [1, 1, 1, 0, 0, 0]
    assert out["voters"].tolist() == [4, 4, 5, 4, 1, 1]
    assert out["agree"].tolist() == [4, 3, 3, 0, 0, 0]
    assert out.loc["all", "contributors"] == "a,b,c,d"
    assert out.loc["three_of_four", "contributors"] == "a,b,c"
    assert out.loc["three_of_five", "contributors"] == "a,b,c"
    assert out.loc["two_two", "contributors"] == ""
    assert out.loc["all", "confidence"] == pytest.approx((0.70 + 0.65 + 0.60 + 0.80) / 4)
    assert out.loc["two_two", "confidence"] == 0.0

    down = combine(1 - probas.loc[["all"]])
    assert down.loc["all", "direction"] == -1 and down.loc["all", "consensus"] == "UNANIMOUS"
    assert down.loc["all", "confidence"] == pytest.approx(out.loc["all", "confidence"])
    assert ConsensusType("STRONG") is ConsensusType.STRONG


def test_ensemble_weights_scale_confidence_and_zero_weight_removes_a_vote():
    probas = pd.DataFrame({"a": [0.9], "b": [0.6], "c": [0.3]})
    weighted = combine(probas, weights={"a": 3.0, "b": 1.0}, min_voters=1)
    assert weighted.loc[0, "confidence"] == pytest.approx((3 * 0.9 + 0.6) / 4)
    assert weighted.loc[0, "consensus"] == "WEAK"
    muted = combine(probas, weights={"c": 0.0}, min_voters=1)
    assert muted.loc[0, "consensus"] == "UNANIMOUS" and muted.loc[0, "voters"] == 2
    p_up = ensemble_p_up(combine(pd.DataFrame({"a": [0.8, 0.2, 0.5], "b": [0.7, 0.3, 0.5]})))
    np.testing.assert_allclose(p_up, [0.75, 0.25, 0.5])


def test_accuracy_weights():
    assert accuracy_weights({"a": 0.6, "b": 0.55, "c": 0.48}) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert accuracy_weights({"a": 0.5, "b": 0.4}) == {"a": 1.0, "b": 1.0}


def test_ensemble_module_decides_with_member_columns(planted):
    X, y, fwd = planted
    train, test = _time_split(X)
    ensemble = make_module(
        "ensemble",
        members=("imbalance", "selector", "direction"),
        member_params={"direction": {"max_iter": 30}},
    ).fit(X.iloc[train], y.iloc[train], fwd_ret=fwd.iloc[train])
    decided = ensemble.decide(X.iloc[test])
    assert {"p_imbalance", "p_selector", "p_direction", "consensus", "contributors"} <= set(decided.columns)
    assert set(decided["consensus"]) <= {c.value for c in ConsensusType}
    called = decided["direction"] != 0
    hit = (decided.loc[called, "direction"] > 0).astype(int) == y.iloc[test][called.to_numpy()].to_numpy()
    assert hit.mean() >= 0.55
