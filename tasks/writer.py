"""Serialise warehouse writes across processes with Prefect's global concurrency limit.

DuckDB allows one writing process per file. Inside one process `warehouse/db.py` already retries a held
lock; across worker processes the `warehouse-writer` limit (created by `make deploy`, limit 1) queues
writers in Prefect instead of letting them spin on the file lock, and the UI shows who waits. Without
the limit (a temporary server in tests and the demo) it does not block. A warehouse this process holds
``pinned`` (a backtest's scratch warehouse, which no other process opens) skips the limit: it would only
queue unrelated writers and cost an API round trip per write.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.concurrency.sync import concurrency

from warehouse.db import is_pinned

WRITER_LIMIT = "warehouse-writer"


@contextmanager
def warehouse_writer(timeout_s: float = 600.0, path: str | Path | None = None) -> Iterator[None]:
    if path is not None and is_pinned(path):
        yield
        return
    with concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=timeout_s, strict=False):
        yield
