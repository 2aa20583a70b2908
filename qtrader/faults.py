"""Fault points: where a test can kill a run on purpose, as ``kill -9`` would.

``fault_point("decide:planned")`` does nothing unless the environment variable ``QTRADER_FAULT`` names
that point, in which case the process ends at once with exit code 137 (no cleanup, no exception handler,
no ``finally``: what a kill or a power cut leaves behind). ``tests/flows/test_decide_crash.py`` kills the
decision flow at each point of a bar and checks that a re-run leaves the books whole. Production runs never
set the variable.
"""

from __future__ import annotations

import os

ENV = "QTRADER_FAULT"


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os._exit(137)
