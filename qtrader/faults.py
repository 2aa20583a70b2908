"""Fault points: where a test can kill or hold a run on purpose.

``fault_point("decide:planned")`` does nothing unless an environment variable names that point:

- ``QTRADER_FAULT``: the process ends at once with exit code 137 (no cleanup, no exception handler, no
  ``finally``: what a kill or a power cut leaves behind). ``tests/flows/test_decide_crash.py`` kills the
  decision flow at each point of a bar and checks that a re-run leaves the books whole.
- ``QTRADER_FAULT_WAIT``: the run says so on stderr (``fault point <name> reached (pid N)``) and waits there,
  so a test can send it a signal or a ``kill -9`` at a known step, as a user would
  (``tests/test_cli_signals.py``).

Production runs never set either variable.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "QTRADER_FAULT"
WAIT_ENV = "QTRADER_FAULT_WAIT"
REACHED = "fault point {name} reached (pid {pid})"


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os._exit(137)
    if os.environ.get(WAIT_ENV) == name:
        sys.stderr.write(REACHED.format(name=name, pid=os.getpid()) + "\n")
        sys.stderr.flush()
        while True:  # short sleeps: a signal's Python handler runs between them
            time.sleep(0.05)
