"""Walk-forward training of the signal modules: out-of-sample probabilities, calibration, the final model,
and the champion/challenger comparison. Pure: frames in, frames and fitted objects out; the retrain flow
(flows/retrain.py) reads the warehouse, writes artifacts and records the registry.

One retrain of one module (docs/modules.md, "Retrain"):

1. ``prepare_training_data``: labels from bars (``make_labels``, never stored as features); the rows to
   train on are the bars with features, past the indicator warm-up, up to the **newest labelled bar**; the
   newer bars (features, no label yet) are kept apart for live predictions.
2. ``plan_walk_forward``: ``n_splits`` purged and embargoed splits (purge = label horizon); the newest
   test block is the **validation window**; the training window shrinks to fit a short history.
3. ``walk_forward_module``: a fresh clone per split, fitted with ``fwd_ret``, scoring its test block
   (timed: predict latency per row). The last split's model *is* the final model: it was fitted on the
   training window before the validation window (purged), so its validation probabilities are exactly the
   ones recorded.
4. ``calibrate_walk_forward``: the calibrated probabilities of block k come from a calibrator selected on
   blocks < k only (``select_calibrator``), and the seed formula of block k uses the module's accuracy on
   blocks < k (``seed_accuracy_prior`` for the first block), so benchmarked calibration is out of sample
   too. The calibrator and accuracy stored with the model are fitted on every block (for live use).
5. ``compare_with_champion``: the champion artifact predicts the same validation rows;
   ``models.walkforward.promote`` decides on raw P(up) metrics.

The ensemble (``walk_forward_ensemble``) is not refitted: block k combines the members' out-of-sample
probabilities with ``accuracy_weights`` from their accuracy on blocks < k; its model is the members' final
models plus the weights of the validation block and the vote parameters.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from models.calibration import (
    DEFAULT_N_BINS,
    Calibrator,
    seed_calibration,
    select_calibrator,
    side_confidence,
)
from models.features import FEATURE_SET_VERSION, FINITE_FROM_ROW, KEY_COLUMNS, feature_columns, feature_dtypes
from models.labels import BarrierProfile, make_labels
from models.metrics import classification_metrics, performance_score
from models.signals import EnsembleModule, accuracy_weights, combine, ensemble_p_up, make_module
from models.signals.base import NO_OPINION
from models.walkforward import Split, promote, walk_forward_splits
from qtrader.calendar import interval_minutes
from qtrader.settings import RetrainSettings, SignalSettings

_R, _S = RetrainSettings(), SignalSettings()  # the defaults' only home is qtrader/settings.py

ENSEMBLE = "ensemble"
WALK_FORWARD, LIVE = "walk_forward", "live"
NO_CALIBRATION = "none"


# ------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class TrainingConfig:
    """Everything besides the module's own parameters that decides what a retrain produces."""

    label_horizon: int
    n_splits: int
    train_window: int
    min_train_window: int
    test_window: int
    embargo: int
    # defaults: RetrainSettings' and BenchmarkSettings' (tasks.retrain.training_config passes the configured)
    calibration_methods: tuple[str, ...] = tuple(_R.calibration_methods)
    calibration_holdout_fraction: float = _R.calibration_holdout_fraction
    calibration_min_samples: int = _R.calibration_min_samples
    seed_accuracy_prior: float = _R.seed_accuracy_prior
    n_bins: int = DEFAULT_N_BINS
    skip_warmup: bool = _R.skip_warmup
    random_state: int = SignalSettings().random_state
    seed_accuracy_weight: float = _R.seed_accuracy_weight
    seed_confidence_floor: float = _R.seed_confidence_floor
    seed_confidence_cap: float = _R.seed_confidence_cap

    def seed_params(self) -> dict[str, float]:
        """The seed formula's keyword arguments (models.calibration.seed_calibration)."""
        return {"accuracy_weight": self.seed_accuracy_weight, "floor": self.seed_confidence_floor,
                "cap": self.seed_confidence_cap}  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class EnsembleConfig:
    # defaults: SignalSettings' (tasks.retrain.ensemble_config passes the configured)
    min_edge: float = _S.ensemble_min_edge
    strong: float = _S.ensemble_strong
    weak: float = _S.ensemble_weak
    min_voters: int = _S.ensemble_min_voters
    weight_floor: float = _S.accuracy_weight_floor


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, NaN as null) for hashing and the registry."""
    return json.dumps(_finite(value), sort_keys=True, default=_json_default, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def config_hash(
    module: str, params: Mapping[str, Any], config: TrainingConfig, features: Sequence[str]
) -> str:
    """sha256 of the module, its parameters, the training configuration and the feature set."""
    payload = {
        "module": module,
        "params": dict(params),
        "training": config.as_dict(),
        "feature_set_version": FEATURE_SET_VERSION,
        "features": list(features),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """The rows a retrain learns from (labelled) and the newest rows it predicts live (no label yet)."""

    keys: pd.DataFrame  # symbol, interval, ts of the labelled rows, time-ordered within each symbol
    X: pd.DataFrame  # feature_columns(), RangeIndex aligned with keys
    y: np.ndarray  # label_up (0/1, NaN where unknown)
    fwd_ret: np.ndarray  # forward log return over the label horizon
    fresh_keys: pd.DataFrame  # newest bars with features but no label yet
    fresh_X: pd.DataFrame
    newest_labelled: pd.Timestamp | None

    def data_hash(self) -> str:
        """sha256 of the labelled frame (keys, features, labels): same data, same hash."""
        frame = pd.concat(
            [self.keys.reset_index(drop=True), self.X, pd.DataFrame({"y": self.y, "fwd_ret": self.fwd_ret})],
            axis=1,
        )
        digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()


def label_profile(horizon: int, exit_profile: BarrierProfile | None = None) -> BarrierProfile:
    """The exit profile's barriers with the label horizon (label_up and fwd_ret use the horizon only)."""
    base = exit_profile or BarrierProfile()
    return BarrierProfile(tp1=base.tp1, tp2=base.tp2, tp3=base.tp3, stop=base.stop, horizon=horizon)


