"""One Settings object for the whole system.

Override order (highest first): CLI flags > environment (``QTRADER_*``) > ``qtrader.toml`` > defaults.
Every threshold and multiplier used by a stage is a named field here, with the plan documents' value
as its default where they give one.

Validation: unknown keys are refused at every level (a typo is never silently ignored), numbers carry
their range (days > 0, fractions in [0, 1], ...), and ``load_settings`` turns any mistake into one line
naming where it came from (the file, the environment variable or the flag), the field and the reason
(``ConfigError``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from qtrader import validation

ENV_PREFIX = "QTRADER_"


def _checked(check):
    """A pydantic after-validator from a qtrader.validation check (its BadInput becomes the reason)."""

    def run(value):
        try:
            check(value)
        except validation.BadInput as exc:
            raise ValueError(str(exc)) from None
        return value

    return AfterValidator(run)


# Value types with their ranges: a setting outside its range is refused, not clamped.
Fraction = Annotated[float, Field(ge=0, le=1)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
Score = Annotated[float, Field(ge=0, le=100)]  # health and performance scores are 0-100
BarInterval = Annotated[str, _checked(lambda v: validation.interval(v, "interval"))]
BenchmarkWindow = Annotated[str, _checked(lambda v: validation.benchmark_window(v, "window"))]
DateFormat = Annotated[str, _checked(lambda v: validation.date_format(v, "format"))]


def _ticker(value: str) -> str:
    problem = validation.symbol_problem(value.upper())
    if problem:
        raise ValueError(problem)
    return value.upper()


Symbol = Annotated[str, AfterValidator(_ticker)]  # upper-cased; the default symbol pattern and length
PromotionMetric = Literal[
    "auc", "accuracy", "precision", "recall", "performance_score", "log_loss", "brier", "ece"
]  # models.walkforward HIGHER_IS_BETTER + LOWER_IS_BETTER
CalibrationMethod = Literal["seed", "isotonic", "sigmoid"]  # models.calibration.METHODS
# models.signals.ensemble.ConsensusType, and EXTERNAL: a user's own entry (backtest --signals).
Consensus = Literal["UNANIMOUS", "STRONG", "WEAK", "SPLIT", "NONE", "EXTERNAL"]

DEFAULT_UNIVERSE = [
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "XOM", "UNH",
    "JNJ", "V", "PG", "HD", "KO", "PEP", "COST", "WMT", "BAC", "DIS",
]  # fmt: skip


class SourceName(StrEnum):
    synthetic = "synthetic"
    yfinance = "yfinance"
    files = "files"


class Severity(StrEnum):
    critical = "critical"
    warning = "warning"


def _toml_path() -> Path:
    return Path(os.environ.get("QTRADER_CONFIG", "qtrader.toml"))


# Rule name -> severity. Critical row rules quarantine rows; critical series rules block the symbol;
# warnings are recorded in dq_results and the rows kept.
DEFAULT_SEVERITY: dict[str, Severity] = {
    "price_not_null": Severity.critical,
    "price_positive": Severity.critical,
    "high_ge_open_close": Severity.critical,
    "low_le_open_close": Severity.critical,
    "volume_non_negative": Severity.critical,
    "duplicate_timestamp": Severity.critical,
    "timestamp_decreasing": Severity.critical,
    "outside_session": Severity.critical,
    "gap_beyond_tolerance": Severity.warning,
    "stale_last_bar": Severity.critical,
    "move_beyond_limit": Severity.warning,
}


class GateSettings(BaseSettings):
    """Tolerances of the raw-bars data-quality gate (expectations/suites/bars_raw.json)."""

    model_config = SettingsConfigDict(extra="forbid")

    # A one-bar |close/prev_close - 1| above this is flagged, per interval family.
    max_abs_return_daily: PositiveFloat = 0.40
    max_abs_return_intraday: PositiveFloat = 0.15
    # Missing expected bars (exchange calendar) between two consecutive bars of a symbol.
    max_gap_bars_daily: NonNegativeInt = 5
    max_gap_bars_intraday: NonNegativeInt = 12
    # Expected bars between a symbol's last bar and the window end (or the newest bar of the batch).
    max_stale_bars_daily: NonNegativeInt = 3
    max_stale_bars_intraday: NonNegativeInt = 12
    severity: dict[str, Severity] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY))

    @field_validator("severity", mode="after")
    @classmethod
    def _merge_defaults(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        # A partial [gate.severity] table overrides only the rules it names.
        unknown = sorted(set(value) - set(DEFAULT_SEVERITY))
        if unknown:
            raise ValueError(f"unknown gate rules {unknown}; known: {sorted(DEFAULT_SEVERITY)}")
        return {**DEFAULT_SEVERITY, **value}


class SyntheticSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid")

    seed: NonNegativeInt = 7
    # Strength of the planted predictable component (see docs/synthetic.md); 0 gives pure noise.
    signal_strength: NonNegativeFloat = 0.12
    # Annual log drift added to every symbol (0.69 = prices double in about a year, before the regimes).
    trend: float = 0.0
    # One market-wide regime path shared by every symbol, as in an index, instead of one per symbol.
    market_regime: bool = False


# Signal modules trained and benchmarked by default (models.signals.DEFAULT_MEMBERS; the ensemble is extra).
DEFAULT_SIGNAL_MEMBERS = ["patterns", "volatility", "regime", "selector", "imbalance", "direction"]

# Seed 000 section 1.1's exit profile in ATR multiples (seed 002's old system used the same): TP1 1R, TP2
# 2.5R, TP3 4R, stop 1.5 ATR. The one home of these four numbers: the signal labels (SignalSettings), the
# exit planner (ExitSettings) and the backtest's static mode (BacktestSettings.static_*) default to them.
SEED_TP1_ATR = 1.0
SEED_TP2_ATR = 2.5
SEED_TP3_ATR = 4.0
SEED_STOP_ATR = 1.5


class SignalSettings(BaseSettings):
    """What the signal modules learn, the exit profile their calls are judged with, and the ensemble."""

    model_config = SettingsConfigDict(extra="forbid")

    members: list[str] = Field(default_factory=lambda: list(DEFAULT_SIGNAL_MEMBERS))
    ensemble: bool = True  # also register the ensemble of the members (combine on their probabilities)
    # Bars label_up looks ahead (also the walk-forward purge and the patterns module's label_horizon).
    # One bar: the synthetic market's planted component is a one-bar effect; longer horizons also pick up
    # its regime drift (docs/modules.md, "Retrain", has the measured accuracies).
    label_horizon_daily: PositiveInt = 1
    label_horizon_intraday: PositiveInt = 1
    random_state: NonNegativeInt = 0
    # Constructor overrides per module, e.g. {"direction": {"max_iter": 200}} (docs/modules.md).
    module_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Exit profile of seed 000 section 1.1 in ATR multiples; exit statistics watch exit_horizon_bars bars.
    tp1_atr: PositiveFloat = SEED_TP1_ATR
    tp2_atr: PositiveFloat = SEED_TP2_ATR
    tp3_atr: PositiveFloat = SEED_TP3_ATR
    stop_atr: PositiveFloat = SEED_STOP_ATR
    exit_horizon_bars: PositiveInt = 20
    # Ensemble vote (models.signals.ensemble.combine) and its accuracy weights (accuracy_weights floor).
    ensemble_min_edge: Fraction = 0.05
    ensemble_strong: Fraction = 0.75
    ensemble_weak: Fraction = 0.5
    ensemble_min_voters: PositiveInt = 2
    accuracy_weight_floor: Fraction = 0.5

    @field_validator("members", mode="after")
    @classmethod
    def _known_members(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in DEFAULT_SIGNAL_MEMBERS]
        if unknown or not value:
            raise ValueError(
                f"unknown modules {unknown}; members are some of: {', '.join(DEFAULT_SIGNAL_MEMBERS)}"
                if unknown
                else "at least one member module is needed"
            )
        return list(dict.fromkeys(value))

    @field_validator("module_params", mode="after")
    @classmethod
    def _known_module_params(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        known = [*DEFAULT_SIGNAL_MEMBERS, "ensemble"]
        unknown = [m for m in value if m not in known]
        if unknown:
            raise ValueError(f"parameters for unknown modules {unknown}; modules: {', '.join(known)}")
        return value


class RetrainSettings(BaseSettings):
    """Walk-forward retraining, calibration and champion promotion (flows/retrain.py)."""

    model_config = SettingsConfigDict(extra="forbid")

    # Trailing training window of each walk-forward split, in bars; shrunk (down to min_train_bars) when
    # the warehouse holds less history, so a short demo history still trains.
    train_window_bars_daily: PositiveInt = 750
    train_window_bars_intraday: PositiveInt = 750
    min_train_bars: PositiveInt = 200
    n_splits: PositiveInt = 4
    # Test block of each split; the newest block is the validation window.
    test_window_bars_daily: PositiveInt = 63  # a quarter of sessions
    test_window_bars_intraday: PositiveInt = 78  # one session of 5-minute bars
    # Bars dropped before each test block on top of the purge (= label horizon).
    embargo_bars_daily: NonNegativeInt = 5
    embargo_bars_intraday: NonNegativeInt = 12
    # Leave out each series' first FINITE_FROM_ROW bars (indicator warm-up, features still NaN).
    skip_warmup: bool = True
    promotion_metric: PromotionMetric = "auc"
    promotion_margin: NonNegativeFloat = 0.005
    calibration_methods: list[CalibrationMethod] = Field(
        default_factory=lambda: ["seed", "isotonic", "sigmoid"], min_length=1
    )
    calibration_holdout_fraction: OpenFraction = 0.3
    calibration_min_samples: PositiveInt = 50
    # Accuracy the seed formula assumes before a module has any out-of-sample history (a coin flip).
    seed_accuracy_prior: Fraction = 0.5
    # Seed 000 section 2.3's confidence formula: raw * (w * accuracy / raw + (1 - w)) when raw > 0.5,
    # clamped to [floor, cap] (models/calibration.seed_calibration).
    seed_accuracy_weight: Fraction = 0.7
    seed_confidence_floor: Fraction = 0.1
    seed_confidence_cap: Fraction = 0.95
    # How the retrain gates the predictions it writes: a Great Expectations validation (with a Data Docs
    # page), or the same suite's rules checked in memory (expectations.frame_gate.gate_rows: the same
    # passed and quarantined rows and dq_results, no Data Docs page, no GX start-up). The backtest's
    # scratch retrains use in_memory; a GX validation cost ~1 s each and the import ~8 s once.
    predictions_gate: Literal["great_expectations", "in_memory"] = "great_expectations"
    # Member modules trained at once (threads) in a retrain. Their fits spend most of their time in
    # numpy/scikit-learn code that releases the GIL; each module is seeded and trained alone, so the
    # models do not depend on the count. 1: one after another. Backtests do not read these two keys: their
    # scratch retrains use backtest.retrain_module_threads and the in_memory gate.
    module_threads: PositiveInt = 1


class BenchmarkSettings(BaseSettings):
    """Benchmark windows and the performance score (flows/benchmark.py, models/metrics.py)."""

    model_config = SettingsConfigDict(extra="forbid")

    # Calendar spans ending at the newest labelled bar ("all" = every stored prediction).
    windows_daily: list[BenchmarkWindow] = Field(default_factory=lambda: ["30d", "90d", "365d", "all"])
    windows_intraday: list[BenchmarkWindow] = Field(default_factory=lambda: ["24h", "7d", "30d"])
    # Window the scoreboard shows by default.
    scoreboard_window_daily: BenchmarkWindow = "90d"
    scoreboard_window_intraday: BenchmarkWindow = "7d"
    ece_bins: PositiveInt = 10
    # performance_score = 100 * (w_accuracy * acc part + w_auc * auc part + w_calibration * ece part).
    score_w_accuracy: NonNegativeFloat = 0.4
    score_w_auc: NonNegativeFloat = 0.4
    score_w_calibration: NonNegativeFloat = 0.2
    score_accuracy_span: PositiveFloat = 0.10
    score_auc_span: PositiveFloat = 0.10
    score_ece_span: PositiveFloat = 0.10


class BrokerName(StrEnum):
    local = "local"
    alpaca = "alpaca"


# The trading sections below are plain pydantic models (not BaseSettings): models/ builds them with
# defaults in tests and pure code, and a standalone BaseSettings would read unprefixed environment
# variables (STRATEGY, TICK, ...). Nested in Settings they still take QTRADER_<SECTION>__<FIELD>.


class OrderSettings(BaseModel):
    """Bracket orders (models/brackets.py, docs/trading.md)."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(
        default="qtrader", pattern=r"^[A-Za-z0-9_-]{1,32}$"
    )  # first part of every client order id
    tick: PositiveFloat = 0.01  # venue tick for prices >= $1 (Alpaca: 0.0001 below $1)
    time_in_force: Literal["day", "gtc"] = "day"  # what Alpaca accepts on a bracket
    # Share of a position's quantity given to the TP1 / TP2 / TP3 bracket (whole shares, no zero legs).
    tp_weights: list[NonNegativeFloat] = Field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3], min_length=1)


