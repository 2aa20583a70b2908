"""Which Prefect home and API a qtrader process uses: one rule for the CLI, `make demo`, `make ui`,
`make worker` and `prefect` commands run in the project, so every run a user starts lands in one database
and shows in the UI.

1. ``PREFECT_HOME`` as set, else ``data/prefect`` of the project (``$QTRADER_HOME``, else the current
   folder). ``[tool.prefect] home`` in pyproject.toml gives plain ``prefect`` commands run in the project
   the same home, and the Makefile exports it.
2. ``PREFECT_API_URL`` as set: that server, which must answer.
3. Else the server of ``make ui`` if one answers on ``QTRADER_PREFECT_UI_URL`` (default
   ``http://127.0.0.1:4200/api``; set it empty to never use one).
4. Else a temporary server on that home's database, whose start-up time-out is raised from Prefect's
   20 s to ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` = 120 s unless set: its first start on a new
   home migrates the SQLite database, which takes longer than 20 s on a loaded machine.

Call :func:`resolve` before Prefect is imported: Prefect reads these variables once.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

UI_URL_VAR = "QTRADER_PREFECT_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:4200/api"
STARTUP_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 120  # Prefect's default, 20 s, fails on a first start on a loaded 2-core machine
PROBE_TIMEOUT_S = 2.0


class PrefectUnavailable(RuntimeError):
    """The configured Prefect server does not answer; the message says what to do."""


@dataclass(frozen=True)
class PrefectTarget:
    home: Path
    api_url: str | None  # None: a temporary server on ``home``'s database
    source: str  # where the choice came from, for messages: "PREFECT_API_URL", "make ui", "temporary"

    def describe(self) -> str:
        if self.api_url is None:
            return f"a temporary Prefect server on {self.home / 'prefect.db'}"
        return f"the Prefect server at {self.api_url} ({self.source})"


def project_home(environ: os._Environ | dict | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("QTRADER_HOME") or Path.cwd()).resolve()


def answers(api_url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a Prefect API answers ``/health`` at ``api_url``."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read() or "null") is True
    except (OSError, ValueError, urllib.error.URLError):
        return False


def resolve(environ: os._Environ | dict | None = None, *, check: bool = True) -> PrefectTarget:
    """Apply the rule to ``environ`` (default ``os.environ``), setting the variables Prefect reads.

    ``check``: a set ``PREFECT_API_URL`` must answer, else :class:`PrefectUnavailable` with one line.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("PREFECT_HOME") or project_home(env) / "data" / "prefect").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)  # Prefect makes only the leaf folder
    env["PREFECT_HOME"] = str(home)
    env.setdefault(STARTUP_TIMEOUT_VAR, str(STARTUP_TIMEOUT_S))
    # A temporary server would try to send telemetry, which fails (and logs) offline.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    if environ is None and "prefect.settings" in sys.modules:
        # Prefect already loaded with an API (a test harness, a caller's settings context): keep it.
        from prefect.settings import get_current_settings

        if url := get_current_settings().api.url:
            return PrefectTarget(home, str(url), "this process's Prefect settings")
    if env.get("PREFECT_API_URL"):
        url = env["PREFECT_API_URL"]
        if check and not answers(url):
            raise PrefectUnavailable(
                f"PREFECT_API_URL={url} does not answer: start that server (`make ui` serves "
                f"{DEFAULT_UI_URL}) or unset PREFECT_API_URL to run on a temporary server"
            )
        return PrefectTarget(home, url, "PREFECT_API_URL")
    ui_url = env.get(UI_URL_VAR, DEFAULT_UI_URL)
    if ui_url and answers(ui_url):
        env["PREFECT_API_URL"] = ui_url
        return PrefectTarget(home, ui_url, "make ui")
    return PrefectTarget(home, None, "temporary")


class _EarlyServer:
    """Prefect's own temporary server, started on a thread as soon as the CLI knows it needs one, so its
    start-up (a separate process) runs while this process imports pandas, Prefect and the flows. The
    flow's client later finds the same (singleton) server already up. The server is qtrader's subclass
    (qtrader/temporary_server.py): out of the terminal's signals, and gone when this process is."""

    thread: threading.Thread | None = None
    error: BaseException | None = None

    @classmethod
    def start(cls) -> None:
        if cls.thread is not None:
            return

        def run() -> None:
            try:
                from qtrader.temporary_server import server_class

                server_class()().start()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by wait_ready
                cls.error = exc

        cls.thread = threading.Thread(target=run, name="prefect-temporary-server", daemon=True)
        cls.thread.start()


def start_temporary_server() -> None:
    """Start the temporary server in the background (call after :func:`resolve` chose one)."""
    _EarlyServer.start()


def wait_ready() -> None:
    """Block until a temporary server started by :func:`start_temporary_server` answers; raise its
    start-up error, if any. No-op when none was started. Call before the first flow run."""
    if _EarlyServer.thread is None:
        return
    _EarlyServer.thread.join()
    if _EarlyServer.error is not None:
        error, _EarlyServer.error = _EarlyServer.error, None
        _EarlyServer.thread = None
        raise error


def explain(exc: BaseException) -> str | None:
    """One line for a Prefect start-up or connection failure, or None for any other error."""
    text = str(exc)
    if "ephemeral Prefect API server" in text:
        timeout = os.environ.get(STARTUP_TIMEOUT_VAR, str(STARTUP_TIMEOUT_S))
        exited = " (it exited: see its output with QTRADER_DEBUG=1)" if "exited with code" in text else ""
        return (
            f"the temporary Prefect server did not start within {timeout} s{exited} "
            f"(PREFECT_HOME={os.environ.get('PREFECT_HOME')}): start one with `make ui` (qtrader then "
            f"uses it), or raise {STARTUP_TIMEOUT_VAR}"
        )
    if type(exc).__name__ in ("ConnectError", "ConnectTimeout") and os.environ.get("PREFECT_API_URL"):
        return (
            f"the Prefect server at {os.environ['PREFECT_API_URL']} stopped answering: restart it "
            "(`make ui`) or unset PREFECT_API_URL to run on a temporary server"
        )
    return None
