"""A fake Yahoo Finance behind a requests transport adapter: yfinance runs unmodified against it.

Endpoints yfinance 1.7 requests during ``yf.download`` (read from yfinance/data.py, base.py,
scrapers/history.py, scrapers/quote.py) and how the fake answers:

- ``GET https://fc.yahoo.com`` (basic cookie strategy): 404 with an HTML body and no cookie, so yfinance
  keeps no persistent cookie and simply asks again next time.
- ``GET https://query1.finance.yahoo.com/v1/test/getcrumb`` (basic) and
  ``GET https://query2.finance.yahoo.com/v1/test/getcrumb`` (csrf): a plain-text crumb.
- csrf cookie strategy, which yfinance switches to after any HTTP status >= 400:
  ``GET https://guce.yahoo.com/consent`` (an HTML form with csrfToken and sessionId),
  ``POST https://consent.yahoo.com/v2/collectConsent?sessionId=...``,
  ``GET https://guce.yahoo.com/copyConsent?sessionId=...``.
- ``GET https://query2.finance.yahoo.com/v8/finance/chart/{SYM}``: ``range=1d&interval=1d`` is the time
  zone lookup; ``period1/period2/interval`` the bars. Yahoo's chart JSON: ``meta`` (with
  exchangeTimezoneName, gmtoffset, currentTradingPeriod and, intraday, tradingPeriods), ``timestamp``,
  ``indicators.quote[0]`` and, daily, ``indicators.adjclose[0].adjclose``. Unknown symbols get Yahoo's
  404 ``{"chart":{"result":null,"error":{"code":"Not Found",...}}}``; a window without bars gets a result
  with meta and no timestamps.
- When the time zone lookup fails, yfinance falls back to ``.info``:
  ``GET https://query2.finance.yahoo.com/v10/finance/quoteSummary/{SYM}`` (404 for unknown symbols) and
  ``GET https://query1.finance.yahoo.com/v7/finance/quote?symbols={SYM}``.

Anything else raises ``UnexpectedRequest`` and is remembered in ``unexpected``: yfinance swallows
exceptions per ticker, so the test fixture asserts the list is empty at teardown.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pandas as pd
import requests
from requests.adapters import HTTPAdapter

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "yahoo"

CRUMB = "Fk3Crumb.x9"
CONSENT_FORM = (
    "<html><body><form method='post' action='https://consent.yahoo.com/v2/collectConsent?sessionId=s-123'>"
    "<input type='hidden' name='csrfToken' value='tok-456'/>"
    "<input type='hidden' name='sessionId' value='s-123'/>"
    "<button name='agree' value='agree'>Accept all</button></form></body></html>"
)


class UnexpectedRequest(AssertionError):
    """A request the fake does not know: it would have gone to the internet."""


@dataclass
class Series:
    tz: str
    interval: str  # Yahoo's name: "1d", "5m", ...
    bars: pd.DataFrame  # t (epoch seconds), open, high, low, close, volume[, adjclose]; NaN -> null


@dataclass
class FakeYahoo:
    series: dict[str, Series] = field(default_factory=dict)
    recorded: dict[str, dict] = field(default_factory=dict)  # symbol -> chart JSON served verbatim
    faults: dict[str, str] = field(default_factory=dict)  # symbol -> "500" | "429" | "conn" | "timeout"
    log: list[tuple[str, str, str, dict[str, str]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- set-up -------------------------------------------------------------------------------------------

    def add_daily(
        self, symbol: str, rows: list[tuple], tz: str = "America/New_York", open_time: str = "09:30"
    ) -> None:
        """rows: (date, open, high, low, close, adjclose, volume); Yahoo stamps a day at the session open."""
        df = pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "adjclose", "volume"])
        local = pd.to_datetime(df.pop("date")) + pd.Timedelta(open_time + ":00")
        df.insert(0, "t", _epoch(local.dt.tz_localize(tz)))
        self.series[symbol] = Series(tz, "1d", df)

    def add_intraday(
        self, symbol: str, interval: str, rows: list[tuple], tz: str = "America/New_York"
    ) -> None:
        """rows: (local start time 'YYYY-MM-DD HH:MM', open, high, low, close, volume)."""
        df = pd.DataFrame(rows, columns=["local", "open", "high", "low", "close", "volume"])
        local = pd.to_datetime(df.pop("local")).dt.tz_localize(tz)
        df.insert(0, "t", _epoch(local))
        self.series[symbol] = Series(tz, interval, df)

    def add_recorded(self, symbol: str, path: Path) -> None:
        self.recorded[symbol] = json.loads(path.read_text())

    def fail(self, symbol: str, kind: str) -> None:
        self.faults[symbol] = kind

    def heal(self, symbol: str) -> None:
        self.faults.pop(symbol, None)

    def session(self) -> requests.Session:
        s = requests.Session()
        s.mount("https://", _Adapter(self))
        s.mount("http://", _Adapter(self))
        return s

    # -- inspection ---------------------------------------------------------------------------------------

    def bar_requests(self) -> list[tuple[str, dict[str, str]]]:
        """(symbol, params) of each chart request for bars (not the time-zone lookups)."""
        return [
            (unquote(path.rsplit("/", 1)[1]), params)
            for _, _, path, params in list(self.log)
            if path.startswith("/v8/finance/chart/") and "period1" in params
        ]

    # -- serving ------------------------------------------------------------------------------------------

    def handle(self, request: requests.PreparedRequest) -> requests.Response:
        u = urlsplit(request.url)
        params = {k: v[0] for k, v in parse_qs(u.query).items()}
        with self._lock:
            self.log.append((request.method or "", u.netloc, u.path, params))
        host, path, method = u.netloc, u.path, request.method

        if u.scheme == "https" and method == "GET" and host == "fc.yahoo.com":
            return _response(request, 404, "<html><body>Not found</body></html>", "text/html")
        if host in ("query1.finance.yahoo.com", "query2.finance.yahoo.com") and path == "/v1/test/getcrumb":
            return _response(request, 200, CRUMB, "text/plain")
        if host == "guce.yahoo.com" and path == "/consent":
            return _response(request, 200, CONSENT_FORM, "text/html")
        if host == "consent.yahoo.com" and path == "/v2/collectConsent" and method == "POST":
            return _response(request, 200, "<html><body>Thanks</body></html>", "text/html")
        if host == "guce.yahoo.com" and path == "/copyConsent":
            return _response(request, 200, "<html><body>ok</body></html>", "text/html")
        if host == "query2.finance.yahoo.com" and path.startswith("/v8/finance/chart/") and method == "GET":
            return self._chart(request, unquote(path.rsplit("/", 1)[1]), params)
        if host == "query2.finance.yahoo.com" and path.startswith("/v10/finance/quoteSummary/"):
            return self._quote_summary(request, unquote(path.rsplit("/", 1)[1]))
        if host == "query1.finance.yahoo.com" and path == "/v7/finance/quote":
            sym = params.get("symbols", "")
            self._maybe_fault(request, sym)
            return _response(request, 200, {"quoteResponse": {"result": [], "error": None}})
        return self._unexpected(request)

    def _unexpected(self, request: requests.PreparedRequest) -> requests.Response:
        msg = f"fake Yahoo: unexpected {request.method} {request.url}"
        with self._lock:
            self.unexpected.append(msg)
        raise UnexpectedRequest(msg)

    def _maybe_fault(self, request: requests.PreparedRequest, symbol: str) -> requests.Response | None:
        kind = self.faults.get(symbol)
        if kind == "conn":
            raise requests.exceptions.ConnectionError(
                f"fake: connection reset by peer ({symbol})", request=request
            )
        if kind == "timeout":
            raise requests.exceptions.ReadTimeout(f"fake: read timed out ({symbol})", request=request)
        if kind == "429":
            return _response(request, 429, "Too Many Requests\r\n", "text/plain")
        if kind == "500":
            body = {
                "chart": {
                    "result": None,
                    "error": {"code": "Internal Server Error", "description": "Internal error"},
                }
            }
            return _response(request, 500, body)
        return None

    def _quote_summary(self, request: requests.PreparedRequest, symbol: str) -> requests.Response:
        faulted = self._maybe_fault(request, symbol)
        if faulted is not None:
            return faulted
        if symbol in self.series or symbol in self.recorded:
            # Only reached after a failed time-zone lookup; the quoteType module carries the zone.
            tz = self._meta(symbol, "1d")["exchangeTimezoneName"]
            result = {"quoteType": {"symbol": symbol, "exchangeTimezoneName": tz, "quoteType": "EQUITY"}}
            return _response(request, 200, {"quoteSummary": {"result": [result], "error": None}})
        body = {
            "quoteSummary": {
                "result": None,
                "error": {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"},
            }
        }
        return _response(request, 404, body)

    def _chart(
        self, request: requests.PreparedRequest, symbol: str, params: dict[str, str]
    ) -> requests.Response:
        faulted = self._maybe_fault(request, symbol)
        if faulted is not None:
            return faulted
        if symbol in self.recorded:
            doc = self.recorded[symbol]
            if params.get("range") == "1d":
                meta = doc["chart"]["result"][0]["meta"]
                return _response(request, 200, _chart_doc(meta, None, None))
            return _response(request, 200, doc)
        if symbol not in self.series:
            return _response(request, 404, json.loads((DATA_DIR / "chart_not_found.json").read_text()))
        s = self.series[symbol]
        if params.get("range") == "1d":  # yfinance's time-zone lookup
            return _response(request, 200, _chart_doc(self._meta(symbol, "1d"), None, None))
        if params.get("interval") != s.interval:
            return self._unexpected(request)
        lo, hi = int(params["period1"]), int(params["period2"])
        bars = s.bars[(s.bars["t"] >= lo) & (s.bars["t"] < hi)]
        meta = self._meta(symbol, s.interval, bars)
        return _response(request, 200, _chart_doc(meta, bars, s.interval))

    def _meta(self, symbol: str, interval: str, bars: pd.DataFrame | None = None) -> dict[str, Any]:
        tz = (
            self.series[symbol].tz
            if symbol in self.series
            else self.recorded[symbol]["chart"]["result"][0]["meta"]["exchangeTimezoneName"]
        )
        now = pd.Timestamp("2024-03-12 20:00", tz="UTC").tz_convert(tz)
        off = int(now.utcoffset().total_seconds())
        day = now.normalize()

        def period(h0: str, h1: str) -> dict[str, Any]:
            return {
                "timezone": now.tzname(),
                "start": int((day + pd.Timedelta(h0 + ":00")).timestamp()),
                "end": int((day + pd.Timedelta(h1 + ":00")).timestamp()),
                "gmtoffset": off,
            }

        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "NMS",
            "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY",
            "firstTradeDate": 345479400,
            "regularMarketTime": int(now.timestamp()),
            "hasPrePostMarketData": True,
            "gmtoffset": off,
            "timezone": now.tzname(),
            "exchangeTimezoneName": tz,
            "regularMarketPrice": 100.0,
            "chartPreviousClose": 99.0,
            "priceHint": 2,
            "currentTradingPeriod": {
                "pre": period("04:00", "09:30"),
                "regular": period("09:30", "16:00"),
                "post": period("16:00", "20:00"),
            },
            "dataGranularity": interval,
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        if interval != "1d" and bars is not None:
            # Intraday answers carry each day's regular session; yfinance needs it to drop pre/post bars.
            days = sorted({pd.Timestamp(t, unit="s", tz="UTC").tz_convert(tz).normalize() for t in bars["t"]})
            meta["tradingPeriods"] = [
                [
                    {
                        "timezone": d.tzname(),
                        "start": int((d + pd.Timedelta(hours=9, minutes=30)).timestamp()),
                        "end": int((d + pd.Timedelta(hours=16)).timestamp()),
                        "gmtoffset": int(d.utcoffset().total_seconds()),
                    }
                ]
                for d in days
            ]
        return meta


def _chart_doc(meta: dict[str, Any], bars: pd.DataFrame | None, interval: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"meta": meta}
    if bars is None or bars.empty:
        # Yahoo's answer for a window without bars: meta, no timestamps, an empty quote.
        result["indicators"] = {"quote": [{}]} if interval != "1d" else {"quote": [{}], "adjclose": [{}]}
    else:
        result["timestamp"] = [int(t) for t in bars["t"]]
        quote = {c: _nulls(bars[c]) for c in ("open", "high", "low", "close")}
        quote["volume"] = [None if pd.isna(v) else int(v) for v in bars["volume"]]
        result["indicators"] = {"quote": [quote]}
        if "adjclose" in bars.columns:
            result["indicators"]["adjclose"] = [{"adjclose": _nulls(bars["adjclose"])}]
    return {"chart": {"result": [result], "error": None}}


def _nulls(s: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in s]


def _epoch(ts: pd.Series) -> np.ndarray:
    return (ts.dt.tz_convert("UTC") - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)


def _response(
    request: requests.PreparedRequest, status: int, body: Any, content_type: str = "application/json"
) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.url = request.url or ""
    r.request = request
    r.reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}.get(
        status, ""
    )
    r.headers["Content-Type"] = content_type
    r._content = (json.dumps(body) if not isinstance(body, str) else body).encode()
    r.encoding = "utf-8"
    return r


class _Adapter(HTTPAdapter):
    def __init__(self, fake: FakeYahoo) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        return self.fake.handle(request)
