"""Serialise warehouse writes across processes with Prefect's global concurrency limit.

DuckDB allows one writing process per file. Inside one process `warehouse/db.py` already retries a held
lock; across worker processes the `warehouse-writer` limit (created by `make deploy`, limit 1) queues
writers in Prefect instead of letting them spin on the file lock, and the UI shows who waits. Without
the limit (a temporary server in tests and the demo) it does not block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.concurrency.sync import concurrency

WRITER_LIMIT = "warehouse-writer"


@contextmanager
def warehouse_writer(timeout_s: float = 600.0) -> Iterator[None]:
    with concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=timeout_s, strict=False):
        yield