def prepare_training_data(frame: pd.DataFrame, config: TrainingConfig) -> TrainingData:
    """Labels and model inputs from ``warehouse.models.load_training_frame``'s output.

    ``frame``: bars (symbol, interval, ts, open, high, low, close, volume) ordered by symbol and ts, with
    ``bar_number`` (position in the symbol's whole stored history), ``has_features`` and the feature
    columns (NaN where a bar has no feature row). Labels are computed on every bar (so a bar without
    features never shifts its neighbours' labels), then only bars with features are kept.
    """
    columns = feature_columns()
    if frame.empty:
        empty = pd.DataFrame(columns=KEY_COLUMNS)
        return TrainingData(
            empty, pd.DataFrame(columns=columns), np.empty(0), np.empty(0), empty,
            pd.DataFrame(columns=columns), None,
        )  # fmt: skip
    labels = make_labels(
        frame, label_profile(config.label_horizon), atr=frame["atr_14"].to_numpy(dtype="float64")
    )
    y = labels["label_up"].to_numpy(dtype="float64")
    fwd = labels[f"fwd_ret_{config.label_horizon}"].to_numpy(dtype="float64")
    usable = frame["has_features"].to_numpy(dtype=bool).copy()
    if config.skip_warmup:
        usable &= frame["bar_number"].to_numpy() >= FINITE_FROM_ROW
    labelled = usable & np.isfinite(y)
    newest = frame.loc[labelled, "ts"].max() if labelled.any() else None
    ts = frame["ts"]
    train_rows = (
        usable & (ts <= newest).to_numpy() if newest is not None else np.zeros(len(frame), dtype=bool)
    )
    fresh_rows = usable & ~np.isfinite(y) & ((ts > newest).to_numpy() if newest is not None else True)
    dtypes = feature_dtypes()

    def features(rows: np.ndarray) -> pd.DataFrame:
        return frame.loc[rows, columns].reset_index(drop=True).astype({c: dtypes[c] for c in columns})

    return TrainingData(
        keys=frame.loc[train_rows, KEY_COLUMNS].reset_index(drop=True),
        X=features(train_rows),
        y=y[train_rows],
        fwd_ret=fwd[train_rows],
        fresh_keys=frame.loc[fresh_rows, KEY_COLUMNS].reset_index(drop=True),
        fresh_X=features(fresh_rows),
        newest_labelled=newest,
    )


