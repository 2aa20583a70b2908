"""Bars from a folder of CSV or Parquet files, one file per symbol.

What a file may look like:

- Symbol = file stem upper-cased: ``aapl.csv`` -> AAPL, ``BRK-B.parquet`` -> BRK-B. A stem that is not a
  ticker (``A B.csv``, quotes, too long: ``qtrader.validation.symbol_problem``) fails that file.
- Headers in any letter case, with common aliases: the time in ``date``/``datetime``/``timestamp``/``time``/
  ``ts`` (or ``date`` + ``time`` columns), ``vol`` for volume, ``adj close``/``adj_close``/``adjclose``.
  Columns it does not know (a pandas ``to_csv`` index column, ``Unnamed: 0``, ...) are ignored.
- Dates ``2004-08-19``, ``20040819``, ISO timestamps with a zone (``2024-03-01T14:30:00Z``,
  ``2024-03-01 09:30:00-05:00``) or without one, epoch seconds/milliseconds, and day/month dates
  (``1/4/1999``, ``31.12.1999``, ``04-01-1999``): their order is read from the file itself, month/day when
  some second number is above 12, day/month when some first number is. A file where every date reads
  both ways (no day above 12) is refused, never guessed: give the format, ``date_format`` (or
  ``--date-format``) for every file whose dates are not ISO, yyyymmdd or epoch numbers, or
  ``date_formats`` per file name for every date of that file.
  A timestamp without a zone is local time at the exchange (``exchange_tz``), as broker and vendor
  exports write it; a file written in UTC should say so (``Z`` or ``+00:00``).
- Daily files: every timestamp is a date or midnight as written. Daily bars are stamped at that date
  00:00 UTC. Intraday bars keep their instant, converted to UTC; the bar interval is the most common
  positive step between consecutive bars of one exchange-local day, unless ``interval`` is given.
- Prices are adjusted when an ``Adj Close`` column is present: open, high and low are scaled by
  adj_close / close and close becomes adj_close (what yfinance's auto_adjust does, so files and the
  yfinance source agree; returns and features must not jump at splits and dividends). Volume is left
  as delivered. Without the column, prices are used as they are (a note says so).

Rows are kept as delivered, NaN cells included: judging them is the gate's job. A file whose rows are
all in descending time order (newest-first exports) is reversed; any other disorder and duplicate
timestamps are kept in delivery order for the gate to quarantine. A malformed file (unparseable date,
non-numeric price text, ragged row, missing column, unreadable file) is reported in ``failures`` with the
file name and the 1-based line (the header is line 1), and the other files still load. One record per
line is assumed: quoted fields spanning lines are not supported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from qtrader import progress
from qtrader.calendar import interval_minutes, is_daily, utc
from qtrader.validation import DEFAULT_SYMBOL_MAX_LENGTH, DEFAULT_SYMBOL_PATTERN, symbol_problem
from sources.base import (
    AUTO_INTERVAL,
    BAR_COLUMNS,
    FetchRequest,
    FetchResult,
    SourceError,
    empty_bars,
    to_canonical,
)

logger = logging.getLogger(__name__)

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

# Normalised header (lower case, letters and digits only) -> our column. Order = preference.
_ALIASES: dict[str, list[str]] = {
    "time": ["datetime", "timestamp", "date", "time", "ts", "datetimeutc", "timestamputc"],
    "open": ["open", "openprice"],
    "high": ["high", "highprice"],
    "low": ["low", "lowprice"],
    "close": ["close", "closeprice", "last"],
    "adj_close": ["adjclose", "adjustedclose", "closeadj", "adjustedcloseprice"],
    "volume": ["volume", "vol", "totalvolume"],
}
_REQUIRED = ["time", "open", "high", "low", "close"]
_NUMERIC = ["open", "high", "low", "close", "adj_close", "volume"]
# Cell text meaning "no value" (Yahoo's CSV export writes null); not malformed.
_EMPTY_TOKENS = {"", "null", "nan", "na", "n/a", "none", "-"}
_NA_VALUES = sorted({v for t in _EMPTY_TOKENS for v in (t, t.upper(), t.capitalize())})

# A string pattern (not compiled) so pandas hands it to pyarrow's vectorised regex.
_TZ_SUFFIX = r"(?:[Zz]|[+-]\d{2}:?\d{2})$"
# Day and month in either order, then a 4-digit year: 1/4/1999, 31.12.1999, 04-01-1999 (+ a time).
_DAY_MONTH = r"^(\d{1,2})([/.-])(\d{1,2})\2\d{4}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?$"
_TIME_SUFFIXES = ("", " %H:%M:%S", " %H:%M", "T%H:%M:%S", "T%H:%M")
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
_PARSER_LINE = re.compile(r"line (\d+)")


class _Malformed(Exception):
    """A file that cannot be read as bars; the message names the file and, where known, the line."""


class _Table:
    """A file's cells, and where each row came from (for error messages)."""

    def __init__(self, frame: pd.DataFrame, name: str, path: Path | None = None) -> None:
        self.frame = frame
        self.name = name
        self._path = path  # CSV: rows are mapped to file lines when an error needs one
        self._lines: tuple[list[str], np.ndarray] | None = None
        self.skipped_rows = 0  # leading rows dropped from the frame (yfinance's extra header rows)

    def raw_lines(self) -> tuple[list[str], np.ndarray]:
        """The file's lines, and the 1-based number of each non-blank one (the header first)."""
        if self._lines is None:
            assert self._path is not None
            lines = (
                self._path.read_text(encoding="utf-8-sig")
                .replace("\r\n", "\n")
                .replace("\r", "\n")
                .split("\n")
            )
            nonblank = np.flatnonzero([bool(line.strip()) for line in lines]) + 1
            self._lines = (lines, nonblank)
        return self._lines

    def line_of(self, row: int) -> int | None:
        if self._path is None:
            return None
        _, nonblank = self.raw_lines()
        # pandas skips blank lines, so data row i is the (i + 2)-th non-blank line.
        i = row + 1 + self.skipped_rows
        return int(nonblank[i]) if i < len(nonblank) else None

    def where(self, row: int) -> str:
        line = self.line_of(row)
        return f"{self.name} line {line}" if line is not None else f"{self.name} row {row + 1}"


