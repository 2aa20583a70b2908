"""The warehouse as the command line's user sees it: ``qtrader sql`` and the look-ups that check arguments.

Every query here runs on a *locked-down* read connection (DuckDB's own settings, not string matching):

- ``read_only``: no INSERT/UPDATE/DELETE/CREATE on the warehouse;
- ``enable_external_access = false``: no file functions (``read_csv``, ``read_text``, ``glob``, ...),
  no ``COPY ... TO``, ``EXPORT``, ``ATTACH``, no extension install or load;
- ``autoinstall_known_extensions`` / ``autoload_known_extensions`` off: nothing fetched from the network;
- ``lock_configuration = true`` (set last, after the UTC time zone): a query cannot ``SET`` any of it back.

A refused statement becomes one line (``QueryRefused``); an empty query is ``EmptyQuery``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import pandas as pd

from qtrader.validation import BadInput, Refused
from warehouse.db import Warehouse, WarehouseLike, WarehouseMissing, open_with_retry

log = logging.getLogger(__name__)

LOCKED_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}

_OUTSIDE = (
    "qtrader sql reads the warehouse only: files, other databases, extensions and settings are out of reach"
)


class EmptyQuery(BadInput):
    """The query has no statement (empty, blank, only comments or semicolons)."""


class QueryRefused(Refused):
    """The statement would write, or reach outside the warehouse."""


@contextmanager
def locked_connection(wh: WarehouseLike) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection that cannot reach files, other databases, extensions or its own settings."""
    wh = Warehouse.of(wh)
    path, policy = wh.path, wh.policy
    if not path.exists():
        raise WarehouseMissing(f"no warehouse at {path}: run `qtrader init` or `qtrader ingest` first")
    con = open_with_retry(path, True, policy, dict(LOCKED_CONFIG))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()


def _refusal(exc: duckdb.Error) -> QueryRefused | None:
    """The one-line reason for an error that means 'not allowed here', or None for an ordinary SQL error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, duckdb.PermissionException):
        return QueryRefused(f"refused: {_OUTSIDE} ({text})")
    if "configuration has been locked" in text:
        return QueryRefused(f"refused: {_OUTSIDE} (settings are locked)")
    if "read-only mode" in text:
        return QueryRefused(f"refused: the warehouse is read-only in qtrader sql ({text})")
    return None


def check_not_empty(sql: str) -> None:
    """Raise EmptyQuery for a query with no statement (blank, only comments or semicolons).

    DuckDB's own parser decides, on a throwaway in-memory connection: no warehouse is opened."""
    try:
        with duckdb.connect(":memory:") as scratch:
            n = len(scratch.extract_statements(sql))
    except duckdb.ParserException:
        return  # a syntax error: the real run reports it with DuckDB's message
    if n == 0:
        raise EmptyQuery(
            "the query is empty (no SQL statement, only blanks, comments or semicolons): "
            'give one, e.g. qtrader sql "SELECT * FROM v_bar_coverage"'
        )


def run_query(wh: WarehouseLike, sql: str) -> pd.DataFrame:
    """Run the user's SQL on a locked-down connection; the last statement's result as a DataFrame."""
    check_not_empty(sql)
    with locked_connection(wh) as con:
        try:
            result = con.execute(sql)
        except duckdb.Error as exc:
            refused = _refusal(exc)
            if refused is not None:
                raise refused from None
            raise
        return result.df()


# ------------------------------------------------------------------------------- look-ups for arguments


def stored_symbols(wh: WarehouseLike, interval: str) -> list[str] | None:
    """The symbols with bars of ``interval`` (None when there is no warehouse to ask yet)."""
    if not Warehouse.of(wh).exists():
        return None
    with locked_connection(wh) as con:
        rows = con.execute(
            "SELECT DISTINCT symbol FROM bars WHERE interval = ? ORDER BY symbol", [interval]
        ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class ReplayWindow:
    """The bars a decide run would replay, and how they sit against the champions' training window."""

    first: pd.Timestamp | None  # the oldest bar of the replay (None: no bars)
    bars: int  # bars the replay would decide
    train_end: pd.Timestamp | None  # newest train_end of the interval's champions (None: no champion)
    after_training: int  # bars up to ``at`` that come after train_end


def replay_window(wh: WarehouseLike, interval: str, at: pd.Timestamp | None, n: int) -> ReplayWindow | None:
    """What ``decide --at at --bars n`` would replay (None when there is no warehouse or registry yet)."""
    if not Warehouse.of(wh).exists():
        return None
    with locked_connection(wh) as con:
        try:
            (train_end,) = con.execute(
                "SELECT max(train_end) FROM model_registry WHERE interval = ? AND status = 'champion'",
                [interval],
            ).fetchone()
            first, bars = con.execute(
                "SELECT min(ts), count(*) FROM (SELECT DISTINCT ts FROM bars WHERE interval = ? "
                "AND (? IS NULL OR ts <= ?) ORDER BY ts DESC LIMIT ?)",
                [interval, at, at, int(n)],
            ).fetchone()
            (after,) = con.execute(
                "SELECT count(DISTINCT ts) FROM bars WHERE interval = ? AND ts > ? AND (? IS NULL OR ts <= ?)",
                [interval, train_end, at, at],
            ).fetchone()
        except duckdb.CatalogException:  # a warehouse from before the model tables: the flow says what to do
            return None
    return ReplayWindow(_utc(first), int(bars), _utc(train_end), int(after or 0))


def _utc(value) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")
