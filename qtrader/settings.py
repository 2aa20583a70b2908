"""One Settings object for the whole system.

Override order (highest first): CLI flags > environment (``QTRADER_*``) > ``qtrader.toml`` > defaults.
Every threshold and multiplier used by a stage is a named field here, with the plan documents' value
as its default where they give one.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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
    max_abs_return_daily: float = 0.40
    max_abs_return_intraday: float = 0.15
    # Missing expected bars (exchange calendar) between two consecutive bars of a symbol.
    max_gap_bars_daily: int = 5
    max_gap_bars_intraday: int = 12
    # Expected bars between a symbol's last bar and the window end (or the newest bar of the batch).
    max_stale_bars_daily: int = 3
    max_stale_bars_intraday: int = 12
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

    seed: int = 7
    # Strength of the planted predictable component (see docs/synthetic.md); 0 gives pure noise.
    signal_strength: float = 0.12


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QTRADER_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    warehouse: Path = Path("data/warehouse.duckdb")
    data_dir: Path = Path("data")
    source: SourceName = SourceName.synthetic
    universe: list[str] = Field(default_factory=lambda: list(DEFAULT_UNIVERSE))
    intervals: list[str] = Field(default_factory=lambda: ["1d", "5m"])
    # History fetched when no --start is given: days for daily bars, sessions for intraday bars.
    history_days: int = 365 * 3
    intraday_history_sessions: int = 20
    exchange: str = "XNYS"
    files_path: Path | None = None

    gate: GateSettings = Field(default_factory=GateSettings)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)

    # Warehouse lock policy: a writer or reader that meets a held lock retries with backoff until this.
    lock_timeout_s: float = 120.0
    lock_backoff_initial_s: float = 0.05
    lock_backoff_max_s: float = 2.0

    # Network retries (yfinance, Alpaca): only transient errors are retried.
    net_retries: int = 3
    net_retry_delays_s: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    yfinance_batch_size: int = 50

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


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI overrides on top; ``None`` values mean 'not given'."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
