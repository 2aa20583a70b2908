"""The one place that opens the DuckDB warehouse.

DuckDB allows one read-write process per file, and while a writer holds it even read-only opens fail.
The policy, applied to every open here:
- connections are short: open, do one unit of work (one transaction for writes), close; a phase of a
  flow that does many (a decision bar) holds one for the phase instead (``Warehouse.session``);
- an open that meets a held lock is retried with exponential backoff and jitter until a deadline,
  then fails with ``WarehouseBusy`` naming the file;
- pending migrations are applied on every read-write open (a few ms when none are pending).

``Warehouse`` is the one object the rest of the system is handed: the file, its lock policy and the
cross-process writer guard (the ``warehouse-writer`` limit, injected by ``tasks.resources``) travel
together, so no caller threads a path and a policy by hand. Every write is ``wh.transaction()``, which
takes the writer guard first; ``wh.writing()`` holds it across several transactions (one decision bar).
The module-level ``connect`` / ``transaction`` / ``query_df`` take a Warehouse or a plain path (tests,
scripts) and mean the same.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

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


def open_with_retry(
    path: Path, read_only: bool, policy: LockPolicy, config: dict | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying with jittered backoff while another process holds its lock (``policy``);
    WarehouseBusy past the deadline. ``config``: DuckDB settings fixed at open."""
    deadline = time.monotonic() + policy.timeout_s
    delay = policy.backoff_initial_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or {})
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
# Writer guards this thread holds (re-entrant: a write inside ``writing()`` does not ask again), and the
# connections it holds for one phase of a flow (``session``): resolved path -> connection.
_HELD = threading.local()

# A context manager factory taking the warehouse: the cross-process writer limit.
WriterGuard = Callable[["Warehouse"], AbstractContextManager[None]]


def is_pinned(path: str | Path) -> bool:
    return bool(_PINNED) and Path(path).resolve() in _PINNED


def _sessions() -> dict[Path, duckdb.DuckDBPyConnection]:
    held = getattr(_HELD, "sessions", None)
    if held is None:
        held = _HELD.sessions = {}
    return held


def _held_connection(path: Path) -> duckdb.DuckDBPyConnection | None:
    """The connection this process pins, or this thread's session holds, for ``path``."""
    if not _PINNED and not getattr(_HELD, "sessions", None):
        return None
    key = path.resolve()
    return _PINNED.get(key) or _sessions().get(key)