class LocalBrokerSettings(BaseModel):
    """The local paper broker (brokers/local.py): account and fill costs."""

    model_config = ConfigDict(extra="forbid")

    starting_cash: Decimal = Field(default=Decimal("100000"), gt=0)
    slippage_bps: NonNegativeFloat = 5.0  # against you, on market entries and triggered stops
    commission_per_share: NonNegativeFloat = 0.0
    commission_bps: NonNegativeFloat = 0.0
    interval: BarInterval = "5m"  # the bars it fills against


class AlpacaSettings(BaseModel):
    """Alpaca paper trading (brokers/alpaca.py); keys come from APCA_* or Prefect Secret blocks."""

    model_config = ConfigDict(extra="forbid")

    url_override: str | None = None
    timeout_s: PositiveFloat = 10.0
    rate_limit_retries: NonNegativeInt = 3  # a 429 (200 requests/min) retried this often by alpaca-py ...
    rate_limit_wait_s: NonNegativeFloat = 3.0  # ... this far apart (alpaca-py defaults), then unavailable
    key_block: str = "alpaca-api-key-id"
    secret_block: str = "alpaca-api-secret-key"


class SizingSettings(BaseModel):
    """Position sizing (models/sizing.py): seed 000 section 2.2."""

    model_config = ConfigDict(extra="forbid")

    risk_per_trade: OpenFraction = 0.01  # fraction of equity lost if the stop is hit
    performance_sizing: bool = True  # False: uniform sizing (multiplier 1 whatever the module's record)
    accuracy_high: Fraction = 0.75  # module accuracy (fraction) at or above: x multiplier_high
    accuracy_low: Fraction = 0.60  # below: x multiplier_low
    multiplier_high: NonNegativeFloat = 1.2
    multiplier_low: NonNegativeFloat = 0.7
    performance_score_floor: Score = 50.0  # performance score (0-100) below: a further x score_penalty
    score_penalty: NonNegativeFloat = 0.8
    max_position_pct: PositiveFloat = 0.10  # of equity, per position
    max_gross_exposure_pct: PositiveFloat = 1.0  # of equity, all positions


