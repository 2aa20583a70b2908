"""The one place that opens the DuckDB warehouse.

DuckDB allows one read-write process per file, and while a writer holds it even read-only opens fail.
The policy, applied to every open here:
- connections are short: open, do one unit of work (one transaction for writes), close;
- an open that meets a held lock is retried with exponential backoff and jitter until a deadline,
  then fails with ``WarehouseBusy`` naming the file;
- pending migrations are applied on every read-write open (a few ms when none are pending).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).parent / "sql"
_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class WarehouseBusy(RuntimeError):
    """The warehouse file stayed locked by another process past the deadline."""


class WarehouseMissing(FileNotFoundError):
    """A read-only open of a warehouse that has not been created yet."""


@dataclass(frozen=True)
class LockPolicy:
    timeout_s: float = 120.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0

    @classmethod
    def from_settings(cls, settings) -> LockPolicy:
        return cls(settings.lock_timeout_s, settings.lock_backoff_initial_s, settings.lock_backoff_max_s)


def is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and (
        "Could not set lock" in text or "Conflicting lock" in text
    )


def _open_with_retry(path: Path, read_only: bool, policy: LockPolicy) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + policy.timeout_s
    delay = policy.backoff_initial_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not is_lock_error(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WarehouseBusy(
                    f"warehouse {path} stayed locked by another process for {policy.timeout_s:.0f}s "
                    f"({attempts} attempts); is a long flow still writing?"
                ) from exc
            if attempts == 1:
                log.info("warehouse %s is locked by another process; retrying", path)
            time.sleep(min(delay * (0.5 + random.random()), remaining))
            delay = min(delay * 2, policy.backoff_max_s)


def migrations() -> list[tuple[int, str, Path]]:
    found = []
    for p in sorted(SQL_DIR.glob("*.sql")):
        m = _MIGRATION_RE.match(p.name)
        if not m:
            raise RuntimeError(f"migration file {p.name} does not match NNN_name.sql")
        found.append((int(m.group(1)), m.group(2), p))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {SQL_DIR}")
    return found


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than ``schema_version``; each in its own transaction."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_version").fetchall()}
    applied = []
    for version, name, path in migrations():
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(path.read_text())
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, now())",
                [version, name],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.info("applied warehouse migration %03d_%s", version, name)
        applied.append(version)
    return applied


def _configure(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET TimeZone = 'UTC'")


# Warehouses this process holds open for a while (``pinned``): resolved path -> its one connection.
_PINNED: dict[Path, duckdb.DuckDBPyConnection] = {}


def is_pinned(path: str | Path) -> bool:
    return bool(_PINNED) and Path(path).resolve() in _PINNED


@contextmanager
def pinned(path: str | Path, *, policy: LockPolicy | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Hold one read-write connection to ``path`` for the block; every ``connect`` / ``transaction`` /
    ``query_df`` of that file in this process gets a cursor of it instead of opening the file.

    Only for a warehouse this process owns alone (a backtest's scratch warehouse): the short-connection
    rule exists for files other processes share, and a replay would otherwise open its file thousands of
    times. Transactions still begin and commit per unit of work.
    """
    key = Path(path).resolve()
    if key in _PINNED:
        yield _PINNED[key]
        return
    with connect(path, policy=policy) as con:
        _PINNED[key] = con
        try:
            yield con
        finally:
            _PINNED.pop(key, None)


@contextmanager
def connect(
    path: str | Path, *, read_only: bool = False, policy: LockPolicy | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection (a cursor of the pinned one, see ``pinned``). Read-write opens create the
    file and apply pending migrations."""
    path = Path(path)
    held = _PINNED.get(path.resolve()) if _PINNED else None
    if held is not None:
        cur = held.cursor()
        try:
            _configure(cur)
            yield cur
        finally:
            cur.close()
        return
    policy = policy or LockPolicy()
    if read_only and not path.exists():
        raise WarehouseMissing(f"no warehouse at {path}: run `qtrader init` or `qtrader ingest` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = _open_with_retry(path, read_only, policy)
    try:
        _configure(con)
        if not read_only:
            apply_migrations(con)  # a few ms when nothing is pending
        yield con
    finally:
        con.close()


@contextmanager
def transaction(path: str | Path, *, policy: LockPolicy | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """One read-write connection and one transaction: all of the block's writes land, or none do."""
    with connect(path, policy=policy) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def query_df(path: str | Path, sql: str, params: list | None = None, *, policy: LockPolicy | None = None):
    """Run one read-only query and return a pandas DataFrame."""
    with connect(path, read_only=True, policy=policy) as con:
        return con.execute(sql, params or []).df()


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame, *, replace: bool = False) -> int:
    """Insert a DataFrame by column name (``replace``: upsert on the primary key). Returns the row count.

    ``table`` is a name from our own code, never user input; the values travel as a registered frame.
    """
    if not table.isidentifier():
        raise ValueError(f"not a table name: {table!r}")
    if len(frame) == 0:
        return 0
    view = f"incoming_{table}"
    con.register(view, frame)
    try:
        verb = "INSERT OR REPLACE INTO" if replace else "INSERT INTO"
        con.execute(f"{verb} {table} BY NAME SELECT * FROM {view}")
    finally:
        con.unregister(view)
    return len(frame)