@dataclass(frozen=True)
class Warehouse:
    """The DuckDB warehouse a process works with: its file, lock policy and writer guard."""

    path: Path
    policy: LockPolicy = field(default_factory=LockPolicy)
    writer: WriterGuard | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, target: WarehouseLike) -> Warehouse:
        """``target`` itself, or a Warehouse with the default policy for a plain path."""
        return target if isinstance(target, Warehouse) else cls(Path(target))

    @classmethod
    def from_settings(cls, settings, writer: WriterGuard | None = None) -> Warehouse:
        return cls(Path(settings.warehouse), LockPolicy.from_settings(settings), writer)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def private(self) -> bool:
        """Held ``pinned`` by this process (a backtest's scratch file): no other process writes it."""
        return is_pinned(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    # -- connections ------------------------------------------------------------------------------------

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection (a cursor of the pinned or session one, see ``pinned`` and
        ``session``). Read-write opens create the file and apply pending migrations."""
        held = _held_connection(self.path)
        if held is not None:
            cur = held.cursor()
            try:
                _configure(cur)
                yield cur
            finally:
                cur.close()
            return
        if read_only and not self.path.exists():
            raise WarehouseMissing(
                f"no warehouse at {self.path}: run `qtrader init` or `qtrader ingest` first"
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = open_with_retry(self.path, read_only, self.policy)
        try:
            _configure(con)
            if not read_only:
                apply_migrations(con)  # a few ms when nothing is pending
            yield con
        finally:
            con.close()

    def read(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self.connect(read_only=True)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer guard for the block (several transactions, one wait)."""
        depth = getattr(_HELD, "depth", 0)
        guard = (
            self.writer(self)
            if self.writer is not None and depth == 0 and not self.private
            else nullcontext()
        )
        with guard:
            _HELD.depth = depth + 1
            try:
                yield
            finally:
                _HELD.depth = depth

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The writer guard, one read-write connection and one transaction: all of the block's writes
        land, or none do."""
        with self.writing(), self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def query_df(self, sql: str, params: list | None = None):
        """Run one read-only query and return a pandas DataFrame."""
        with self.read() as con:
            return con.execute(sql, params or []).df()

    @contextmanager
    def pinned(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold one read-write connection for the block; every ``connect`` / ``transaction`` /
        ``query_df`` of this file in this process gets a cursor of it instead of opening the file.

        Only for a warehouse this process owns alone (a backtest's scratch warehouse): the
        short-connection rule exists for files other processes share, and a replay would otherwise open
        its file thousands of times. Transactions still begin and commit per unit of work.
        """
        key = self.path.resolve()
        if key in _PINNED:
            yield _PINNED[key]
            return
        with self.connect() as con:
            _PINNED[key] = con
            try:
                yield con
            finally:
                _PINNED.pop(key, None)

    @contextmanager
    def session(self) -> Iterator[None]:
        """One phase of a flow (a decision bar's reads) on one read-write connection,
        opened under the writer guard: every ``connect`` / ``transaction`` / ``query_df`` of this file in
        this thread gets a cursor of it. Opening and closing a large file costs 20-60 ms, and each write's
        writer slot an API round trip; a bar did both about a dozen times. Transactions still begin and
        commit per unit of work. Other processes wait for the file as they would for a write, so a session
        spans only warehouse work and the broker calls of the phase, never a retry's wait."""
        if _held_connection(self.path) is not None:
            yield
            return
        key = self.path.resolve()
        with self.writing(), self.connect() as con:
            _sessions()[key] = con
            try:
                yield
            finally:
                _sessions().pop(key, None)

    def ensure_schema(self) -> int:
        """Apply pending migrations (under the writer guard) when the file is behind; the schema version."""
        latest = max(v for v, _, _ in migrations())
        current = self.schema_version() if self.path.exists() else None
        if current != latest:
            with self.transaction():
                pass
        return latest

    def schema_version(self) -> int | None:
        """The newest applied migration (None: no warehouse yet)."""
        if not self.path.exists() and not is_pinned(self.path):
            return None
        with self.read() as con:
            return con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]


WarehouseLike = Union[Warehouse, str, Path]  # noqa: UP007 - a runtime alias used before 3.12's `type`


@contextmanager
def within(target: WarehouseLike | duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """The caller's open transaction (a connection), or a new transaction of a warehouse: lets a write
    join a larger unit of work (one decision bar) or stand alone."""
    if isinstance(target, duckdb.DuckDBPyConnection):
        yield target
        return
    with Warehouse.of(target).transaction() as con:
        yield con


def pinned(path: WarehouseLike):
    return Warehouse.of(path).pinned()


def connect(path: WarehouseLike, *, read_only: bool = False):
    return Warehouse.of(path).connect(read_only=read_only)


def transaction(path: WarehouseLike):
    return Warehouse.of(path).transaction()


def query_df(path: WarehouseLike, sql: str, params: list | None = None):
    return Warehouse.of(path).query_df(sql, params)


def insert_frame(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame,
    *,
    replace: bool = False,
    keys: Sequence[str] = (),
    order_by: Sequence[str] = (),
) -> int:
    """Insert a DataFrame by column name. Returns the row count.

    ``replace``: upsert on the primary key (``INSERT OR REPLACE``, which stores the rows in hash order).
    ``keys``: replace by deleting the stored rows that share the frame's values of these columns, then
    appending, so the rows land in ``order_by`` order (``ORDER BY`` of the insert: a table kept in time
    order, migration 014). ``table`` and the column names come from our own code, never user input; the
    values travel as a registered frame.
    """
    names = [table, *keys, *order_by]
    if not all(n.isidentifier() for n in names):
        raise ValueError(f"not identifiers: {names!r}")
    if replace and keys:
        raise ValueError("replace (on the primary key) or keys (delete, then append), not both")
    if len(frame) == 0:
        return 0
    view = f"incoming_{table}"
    con.register(view, frame)
    try:
        if keys:
            match = " AND ".join(f"t.{k} = i.{k}" for k in keys)
            con.execute(f"DELETE FROM {table} t USING {view} i WHERE {match}")
        verb = "INSERT OR REPLACE INTO" if replace else "INSERT INTO"
        order = f" ORDER BY {', '.join(order_by)}" if order_by else ""
        con.execute(f"{verb} {table} BY NAME SELECT * FROM {view}{order}")
    finally:
        con.unregister(view)
    return len(frame)
