"""SIGINT and SIGTERM as exceptions a flow can record (qtrader/runs.py) and the CLI can turn into one line
and exit 130 / 143 (README, "Exit codes"). Light on purpose: the CLI imports it before Prefect."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM received by the CLI. A KeyboardInterrupt, so Prefect's engine reports the flow run
    as Crashed ("aborted by an interrupt signal") and runs its on_crashed hooks."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stopping_signal(exc: BaseException) -> int | None:
    """The signal an exception stands for: SIGINT, SIGTERM (ours or Prefect's), or None."""
    if isinstance(exc, Stopped):
        return exc.signum
    if type(exc).__name__ == "TerminationSignal" and isinstance(getattr(exc, "signal", None), int):
        return int(exc.signal)  # prefect.exceptions.TerminationSignal (Prefect's own SIGTERM handler)
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    return None


def exit_code(signum: int) -> int:
    return 128 + int(signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_received: list[int] = []


def install(first: Callable[[int], None]) -> None:
    """SIGINT and SIGTERM call ``first(signum)`` (which may end the process itself, e.g. when no flow is
    running), then raise :class:`Stopped` where the main thread is: the flow records its run as
    interrupted and the CLI reports. A second signal ends the process at once (its temporary server
    follows: qtrader/temporary_server.py)."""

    def handler(signum, frame):
        if _received:
            os._exit(exit_code(signum))
        _received.append(signum)
        first(signum)
        raise Stopped(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
