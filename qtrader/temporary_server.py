"""The temporary Prefect server a qtrader command starts, tied to that command's life.

Prefect's ``SubprocessASGIServer`` runs uvicorn as a plain child: in the terminal's process group (Ctrl-C
stops it at once, so the flow cannot report its own end and the CLI retries a dead API for ~150 s), and
on its own after a ``kill -9`` of the CLI (nothing runs ``stop``). :class:`TemporaryServer` changes how
the child is started, nothing else:

- in its own session, so a signal to the terminal's group reaches the CLI only; the CLI stops the server
  after the flow has reported its end (``atexit``: Prefect's ``stop``);
- with a lifeline: the child's stdin is a pipe whose only writer is the CLI, and a thread in the child
  (``python -m qtrader.temporary_server``) shuts uvicorn down when the pipe closes. The kernel closes it
  whenever the CLI ends, however it ends (``kill -9`` included), so no server outlives its command.

Why a pipe rather than ``prctl(PR_SET_PDEATHSIG)``: the death signal follows the *thread* that forked the
child, and the server is started from a short-lived thread (qtrader/prefect_env.py starts it early, in the
background), so the child would be killed as soon as that thread ends; it is also Linux-only. A pidfile
reaped at the next start leaves the server running until then, which may be never.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 10.0  # after the lifeline breaks: uvicorn's own shutdown, then a hard exit
# Open connections (the CLI's events websocket) would hold uvicorn's shutdown past the 5 s Prefect's ``stop``
# waits before a kill: a temporary server has nothing worth waiting longer for.
GRACEFUL_S = 1


def server_class():
    """A ``SubprocessASGIServer`` whose child runs under :func:`main` (imported late: Prefect is slow)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class TemporaryServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            import prefect

            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            args = ["--app-dir", str(prefect.__module_path__.parent), "--factory",
                    "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                    "--log-level", "error", "--lifespan", "on",
                    "--timeout-graceful-shutdown", str(GRACEFUL_S)]  # fmt: skip
            return subprocess.Popen(
                [sys.executable, "-m", "qtrader.temporary_server", *args],
                env=env,
                stdin=subprocess.PIPE,  # the lifeline: held open by this process only (close_fds)
                start_new_session=True,
            )

    return TemporaryServer


def _watch_parent() -> None:
    sys.stdin.buffer.read()  # returns at EOF: the command that started the server has ended
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
    time.sleep(GRACE_S)
    os._exit(1)


def main(argv: list[str]) -> None:
    threading.Thread(target=_watch_parent, name="lifeline", daemon=True).start()
    from uvicorn.main import main as uvicorn_main

    uvicorn_main.main(args=argv, prog_name="uvicorn")


if __name__ == "__main__":
    main(sys.argv[1:])