@dataclass(frozen=True)
class WalkForwardPlan:
    splits: list[Split]
    block: np.ndarray  # test block of each row (-1: in no test block)
    train_window: int  # bars actually used (the configured window, or less on a short history)

    @property
    def validation_rows(self) -> np.ndarray:
        return self.splits[-1][1]

    @property
    def final_train_rows(self) -> np.ndarray:
        return self.splits[-1][0]


def plan_walk_forward(ts: pd.Series, config: TrainingConfig) -> WalkForwardPlan:
    """Purged, embargoed splits on the labelled rows; the training window shrinks to fit the history."""
    n_times = int(pd.Series(ts).nunique())
    gap = config.label_horizon + config.embargo
    available = n_times - gap - config.n_splits * config.test_window
    window = min(config.train_window, available)
    if window < config.min_train_window:
        raise ValueError(
            f"{n_times} labelled bars cannot hold {config.n_splits} test blocks of {config.test_window} bars, "
            f"a gap of {gap} and at least {config.min_train_window} training bars: ingest more history "
            "(or lower retrain.n_splits / test_window_bars / min_train_bars)"
        )
    splits = walk_forward_splits(
        ts, config.n_splits, window, config.test_window, purge=config.label_horizon, embargo=config.embargo
    )
    block = np.full(len(ts), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splits):
        block[test] = k
    return WalkForwardPlan(splits, block, window)


# ------------------------------------------------------------------------------------------- training


@dataclass
class ModuleRun:
    """One module's walk-forward: out-of-sample P(up) per labelled row (NaN outside test blocks)."""

    module: str
    params: dict[str, Any]
    p_up: np.ndarray
    latency_ms: np.ndarray
    final_estimator: Any
    features: list[str]
    fit_seconds: float = 0.0
    weights: dict[str, float] | None = None  # ensemble: weights of the validation block
    members: list[str] | None = None


def module_params(name: str, overrides: Mapping[str, Any] | None, config: TrainingConfig) -> dict[str, Any]:
    """Constructor parameters: the label horizon where the module takes one, the seed, then overrides."""
    params: dict[str, Any] = {"random_state": config.random_state}
    if name == "patterns":
        params["label_horizon"] = config.label_horizon
    return {**params, **dict(overrides or {})}


# A digest unit of split_digests: one symbol's rows within a span of this many bar lengths of time.
_PIECE_BARS = 64


