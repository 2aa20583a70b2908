"""Market data sources behind one protocol (sources.base.MarketDataSource)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from qtrader.settings import Settings, SourceName
from sources.base import FetchRequest, FetchResult, MarketDataSource, SourceError, TransientSourceError

__all__ = [
    "FetchRequest",
    "FetchResult",
    "MarketDataSource",
    "SourceError",
    "TransientSourceError",
    "make_source",
]


def make_source(
    settings: Settings,
    *,
    faults: list[str] | None = None,
    now: pd.Timestamp | None = None,
    interval: str | None = None,
) -> MarketDataSource:
    """The source named by ``settings.source``. Imports are local: yfinance is slow to import."""
    if settings.source == SourceName.synthetic:
        from sources.synthetic import SyntheticSource, parse_faults

        return SyntheticSource(
            seed=settings.synthetic.seed,
            signal_strength=settings.synthetic.signal_strength,
            trend=settings.synthetic.trend,
            market_regime=settings.synthetic.market_regime,
            exchange=settings.exchange,
            faults=parse_faults(faults or []),
            now=now,
        )
    if faults:
        raise SourceError("fault injection is only available on the synthetic source")
    if settings.source == SourceName.yfinance:
        import yfinance as yf

        from sources.yfinance_source import YFinanceSource

        # Keep yfinance's time-zone cache in the project, not in the user's home.
        cache = Path(settings.data_dir) / "yfinance-cache"
        cache.mkdir(parents=True, exist_ok=True)
        yf.set_tz_cache_location(str(cache))
        return YFinanceSource(
            batch_size=settings.yfinance_batch_size,
            retries=settings.net_retries,
            retry_delays_s=settings.net_retry_delays_s,
            now=now,
        )
    if settings.source == SourceName.files:
        from sources.files import FilesSource

        if settings.files_path is None:
            raise SourceError("the files source needs a folder: --path DIR or QTRADER_FILES_PATH")
        path = Path(settings.files_path)
        if not path.is_dir():
            raise SourceError(f"the files source folder {path} does not exist or is not a folder")
        return FilesSource(path, interval=interval)
    raise SourceError(f"unknown source {settings.source!r}")
