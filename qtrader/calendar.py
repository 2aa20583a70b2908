"""Exchange sessions and expected bar timestamps, from exchange-calendars (never hand-written hours)."""

from __future__ import annotations

import re
from functools import lru_cache

import exchange_calendars as xc
import numpy as np
import pandas as pd

_INTERVAL_RE = re.compile(r"^(\d+)(m|h|d)$")
CALENDAR_START = "1990-01-01"


def interval_minutes(interval: str) -> int:
    """'5m' -> 5, '1h' -> 60, '1d' -> 1440. Raises ValueError on anything else."""
    m = _INTERVAL_RE.match(interval)
    if not m:
        raise ValueError(f"unknown bar interval {interval!r}: use forms like 1d, 1h, 30m, 5m, 1m")
    n, unit = int(m.group(1)), m.group(2)
    if unit == "d":
        if n != 1:
            raise ValueError(f"only 1d daily bars are supported, got {interval!r}")
        return 1440
    return n * (60 if unit == "h" else 1)


def is_daily(interval: str) -> bool:
    return interval_minutes(interval) == 1440


@lru_cache(maxsize=8)
def get_calendar(exchange: str = "XNYS") -> xc.ExchangeCalendar:
    return xc.get_calendar(exchange, start=CALENDAR_START)


def sessions(start, end, exchange: str = "XNYS") -> pd.DatetimeIndex:
    """Session dates (tz-naive midnight) with start <= date <= end."""
    cal = get_calendar(exchange)
    start = max(pd.Timestamp(start).tz_localize(None).normalize(), cal.first_session)
    end = min(pd.Timestamp(end).tz_localize(None).normalize(), cal.last_session)
    if start > end:
        return pd.DatetimeIndex([])
    return cal.sessions_in_range(start, end)


def expected_bars(interval: str, start, end, exchange: str = "XNYS") -> pd.DatetimeIndex:
    """Every bar timestamp (UTC) the exchange would produce for ``interval`` between start and end.

    Daily bars are stamped at the session date 00:00 UTC; intraday bars at their start time, from the
    session open up to (not including) the close, early closes included.
    """
    start_ts = utc(start)
    end_ts = utc(end)
    sess = sessions(start_ts.tz_localize(None), end_ts.tz_localize(None), exchange)
    if is_daily(interval):
        idx = pd.DatetimeIndex(sess).tz_localize("UTC")
        return idx[(idx >= start_ts.normalize()) & (idx <= end_ts)]
    step = pd.Timedelta(minutes=interval_minutes(interval))
    cal = get_calendar(exchange)
    opens = cal.schedule.loc[sess, "open"]
    closes = cal.schedule.loc[sess, "close"]
    parts = [pd.date_range(o, c - step, freq=step) for o, c in zip(opens, closes, strict=True)]
    if not parts:
        return pd.DatetimeIndex([], tz="UTC")
    idx = parts[0].append(parts[1:]) if len(parts) > 1 else parts[0]
    return idx[(idx >= start_ts) & (idx <= end_ts)]


def in_session(ts: pd.Series | pd.DatetimeIndex, interval: str, exchange: str = "XNYS") -> np.ndarray:
    """Boolean per timestamp: is it a real bar slot (a session date for daily; inside open..close for intraday)."""
    idx = pd.DatetimeIndex(ts)
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    cal = get_calendar(exchange)
    dates = idx.tz_convert("UTC").tz_localize(None).normalize() if idx.tz is not None else idx.normalize()
    sched = cal.schedule
    valid_date = dates.isin(sched.index)
    if is_daily(interval):
        # A daily bar is stamped at its session date 00:00 UTC; any other time is not a daily slot.
        at_midnight = (idx.tz_convert("UTC") if idx.tz is not None else idx) == dates.tz_localize("UTC")
        return np.asarray(valid_date & at_midnight)
    # Intraday: the bar must start at or after the open and end at or before the close of its session.
    step = pd.Timedelta(minutes=interval_minutes(interval))
    pos = sched.index.get_indexer(dates)
    ok = np.zeros(len(idx), dtype=bool)
    have = pos >= 0
    opens = sched["open"].to_numpy()[pos[have]]
    closes = sched["close"].to_numpy()[pos[have]]
    t = idx[have].tz_convert("UTC").to_numpy() if idx.tz is not None else idx[have].to_numpy()
    t = pd.DatetimeIndex(t).tz_localize("UTC") if pd.DatetimeIndex(t).tz is None else pd.DatetimeIndex(t)
    ok[have] = (t >= pd.DatetimeIndex(opens)) & (t + step <= pd.DatetimeIndex(closes))
    return ok


def last_completed_session(now: pd.Timestamp, exchange: str = "XNYS") -> pd.Timestamp:
    """The newest session whose close is at or before ``now`` (tz-naive date)."""
    cal = get_calendar(exchange)
    now = utc(now)
    sess = cal.sessions_in_range(cal.first_session, min(now.tz_localize(None).normalize(), cal.last_session))
    closes = cal.schedule.loc[sess, "close"]
    done = closes[closes <= now]
    return done.index[-1]


def utc(x) -> pd.Timestamp:
    ts = pd.Timestamp(x)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def ingest_window(
    interval: str,
    *,
    start=None,
    end=None,
    now: pd.Timestamp,
    history_days: int,
    intraday_sessions: int,
    exchange: str = "XNYS",
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The UTC window an ingest asks for when the user gives no start and/or end.

    End defaults to ``now``. Start defaults to ``history_days`` calendar days before the end for daily
    bars, and to the open of the session ``intraday_sessions`` sessions back for intraday bars.
    """
    end_ts = utc(end) if end is not None else utc(now)
    if start is not None:
        start_ts = utc(start)
    elif is_daily(interval):
        start_ts = (end_ts - pd.Timedelta(days=history_days)).normalize()
    else:
        cal = get_calendar(exchange)
        recent = sessions(end_ts - pd.Timedelta(days=intraday_sessions * 2 + 10), end_ts, exchange)
        first = recent[-intraday_sessions] if len(recent) >= intraday_sessions else recent[0]
        start_ts = cal.schedule.loc[first, "open"]
    if start_ts > end_ts:
        raise ValueError(f"window start {start_ts} is after its end {end_ts}")
    return start_ts, end_ts
