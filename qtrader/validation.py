"""Checks of what a user types or configures: one place, pure (no I/O), light to import.

The CLI runs these before it imports a flow (Prefect, Great Expectations) or opens the warehouse, and
the settings and sources reuse the ones they need. Each failure is a ``BadInput`` whose message is one
line naming the argument, field or file, the value, and what is allowed; the CLI exits 2 on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

# Exit codes of every qtrader command (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1  # the work failed (a flow raised, the warehouse is locked, a refused SQL statement, ...)
EXIT_USAGE = 2  # bad usage: an argument or the configuration was refused before any work started
EXIT_PARTIAL = 3  # part of the work failed (e.g. some files of an ingest), the rest was written


class BadInput(ValueError):
    """An argument, a setting or an input file the user must fix; the message is one line."""


class Refused(PermissionError):
    """A request qtrader will not carry out (e.g. a write through ``qtrader sql``); one line, exit 1."""


def _shown(values: Iterable[str], limit: int = 12) -> str:
    values = list(values)
    head = ", ".join(values[:limit])
    return head + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def choice(value: str, allowed: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``allowed`` (exact), else BadInput listing them."""
    if value not in allowed:
        raise BadInput(f"{what} {value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return value


def choices(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma-separated list whose every item is one of ``allowed`` (order kept, duplicates dropped)."""
    items = csv_items(text, what)
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise BadInput(f"{what}: unknown {', '.join(map(repr, unknown))}; choose from: {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def csv_items(text: str, what: str) -> list[str]:
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise BadInput(f"{what} is empty: give one or more comma-separated values")
    return items


# ---------------------------------------------------------------------------------------------- symbols

# Tickers as exchanges, Yahoo and Alpaca write them: AAPL, BRK-B, BRK.B, ^GSPC, EURUSD=X, ES=F, 0700.HK,
# BTC/USD. No spaces, quotes or other punctuation: a symbol ends up in file names, SQL results and order ids.
DEFAULT_SYMBOL_PATTERN = r"^\^?[A-Z0-9][A-Z0-9.^=_/-]*$"
DEFAULT_SYMBOL_MAX_LENGTH = 20


def symbol_problem(
    symbol: str, pattern: str = DEFAULT_SYMBOL_PATTERN, max_length: int = DEFAULT_SYMBOL_MAX_LENGTH
) -> str | None:
    """Why ``symbol`` (already upper-cased) is not a valid symbol, or None."""
    if not symbol:
        return "empty symbol"
    if len(symbol) > max_length:
        return f"symbol {symbol!r} is longer than {max_length} characters"
    if not re.fullmatch(pattern, symbol):
        return (
            f"symbol {symbol!r} is not a ticker: letters, digits and . - = ^ _ / only, starting with a "
            f"letter or digit (pattern {pattern})"
        )
    return None


def symbols(
    text: str,
    what: str = "--symbols",
    pattern: str = DEFAULT_SYMBOL_PATTERN,
    max_length: int = DEFAULT_SYMBOL_MAX_LENGTH,
) -> list[str]:
    """Comma-separated tickers, upper-cased and checked."""
    out = [s.upper() for s in csv_items(text, what)]
    for s in out:
        problem = symbol_problem(s, pattern, max_length)
        if problem:
            raise BadInput(f"{what}: {problem}")
    return list(dict.fromkeys(out))


def unknown_symbols(wanted: Sequence[str], stored: Sequence[str], what: str, where: str) -> None:
    """BadInput naming the symbols of ``wanted`` that are not ``stored``, with a short list of those that are."""
    missing = [s for s in wanted if s not in set(stored)]
    if not missing:
        return
    held = f"it holds {len(stored)}: {_shown(sorted(stored))}" if stored else "it holds none yet"
    raise BadInput(f"{what}: unknown symbol {', '.join(missing)} in {where}; {held}")


# -------------------------------------------------------------------------------------- intervals, time

_INTERVAL = re.compile(r"^(\d+)(m|h|d)$")


def interval(value: str, what: str = "--interval") -> str:
    """A bar interval such as 1d, 1h, 30m, 5m (the forms qtrader.calendar.interval_minutes accepts)."""
    m = _INTERVAL.match(value.strip())
    if not m or int(m.group(1)) <= 0 or (m.group(2) == "d" and int(m.group(1)) != 1):
        raise BadInput(f"{what} {value!r} is not a bar interval; use 1d, 1h, 30m, 15m, 5m or 1m")
    return value.strip()


def intervals(text: str, what: str = "--interval") -> list[str]:
    return list(dict.fromkeys(interval(v, what) for v in csv_items(text, what)))


def timestamp(value: str, what: str):
    """A date or timestamp (UTC when no zone is written), as pandas reads it."""
    import pandas as pd

    try:
        ts = pd.Timestamp(value.strip())
    except (ValueError, TypeError, OverflowError):
        ts = None
    if ts is None or ts is pd.NaT:
        raise BadInput(
            f"{what} {value!r} is not a date or timestamp; use e.g. 2024-01-31 or 2024-01-31T14:30Z"
        )
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def time_window(start: str | None, end: str | None, what: str = "") -> tuple[object, object]:
    """Parsed --start / --end; BadInput when start is after end."""
    s = timestamp(start, f"{what}--start") if start else None
    e = timestamp(end, f"{what}--end") if end else None
    if s is not None and e is not None and s > e:
        raise BadInput(f"--start {start} is after --end {end}: the window would be empty")
    return s, e


def positive_int(value: int, what: str, meaning: str = "") -> int:
    if value < 1:
        tail = f" ({meaning})" if meaning else ""
        raise BadInput(f"{what} {value} must be a whole number >= 1{tail}")
    return value


def non_negative_int(value: int, what: str) -> int:
    if value < 0:
        raise BadInput(f"{what} {value} must be a whole number >= 0")
    return value


_WINDOW = re.compile(r"^[1-9]\d*(h|d)$")


def benchmark_window(value: str, what: str = "--window") -> str:
    """A benchmark window name: a span like 24h, 7d, 30d, 365d, or 'all' (how benchmarks are stored)."""
    if value != "all" and not _WINDOW.match(value):
        raise BadInput(
            f"{what} {value!r} is not a benchmark window; use a span like 24h, 7d, 30d, 365d, or all"
        )
    return value


# ------------------------------------------------------------------------------------------- file dates

_PROBE = datetime(2031, 12, 27, 13, 45, 56)


def date_format(value: str, what: str = "date_format") -> str:
    """A strptime format that writes and reads back a date unchanged (e.g. %d/%m/%Y, %m/%d/%Y %H:%M)."""
    try:
        text = _PROBE.strftime(value)
        parsed = datetime.strptime(text, value)
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or "%" not in value or parsed.date() != _PROBE.date():
        raise BadInput(
            f"{what} {value!r} is not a date format that names day, month and year; "
            "use strptime codes such as %d/%m/%Y, %m/%d/%Y or %d.%m.%Y %H:%M"
        )
    return value