class ExitSettings(BaseModel):
    """Exit profile and dynamic stops (models/exits.py): seed 000 sections 1.1-1.3."""

    model_config = ConfigDict(extra="forbid")

    # False: the old system's fixed profile (TP1/2/3 at tp*_atr, stop at stop_atr; no hit-rate, regime or
    # learned adjustment, no health-driven tightening). Breakeven after TP1 stays: the old system had it.
    adaptive: bool = True
    predictive: bool = True  # predictive tightening on alerts (seed 000 section 1.3)
    tp1_atr: PositiveFloat = SEED_TP1_ATR
    tp2_atr: PositiveFloat = SEED_TP2_ATR
    tp3_atr: PositiveFloat = SEED_TP3_ATR
    stop_atr: PositiveFloat = SEED_STOP_ATR
    # Take-profit multiplier per level from its own benchmarked hit rate: > high -> x up, < low -> x down.
    tp1_rate_high: Fraction = 0.80
    tp1_rate_low: Fraction = 0.70
    tp2_rate_high: Fraction = 0.80
    tp2_rate_low: Fraction = 0.70
    tp3_rate_high: Fraction = 0.80
    tp3_rate_low: Fraction = 0.70
    tp_mult_up: PositiveFloat = 1.2
    tp_mult_down: PositiveFloat = 0.8
    tp2_blend_tp1: bool = True  # seed: TP2 uses (tp1_mult + tp2_mult) / 2
    high_vol_stop_mult: PositiveFloat = 1.3
    low_vol_stop_mult: PositiveFloat = 0.9
    max_confidence: Fraction = 0.95
    breakeven_offset: NonNegativeFloat = 0.0  # after TP1: stop to entry +/- this fraction
    min_overall_health: Score = 70.0  # below: dynamic (health-driven) adjustments are skipped
    ensemble_module: str = "ensemble"
    ensemble_degraded_health: Score = 60.0  # below: tighten halfway toward the current price
    tighten_fraction: Fraction = 0.5
    predictive_hours: NonNegativeFloat = (
        4.0  # an alert with time_to_threshold below this tightens to breakeven
    )
    predictive_offset: NonNegativeFloat = 0.001  # breakeven -/+ 0.1%
    predictive_modules: list[str] = Field(default_factory=list)  # empty: alerts of any module
    predictive_metrics: list[str] = Field(default_factory=list)  # empty: alerts of any metric
    health_gate_applies_to_predictive: bool = False


