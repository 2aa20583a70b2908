"""Yahoo Finance bars through yfinance: batched downloads, adjusted prices, per-ticker failures.

How yfinance 1.7 reports trouble, and what this module does about it:

- ``yf.download`` never raises for a ticker. Each ticker runs in its own thread inside a ``try``; a failure
  leaves an empty frame (all-NaN columns after the join) and an ERROR log line. With the default
  ``yf.config.debug.hide_exceptions`` even a connection reset is logged as "possibly delisted; no price
  data found", so the error text cannot tell a transient failure from a missing symbol
  (``yf.shared._ERRORS`` is no longer filled in 1.7: errors live in a per-call context).
- So the source watches the HTTP layer itself: for the duration of a fetch it wraps the session's public
  ``request`` method (both ``requests`` and ``curl_cffi`` sessions route every call through it) and records,
  per symbol, the status or exception of each ``/v8/finance/chart/{symbol}`` (and the ``quoteSummary``
  fallback yfinance uses to find a time zone). A failed ticker that saw a connection error, timeout,
  HTTP 408/429 or 5xx is transient; a 404 means an unknown or delisted symbol; a clean 200 without bars
  is an empty window.
- yfinance keeps past-window responses in an in-process LRU cache (``YfData.cache_get``), error
  responses included, so a retry would be answered from the cache. The cache is cleared before every
  download call: a fetch always asks Yahoo.

Retry semantics: only tickers that failed transiently are downloaded again, together, after
``retry_delays_s[i]`` seconds (via the injected ``sleep``), up to ``retries`` times. Tickers still failing
transiently after that are reported in ``FetchResult.failures`` with the last error, and the bars of the
others are returned. If nothing at all was loaded and at least one failure was transient,
``TransientSourceError`` is raised instead, so a Prefect task retry can take over: an empty result from
a Yahoo outage must not look like a quiet day.

yfinance keeps process-wide state (one ``YfData`` singleton holding the session and cookie strategy, the
response cache), so fetches are serialized by a module lock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd

from qtrader import progress
from qtrader.calendar import interval_minutes, utc
from sources.base import (
    BAR_COLUMNS,
    FetchRequest,
    FetchResult,
    SourceError,
    TransientSourceError,
    empty_bars,
    to_canonical,
)

logger = logging.getLogger(__name__)

# Our interval (minutes) -> Yahoo's interval name. Yahoo has no 2h/4h bars.
_YAHOO_INTERVALS = {1: "1m", 2: "2m", 5: "5m", 15: "15m", 30: "30m", 60: "60m", 90: "90m", 1440: "1d"}

# How far back Yahoo serves intraday bars, and the longest window one 1m request may span. yfinance does
# not check these: Yahoo answers an over-long request with an error and no bars at all.
_LOOKBACK = {
    "1m": pd.Timedelta(days=30),
    **{iv: pd.Timedelta(days=60) for iv in ("2m", "5m", "15m", "30m", "90m")},
    "60m": pd.Timedelta(days=730),
}
_MAX_SPAN = {"1m": pd.Timedelta(days=7)}
# Stay this far inside Yahoo's limits: its clock and ours differ, and the request takes time.
_LIMIT_MARGIN = pd.Timedelta(hours=1)

_TRANSIENT_STATUS = {408, 429}
# Exception class names (anywhere in the MRO) worth retrying; names rather than classes because requests,
# urllib3, curl_cffi and the standard library each have their own ConnectionError/Timeout.
_TRANSIENT_EXCEPTIONS = {
    "ConnectionError",
    "Timeout",
    "TimeoutError",
    "ConnectTimeout",
    "ReadTimeout",
    "ChunkedEncodingError",
    "RemoteDisconnected",
    "ProtocolError",
    "IncompleteRead",
    "YFRateLimitError",
}
_SYMBOL_URL = re.compile(r"/v8/finance/chart/([^/?#]+)|/v10/finance/quoteSummary/([^/?#]+)")
_YF_COLUMNS = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}

UNKNOWN_SYMBOL = "no data returned (unknown symbol or delisted?)"

# yfinance's process-wide state (see module docstring) allows one download at a time.
_YF_LOCK = threading.Lock()


def _is_transient_exception(exc: BaseException) -> bool:
    return any(cls.__name__ in _TRANSIENT_EXCEPTIONS for cls in type(exc).__mro__)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _HttpOutcome:
    status: int | None  # None when the request raised
    transient: bool
    detail: str  # "HTTP 503", "HTTP 404: No data found, symbol may be delisted", "ConnectionError: ..."


def _yahoo_error_description(response: Any) -> str | None:
    """Yahoo's own explanation in an error body: {"chart": {"error": {"code", "description"}}}."""
    try:
        body = response.json()
    except Exception:
        return None
    if not isinstance(body, dict):
        return None
    for part in body.values():
        if isinstance(part, dict) and isinstance(part.get("error"), dict):
            err = part["error"]
            return str(err.get("description") or err.get("code") or "") or None
    return None