def split_digests(data: TrainingData, plan: WalkForwardPlan) -> list[str]:
    """sha256 of each split's training rows as a fit reads them: feature names, dtypes and values, labels
    and forward returns, in row order (not the rows' positions, which shift from one retrain to the next).

    Consecutive splits share most of their rows, so rows are digested in pieces, each once: a piece is one
    symbol's rows in a fixed span of time (``_PIECE_BARS`` bar lengths, from the epoch: the same rows make
    the same pieces in every retrain). A split's digest is the sha256 of its pieces' sha256s in row order
    (a window's first and last piece of a symbol, where it cuts one, digested for that split only)."""
    names = [str(c) for c in data.X.columns]
    values = [data.X[c].to_numpy() for c in data.X.columns]
    values += [np.asarray(data.y, dtype="float64"), np.asarray(data.fwd_ret, dtype="float64")]
    layout = ";".join(f"{c}:{v.dtype.str}" for c, v in zip([*names, "y", "fwd_ret"], values, strict=True))
    n = len(data.X)
    if n == 0:
        return [hashlib.sha256(f"{layout};{len(train)};".encode()).hexdigest() for train, _ in plan.splits]
    # the columns stacked by dtype: a piece is one slice of each stack (an object column would refuse)
    dtypes = list(dict.fromkeys(v.dtype.str for v in values))
    stacks = [np.stack([v for v in values if v.dtype.str == d]).view(np.uint8) for d in dtypes]

    def digest(a: int, b: int) -> bytes:
        h = hashlib.sha256()
        for stack in stacks:
            h.update(np.ascontiguousarray(stack[:, a * stack.shape[1] // n : b * stack.shape[1] // n]))
        return h.digest()

    span = _PIECE_BARS * interval_minutes(str(data.keys["interval"].iloc[0])) * 60 * 10**9
    chunk = time_order_keys(data.keys["ts"]) // span
    symbol = data.keys["symbol"].to_numpy()
    starts = np.flatnonzero(np.r_[True, (symbol[1:] != symbol[:-1]) | (chunk[1:] != chunk[:-1])])
    ends = np.r_[starts[1:], n]
    piece = np.repeat(np.arange(len(starts)), ends - starts)
    whole: dict[int, bytes] = {}
    out = []
    for train, _ in plan.splits:
        h = hashlib.sha256(f"{layout};{len(train)};".encode())
        cut = np.flatnonzero(np.r_[True, (np.diff(train) != 1) | (piece[train[1:]] != piece[train[:-1]])])
        for i, j in zip(cut, np.r_[cut[1:], len(train)], strict=True):
            a, b = int(train[i]), int(train[j - 1]) + 1
            p = int(piece[a])
            if a == starts[p] and b == ends[p]:  # a whole piece: digested once for every split
                if p not in whole:
                    whole[p] = digest(a, b)
                h.update(whole[p])
            else:
                h.update(digest(a, b))
        out.append(h.hexdigest())
    return out


class FitCache:
    """Split models fitted by earlier retrains of one run, reused where a split's training rows did not
    change (the backtest's monthly retrains with a full training window: a 63-bar test block moves by
    21 bars a retrain, so split k of one retrain is split k + 1 three retrains on). A fit is a pure
    function of the module, its parameters (seed included) and those rows, so a reused model is the one
    a refit would make, bit for bit (tests/models/test_training.py checks a sequence of retrains).

    ``begin`` once per retrain with its data and plan; a fit not used by the last ``keep`` retrains is
    dropped. Not shared between processes; safe to read from the module threads of one retrain.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.digests: list[str] = []
        self.hits = self.fits = 0
        self._models: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._retrain = 0

    def begin(self, data: TrainingData, plan: WalkForwardPlan) -> None:
        self._retrain += 1
        self.digests = split_digests(data, plan)
        oldest = self._retrain - self.keep
        self._models = {k: v for k, v in self._models.items() if v[0] >= oldest}

    def fitted(self, name: str, params: Mapping[str, Any], split: int, fit) -> Any:
        """The split's model: reused when the same module and parameters were fitted on the same rows."""
        key = (name, canonical_json(dict(params)), self.digests[split])
        found = self._models.get(key)
        if found is not None:
            self.hits += 1
            model = found[1]
        else:
            self.fits += 1
            model = fit()
        self._models[key] = (self._retrain, model)
        return model


def walk_forward_module(
    name: str,
    params: Mapping[str, Any],
    data: TrainingData,
    plan: WalkForwardPlan,
    fits: FitCache | None = None,
) -> ModuleRun:
    """Fit a fresh clone per split (with ``fwd_ret``), score its test block, keep the last split's model.
    ``fits``: reuse a split model an earlier retrain fitted on the same rows (``FitCache``)."""
    estimator = make_module(name, **params)
    n = len(data.X)
    p_up = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    final = None
    started = time.perf_counter()
    for k, (train, test) in enumerate(plan.splits):

        def fit(train: np.ndarray = train) -> Any:
            return clone(estimator).fit(data.X.iloc[train], data.y[train], fwd_ret=data.fwd_ret[train])

        model = fit() if fits is None else fits.fitted(name, params, k, fit)
        t0 = time.perf_counter()
        p_up[test] = model.predict_proba(data.X.iloc[test])[:, 1]
        latency[test] = 1000.0 * (time.perf_counter() - t0) / max(len(test), 1)
        final = model
    return ModuleRun(
        module=name,
        params=dict(estimator.get_params(deep=False)),
        p_up=p_up,
        latency_ms=latency,
        final_estimator=final,
        features=list(data.X.columns),
        fit_seconds=time.perf_counter() - started,
    )


def called_accuracy(p_up: np.ndarray, y: np.ndarray) -> float:
    """Hit rate of the calls (p_up != 0.5) with a known label; NaN when there are none."""
    ok = np.isfinite(p_up) & np.isfinite(y) & (p_up != NO_OPINION)
    if not ok.any():
        return float("nan")
    return float(((p_up[ok] > 0.5) == (y[ok] > 0.5)).mean())


def walk_forward_ensemble(
    members: Mapping[str, ModuleRun], data: TrainingData, plan: WalkForwardPlan, config: EnsembleConfig,
    random_state: int = 0,
) -> ModuleRun:  # fmt: skip
    """``combine`` on the members' out-of-sample P(up); block k weighs members by their accuracy on blocks < k."""
    names = list(members)
    probas = pd.DataFrame({m: members[m].p_up for m in names})
    n = len(data.X)
    p_up = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    weights: dict[str, float] = dict.fromkeys(names, 1.0)
    started = time.perf_counter()
    for k, (_, test) in enumerate(plan.splits):
        before = plan.block < k
        accuracy = {m: called_accuracy(np.where(before, members[m].p_up, np.nan), data.y) for m in names}
        weights = accuracy_weights(accuracy, floor=config.weight_floor)
        t0 = time.perf_counter()
        combined = combine(
            probas.iloc[test], weights, config.min_edge, config.strong, config.weak, config.min_voters
        )
        p_up[test] = ensemble_p_up(combined).to_numpy()
        own = 1000.0 * (time.perf_counter() - t0) / max(len(test), 1)
        # The ensemble needs every member's prediction first: their latencies add up.
        latency[test] = own + sum(members[m].latency_ms[test] for m in names)
    model = EnsembleModule(
        members=tuple(names),
        weights=weights,
        min_edge=config.min_edge,
        strong=config.strong,
        weak=config.weak,
        min_voters=config.min_voters,
        random_state=random_state,
    )
    # Assembled, not refitted: the members are the final models of this retrain.
    model.modules_ = {m: members[m].final_estimator for m in names}
    model._mark_fitted()
    params = {
        "members": names,
        "min_edge": config.min_edge,
        "strong": config.strong,
        "weak": config.weak,
        "min_voters": config.min_voters,
        "weight_floor": config.weight_floor,
        "member_params": {m: members[m].params for m in names},
    }
    return ModuleRun(
        module=ENSEMBLE,
        params=params,
        p_up=p_up,
        latency_ms=latency,
        final_estimator=model,
        features=list(data.X.columns),
        fit_seconds=time.perf_counter() - started,
        weights=weights,
        members=names,
    )


# ------------------------------------------------------------------------------------------ calibration


@dataclass
class Calibration:
    """Walk-forward calibrated values per labelled row, and the calibrator stored with the model."""

    p_up_calibrated: np.ndarray
    confidence_seed: np.ndarray
    confidence_calibrated: np.ndarray
    seed_accuracy: np.ndarray
    calibrator: Calibrator | None  # fitted on every block (live use)
    accuracy: float  # the seed formula's accuracy for live use (every block)
    holdout_ece: dict[str, float] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.calibrator.method if self.calibrator is not None else NO_CALIBRATION


def time_order_keys(ts: pd.Series) -> np.ndarray:
    """The timestamps as int64 nanoseconds since the epoch (UTC): they sort as the timestamps do. Taking
    a tz-aware column ``to_numpy()`` gives an object array of Timestamps, slow to build and to argsort."""
    values = pd.to_datetime(pd.Series(ts), utc=True)
    return values.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").view(np.int64)


def _pairs(
    p_up: np.ndarray, y: np.ndarray, ts: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the calls among ``rows``, in time order (select_calibrator's holdout is newest)."""
    idx = np.flatnonzero(rows & np.isfinite(p_up) & np.isfinite(y) & (p_up != NO_OPINION))
    idx = idx[np.argsort(ts[idx], kind="stable")]
    confidence, correct = side_confidence(p_up[idx], y[idx])
    return confidence, correct


def _select(confidence: np.ndarray, correct: np.ndarray, config: TrainingConfig):
    if len(confidence) == 0:
        return None, {}
    return select_calibrator(
        confidence,
        correct,
        methods=config.calibration_methods,
        holdout_fraction=config.calibration_holdout_fraction,
        min_samples=config.calibration_min_samples,
        n_bins=config.n_bins,
        seed=config.seed_params(),
    )


def side_values(p_up: np.ndarray, calibrator: Calibrator | None, accuracy: np.ndarray | float):
    """(p_up_calibrated, confidence_seed, confidence_calibrated) of the raw predicted side.

    The confidences refer to the side the raw P(up) calls (up when p >= 0.5), as the seed formula does, so
    raw, seed and fitted are scored on the same (confidence, hit) pairs; a fitted value may fall below 0.5
    where the module's calls at that confidence lose. No opinion (exactly 0.5) stays 0.5.
    """
    p = np.asarray(p_up, dtype="float64")
    raw = np.maximum(p, 1.0 - p)
    # the seed formula's numbers travel with the calibrator the retrain fitted (RetrainSettings' then)
    params = calibrator.seed_params() if calibrator is not None else {}
    seed = np.asarray(seed_calibration(raw, accuracy, **params), dtype="float64")
    if calibrator is None:
        fitted = raw.copy()
    else:
        fitted = calibrator.transform(raw)
    no_opinion = p == NO_OPINION
    seed = np.where(no_opinion, NO_OPINION, seed)
    fitted = np.where(no_opinion, NO_OPINION, fitted)
    # Without a map P(up) is passed through exactly (1 - (1 - p) is not always p in floats).
    p_cal = p.copy() if calibrator is None else np.where(p >= 0.5, fitted, 1.0 - fitted)
    return p_cal, seed, fitted


def calibrate_walk_forward(
    p_up: np.ndarray, y: np.ndarray, ts: pd.Series, plan: WalkForwardPlan, config: TrainingConfig
) -> Calibration:
    n = len(p_up)
    ts_values = time_order_keys(ts)
    p_cal = np.full(n, np.nan)
    seed = np.full(n, np.nan)
    fitted = np.full(n, np.nan)
    seed_acc = np.full(n, np.nan)
    for k in range(len(plan.splits)):
        rows = plan.block == k
        before = (plan.block >= 0) & (plan.block < k)
        accuracy = called_accuracy(np.where(before, p_up, np.nan), y)
        accuracy = accuracy if np.isfinite(accuracy) else config.seed_accuracy_prior
        calibrator, _ = _select(*_pairs(p_up, y, ts_values, before), config)
        p_cal[rows], seed[rows], fitted[rows] = side_values(p_up[rows], calibrator, accuracy)
        seed_acc[rows] = accuracy
    every = plan.block >= 0
    final, scores = _select(*_pairs(p_up, y, ts_values, every), config)
    accuracy = called_accuracy(np.where(every, p_up, np.nan), y)
    return Calibration(
        p_up_calibrated=p_cal,
        confidence_seed=seed,
        confidence_calibrated=fitted,
        seed_accuracy=seed_acc,
        calibrator=final,
        accuracy=accuracy if np.isfinite(accuracy) else config.seed_accuracy_prior,
        holdout_ece=scores,
    )


# ------------------------------------------------------------------------------------------- artifacts


@dataclass
class ModelArtifact:
    """What is pickled under data/models/<module>/<interval>/v<version>.pkl: enough to predict alone."""

    module: str
    interval: str
    version: int
    estimator: Any  # the fitted module (ensemble: an EnsembleModule holding its members' final models)
    calibrator: Calibrator | None
    seed_accuracy: float
    features: list[str]
    feature_set_version: str
    label_horizon: int
    params: dict[str, Any]
    config_hash: str
    data_hash: str
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    trained_at: pd.Timestamp
    weights: dict[str, float] | None = None

    def predict_p_up(self, X: pd.DataFrame) -> tuple[np.ndarray, float]:
        """(P(up) per row, predict latency per row in ms)."""
        if len(X) == 0:
            return np.empty(0), float("nan")
        started = time.perf_counter()
        p = self.estimator.predict_proba(X[self.features])[:, 1]
        return p, 1000.0 * (time.perf_counter() - started) / len(X)


# ------------------------------------------------------------------------------------------- evaluation


def validation_metrics(
    y: np.ndarray,
    p_up: np.ndarray,
    n_bins: int = DEFAULT_N_BINS,
    score_params: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """classification_metrics of raw P(up) plus performance_score (what promotion compares)."""
    metrics = classification_metrics(y, p_up, n_bins=n_bins)
    metrics["performance_score"] = performance_score(metrics, **dict(score_params or {}))
    return metrics


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_metrics: dict[str, float] | None


def compare_with_champion(
    champion: ModelArtifact | None,
    challenger_metrics: Mapping[str, float],
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    *,
    metric: str,
    margin: float,
    score_params: Mapping[str, float] | None = None,
) -> Decision:
    """Score the champion on the challenger's validation rows; ``promote`` decides."""
    if champion is None:
        promoted, reason = promote(None, challenger_metrics, metric=metric, margin=margin)
        return Decision(promoted, reason, None)
    if champion.feature_set_version != FEATURE_SET_VERSION or champion.label_horizon != config.label_horizon:
        promoted, reason = promote(None, challenger_metrics, metric=metric, margin=margin)
        why = (
            f"champion v{champion.version} is not comparable (feature set {champion.feature_set_version}, "
            f"label horizon {champion.label_horizon})"
        )
        return Decision(promoted, f"{why}; {reason}", None)
    rows = plan.validation_rows
    p, _ = champion.predict_p_up(data.X.iloc[rows])
    champion_metrics = validation_metrics(data.y[rows], p, config.n_bins, score_params)
    promoted, reason = promote(champion_metrics, challenger_metrics, metric=metric, margin=margin)
    valid_start = data.keys["ts"].iloc[rows].min()
    if champion.train_end >= valid_start:
        reason += f" (champion v{champion.version} was trained on part of this validation window)"
    return Decision(promoted, reason, champion_metrics)


@dataclass
class Candidate:
    """A module's retrain result before the registry: walk-forward run, calibration and metrics."""

    run: ModuleRun
    calibration: Calibration
    metrics: dict[str, float]  # validation window (the newest test block), raw P(up)
    walk_forward_metrics: dict[str, float]  # every test block


def evaluate_candidate(
    run: ModuleRun,
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    score_params: Mapping[str, float] | None = None,
) -> Candidate:
    calibration = calibrate_walk_forward(run.p_up, data.y, data.keys["ts"], plan, config)
    rows = plan.validation_rows
    every = plan.block >= 0
    return Candidate(
        run=run,
        calibration=calibration,
        metrics=validation_metrics(data.y[rows], run.p_up[rows], config.n_bins, score_params),
        walk_forward_metrics=validation_metrics(data.y[every], run.p_up[every], config.n_bins, score_params),
    )


def train_candidate(
    name: str,
    params: Mapping[str, Any],
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    score_params: Mapping[str, float] | None = None,
    fits: FitCache | None = None,
) -> Candidate:
    """Walk-forward, calibration and metrics of one member module (what the retrain flow runs per module)."""
    run = walk_forward_module(name, params, data, plan, fits)
    return evaluate_candidate(run, data, plan, config, score_params)


def ensemble_candidate(
    members: Mapping[str, Candidate],
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    ensemble: EnsembleConfig,
    score_params: Mapping[str, float] | None = None,
) -> Candidate:
    runs = {name: c.run for name, c in members.items()}
    run = walk_forward_ensemble(runs, data, plan, ensemble, random_state=config.random_state)
    return evaluate_candidate(run, data, plan, config, score_params)


def walk_forward_frame(
    candidate: Candidate, data: TrainingData, *, version: int, label_horizon: int
) -> pd.DataFrame:
    """The candidate's out-of-sample predictions (every test block) as ``predictions`` rows."""
    rows = np.flatnonzero(np.isfinite(candidate.run.p_up))
    cal = candidate.calibration
    return prediction_frame(
        data.keys.iloc[rows],
        candidate.run.p_up[rows],
        cal.p_up_calibrated[rows],
        cal.confidence_seed[rows],
        cal.confidence_calibrated[rows],
        cal.seed_accuracy[rows],
        candidate.run.latency_ms[rows],
        module=candidate.run.module,
        version=version,
        kind=WALK_FORWARD,
        label_horizon=label_horizon,
    )


def prediction_frame(
    keys: pd.DataFrame,
    p_up: np.ndarray,
    p_up_calibrated: np.ndarray,
    confidence_seed: np.ndarray,
    confidence_calibrated: np.ndarray,
    seed_accuracy: np.ndarray | float,
    latency_ms: np.ndarray | float,
    *,
    module: str,
    version: int,
    kind: str,
    label_horizon: int,
) -> pd.DataFrame:
    """Rows of the ``predictions`` table (without run_id / predicted_at)."""
    p = np.asarray(p_up, dtype="float64")
    n = len(p)
    direction = np.where(p > 0.5, 1, np.where(p < 0.5, -1, 0)).astype(np.int16)
    return pd.DataFrame(
        {
            "symbol": keys["symbol"].to_numpy(),
            "interval": keys["interval"].to_numpy(),
            "ts": keys["ts"].array,  # as stored (to_numpy would make an object array of Timestamps)
            "module": module,
            "model_version": np.full(n, version, dtype=np.int64),
            "kind": kind,
            "label_horizon": np.full(n, label_horizon, dtype=np.int64),
            "p_up": p,
            "p_up_calibrated": np.asarray(p_up_calibrated, dtype="float64"),
            "confidence_raw": np.maximum(p, 1.0 - p),
            "confidence_seed": np.asarray(confidence_seed, dtype="float64"),
            "confidence_calibrated": np.asarray(confidence_calibrated, dtype="float64"),
            "seed_accuracy": np.broadcast_to(np.asarray(seed_accuracy, dtype="float64"), (n,)).copy(),
            "direction": direction,
            "out_of_sample": True,
            "predict_latency_ms": np.broadcast_to(np.asarray(latency_ms, dtype="float64"), (n,)).copy(),
        }
    )


def live_predictions(artifact: ModelArtifact, keys: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    """The artifact's predictions for bars after its training (the newest, unlabelled ones)."""
    p, latency = artifact.predict_p_up(X)
    p_cal, seed, fitted = side_values(p, artifact.calibrator, artifact.seed_accuracy)
    return prediction_frame(
        keys, p, p_cal, seed, fitted, artifact.seed_accuracy, latency,
        module=artifact.module, version=artifact.version, kind=LIVE, label_horizon=artifact.label_horizon,
    )  # fmt: skip