class FilterSettings(BaseModel):
    """Trade filter (models/trade_filter.py): seed 000 section 2.1."""

    model_config = ConfigDict(extra="forbid")

    health_gating: bool = True  # False: overall and module health are not checked (the old system)
    allowed_consensus: list[Consensus] = Field(default_factory=lambda: ["UNANIMOUS", "STRONG"])
    min_confidence: Fraction = 0.55  # calibrated confidence of the predicted side
    # Seed gates: the fallback before a module has a learned baseline, and the ceiling after
    # (models/health.gate_value). learned_gates False: always these fixed values.
    min_overall_health: Score = 80.0
    min_module_health: Score = 70.0
    learned_gates: bool = True
    max_open_positions: NonNegativeInt = 10
    daily_loss_limit_pct: Fraction = 0.02  # of start-of-day equity: no new entries past this loss
    cooldown_minutes: NonNegativeFloat = 30.0  # per symbol, after its last exit


# Health, learned thresholds and predictive alerts (models/health.py, models/thresholds.py,
# models/alerts.py; docs/health.md). These sections are the only home of their numbers.
DEFAULT_HEALTH_WEIGHTS: dict[str, float] = {
    "data_freshness": 0.15,
    "prediction_freshness": 0.15,
    "error_rate": 0.15,
    "latency": 0.10,
    "accuracy_drift": 0.15,
    "feature_drift": 0.10,
    "model_staleness": 0.10,
    "dq_failure_rate": 0.10,
}