class _HttpRecorder:
    """Records the HTTP outcome of every per-symbol Yahoo request made through one session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, list[_HttpOutcome]] = defaultdict(list)

    def outcomes(self, symbol: str) -> list[_HttpOutcome]:
        with self._lock:
            return list(self._outcomes.get(symbol, []))

    def forget(self, symbols: list[str]) -> None:
        with self._lock:
            for s in symbols:
                self._outcomes.pop(s, None)

    def _record(self, url: str, outcome: _HttpOutcome) -> None:
        m = _SYMBOL_URL.search(urlsplit(url).path)
        if not m:
            return  # cookie, crumb and consent requests are not about one symbol
        symbol = unquote(m.group(1) or m.group(2)).upper()
        with self._lock:
            self._outcomes[symbol].append(outcome)

    @contextmanager
    def installed(self, session: Any) -> Iterator[None]:
        """Wrap ``session.request`` (public on requests and curl_cffi sessions) for the duration."""
        if session is None:
            yield
            return
        original = session.request
        had_own = "request" in vars(session)

        def request(*args: Any, **kwargs: Any) -> Any:
            url = str(kwargs.get("url", args[1] if len(args) > 1 else ""))
            try:
                response = original(*args, **kwargs)
            except Exception as exc:
                self._record(
                    url,
                    _HttpOutcome(
                        None, _is_transient_exception(exc), _one_line(f"{type(exc).__name__}: {exc}")
                    ),
                )
                raise
            status = int(response.status_code)
            detail = f"HTTP {status}"
            if status >= 400:
                description = _yahoo_error_description(response)
                if description:
                    detail += f": {_one_line(description)}"
            self._record(url, _HttpOutcome(status, status in _TRANSIENT_STATUS or status >= 500, detail))
            return response

        try:
            session.request = request
        except (AttributeError, TypeError):
            logger.warning(
                "cannot watch %s requests: transient failures will be reported, not retried", type(session)
            )
            yield
            return
        try:
            yield
        finally:
            if had_own:
                session.request = original
            else:
                del session.request


def _clear_yf_response_cache() -> None:
    """Empty yfinance's in-process cache of past-window responses (it keeps error responses too)."""
    from yfinance.data import YfData

    cache_clear = getattr(getattr(YfData, "cache_get", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def _default_session() -> Any:
    """yfinance's own default session (curl_cffi with browser impersonation, else requests)."""
    try:
        from yfinance._http import new_session
    except ImportError:  # an older or newer yfinance layout: let yf.download make its own
        return None
    return new_session()


@dataclass(frozen=True)
class _Window:
    start: pd.Timestamp | None  # UTC, inclusive; None = as far back as Yahoo goes (daily only)
    end: pd.Timestamp  # UTC, inclusive
    daily: bool

    def describe(self) -> str:
        fmt = (lambda t: f"{t:%Y-%m-%d}") if self.daily else (lambda t: f"{t:%Y-%m-%d %H:%M}Z")
        return f"{fmt(self.start) if self.start is not None else 'earliest'}..{fmt(self.end)}"

    def yf_kwargs(self) -> dict[str, Any]:
        """start/end for yf.download, whose end is exclusive and whose dates are exchange dates."""
        if self.daily:
            end = (self.end.normalize() + pd.Timedelta(days=1)).date()
            if self.start is None:
                return {"period": "max", "end": end}
            return {"start": self.start.date(), "end": end}
        # A bar starting exactly at `end` is wanted, and yfinance drops bars at or after its end.
        return {"start": self.start, "end": self.end + pd.Timedelta(minutes=1)}

    def mask(self, ts: pd.DatetimeIndex) -> Any:
        lo = self.start.normalize() if (self.daily and self.start is not None) else self.start
        keep = ts <= self.end
        if lo is not None:
            keep &= ts >= lo
        return keep


class YFinanceSource:
    """Bars from Yahoo Finance via ``yf.download``, adjusted for splits and dividends (auto_adjust).

    ``fetch`` downloads ``request.symbols`` in batches of ``batch_size`` and returns canonical bars:
    daily bars stamped at the session date 00:00 UTC, intraday bars at their start time in UTC. Failed
    tickers are listed in ``failures`` with a one-line reason while the others load; transient network
    failures are retried as described in the module docstring (raising ``TransientSourceError`` only when
    nothing at all could be loaded). Windows beyond Yahoo's intraday history limits are clipped, with a
    note saying so.

    ``session``: a ``requests.Session`` or ``curl_cffi`` session; None uses yfinance's default (curl_cffi).
    ``now``: a fixed clock for the history limits and a missing ``request.end``; None reads the wall clock.
    """

    name = "yfinance"

    def __init__(
        self,
        session: Any = None,
        batch_size: int = 50,
        retries: int = 3,
        retry_delays_s: list[float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: pd.Timestamp | None = None,
        threads: bool | int = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self._session = session
        self.batch_size = batch_size
        self.retries = retries
        self.retry_delays_s = list(retry_delays_s) if retry_delays_s is not None else [1.0, 2.0, 4.0]
        self._sleep = sleep
        self._now = utc(now) if now is not None else None
        self._threads = threads

    # -- public -------------------------------------------------------------------------------------------

    def fetch(self, request: FetchRequest) -> FetchResult:
        interval_min = interval_minutes(request.interval)
        yf_interval = _YAHOO_INTERVALS.get(interval_min)
        if yf_interval is None:
            raise SourceError(
                f"Yahoo has no {request.interval!r} bars; use one of 1m, 2m, 5m, 15m, 30m, 1h (60m), 90m, 1d"
            )
        if not request.symbols:
            raise SourceError("the yfinance source needs explicit symbols (it has no symbol list of its own)")
        symbols = list(dict.fromkeys(s.strip().upper() for s in request.symbols if s.strip()))

        notes: list[str] = []
        window = self._window(request, yf_interval, notes)
        if window is None:
            reason = (
                f"window is older than Yahoo keeps {yf_interval} bars ({_LOOKBACK[yf_interval].days} days)"
            )
            return FetchResult(empty_bars(), {s: reason for s in symbols}, notes)

        if self._session is None:
            self._session = _default_session()
        recorder = _HttpRecorder()
        frames: dict[str, pd.DataFrame] = {}
        failures: dict[str, str] = {}
        transient: dict[str, str] = {}
        pending = symbols
        with _YF_LOCK, recorder.installed(self._session), _quiet_pandas_warnings():
            for attempt in range(self.retries + 1):
                if attempt:
                    delay = self._delay(attempt - 1)
                    notes.append(
                        f"retry {attempt}/{self.retries} after {delay:g} s for {len(pending)} symbol(s) "
                        f"with transient errors: {', '.join(pending[:10])}{' ...' if len(pending) > 10 else ''}"
                    )
                    logger.warning("yfinance: %s", notes[-1])
                    self._sleep(delay)
                transient = {}
                watched = f"fetch {request.interval}" + (f" retry {attempt}" if attempt else "")
                for i in range(0, len(pending), self.batch_size):
                    progress.report(watched, i, len(pending))
                    batch = pending[i : i + self.batch_size]
                    loaded, failed = self._download(batch, request.interval, yf_interval, window, recorder)
                    frames.update(loaded)
                    for sym, (reason, is_transient) in failed.items():
                        (transient if is_transient else failures)[sym] = reason
                progress.report(watched, len(pending), len(pending))
                if not transient:
                    break
                pending = [s for s in symbols if s in transient]

        if transient:
            if not frames:
                detail = "; ".join(f"{s}: {r}" for s, r in list(transient.items())[:5])
                raise TransientSourceError(
                    f"yfinance: nothing loaded for {len(symbols)} symbol(s) after {self.retries} retries; "
                    f"transient errors: {detail}"
                )
            for sym, reason in transient.items():
                failures[sym] = f"{reason} (still failing after {self.retries} retries)"

        bars = (
            to_canonical(pd.concat([frames[s] for s in symbols if s in frames], ignore_index=True))
            if frames
            else empty_bars()
        )
        return FetchResult(
            bars=bars, failures={s: failures[s] for s in symbols if s in failures}, notes=notes
        )

    # -- internals ----------------------------------------------------------------------------------------

    def _delay(self, retry_index: int) -> float:
        if not self.retry_delays_s:
            return 0.0
        return float(self.retry_delays_s[min(retry_index, len(self.retry_delays_s) - 1)])

    def _window(self, request: FetchRequest, yf_interval: str, notes: list[str]) -> _Window | None:
        """The request's window, clipped to what Yahoo serves for the interval (None: nothing left)."""
        now = self._now if self._now is not None else pd.Timestamp.now(tz="UTC")
        end = utc(request.end) if request.end is not None else now
        start = utc(request.start) if request.start is not None else None
        if start is not None and start > end:
            raise SourceError(f"window start {start} is after its end {end}")
        if yf_interval == "1d":
            return _Window(start, end, daily=True)

        earliest = now - _LOOKBACK[yf_interval] + _LIMIT_MARGIN
        if yf_interval in _MAX_SPAN:
            earliest = max(earliest, end - _MAX_SPAN[yf_interval] + _LIMIT_MARGIN)
        if start is None:
            notes.append(
                f"yfinance {request.interval}: no start given, from the earliest bar Yahoo keeps ({earliest:%Y-%m-%d %H:%M}Z)"
            )
            start = earliest
        elif start < earliest:
            why = (
                f"at most {_MAX_SPAN[yf_interval].days} days per request and "
                if yf_interval in _MAX_SPAN
                else ""
            )
            notes.append(
                f"yfinance {request.interval}: Yahoo serves {yf_interval} bars {why}for the last "
                f"{_LOOKBACK[yf_interval].days} days only; start clipped from {start:%Y-%m-%d %H:%M}Z "
                f"to {earliest:%Y-%m-%d %H:%M}Z"
            )
            start = earliest
        if start > end:
            notes.append(
                f"yfinance {request.interval}: the whole window ends before {earliest:%Y-%m-%d %H:%M}Z: nothing fetched"
            )
            return None
        return _Window(start, end, daily=False)

    def _download(
        self,
        batch: list[str],
        interval: str,
        yf_interval: str,
        window: _Window,
        recorder: _HttpRecorder,
    ) -> tuple[dict[str, pd.DataFrame], dict[str, tuple[str, bool]]]:
        """One yf.download call: bars per loaded symbol, and (reason, transient?) per failed one."""
        import yfinance as yf

        recorder.forget(batch)
        _clear_yf_response_cache()
        try:
            data = yf.download(
                batch,
                interval=yf_interval,
                group_by="ticker",
                auto_adjust=True,
                actions=False,
                # Keep the NaN rows Yahoo sends (the gate judges them); yfinance would drop them.
                keepna=True,
                ignore_tz=window.daily,
                threads=self._threads,
                progress=False,
                session=self._session,
                multi_level_index=True,
                **window.yf_kwargs(),
            )
        except Exception as exc:
            if not _is_transient_exception(exc):
                raise
            reason = f"transient error from Yahoo: {_one_line(f'{type(exc).__name__}: {exc}')}"
            return {}, {s: (reason, True) for s in batch}

        have = set(data.columns.get_level_values(0)) if isinstance(data.columns, pd.MultiIndex) else set()
        loaded: dict[str, pd.DataFrame] = {}
        failed: dict[str, tuple[str, bool]] = {}
        for sym in batch:
            bars = self._bars_of(data, sym, interval, window) if sym in have else None
            if bars is not None and bars[["open", "high", "low", "close"]].notna().any(axis=None):
                loaded[sym] = bars
                continue
            failed[sym] = self._classify(recorder.outcomes(sym), window, bars)
        return loaded, failed

    @staticmethod
    def _bars_of(data: pd.DataFrame, sym: str, interval: str, window: _Window) -> pd.DataFrame:
        sub = data[sym].reindex(columns=list(_YF_COLUMNS)).rename(columns=_YF_COLUMNS)
        # A row NaN in every OHLCV column is an artefact of joining tickers whose calendars differ:
        # yfinance fills a missing Yahoo volume with 0, so a row Yahoo really sent is never all-NaN.
        sub = sub[sub.notna().any(axis=1)]
        idx = pd.DatetimeIndex(sub.index)
        if window.daily:
            # yfinance stamps daily bars at exchange-local midnight (tz-naive with ignore_tz): keep the date.
            ts = (idx.tz_localize(None) if idx.tz is not None else idx).normalize().tz_localize("UTC")
        else:
            ts = idx.tz_convert("UTC") if idx.tz is not None else idx.tz_localize("UTC")
        keep = window.mask(ts)
        out = sub.loc[keep].reset_index(drop=True)
        out.insert(0, "ts", ts[keep])
        out.insert(0, "interval", interval)
        out.insert(0, "symbol", sym)
        return out[BAR_COLUMNS]

    @staticmethod
    def _classify(
        outcomes: list[_HttpOutcome], window: _Window, bars: pd.DataFrame | None
    ) -> tuple[str, bool]:
        transient = [o for o in outcomes if o.transient]
        if transient:
            return f"transient error from Yahoo: {transient[-1].detail}", True
        if any(o.status == 404 for o in outcomes):
            return UNKNOWN_SYMBOL, False
        refused = [o for o in outcomes if o.status is not None and o.status >= 400]
        if refused:
            return f"Yahoo refused the request for window {window.describe()}: {refused[-1].detail}", False
        errors = [o for o in outcomes if o.status is None]
        if errors:
            return f"request failed: {errors[-1].detail}", False
        if bars is not None and len(bars):
            return (
                f"empty download for window {window.describe()}: all {len(bars)} rows have NaN prices",
                False,
            )
        if not outcomes:
            # yfinance dropped the ticker before any HTTP request (seen with threaded downloads): a
            # client-side race, so retry it like a network blip.
            return "no data returned by yfinance (no request seen; see the yfinance log)", True
        return f"empty download for window {window.describe()}", False


@contextmanager
def _quiet_pandas_warnings() -> Iterator[None]:
    """yfinance 1.7 trips pandas 3 deprecations on every call; they are its business, not ours."""
    try:
        from pandas.errors import Pandas4Warning
    except ImportError:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Pandas4Warning)
        yield
