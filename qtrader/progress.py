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
def listening(listener: Listener) -> Iterator[None]:
    global _listener
    with _lock:
        previous, _listener = _listener, listener
    try:
        yield
    finally:
        with _lock:
            _listener = previous