class HealthSettings(BaseModel):
    """Module health scores: each component is 100 at ``*_ok`` or better, 0 at ``*_bad`` or worse."""

    model_config = ConfigDict(extra="forbid")

    # Component weights (normalised over the measured components); a partial table overrides those named.
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_HEALTH_WEIGHTS))
    cap_margin: float = 50.0  # module score <= worst component + this
    # Gates never go below cap_margin + this (the kill-switch floor, 55): a component within this of 0
    # caps its module at or under the floor, so it always blocks, whatever the module's history.
    kill_switch_margin: float = 5.0
    module_weights: dict[str, float] = Field(default_factory=dict)  # overall score; missing modules weigh 1
    # Freshness in bars: completed bars not ingested; outputs behind the newest bar.
    data_lag_ok_daily: float = 1.0
    data_lag_bad_daily: float = 4.0
    data_lag_ok_intraday: float = 3.0
    data_lag_bad_intraday: float = 12.0
    prediction_lag_ok_daily: float = 1.0
    prediction_lag_bad_daily: float = 4.0
    prediction_lag_ok_intraday: float = 3.0
    prediction_lag_bad_intraday: float = 12.0
    error_rate_ok: float = 0.01
    error_rate_bad: float = 0.10
    error_recent_runs: int = 5  # retrain runs checked for a module that raised
    latency_ratio_ok: float = 1.0  # p95 latency / learned latency_ms threshold
    latency_ratio_bad: float = 2.0
    accuracy_drop_z_ok: float = 2.0  # (validation - recent accuracy) / the standard error of the difference
    accuracy_drop_z_bad: float = 5.0
    accuracy_window_daily: str = "30d"  # benchmarks.window_name compared with validation accuracy
    accuracy_window_intraday: str = "24h"
    # Feature drift: share of recent input values outside the training window's central 1 - 2 x drift_tail
    # (98%), beyond the share the window itself has there, mean over the module's inputs.
    drift_ok: float = 0.05
    drift_bad: float = 0.25
    drift_tail: float = 0.01
    drift_recent_bars_daily: int = 63  # newest bar timestamps compared with the champion's training window
    drift_recent_bars_intraday: int = 78
    drift_max_rows: int = 20_000  # training-window sample size
    drift_min_rows: int = 20  # fewer finite values on either side: the feature is not compared
    staleness_ratio_ok: float = 1.25  # hours since the champion was last confirmed / retrain schedule
    staleness_ratio_bad: float = 3.0
    # prefect.yaml retrains both intervals weekly (Saturdays); a backtest sets its own cadence here.
    # Positive: the staleness score is age / schedule; there is no "never retrain" setting to score.
    retrain_schedule_hours_daily: PositiveFloat = 168.0
    retrain_schedule_hours_intraday: PositiveFloat = 168.0
    dq_failure_ok: float = 0.001  # failing / checked rows, critical verdicts of the input gates
    dq_failure_bad: float = 0.02
    dq_recent_runs: int = 3  # newest ingest and features runs per interval

    @field_validator("weights", mode="after")
    @classmethod
    def _merge_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(DEFAULT_HEALTH_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown health components {unknown}; known: {sorted(DEFAULT_HEALTH_WEIGHTS)}")
        if any(w < 0 for w in value.values()):
            raise ValueError("health weights must be >= 0")
        return {**DEFAULT_HEALTH_WEIGHTS, **value}

    @property
    def kill_floor(self) -> float:
        """The lowest any health gate goes: cap_margin + kill_switch_margin."""
        return self.cap_margin + self.kill_switch_margin


# Per metric: the spread floor of a learned threshold (metric units), so a metric that has been constant
# does not get a bound at its own value.
DEFAULT_MIN_SPREAD: dict[str, float] = {
    "latency_ms": 1.0,
    "error_rate": 0.002,
    "accuracy": 0.005,
    "out_of_range": 0.01,
    "dq_failure_rate": 0.0005,
    "data_lag_bars": 1.0,
    "prediction_lag_bars": 1.0,
    "model_age_hours": 24.0,
    "health_score": 1.0,
    "stop_distance_atr": 0.05,
}


class ThresholdSettings(BaseModel):
    """Learned thresholds: median +/- k x 1.4826 MAD (or a quantile) of each metric's trailing points.

    A metric's default (before ``min_history`` points) is the setting that defines it elsewhere
    (models/thresholds.metric_specs), or one of the ``default_*`` fields here.
    """

    model_config = ConfigDict(extra="forbid")

    method: str = "mad"  # mad | quantile
    k: float = 3.0
    quantile: float = 0.99
    window: int = 500  # trailing points per (module, metric)
    min_history: int = 30  # fewer points: the metric's default threshold, flagged as such
    # Oldest metric_history read: the trailing ``window`` points within it are used. A daily system runs
    # health once a bar, so a month holds ~21 points: a year lets its thresholds learn.
    history_days: float = 365.0
    min_spread: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIN_SPREAD))
    latency_rel_min_spread: float = 0.05  # latency spread floor as a share of its median (ratio scale)
    default_latency_ms: float = 1000.0
    default_error_rate: float = 0.05
    default_dq_failure_rate: float = 0.01

    @field_validator("min_spread", mode="after")
    @classmethod
    def _merge_spreads(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(DEFAULT_MIN_SPREAD))
        if unknown:
            raise ValueError(f"unknown threshold metrics {unknown}; known: {sorted(DEFAULT_MIN_SPREAD)}")
        return {**DEFAULT_MIN_SPREAD, **value}


