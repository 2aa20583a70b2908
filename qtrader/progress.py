"""Progress reporting from long work to whoever is watching (the CLI's progress bars).

Library code calls ``report(stage, done, total)``; without a listener it does nothing. A plain module
global rather than a ContextVar, because Prefect may run tasks in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]
_listener: Listener | None = None
_lock = threading.Lock()


def report(stage: str, done: int, total: int) -> None:
    listener = _listener
    if listener is not None:
        listener(stage, done, total)


@contextmanager
def step(stage: str) -> Iterator[None]:
    """One step of unknown length: reported as 0 of 1 when it starts and 1 of 1 when it ends, so a
    watcher shows what is running now and how long it took."""
    report(stage, 0, 1)
    yield
    report(stage, 1, 1)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    global _listener
    with _lock:
        previous, _listener = _listener, listener
    try:
        yield
    finally:
        with _lock:
            _listener = previous
