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
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from warehouse.db import is_pinned

WRITER_LIMIT = "warehouse-writer"
# One slot: DuckDB allows one writing process per file (not a tuning knob).
WRITER_SLOTS = 1

_ensured: set[str] = set()  # API URLs on which this process has checked (or created) the limit
_ensure_lock = threading.Lock()


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


@contextmanager
def warehouse_writer(timeout_s: float = 600.0, path: str | Path | None = None) -> Iterator[None]:
    """Hold the writer slot for the block (none for a pinned warehouse)."""
    if path is not None and is_pinned(path):
        yield
        return
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    url = ensure_writer_limit()
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=timeout_s, strict=True))
        except ConcurrencySlotAcquisitionError as exc:
            _ensured.discard(url)  # the next write checks (and re-creates) it
            raise WriterLimitError(
                f"no slot of the global concurrency limit {WRITER_LIMIT!r} on {url}: it was removed or "
                f"switched off while this process ran ({exc}); rerun (it is created on first use) or "
                f"`prefect gcl create {WRITER_LIMIT} --limit {WRITER_SLOTS}`"
            ) from exc
        yield
