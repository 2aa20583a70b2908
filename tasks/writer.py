"""Serialise warehouse writes across processes with Prefect's global concurrency limit.

DuckDB allows one writing process per file. Inside one process `warehouse/db.py` already retries a held
lock; across processes (worker subprocesses, the CLI, `qtrader serve`) the `warehouse-writer` limit
queues writers in Prefect instead of letting them spin on the file lock, and the UI shows who waits.

The limit is created on first use, by whichever process writes first against a Prefect API (a temporary
server, `make ui`'s, a deployment's), so it exists wherever flows run; `make deploy` no longer has to
create it. Slots are then acquired strictly: a limit that is missing or switched off is an error that
names it, never a silent skip. A warehouse this process holds ``pinned`` (a backtest's scratch
warehouse, which no other process opens) skips the limit: it would only queue unrelated writers and cost
an API round trip per write.

The slot is taken with a Prefect lease (it frees itself if this process dies) through the client's
plain lease calls rather than ``prefect.concurrency.sync.concurrency``: Prefect's server reads the limit
and then updates it in one deferred SQLite transaction, which fails at once with "database is locked"
(HTTP 503) whenever the server's own writes (the task-run events it records after every task start and
end) land in between. The client answers a 503 by sleeping ~2 s, so most writes after a task boundary
waited 2 s on an idle limit. Here the transport resends a 503 on the slot request after a few
milliseconds instead; a 423 (another process holds the slot) still waits as long as the server asks.

A writer killed inside a write (``kill -9``, the OOM killer) cannot release its lease. Prefect's
repossessor frees expired leases, but only on a real server (it does not run on a temporary one, so
there the slot stayed taken for the server's life, and every later writer timed out). So each holder
leaves a note (lease id, pid, host) under ``$PREFECT_HOME/writer-leases``, and a writer told to wait
frees the lease of a holder on this host whose process is gone. Leases are Prefect's shortest (60 s),
renewed while held, so on a real server a dead holder on another host frees its slot within ~75 s.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from warehouse.db import is_pinned

WRITER_LIMIT = "warehouse-writer"
# One slot: DuckDB allows one writing process per file (not a tuning knob).
WRITER_SLOTS = 1

_ensured: set[str] = set()  # API URLs on which this process has checked (or created) the limit
_ensure_lock = threading.Lock()
_log = logging.getLogger(__name__)


class WriterLimitError(RuntimeError):
    """The writer limit cannot be used (switched off, or removed while this process ran)."""


def ensure_writer_limit() -> str:
    """Create the ``warehouse-writer`` limit on the current Prefect API if it does not exist; once per
    process and API. Returns the API URL. An existing limit is kept as the user set it, unless inactive."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        url = str(client.api_url)
        with _ensure_lock:
            if url in _ensured:
                return url
            try:
                limit = client.read_global_concurrency_limit_by_name(WRITER_LIMIT)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=WRITER_LIMIT, limit=WRITER_SLOTS)
                    )
                except ObjectAlreadyExists:  # another process created it first
                    pass
                limit = client.read_global_concurrency_limit_by_name(WRITER_LIMIT)
            if not limit.active:
                raise WriterLimitError(
                    f"the global concurrency limit {WRITER_LIMIT!r} on {url} is inactive, so warehouse writes "
                    f"would not be serialised: `prefect gcl enable {WRITER_LIMIT}`"
                )
            _ensured.add(url)
            return url


# A 503 on the slot request is SQLite contention inside the server, gone in milliseconds: resend soon,
# doubling, for about 2.5 s in all; then the client's own back-off (2 s, 4 s, ...) takes over.
BUSY_RETRY_FIRST_S = 0.02
BUSY_RETRIES = 7
# The shortest lease Prefect's server accepts (its own default is 300 s): what a holder dead on another
# host costs the next writer on a real server. Renewed at half of it while the block runs.
LEASE_S = 60.0
LEASE_RENEW_AT = 0.5
_SLOT_PATH = "/v2/concurrency_limits/increment-with-lease"
# Prefect 3.8.8's server waits up to 60 s for its SQLite write lock (a hard-coded busy_timeout) and then
# still takes the slot. A client that stopped waiting first (its request time-out is 60 s too) asked again,
# met that orphaned lease (423) and waited it out: on a temporary server it never expires, so every later
# write timed out. The slot requests wait for their answer longer than the server can take.
SLOT_ANSWER_WAIT_S = 150.0


class BusyRetryTransport(httpx.HTTPTransport):
    """Resends the slot request at once when the server answers 503 (its SQLite was busy), before the
    Prefect client sees the 503 and sleeps 2 s. The request is idempotent there: a 503 took no slot."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        wait = BUSY_RETRY_FIRST_S
        for _ in range(BUSY_RETRIES):
            response = super().handle_request(request)
            if response.status_code != 503 or not request.url.path.endswith(_SLOT_PATH):
                return response
            response.close()
            time.sleep(wait)
            wait *= 2
        return super().handle_request(request)


def _holder():
    """The task or flow run taking the slot, so the UI names who holds it."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext, TaskRunContext

    if (task_ctx := TaskRunContext.get()) is not None:
        return ConcurrencyLeaseHolder(type="task_run", id=task_ctx.task_run.id)
    if (flow_ctx := FlowRunContext.get()) is not None and flow_ctx.flow_run is not None:
        return ConcurrencyLeaseHolder(type="flow_run", id=flow_ctx.flow_run.id)
    return None


