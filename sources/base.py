"""The market data source protocol and the canonical bars frame every source returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

# Canonical raw bars: one row per (symbol, interval, ts) as delivered, in delivery order.
# ts is datetime64[ns, UTC]: daily bars at the session date 00:00 UTC, intraday bars at their start.
# Prices and volume are float64 and may be NaN or negative: judging them is the gate's job, not the source's.
BAR_COLUMNS = ["symbol", "interval", "ts", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


# A request interval meaning "whatever the data is at" (files only: each file's inferred interval).
AUTO_INTERVAL = "auto"


class SourceError(RuntimeError):
    """A source could not deliver anything usable (bad configuration, missing folder)."""


class TransientSourceError(SourceError):
    """A network failure worth retrying (connection reset, timeout, HTTP 429/5xx)."""


@dataclass(frozen=True)
class FetchRequest:
    symbols: list[str] | None  # None: every symbol the source has (files) or the configured universe
    interval: str  # "1d", "5m", ...
    start: pd.Timestamp | None = None  # UTC, inclusive
    end: pd.Timestamp | None = None  # UTC, inclusive


@dataclass
class FetchResult:
    bars: pd.DataFrame  # BAR_COLUMNS
    # symbol (or file name) -> one-line reason: unknown symbol, empty download, malformed file at line N, ...
    failures: dict[str, str] = field(default_factory=dict)
    # What the source resolved the request to (e.g. an inferred interval, a clipped Yahoo window).
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class MarketDataSource(Protocol):
    name: str

    def fetch(self, request: FetchRequest) -> FetchResult: ...


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(dtype="object"),
            "interval": pd.Series(dtype="object"),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            **{c: pd.Series(dtype="float64") for c in [*PRICE_COLUMNS, "volume"]},
        }
    )


def to_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame with BAR_COLUMNS to the canonical dtypes, keeping row order."""
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"bars frame is missing columns {missing}")
    out = df[BAR_COLUMNS].copy()
    out["symbol"] = out["symbol"].astype(str)
    out["interval"] = out["interval"].astype(str)
    ts = pd.to_datetime(out["ts"], utc=True)
    out["ts"] = ts.dt.as_unit("ns")
    for c in [*PRICE_COLUMNS, "volume"]:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
    return out.reset_index(drop=True)