class FilesSource:
    """Bars read from ``path``: CSV or Parquet files, one per symbol (see the module docstring).

    ``interval``: the bar interval of every file; None infers it per file and reports a file whose
    interval differs from ``request.interval`` as a failure; a request for ``AUTO_INTERVAL`` takes every
    file at its own interval. ``exchange_tz``: the zone of timestamps
    written without one.
    """

    name = "files"

    def __init__(
        self,
        path: Path,
        interval: str | None = None,
        exchange_tz: str = "America/New_York",
        *,
        date_format: str | None = None,
        date_formats: Mapping[str, str] | None = None,
        symbol_pattern: str = DEFAULT_SYMBOL_PATTERN,
        symbol_max_length: int = DEFAULT_SYMBOL_MAX_LENGTH,
    ) -> None:
        self.path = Path(path)
        if interval is not None:
            interval_minutes(interval)  # fail fast on a bad setting
        self.interval = interval
        self.exchange_tz = exchange_tz
        # Dates that are not ISO, yyyymmdd or epoch (day/month style); None: the order detected per file.
        self.date_format = date_format
        self.date_formats = dict(date_formats or {})  # per file name: every date of that file
        self.symbol_pattern = symbol_pattern
        self.symbol_max_length = symbol_max_length

    def fetch(self, request: FetchRequest) -> FetchResult:
        if not self.path.is_dir():
            raise SourceError(f"the files source folder {self.path} does not exist or is not a folder")
        if request.interval != AUTO_INTERVAL:
            interval_minutes(request.interval)
        by_symbol: dict[str, list[Path]] = {}
        failures: dict[str, str] = {}
        for p in sorted(self.path.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIXES:
                problem = symbol_problem(p.stem.upper(), self.symbol_pattern, self.symbol_max_length)
                if problem:
                    failures[p.name] = f"{p.name}: the file name is the symbol, and {problem}"
                    continue
                by_symbol.setdefault(p.stem.upper(), []).append(p)

        if request.symbols is None:
            wanted = sorted(by_symbol)
        else:
            wanted = list(dict.fromkeys(s.strip().upper() for s in request.symbols if s.strip()))
            for s in wanted:
                if s not in by_symbol:
                    failures[s] = "no file for symbol"

        frames: list[pd.DataFrame] = []
        notes: list[str] = []
        for done, sym in enumerate(wanted):
            progress.report(f"fetch {request.interval}", done, len(wanted))
            files = by_symbol.get(sym)
            if not files:
                continue
            if len(files) > 1:
                failures[sym] = f"more than one file for the symbol: {', '.join(p.name for p in files)}"
                continue
            try:
                bars, note = self._load(files[0], sym, request)
            except _Malformed as exc:
                failures[sym] = str(exc)
                logger.warning("files source: %s", exc)
                continue
            frames.append(bars)
            notes.append(note)

        bars = to_canonical(pd.concat(frames, ignore_index=True)) if frames else empty_bars()
        return FetchResult(bars=bars, failures=failures, notes=notes)

    # -- one file -----------------------------------------------------------------------------------------

    def _load(self, path: Path, symbol: str, request: FetchRequest) -> tuple[pd.DataFrame, str]:
        table = _read_parquet(path) if SUFFIXES[path.suffix.lower()] == "parquet" else _read_csv(path)
        cols = _resolve_columns(table)
        if len(table.frame) == 0:
            raise _Malformed(f"{path.name}: no data rows")

        wall, instant, date_note = _parse_times(
            table, cols["time"], self.exchange_tz, self.date_formats.get(path.name), self.date_format
        )
        values = {c: _parse_numbers(table, cols[c], c) for c in _NUMERIC if c in cols}
        done: list[str] = [date_note] if date_note else []

        # Interval: given, or daily when every timestamp is a date / midnight as written, else inferred.
        if self.interval is not None:
            label, how, daily = self.interval, "given", is_daily(self.interval)
        else:
            label, how, daily = "1d", "inferred", bool((wall == wall.dt.normalize()).all())
        if not daily:
            _check_instants(table, instant, wall, self.exchange_tz)
            if self.interval is None:
                inferred = _infer_interval(instant, self.exchange_tz)
                if inferred is None:
                    raise _Malformed(
                        f"{path.name}: cannot infer the bar interval (no two bars on one day); pass the interval"
                    )
                label = inferred
        if request.interval == AUTO_INTERVAL:
            pass  # each file keeps its own interval; the flow gates each interval separately
        elif interval_minutes(label) == interval_minutes(request.interval):
            label = request.interval
        elif self.interval is None:
            raise _Malformed(f"{path.name}: holds {label} bars, the request is for {request.interval}")
        else:
            done.append(f"labelled {label} although the request is for {request.interval}")

        # Daily bars: the date as written, at 00:00 UTC. Intraday: the bar's start instant in UTC.
        ts = wall.dt.normalize().dt.tz_localize("UTC") if daily else instant
        out = pd.DataFrame({"symbol": symbol, "interval": label, "ts": ts.reset_index(drop=True)})
        for c in ["open", "high", "low", "close"]:
            out[c] = values[c].to_numpy()
        out["volume"] = values["volume"].to_numpy() if "volume" in values else np.nan
        if "volume" not in values:
            done.append("no volume column (volume NaN)")

        if "adj_close" in values:
            close = out["close"].to_numpy()
            adj = values["adj_close"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(close != 0, adj / close, np.nan)
            for c in ["open", "high", "low"]:
                out[c] = out[c].to_numpy() * factor
            out["close"] = adj
            done.append("prices adjusted by Adj Close")
        else:
            done.append("prices as delivered (no Adj Close column)")

        t = out["ts"]
        if len(out) > 1 and t.is_monotonic_decreasing and t.iloc[0] != t.iloc[-1]:
            out = out.iloc[::-1].reset_index(drop=True)
            done.append("newest-first order reversed")

        n_file = len(out)
        keep = pd.Series(True, index=out.index)
        if request.start is not None:
            start = utc(request.start)
            keep &= out["ts"] >= (start.normalize() if daily else start)
        if request.end is not None:
            keep &= out["ts"] <= utc(request.end)
        out = out[keep].reset_index(drop=True)

        note = (
            f"{path.name}: {symbol} {label} bars ({how}), {len(out)} of {n_file} rows in the window; "
            + ", ".join(done)
        )
        return out[BAR_COLUMNS], note


# -- reading ----------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> _Table:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            header = next((line for line in fh if line.strip()), "")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"{path.name}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _Malformed(f"{path.name}: cannot read ({exc.strerror})") from None
    if not header:
        raise _Malformed(f"{path.name}: empty file")
    sep = (
        ";" if ";" in header and "," not in header else "\t" if "\t" in header and "," not in header else ","
    )

    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            encoding="utf-8-sig",
            # Numbers are parsed by the C parser; a column with bad text stays text and is checked cell
            # by cell in _parse_numbers, which finds the line.
            keep_default_na=False,
            na_values=_NA_VALUES,
            skip_blank_lines=True,
            index_col=False,  # a trailing separator on every row must not turn column 1 into the index
        )
    except pd.errors.ParserError as exc:  # a row with too many fields; pandas counts physical lines
        m = _PARSER_LINE.search(str(exc))
        msg = str(exc).strip().splitlines()[-1]
        fields = re.search(r"Expected (\d+) fields in line \d+, saw (\d+)", msg)
        if fields:
            msg = f"ragged row: expected {fields.group(1)} fields, saw {fields.group(2)}"
        raise _Malformed(f"{path.name} line {m.group(1)}: {msg}" if m else f"{path.name}: {msg}") from None
    except pd.errors.EmptyDataError:
        raise _Malformed(f"{path.name}: empty file") from None
    except UnicodeDecodeError as exc:
        raise _Malformed(f"{path.name}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    frame.columns = [str(c) for c in frame.columns]
    table = _Table(frame, path.name, path)
    _check_short_rows(table, sep, header)
    _drop_yfinance_header_rows(table)
    return table


def _drop_yfinance_header_rows(table: _Table) -> None:
    """``yf.download(...).to_csv()`` writes three header lines: Price,Close,... / Ticker,AAPL,... / Date,,,...

    The first is the header proper; the other two become data rows here. Drop them, and name the
    first column after the last one ("Date" or "Datetime").
    """
    f = table.frame
    if f.empty or _normalise(f.columns[0]) != "price":
        return
    first = f.iloc[:3, 0].astype("str").str.strip().str.lower()
    k = 0
    while k < len(first) and first.iloc[k] in ("ticker", "date", "datetime"):
        k += 1
    if k == 0:
        return
    time_name = str(f.iloc[k - 1, 0]).strip()
    if _normalise(time_name) not in ("date", "datetime"):
        time_name = "Date"
    f = f.iloc[k:].reset_index(drop=True)
    table.frame = f.rename(columns={f.columns[0]: time_name})
    table.skipped_rows = k


def _check_short_rows(table: _Table, sep: str, header: str) -> None:
    """pandas pads a row with too few fields with NaN: count the fields of rows ending in NaN."""
    f = table.frame
    if f.empty:
        return
    candidates = np.flatnonzero(f.iloc[:, -1].isna().to_numpy())
    if len(candidates) == 0:
        return
    lines, _ = table.raw_lines()
    expected = header.count(sep) + 1 - (1 if header.rstrip().endswith(sep) else 0)
    for row in candidates:
        line_no = table.line_of(int(row))
        if line_no is None:
            return  # rows and lines do not match (a quoted field spanning lines): leave it to the parser
        text = lines[line_no - 1]
        if '"' in text:
            continue  # the separator may sit inside a quoted field
        saw = text.count(sep) + 1
        if saw < expected:
            raise _Malformed(
                f"{table.name} line {line_no}: ragged row: expected {expected} fields, saw {saw}"
            )


def _read_parquet(path: Path) -> _Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise _Malformed(
            f"{path.name}: unreadable parquet file ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()  # a time index written by DataFrame.to_parquet
    frame.columns = [str(c) for c in frame.columns]
    return _Table(frame.reset_index(drop=True), path.name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _resolve_columns(table: _Table) -> dict[str, str]:
    """Our column -> the file's column name. Raises for a missing required column."""
    by_norm: dict[str, str] = {}
    for c in table.frame.columns:
        by_norm.setdefault(_normalise(c), c)
    cols: dict[str, str] = {}
    # A nameless first column is a pandas index: the time when nothing else is (to_csv of a frame with
    # an unnamed DatetimeIndex), ignored otherwise.
    first = table.frame.columns[0] if len(table.frame.columns) else ""
    if (
        first.startswith("Unnamed: ")
        and not any(a in by_norm for a in _ALIASES["time"])
        and len(table.frame)
        and not re.fullmatch(r"\d{1,7}", str(table.frame[first].iloc[0]).strip())  # 0, 1, 2: a row number
    ):
        by_norm["datetime"] = first
    for ours, aliases in _ALIASES.items():
        for a in aliases:
            if a in by_norm and by_norm[a] not in cols.values():
                cols[ours] = by_norm[a]
                break
    # Separate date and time columns (Date,Time,Open,...): join them into one timestamp.
    f = table.frame
    if (
        "date" in by_norm
        and "time" in by_norm
        and cols.get("time") == by_norm["date"]
        and len(f)
        and re.match(r"^\s*\d{1,2}:\d{2}", str(f[by_norm["time"]].iloc[0]))
    ):
        f["__datetime__"] = (
            f[by_norm["date"]].astype(str).str.strip() + " " + f[by_norm["time"]].astype(str).str.strip()
        )
        cols["time"] = "__datetime__"
    for ours in _REQUIRED:
        if ours not in cols:
            found = ", ".join(c for c in table.frame.columns if c != "__datetime__")
            raise _Malformed(
                f"{table.name}: no '{ours if ours != 'time' else 'date'}' column (found: {found})"
            )
    return cols


# -- parsing ----------------------------------------------------------------------------------------------


def _cells(s: pd.Series) -> pd.Series:
    """Cell text with the 'no value' tokens made empty."""
    text = s.astype("str").fillna("").str.strip()
    return text.mask(text.str.lower().isin(_EMPTY_TOKENS), "")


def _parse_numbers(table: _Table, column: str, ours: str) -> pd.Series:
    s = table.frame[column]
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.astype("float64").reset_index(drop=True)
    text = _cells(s)
    num = pd.to_numeric(text.where(text != "", None), errors="coerce").astype("float64")
    bad = num.isna().to_numpy() & (text != "").to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _Malformed(f"{table.where(i)}: non-numeric {ours.replace('_', ' ')} {text.iloc[i]!r}")
    return num.reset_index(drop=True)


def _parse_times(
    table: _Table, column: str, exchange_tz: str, fmt: str | None = None, other_fmt: str | None = None
) -> tuple[pd.Series, pd.Series, str | None]:
    """(wall clock as written, naive; the instant in UTC; a note on how the dates were read) per row.
    Raises at the first unparseable value. ``fmt``: this file's strptime format, used for every date.
    ``other_fmt``: the format of dates that are not ISO (yyyy-mm-dd...), yyyymmdd or epoch numbers, the
    unambiguous forms still read as they are (without it, a day/month order is detected or refused).

    The instant is NaT where a zone-less time does not exist or is ambiguous in ``exchange_tz`` (a DST
    change): an error for intraday files only, see ``_check_instants``.
    """
    s = table.frame[column]
    if pd.api.types.is_datetime64_any_dtype(s):
        t = pd.Series(pd.DatetimeIndex(s)).astype(
            "datetime64[ns, UTC]" if s.dt.tz is not None else "datetime64[ns]"
        )
        if t.dt.tz is not None:
            return t.dt.tz_convert(s.dt.tz).dt.tz_localize(None), t, None
        return t, _localise(t, exchange_tz), None

    text = _cells(s)
    empty = (text == "").to_numpy()
    if empty.any():
        raise _Malformed(f"{table.where(int(np.flatnonzero(empty)[0]))}: empty date")
    first = text.iloc[0]

    if fmt is not None:
        return (*_parse_with_format(table, text, fmt, exchange_tz), f"dates read as {fmt} (configured)")

    if re.fullmatch(r"\d{10}(?:\.\d+)?|\d{13}", first):  # epoch seconds / milliseconds: UTC
        unit = "ms" if len(first) == 13 else "s"
        instant = pd.to_datetime(pd.to_numeric(text, errors="coerce"), unit=unit, utc=True, errors="coerce")
        _raise_on_nat(table, instant, text)
        instant = instant.astype("datetime64[ns, UTC]")
        return instant.dt.tz_localize(None), instant, None

    # A zone suffix only in ISO timestamps (a day/month date ending "-1999" is no UTC offset).
    has_tz = np.zeros(len(text), dtype=bool)
    note = None
    if re.fullmatch(r"\d{8}", first):
        wall = pd.to_datetime(text, format="%Y%m%d", errors="coerce")
    elif other_fmt is not None and not re.match(_ISO_DATE, first):
        return (
            *_parse_with_format(table, text, other_fmt, exchange_tz),
            f"dates read as {other_fmt} (configured)",
        )
    elif re.match(_DAY_MONTH, first):
        date_fmt, note = _day_month_order(table, text)
        wall = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
        for suffix in _TIME_SUFFIXES:
            wall = wall.fillna(pd.to_datetime(text, format=date_fmt + suffix, errors="coerce"))
    else:
        has_tz = text.str.contains(_TZ_SUFFIX).to_numpy(dtype=bool)
        # As written (zone suffix removed): decides daily vs intraday and gives the date of a daily bar.
        wall = pd.to_datetime(text.str.replace(_TZ_SUFFIX, "", regex=True), format="ISO8601", errors="coerce")
    _raise_on_nat(table, wall, text)
    wall = wall.astype("datetime64[ns]")

    instant = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    if has_tz.any():
        aware = pd.to_datetime(text[has_tz], format="ISO8601", utc=True, errors="coerce")
        _raise_on_nat(table, aware, text[has_tz])
        instant[has_tz] = aware.astype("datetime64[ns, UTC]")
    if (~has_tz).any():
        instant[~has_tz] = _localise(wall[~has_tz], exchange_tz)
    return wall, instant, note


def _day_month_order(table: _Table, text: pd.Series) -> tuple[str, str]:
    """The strptime date format of a file of day/month dates, from the file itself; refuses to guess.

    Month/day when some second number is above 12 (it can only be a day), day/month when some first
    number is; when every date reads both ways the order is unknowable from the file: _Malformed.
    """
    parts = text.str.extract(_DAY_MONTH)
    sep = str(parts[1].dropna().iloc[0]) if parts[1].notna().any() else "/"
    first = pd.to_numeric(parts[0], errors="coerce")
    second = pd.to_numeric(parts[2], errors="coerce")
    if (second > 12).any():
        return f"%m{sep}%d{sep}%Y", "month/day dates (a second number above 12)"
    if (first > 12).any():
        return f"%d{sep}%m{sep}%Y", "day/month dates (a first number above 12)"
    example = text.iloc[0]
    raise _Malformed(
        f"{table.name}: ambiguous day/month order: every date reads as day/month and as month/day "
        f"(e.g. {example!r}, no day above 12); give the format: --date-format %d{sep}%m{sep}%Y or "
        f'%m{sep}%d{sep}%Y, or [files] date_format / date_formats = {{"{table.name}" = ...}}'
    )


def _parse_with_format(
    table: _Table, text: pd.Series, fmt: str, exchange_tz: str
) -> tuple[pd.Series, pd.Series]:
    """(wall clock, instant in UTC) of every date parsed with the configured ``fmt``; _Malformed names
    the first line that does not fit it."""
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _Malformed(f"{table.where(i)}: date {text.iloc[i]!r} does not match the format {fmt!r}")
    if getattr(parsed.dt, "tz", None) is not None:  # %z in the format: the offset is in the file
        instant = parsed.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        return parsed.dt.tz_localize(None).astype("datetime64[ns]"), instant
    wall = parsed.astype("datetime64[ns]")
    return wall, _localise(wall, exchange_tz)


def _localise(wall: pd.Series, exchange_tz: str) -> pd.Series:
    """Naive exchange-local times -> UTC; NaT where the local time does not exist or is ambiguous."""
    local = wall.dt.tz_localize(exchange_tz, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _check_instants(table: _Table, instant: pd.Series, wall: pd.Series, exchange_tz: str) -> None:
    bad = instant.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _Malformed(
            f"{table.where(i)}: local time {wall.iloc[i]} does not exist or is ambiguous in {exchange_tz} "
            "(write the UTC offset)"
        )


def _raise_on_nat(table: _Table, parsed: pd.Series, text: pd.Series) -> None:
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _Malformed(f"{table.where(int(text.index[i]))}: cannot parse date {text.iloc[i]!r}")


def _infer_interval(instant: pd.Series, exchange_tz: str) -> str | None:
    """The most common positive step between consecutive bars of one exchange-local day: '5m', '1h'."""
    local_day = instant.dt.tz_convert(exchange_tz).dt.normalize()
    step = instant.diff()
    same_day = local_day.eq(local_day.shift())
    # Newest-first files step backwards: the size of the step is what matters.
    minutes = (step[same_day].abs() / pd.Timedelta(minutes=1)).loc[lambda m: m > 0]
    if minutes.empty:
        return None
    mode = float(minutes.mode().min())
    if mode != int(mode):
        return None
    n = int(mode)
    return f"{n // 60}h" if n % 60 == 0 else f"{n}m"
