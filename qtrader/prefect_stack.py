"""A throwaway Prefect stack (server on a free port, work pool, deployments, a process worker).

Used by the end-to-end test and the orchestration benchmark, so both start and stop real Prefect
infrastructure the same way. Everything started is stopped on exit, even on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "qtrader-process"
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


class PrefectStack:
    """``with PrefectStack(tmp, extra_env) as stack:`` a server is up; ``stack.deploy()`` adds the pool,
    every deployment of prefect.yaml and a worker."""

    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.tmp = Path(tmp)
        self.logs = self.tmp / "logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(self.tmp / "prefect"),
            "PREFECT_API_URL": self.url,
            "PREFECT_UI_API_URL": self.url,  # the UI asks port 4200 unless told
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The scheduler visits deployments every 60 s by default; tests wait for it.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            "QTRADER_HOME": str(ROOT),
            **(extra_env or {}),
        }
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> PrefectStack:
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start(
                "server",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--analytics-off",
            )
            deadline = time.monotonic() + 120
            while True:
                try:
                    if self.api("/health", retries=0) is True:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("Prefect server did not start:\n" + tail(self.logs / "server.log"))
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self._procs.append(p)
        return p

    def prefect(self, *args: str, timeout: float = 300) -> None:
        """Run one prefect CLI command against the server; raise with its output if it fails."""
        done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}")

    def deploy(self, worker: bool = True) -> None:
        """The work pool and every deployment of prefect.yaml, as `make deploy` does; then a worker."""
        self.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
        self.prefect("--no-prompt", "deploy", "--all")
        if worker:
            self.start_worker()

    def start_worker(self) -> None:
        self._start("worker", "worker", "start", "--pool", POOL, "--prefetch-seconds", "5")

    def api(self, path: str, body: dict | None = None, *, retries: int = 9) -> Any:
        # The server answers 503, or not in time, while its SQLite database is busy (two loaded cores, a worker
        # starting flows): retried with a growing pause.
        for attempt in range(retries + 1):
            req = urllib.request.Request(
                self.url + path, data=json.dumps(body).encode() if body is not None else None,
                method="POST" if body is not None else "GET", headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.loads(r.read() or "null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == retries:
                    raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if attempt == retries:
                    raise
            time.sleep(1 + attempt)

    def run_deployment(self, deployment_id: str, timeout: float = 300, poll: float = 0.5) -> dict:
        """Trigger a deployment and wait for a final state; returns the flow run."""
        run = self.api(f"/deployments/{deployment_id}/create_flow_run", {})
        deadline = time.monotonic() + timeout
        while True:
            info = self.api(f"/flow_runs/{run['id']}")
            if info["state"]["type"] in FINAL_STATES:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"flow run {run['id']} not finished: {info['state']}\n" + self.worker_log()
                )
            time.sleep(poll)

    def worker_log(self, n: int = 4000) -> str:
        return tail(self.logs / "worker.log", n)

    def stop_worker(self) -> None:
        """Stop the worker (and the flow runs it started) only; the server stays up."""
        for p in [p for p in self._procs if p.args[1:3] == ["worker", "start"]]:
            self._kill(p)
            self._procs.remove(p)

    def server_log(self) -> str:
        return tail(self.logs / "server.log", 4000)

    def stop(self) -> None:
        for p in reversed(self._procs):
            self._kill(p)
        self._procs.clear()

    @staticmethod
    def _kill(p: subprocess.Popen) -> None:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # the worker sometimes ignores SIGTERM
                p.wait(timeout=20)
