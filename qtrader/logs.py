"""What Prefect prints on the terminal: warnings and errors, INFO only with ``qtrader -v``.

Only the console handler is quieted: the flow and task run loggers keep sending every record to the
Prefect API (the UI shows the full logs). The level is set through Prefect's own logging override
(``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``) before Prefect loads, and on the live handlers when it has
already loaded (tests, a second command in one process).
"""

from __future__ import annotations

import logging
import os

CONSOLE_LEVEL_ENV = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
_LOGGERS = ("", "prefect", "uvicorn", "fastapi")  # root carries the console handler for flow/task runs


def console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers now attached (none before Prefect configured logging)."""
    found: list[logging.Handler] = []
    for name in _LOGGERS:
        for h in logging.getLogger(name).handlers:
            if type(h).__name__ == "PrefectConsoleHandler" and h not in found:
                found.append(h)
    return found


def prefect_console(verbose: bool) -> None:
    """INFO and up on the terminal when verbose, else WARNING and up."""
    level = "NOTSET" if verbose else "WARNING"
    os.environ[CONSOLE_LEVEL_ENV] = level
    for handler in console_handlers():
        handler.setLevel(level)
