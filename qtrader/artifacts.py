"""Text for Prefect artifacts that reads well in the UI: short UTC timestamps, thousands separators, no
"-0", absolute ``file://`` links (a path relative to the worker's folder means nothing in a browser),
and markdown tables with human headers and right-aligned numbers. Plain functions, no Prefect."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

NA = "n/a"


def _missing(value) -> bool:
    if value is None or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def short_ts(value, *, date_only: bool | None = None) -> str:
    """``2026-04-10 20:00`` (UTC, no seconds or offset); ``2026-04-10`` for a midnight time or when
    ``date_only``."""
    if _missing(value):
        return NA
    ts = pd.Timestamp(value)
    ts = ts.tz_convert("UTC") if ts.tz is not None else ts
    if date_only or (date_only is None and ts == ts.normalize()):
        return f"{ts:%Y-%m-%d}"
    return f"{ts:%Y-%m-%d %H:%M}"


def count(value) -> str:
    """An integer with thousands separators (``15,040``); a value that rounds to zero prints ``0``."""
    if _missing(value) or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    n = int(round(float(value)))
    return f"{n:,}"


def number(value, digits: int = 2, *, signed: bool = False) -> str:
    """A number with thousands separators and fixed decimals, never ``-0.00``."""
    if _missing(value) or not math.isfinite(float(value)):
        return NA
    v = float(value)
    if round(v, digits) == 0:
        return f"{0:.{digits}f}"
    return f"{v:{'+' if signed else ''},.{digits}f}"


def percent(value, digits: int = 1, *, signed: bool = False) -> str:
    """A fraction as a percentage (0.612 -> ``61.2%``), never ``-0.0%``."""
    if _missing(value) or not math.isfinite(float(value)):
        return NA
    v = float(value) * 100.0
    if round(v, digits) == 0:
        return f"{0:.{digits}f}%"
    return f"{v:{'+' if signed else ''}.{digits}f}%"


def file_uri(path: str | Path) -> str:
    """The absolute ``file://`` URI of ``path`` (relative paths resolve against the current folder)."""
    return Path(path).expanduser().resolve().as_uri()


def file_link(path: str | Path, label: str | None = None) -> str:
    """A markdown link to ``path`` whose text is its absolute path (or ``label``)."""
    p = Path(path).expanduser().resolve()
    return f"[{label or p}]({p.as_uri()})"


def md_table(rows: Sequence[Mapping[str, object]], headers: Iterable[str] | None = None,
             numeric: Iterable[str] = ()) -> list[str]:  # fmt: skip
    """Markdown table lines; ``numeric`` columns are right-aligned. Cells are written as given."""
    heads = list(headers) if headers is not None else (list(rows[0]) if rows else [])
    right = set(numeric)
    out = [
        "| " + " | ".join(heads) + " |",
        "|" + "|".join("---:" if h in right else "---" for h in heads) + "|",
    ]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(h, "")).replace("|", "\\|") for h in heads) + " |")
    return out