class AlertSettings(BaseModel):
    """Predictive alerts: Theil-Sen trend toward the learned threshold -> hours to breach."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(
        default_factory=lambda: [
            "latency_ms",
            "error_rate",
            "accuracy",
            "out_of_range",
            "dq_failure_rate",
            "health_score",
        ]
    )
    critical_hours: float = 4.0  # seed 000 section 1.3: the exit planner tightens stops below this
    warning_hours: float = 24.0
    resolve_hours: float = 36.0  # an open alert resolves once the breach is > this many hours away
    confidence: float = 0.95  # of the slope's interval; trending = the whole interval on the threshold's side
    min_points: int = 8
    max_points: int = 300  # theilslopes is O(n^2) pairs: 300 points = 45k pairs, ~10 ms
    lookback_hours: float = 24.0
    breach_points: int = 3  # breached = the median of the last this many points is past the threshold
    max_extrapolation: float = 2.0  # no estimate beyond this multiple of the fitted span
    confirm_hours: float = 36.0  # the slow end of the slope interval must reach the threshold within this
    max_autocorrelation: float = 0.9  # cap of the residuals' lag-1 autocorrelation used to widen the interval


class DecisionSettings(BaseModel):
    """The decision flow (flows/decide.py, docs/trading.md "Decision flow")."""

    model_config = ConfigDict(extra="forbid")

    interval: BarInterval = (
        "5m"  # the bars decisions are made on (the local paper account must trade the same)
    )
    source_module: str = "ensemble"  # the module whose benchmarks, exit stats and health size the trade
    benchmark_window_daily: BenchmarkWindow = (
        "90d"  # benchmarks / exit_stats window for multipliers and TP hit rates
    )
    benchmark_window_intraday: BenchmarkWindow = "7d"
    max_health_age_minutes_daily: PositiveFloat = 1440.0  # older newest health run: the flow refuses to trade
    max_health_age_minutes_intraday: PositiveFloat = 30.0
    allow_short: bool = True  # a down call opens a sell bracket
    stop_threshold_module: str = "exit_planner"  # learned stop_distance_atr of this module caps the stop
    # False: the filter and the ranking use the raw ensemble confidence instead of the calibrated one.
    calibrated_confidence: bool = True


class TaskRunnerName(StrEnum):
    threads = "threads"
    dask = "dask"


class ScaleOutSettings(BaseModel):
    """Where per-symbol-batch work runs (qtrader/runners.py, docs/scale-out.md).

    Only computation is spread: DuckDB allows one writing process per file, so reads and writes stay in
    the flow process and the task runner's workers never open the warehouse.
    """

    model_config = ConfigDict(extra="forbid")

    task_runner: TaskRunnerName = TaskRunnerName.threads  # dask needs prefect-dask: pip install qtrader[dask]
    max_workers: int | None = Field(default=None, ge=1)  # threads; None: one per CPU
    dask_address: str | None = None  # an existing scheduler (tcp://host:8786); None: a temporary LocalCluster
    dask_n_workers: int | None = Field(default=None, ge=1)  # temporary LocalCluster; None: Dask's default
    dask_threads_per_worker: int = Field(default=1, ge=1)  # temporary LocalCluster: parallelism is processes
    symbol_batch_size: int = Field(default=50, ge=1)  # symbols per task


class BacktestSettings(BaseModel):
    """Backtests (flows/backtest.py, docs/backtest.md): cadences in bars of simulated time, costs, modes."""

    model_config = ConfigDict(extra="forbid")

    interval: BarInterval = "1d"
    # History before the first replayed bar: the first retrain needs the features' own warm-up (~260 bars
    # of the 200-day indicators) plus a full walk-forward (min_train_bars + n_splits x test window + gaps).
    warmup_bars: PositiveInt = 750
    # How often each scheduled flow runs in simulated time (prefect.yaml's schedules, in bars).
    retrain_every_bars_daily: PositiveInt = 21  # monthly
    retrain_every_bars_intraday: PositiveInt = 390  # weekly: 5 sessions of 78 five-minute bars
    benchmark_every_bars_daily: PositiveInt = (
        5  # live: nightly; weekly here, the costliest step per bar (docs)
    )
    benchmark_every_bars_intraday: PositiveInt = 78
    thresholds_every_bars_daily: PositiveInt = 1
    thresholds_every_bars_intraday: PositiveInt = 12  # hourly
    health_every_bars_daily: PositiveInt = 1
    health_every_bars_intraday: PositiveInt = 3  # every 15 minutes
    # The scratch retrains' retrain.module_threads (members trained at once; the same models at any
    # count): 2 = the development machine's cores, ~1.5x faster retrains there (docs/backtest.md, "Speed").
    retrain_module_threads: PositiveInt = 2
    # The C allocator from the backtest's start (qtrader/allocator.py, docs/backtest.md "Memory"; 0: glibc's
    # default): at most this many malloc arenas, and blocks from this size up mapped on their own.
    malloc_arenas: NonNegativeInt = 2
    malloc_mmap_threshold_kib: NonNegativeInt = 1024
    modes: list[str] = Field(
        default_factory=lambda: [
            "static", "adaptive", "no_adaptive_exits", "no_health_gating", "no_performance_sizing",
            "no_calibration", "no_predictive_tightening",
        ]
    )  # fmt: skip
    # Seed 002's old system, the static mode: TP1 1R, TP2 2.5R, TP3 4R (R = 1 ATR), stop 1.5 ATR.
    static_tp1_atr: PositiveFloat = SEED_TP1_ATR
    static_tp2_atr: PositiveFloat = SEED_TP2_ATR
    static_tp3_atr: PositiveFloat = SEED_TP3_ATR
    static_stop_atr: PositiveFloat = SEED_STOP_ATR
    # Costs of every mode (the local paper broker's fill engine applies them).
    starting_cash: Decimal = Field(default=Decimal("100000"), gt=0)
    slippage_bps: NonNegativeFloat = 5.0  # market entries and triggered stops, against you
    commission_per_share: NonNegativeFloat = 0.005
    commission_bps: NonNegativeFloat = 0.0
    # Settings overrides applied to every mode (e.g. a looser trade filter), as the decide flow's.
    policy: dict[str, Any] = Field(default_factory=dict)
    # `--sweep`: at most this many grid points per mode (a guard against a mistyped grid; each is a replay).
    max_sweep_variants: PositiveInt = 64
    # Trade markers on this symbol's price (default: the most traded).
    report_symbol: Symbol | None = None


class FilesSettings(BaseModel):
    """The files source (sources/files.py): how dates are written when a file cannot say it itself."""

    model_config = ConfigDict(extra="forbid")

    # strptime format of dates that are not ISO (2024-12-31...), yyyymmdd or epoch numbers, e.g. "%d/%m/%Y".
    # None: the day/month order is detected per file, and a file where every date fits both dd/mm and
    # mm/dd is refused, not guessed.
    date_format: DateFormat | None = None
    # Per file name, every date of that file: {"vod.csv" = "%d/%m/%Y"}.
    date_formats: dict[str, DateFormat] = Field(default_factory=dict)


class Settings(BaseSettings):
    # extra="forbid": an unknown key in qtrader.toml or a QTRADER_<SECTION>__<KEY> that names no setting is
    # an error. Top-level QTRADER_* variables that are not settings (QTRADER_CONFIG, QTRADER_DEBUG,
    # QTRADER_HOME) never reach the model; load_settings refuses only near-misses of a setting's name.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    warehouse: Path = Path("data/warehouse.duckdb")
    data_dir: Path = Path("data")
    source: SourceName = SourceName.synthetic
    # What a symbol may look like: --symbols, the universe, the file names of the files source. (Declared
    # before the universe, whose check uses them.)
    symbol_pattern: str = validation.DEFAULT_SYMBOL_PATTERN
    symbol_max_length: PositiveInt = validation.DEFAULT_SYMBOL_MAX_LENGTH
    universe: list[str] = Field(default_factory=lambda: list(DEFAULT_UNIVERSE), min_length=1)
    intervals: list[BarInterval] = Field(default_factory=lambda: ["1d", "5m"], min_length=1)
    # History fetched when no --start is given: days for daily bars, sessions for intraday bars.
    history_days: PositiveInt = 365 * 3
    intraday_history_sessions: PositiveInt = 20
    exchange: str = "XNYS"
    files_path: Path | None = None
    files: FilesSettings = Field(default_factory=FilesSettings)

    gate: GateSettings = Field(default_factory=GateSettings)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    signal: SignalSettings = Field(default_factory=SignalSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)

    # Trading: broker choice, orders, the local paper broker, Alpaca, sizing, exits and the trade filter.
    broker: BrokerName = BrokerName.local
    orders: OrderSettings = Field(default_factory=OrderSettings)
    paper: LocalBrokerSettings = Field(default_factory=LocalBrokerSettings)
    alpaca: AlpacaSettings = Field(default_factory=AlpacaSettings)
    sizing: SizingSettings = Field(default_factory=SizingSettings)
    exits: ExitSettings = Field(default_factory=ExitSettings)
    trade_filter: FilterSettings = Field(default_factory=FilterSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    backtest: BacktestSettings = Field(default_factory=BacktestSettings)

    # Module health, learned thresholds and predictive alerts (docs/health.md).
    health: HealthSettings = Field(default_factory=HealthSettings)
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    # Per-symbol-batch work through a task runner: threads, or Dask (docs/scale-out.md).
    scale_out: ScaleOutSettings = Field(default_factory=ScaleOutSettings)

    # Warehouse lock policy: a writer or reader that meets a held lock retries with backoff until this.
    lock_timeout_s: PositiveFloat = 120.0
    lock_backoff_initial_s: PositiveFloat = 0.05
    lock_backoff_max_s: PositiveFloat = 2.0

    # Network retries (yfinance, Alpaca): only transient errors are retried.
    net_retries: NonNegativeInt = 3
    net_retry_delays_s: list[NonNegativeFloat] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    yfinance_batch_size: PositiveInt = 50

    alpaca_api_key: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI flags) > environment > qtrader.toml > defaults
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_toml_path()),
        )

    @field_validator("symbol_pattern", mode="after")
    @classmethod
    def _a_regular_expression(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        return value

    @field_validator("universe", mode="after")
    @classmethod
    def _tickers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        pattern = info.data.get("symbol_pattern", validation.DEFAULT_SYMBOL_PATTERN)
        max_length = info.data.get("symbol_max_length", validation.DEFAULT_SYMBOL_MAX_LENGTH)
        out = [s.upper() for s in value]
        for symbol in out:
            problem = validation.symbol_problem(symbol, pattern, max_length)
            if problem:
                raise ValueError(problem)
        return list(dict.fromkeys(out))

    @property
    def dq_docs_dir(self) -> Path:
        return self.data_dir / "dq_docs"

    def masked(self) -> dict[str, Any]:
        """The merged configuration as plain data, secrets shown as '********'."""
        data = self.model_dump(mode="json")
        for key in ("alpaca_api_key", "alpaca_secret_key"):
            if data.get(key):
                data[key] = "********"
        return data


class ConfigError(validation.BadInput):
    """A configuration mistake, as one line: where it came from, the field and the reason."""


# CLI flags that become settings (for error messages); other overrides come from code (e.g. a backtest).
FLAG_OF = {"warehouse": "--warehouse", "source": "--source", "files_path": "--path"}


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI overrides on top; ``None`` values mean 'not given'. Raises ConfigError."""
    given = {k: v for k, v in overrides.items() if v is not None}
    toml = _toml_path()
    if "QTRADER_CONFIG" in os.environ and not toml.is_file():
        raise ConfigError(f"QTRADER_CONFIG names {toml}, which is not a file")
    _check_env_names(os.environ)
    try:
        return Settings(**given)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {toml}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, given, toml, os.environ)) from None