def _notes() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "writer-leases"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _note_lease(lease_id: UUID) -> None:
    note = {"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid())}
    folder = _notes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{lease_id}.json").write_text(json.dumps(note))


def _forget_lease(lease_id: UUID) -> None:
    (_notes() / f"{lease_id}.json").unlink(missing_ok=True)


def _holder_gone(note: dict) -> bool:
    """Whether the note's process, on this host, has ended (or its pid now names another process)."""
    if note.get("host") != socket.gethostname():
        return False  # another machine's process: its lease expires on the server
    pid = int(note["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = note.get("started")
    return started is not None and _started(pid) not in (None, started)


def reap_dead_holders(client) -> int:
    """Release the leases whose holders on this host have died; returns how many. Releasing a lease the
    server no longer knows (expired, or another server's) does nothing, so a stale note is just removed."""
    freed = 0
    for path in sorted(_notes().glob("*.json")):
        try:
            note = json.loads(path.read_text())
            gone = _holder_gone(note)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or removed meanwhile
        if gone:
            lease_id = UUID(path.stem)
            client.release_concurrency_slots_with_lease(lease_id=lease_id)
            path.unlink(missing_ok=True)
            _log.warning("freed the %s slot of pid %s, which died holding it", WRITER_LIMIT, note["pid"])
            freed += 1
    return freed


def _acquire(client, timeout_s: float, url: str) -> UUID:
    """A lease on one slot of the limit; waits for it up to ``timeout_s``."""
    from prefect.exceptions import PrefectHTTPStatusError

    deadline = time.monotonic() + timeout_s
    holder = _holder()
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[WRITER_LIMIT], slots=WRITER_SLOTS, mode="concurrency", lease_duration=LEASE_S,
                holder=holder,
            )  # fmt: skip
        except PrefectHTTPStatusError as exc:
            status = exc.response.status_code
            if status == 423:  # held by another writer: wait as long as the server suggests
                if reap_dead_holders(client):
                    continue  # the holder had died: ask again at once
                wait = float(exc.response.headers.get("Retry-After", 1.0))
            else:
                raise
            if time.monotonic() + wait > deadline:
                raise TimeoutError(
                    f"no slot of the global concurrency limit {WRITER_LIMIT!r} on {url} within {timeout_s:.0f}s"
                ) from exc
            time.sleep(wait)
            continue
        body = response.json()
        if not body.get("limits"):
            raise _LimitMissing(f"the server has no limit named {WRITER_LIMIT!r}")
        return UUID(body["lease_id"])


class _LimitMissing(RuntimeError):
    pass


@contextmanager
def _renewed(lease_id: UUID) -> Iterator[None]:
    """Renew the lease while the block runs longer than most of it (a long write must not lose its slot)."""
    from prefect.client.orchestration import get_client

    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_S * LEASE_RENEW_AT):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(lease_id=lease_id, lease_duration=LEASE_S)
            except Exception:  # noqa: BLE001 - the write goes on; say that the slot may be lost
                _log.warning("could not renew the %s lease %s", WRITER_LIMIT, lease_id, exc_info=True)

    thread = threading.Thread(target=renew, daemon=True, name=f"{WRITER_LIMIT}-lease-{lease_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()


_slot_clients: dict[str, Any] = {}  # API URL -> this process's open client for the slot requests


def _slot_client(url: str):
    """One client per process and API for the slot requests, opened once (a new client and its transport
    cost ~0.1 s of setup per write); ``with`` on it re-enters it without closing it."""
    from prefect.client.orchestration import get_client

    with _ensure_lock:
        client = _slot_clients.get(url)
        if client is None:
            # Only a server reached over HTTP gets the transport (an in-process app has its own).
            http = (
                {"transport": BusyRetryTransport(retries=3), "timeout": _slot_timeout()}
                if url.startswith("http")
                else None
            )
            client = get_client(sync_client=True, httpx_settings=http)
            client.__enter__()  # held open for the process's life
            _slot_clients[url] = client
        return client


def _slot_timeout() -> httpx.Timeout:
    """The client's own time-outs, except reading the answer, which may take the server's lock wait."""
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT

    wait = PREFECT_API_REQUEST_TIMEOUT.value()
    return httpx.Timeout(wait, read=max(wait, SLOT_ANSWER_WAIT_S))


@contextmanager
def writer_slot(timeout_s: float, url: str) -> Iterator[None]:
    """Hold one slot of the ``warehouse-writer`` limit for the block: a lease taken, renewed while the
    block runs, and released when it ends."""
    with _slot_client(url) as client:
        lease_id = _acquire(client, timeout_s, url)
        try:
            _note_lease(lease_id)
            with _renewed(lease_id):
                yield
        finally:
            client.release_concurrency_slots_with_lease(lease_id=lease_id)
            _forget_lease(lease_id)


@contextmanager
def warehouse_writer(timeout_s: float = 600.0, path: str | Path | None = None) -> Iterator[None]:
    """Hold the writer slot for the block (none for a pinned warehouse)."""
    if path is not None and is_pinned(path):
        yield
        return
    url = ensure_writer_limit()
    with ExitStack() as held:
        try:
            held.enter_context(writer_slot(timeout_s, url))
        except _LimitMissing as exc:
            _ensured.discard(url)  # the next write checks (and re-creates) it
            raise WriterLimitError(
                f"no slot of the global concurrency limit {WRITER_LIMIT!r} on {url}: it was removed or "
                f"switched off while this process ran ({exc}); rerun (it is created on first use) or "
                f"`prefect gcl create {WRITER_LIMIT} --limit {WRITER_SLOTS}`"
            ) from exc
        yield
