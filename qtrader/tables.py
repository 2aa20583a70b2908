"""Tables for the terminal that fit its width, and the same rows as JSON.

A table is a list of ``Column`` specs and rows of raw values (numbers, timestamps, text). Each column's
``kind`` fixes how its values print (quantities as integers, prices and money with 2 decimals, R with 2,
rates as %) and that numbers are right-aligned. When the table is wider than the terminal it is narrowed
in this order: headers are abbreviated, low-value columns dropped, long text shortened with an ellipsis,
then normal columns dropped from the right. Dates, timestamps, money and other numbers are never cut: a
column of them is shown whole or not at all, and the caption names the columns left out.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

from rich import box
from rich.console import Console
from rich.table import Table


class Kind(StrEnum):
    text = "text"  # may be shortened with an ellipsis
    id = "id"  # run ids, order ids: shortened from the left is useless, so only dropped, never cut
    int = "int"  # counts and quantities: 1,234
    money = "money"  # 1,234.56
    price = "price"  # 123.45
    r = "r"  # R multiples: 0.09
    rate = "rate"  # a fraction shown as a percentage: 0.6667 -> 66.7%
    pct = "pct"  # already a percentage: 12.345 -> 12.35%
    metric = "metric"  # accuracy, AUC, ECE: 0.527
    score = "score"  # 0-100 scores, seconds: 71.3
    number = "number"  # any other float: one precision per column (2 decimals, 4 when all below 1)
    sig = "sig"  # a column mixing scales (thresholds of different metrics): 4 significant digits
    figure = "figure"  # a number already formatted elsewhere ("12.3% (+1.2%)"): right-aligned, whole
    date = "date"
    ts = "ts"  # minutes; a column whose values are all midnight prints as dates


NUMERIC = {
    Kind.int,
    Kind.money,
    Kind.price,
    Kind.r,
    Kind.rate,
    Kind.pct,
    Kind.metric,
    Kind.score,
    Kind.number,
    Kind.sig,
}
# Cells of these kinds are printed whole: the column keeps its full width or is dropped.
WHOLE = NUMERIC | {Kind.figure, Kind.date, Kind.ts, Kind.id}
RIGHT = NUMERIC | {Kind.figure}

LOW, NORMAL, KEEP = 0, 1, 2  # priority: LOW dropped first, NORMAL after text is shortened, KEEP never


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: Kind = Kind.text
    priority: int = NORMAL
    short: str | None = None  # header when space is short, e.g. "quar." for "quarantined"
    min_width: int = 12  # text columns are never shortened below this
    # A timestamp column of a table mixing intervals: the row key holding the interval, whose daily rows
    # print as dates (a column of daily bars only prints dates without it).
    interval_key: str | None = None


def _blank(v) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN, NaT
    except (TypeError, ValueError):
        return False


def _float(v) -> float:
    return float(v) if not isinstance(v, decimal.Decimal) else float(v)


def _fixed(x: float, digits: int, sep: bool = True) -> str:
    text = f"{x:,.{digits}f}" if sep else f"{x:.{digits}f}"
    if text.startswith("-") and not text.strip("-0.,"):
        text = text[1:]  # "-0.00" reads as a loss that is not there
    return text


def _timestamp(v):
    import pandas as pd

    try:
        t = pd.Timestamp(v)
    except (TypeError, ValueError):
        return None
    if t.tzinfo is not None:
        t = t.tz_convert("UTC")
    return t


def is_midnight(values: Iterable) -> bool:
    """Whether every timestamp is at 00:00 (daily bars): such a column prints dates only."""
    seen = False
    for v in values:
        if _blank(v):
            continue
        t = _timestamp(v)
        if t is None or (t.hour, t.minute, t.second, t.microsecond) != (0, 0, 0, 0):
            return False
        seen = True
    return seen


def format_cell(v, kind: Kind, *, dates_only: bool = False, digits: int | None = None) -> str:
    """One value as text for its column kind; blank for NULL/NaN/NaT."""
    if _blank(v):
        return ""
    if kind is Kind.figure:
        return str(v)
    if kind in (Kind.date, Kind.ts):
        if isinstance(v, str):
            t = _timestamp(v)
            if t is None:
                return v
        else:
            t = _timestamp(v)
        if t is None:
            return str(v)
        return f"{t:%Y-%m-%d}" if kind is Kind.date or dates_only else f"{t:%Y-%m-%d %H:%M}"
    if kind in NUMERIC:
        try:
            x = _float(v)
        except (TypeError, ValueError):
            return str(v)
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if kind is Kind.int:
            return f"{round(x):,}"
        if kind in (Kind.money, Kind.price):
            return _fixed(x, 2)
        if kind is Kind.r:
            return _fixed(x, 2, sep=False)
        if kind is Kind.rate:
            return _fixed(100 * x, 1, sep=False) + "%"
        if kind is Kind.pct:
            return _fixed(x, 2, sep=False) + "%"
        if kind is Kind.metric:
            return _fixed(x, 3, sep=False)
        if kind is Kind.score:
            return _fixed(x, 1)
        if kind is Kind.sig:
            return f"{x:.4g}"
        return _fixed(x, 2 if digits is None else digits)
    if isinstance(v, (dt.datetime, dt.date)):
        return format_cell(v, Kind.ts)
    return str(v)


def _is_daily(interval) -> bool:
    from qtrader.calendar import is_daily

    try:
        return isinstance(interval, str) and is_daily(interval)
    except ValueError:
        return False


def number_digits(values: Iterable) -> int:
    """Decimals for a column of plain numbers: one precision for the whole column (0 for whole numbers,
    2 when any value is 1 or more in size, else 4)."""
    xs = []
    for v in values:
        if _blank(v):
            continue
        try:
            xs.append(_float(v))
        except (TypeError, ValueError):
            continue
    finite = [x for x in xs if math.isfinite(x)]
    if not finite or all(x == int(x) for x in finite):
        return 0
    return 2 if max(abs(x) for x in finite) >= 1 else 4


def cells(columns: Sequence[Column], rows: Sequence[Mapping]) -> list[list[str]]:
    """The rows as text, column by column (per-column decisions: dates only, decimals)."""
    out: list[list[str]] = [[] for _ in rows]
    for c in columns:
        values = [r.get(c.key) for r in rows]
        dates_only = c.kind is Kind.ts and is_midnight(values)
        digits = number_digits(values) if c.kind is Kind.number else None
        for i, v in enumerate(values):
            daily = dates_only or (c.interval_key is not None and _is_daily(rows[i].get(c.interval_key)))
            out[i].append(format_cell(v, c.kind, dates_only=daily, digits=digits))
    return out


@dataclass(frozen=True)
class Fitted:
    columns: list[Column]
    widths: list[int | None]  # a text column's shortened width, else None (natural)
    headers: list[str]
    dropped: list[Column]


def _build(fitted: Fitted, body: list[list[str]], all_columns: Sequence[Column], title, caption) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, caption=caption,
        title_justify="left", caption_justify="left", header_style="bold", collapse_padding=True,
    )  # fmt: skip
    for c, w, h in zip(fitted.columns, fitted.widths, fitted.headers, strict=True):
        table.add_column(
            h,
            justify="right" if c.kind in RIGHT else "left",
            no_wrap=True,
            overflow="ellipsis" if c.kind is Kind.text else "fold",
            max_width=w,
        )
    idx = [all_columns.index(c) for c in fitted.columns]
    for row in body:
        table.add_row(*[row[i] for i in idx])
    return table


def _width(table: Table) -> int:
    return Console(width=100_000, color_system=None).measure(table).maximum


def fit(columns: Sequence[Column], body: list[list[str]], width: int) -> Fitted:
    """Which columns, headers and text widths make the table fit ``width``: headers abbreviated one by
    one, then low-value columns dropped, then text shortened (other columns' text before KEEP columns'),
    then normal columns dropped; each step from the right (the leftmost columns say what a row is)."""
    cols = list(columns)
    headers = [c.header for c in cols]
    widths: list[int | None] = [None] * len(cols)
    dropped: list[Column] = []

    def current() -> Fitted:
        return Fitted(list(cols), list(widths), list(headers), list(dropped))

    def excess() -> int:
        return _width(_build(current(), body, columns, None, None)) - width

    def drop(level: int) -> bool:
        for i in range(len(cols) - 1, -1, -1):
            if excess() <= 0:
                return True
            if cols[i].priority == level:
                dropped.insert(0, cols.pop(i))
                headers.pop(i)
                widths.pop(i)
        return excess() <= 0

    def shorten(keep: bool) -> bool:
        for i in range(len(cols) - 1, -1, -1):
            c = cols[i]
            if excess() <= 0:
                return True
            if c.kind is Kind.text and (c.priority == KEEP) is keep:
                natural = max([len(headers[i])] + [len(r[columns.index(c)]) for r in body])
                widths[i] = max(min(c.min_width, natural), natural - excess())
        return excess() <= 0

    if excess() <= 0:
        return current()
    for i in range(len(cols) - 1, -1, -1):
        if cols[i].short:
            headers[i] = cols[i].short
            if excess() <= 0:
                return current()
    drop(LOW) or shorten(keep=False) or shorten(keep=True) or drop(NORMAL)
    for i, c in enumerate(cols):  # a dropped column may have made room for a full header again
        if headers[i] != c.header and widths[i] is None:
            headers[i] = c.header
            if excess() > 0:
                headers[i] = c.short or c.header
    return current()


def render(
    columns: Sequence[Column],
    rows: Sequence[Mapping],
    width: int,
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """A rich Table of ``rows`` that fits ``width`` columns (the caption names any column left out)."""
    body = cells(columns, rows)
    fitted = fit(columns, body, width)
    if fitted.dropped:
        order = [c for c in columns if c in fitted.dropped]
        hidden = f"hidden at {width} columns: {', '.join(c.header for c in order)} (--json has all)"
        caption = f"{caption}\n{hidden}" if caption else hidden
    return _build(fitted, body, columns, title, caption)


# ------------------------------------------------------------------------------------- frames and JSON


def frame_columns(df, headers: Mapping[str, str] | None = None) -> list[Column]:
    """Column specs for an arbitrary frame (``qtrader sql``): kinds from the dtypes, every column normal."""
    out = []
    for name in df.columns:
        kind = df[name].dtype.kind
        if kind in "iu":
            k = Kind.int
        elif kind == "f":
            k = Kind.number
        elif kind == "M":
            k = Kind.ts
        elif kind == "b":
            k = Kind.text
        else:
            sample = df[name].dropna().head(50)
            if len(sample) and all(isinstance(v, decimal.Decimal) for v in sample):
                k = Kind.number
            elif len(sample) and all(isinstance(v, (dt.datetime, dt.date)) for v in sample):
                k = Kind.ts
            else:
                k = Kind.text
        out.append(Column(str(name), (headers or {}).get(str(name), str(name)), k))
    return out


def jsonable(v):
    """A value as JSON: ISO timestamps (UTC kept), NaN/NaT as null, Decimal and numpy scalars as numbers."""
    if _blank(v):
        return None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if hasattr(v, "isoformat"):  # pandas Timestamp
        return v.isoformat()
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):  # numpy scalar
        try:
            return v.item()
        except (ValueError, TypeError):
            pass
    if isinstance(v, float) and math.isinf(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist"):  # numpy arrays
        return jsonable(v.tolist())
    if isinstance(v, Enum):
        return v.value
    return v


def records(df) -> list[dict]:
    """A frame's rows as JSON-ready dicts."""
    return [{str(k): jsonable(v) for k, v in row.items()} for row in df.to_dict("records")]