def _check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse a QTRADER_* variable that misspells a setting (QTRADER_HISTROY_DAYS). Others are not ours."""
    fields = list(Settings.model_fields)
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower().split("__")[0]
        if key in fields:
            continue
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
        if close:
            raise ConfigError(
                f"environment variable {name} is not a setting; did you mean {ENV_PREFIX}{close[0].upper()}?"
            )


def describe_errors(
    exc: ValidationError, given: Mapping[str, Any], toml: Path, environ: Mapping[str, str]
) -> str:
    """Every validation error of ``exc`` as 'origin: field: reason', joined into one line."""
    try:
        file_data = tomllib.loads(toml.read_text()) if toml.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError):
        file_data = {}
    env = {k.upper(): k for k in environ}
    lines = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        field = "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc)
        )
        where = _origin(loc, given, toml, file_data, env)
        lines.append(f"{where}: {field}: {_reason(e, loc)}" if field else f"{where}: {_reason(e, loc)}")
    return "; ".join(lines)


def _origin(loc: tuple, given: Mapping[str, Any], toml: Path, file_data: dict, env: dict[str, str]) -> str:
    """Where the value at ``loc`` came from, in override order: flag, environment, file, default."""
    if loc and loc[0] in given:
        return FLAG_OF.get(str(loc[0]), f"override {loc[0]}")
    keys = [str(p) for p in loc if isinstance(p, str)]
    for k in range(len(keys), 0, -1):
        name = ENV_PREFIX + "__".join(keys[:k]).upper()
        if name in env:
            return f"environment variable {env[name]}"
    node: Any = file_data
    for p in keys:
        if not isinstance(node, dict) or p not in node:
            return "settings"  # a default, or a check across several settings
        node = node[p]
    return f"config file {toml}" if keys else "settings"


def _reason(e: Mapping[str, Any], loc: tuple) -> str:
    if e["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else (
            f"known: {', '.join(known)}" if len(known) <= 15 else "`qtrader config` lists every setting"
        )  # fmt: skip
        return f"unknown setting ({hint})"
    msg = str(e["msg"]).removeprefix("Value error, ")
    secret = any(isinstance(p, str) and ("key" in p or "secret" in p) for p in loc)
    value = e.get("input")
    if secret or isinstance(value, dict | list) or value is None:
        return msg
    return f"{msg}, got {value!r}"


def _known_keys(loc: tuple) -> list[str]:
    """The setting names of the model at ``loc`` (the section an unknown key was found in)."""
    model: Any = Settings
    for p in loc:
        info = getattr(model, "model_fields", {}).get(p)
        if info is None:
            return []
        model = info.annotation
    return list(getattr(model, "model_fields", {}))
