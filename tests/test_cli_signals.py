"""Signals and kills, as a user sends them, to a real ``python -m qtrader.cli`` on a temporary Prefect server.

Each case starts the CLI as the leader of its own process group (a terminal's foreground job), holds the
run at a fault point (``QTRADER_FAULT_WAIT``, qtrader/faults.py) and then sends Ctrl-C to the whole group,
SIGTERM to the CLI, or ``kill -9``. What must hold: the CLI stops within a few seconds with one line and
exit 130 / 143, the run is recorded (``ingest_runs``, ``pipeline_runs``, ``qtrader status``), the Prefect
flow run is not left Running, and no temporary Prefect server outlives the CLI.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from warehouse.db import query_df

ROOT = Path(__file__).resolve().parents[1]
INGEST = ["ingest", "--source", "synthetic", "--symbols", "AAA", "--interval", "1d",
          "--start", "2026-06-01", "--end", "2026-11-20"]  # fmt: skip
REACH_S = 150  # imports and a temporary server's start-up on two loaded cores
STOP_S = 10  # "within a few seconds" (1-3 s measured), with room for a loaded machine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    """One migrated Prefect home for the module: each CLI then starts its temporary server on it."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**_env(home), "PREFECT_HOME": str(home)}
    subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "server", "database",
                    "upgrade", "-y"], env=env, check=True, capture_output=True, timeout=300)  # fmt: skip
    return home


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "QTRADER_FAULT")}
    env.update(PREFECT_HOME=str(home), QTRADER_PREFECT_UI_URL="", QTRADER_HOME=str(home.parent),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PYTHONUNBUFFERED="1", **extra)  # fmt: skip
    return env


class Cli:
    """A running ``qtrader`` in its own process group, its stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qtrader.cli", *args], cwd=cwd, env=env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.out: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True).start()

    @staticmethod
    def _pump(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = REACH_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"never reached {text!r} (exit {self.proc.poll()}):\n" + "\n".join(self.lines[-40:]))

    def servers(self) -> list[psutil.Process]:
        """The temporary Prefect servers this CLI started (uvicorn children, wherever their group is)."""
        me = psutil.Process(self.proc.pid)
        return [p for p in me.children(recursive=True) if "prefect.server" in " ".join(p.cmdline())]

    def stop_within(self, seconds: float) -> tuple[int | None, float]:
        t0 = time.monotonic()
        try:
            code = self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - t0

    def cleanup(self, servers: list[psutil.Process]) -> None:
        """Kill what this test started and is still alive (by pid: other tests run servers too)."""
        for p in [psutil.Process(self.proc.pid)] if self.proc.poll() is None else []:
            p.kill()
        for p in servers:
            if p.is_running():
                p.kill()
        self.proc.wait(timeout=30)


def _flow_run_state(home: Path, flow: str) -> str:
    with sqlite3.connect(home / "prefect.db") as con:
        row = con.execute(
            "SELECT fr.state_type FROM flow_run fr JOIN flow f ON f.id = fr.flow_id WHERE f.name = ? "
            "ORDER BY fr.created DESC LIMIT 1",
            (flow,),
        ).fetchone()
    return row[0] if row else "<no flow run>"


def _gone(procs: list[psutil.Process], seconds: float) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=seconds)
    return not alive


def _after(lines: list[str], marker: str) -> list[str]:
    i = next(i for i, line in enumerate(lines) if marker in line)
    return lines[i + 1 :]


def _interrupted_by(sig: int, prefect_home: Path, tmp_path: Path, code: int, *, group: bool) -> None:
    db = tmp_path / "w.duckdb"
    cli = Cli([*INGEST, "--warehouse", str(db)], _env(prefect_home, QTRADER_FAULT_WAIT="ingest:fetch"),
              tmp_path)  # fmt: skip
    servers: list[psutil.Process] = []
    try:
        cli.wait_for("fault point ingest:fetch reached")
        servers = cli.servers()
        assert servers, "no temporary Prefect server found"
        if group:
            os.killpg(cli.proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground group
        else:
            os.kill(cli.proc.pid, sig)
        got, took = cli.stop_within(STOP_S)
        said = _after(cli.lines, "fault point ingest:fetch reached")
        assert got == code, f"exit {got} after {took:.1f} s:\n" + "\n".join(said[-30:])
        print(f"{signal.Signals(sig).name}: exit {got} {took:.1f} s after the signal")
        assert _gone(servers, 10), "the temporary Prefect server outlived the CLI"
    finally:
        cli.cleanup(servers)
    mine = [line for line in said if line.startswith(("interrupted", "error"))]
    assert len(mine) == 1 and mine[0].startswith("interrupted:"), said
    assert f"(exit {code})" in mine[0]
    assert not [line for line in said if "ConnectError" in line or "Traceback" in line], said
    runs = query_df(db, "SELECT status, interval, source, message FROM ingest_runs")
    assert runs[["status", "interval", "source"]].values.tolist() == [["interrupted", "1d", "synthetic"]]
    assert signal.Signals(sig).name in runs["message"][0]
    assert _flow_run_state(prefect_home, "ingest") in ("CRASHED", "CANCELLED")


def test_ctrl_c_on_the_process_group_stops_ingest_and_records_it(prefect_home, tmp_path):
    _interrupted_by(signal.SIGINT, prefect_home, tmp_path, 130, group=True)


def test_sigterm_stops_ingest_and_records_it(prefect_home, tmp_path):
    _interrupted_by(signal.SIGTERM, prefect_home, tmp_path, 143, group=False)


def test_kill_9_leaves_no_server_and_the_next_start_marks_the_run_crashed(prefect_home, tmp_path):
    db = tmp_path / "w.duckdb"
    cli = Cli([*INGEST, "--warehouse", str(db)], _env(prefect_home, QTRADER_FAULT_WAIT="ingest:fetch"),
              tmp_path)  # fmt: skip
    servers: list[psutil.Process] = []
    try:
        cli.wait_for("fault point ingest:fetch reached")
        servers = cli.servers()
        assert servers, "no temporary Prefect server found"
        os.kill(cli.proc.pid, signal.SIGKILL)
        assert cli.proc.wait(timeout=10) == -signal.SIGKILL
        assert _gone(servers, 15), "the temporary Prefect server outlived a kill -9 of its CLI"
    finally:
        cli.cleanup(servers)
    status = subprocess.run([sys.executable, "-m", "qtrader.cli", "status", "--warehouse", str(db)],
                            cwd=tmp_path, env=_env(prefect_home), capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert status.returncode == 0, status.stderr
    runs = query_df(db, "SELECT status, interval, message FROM ingest_runs")
    assert runs[["status", "interval"]].values.tolist() == [["crashed", "1d"]]
    assert "crashed" in status.stdout


def test_sigterm_stops_decide_and_status_lists_the_run(prefect_home, tmp_path):
    db = tmp_path / "w.duckdb"
    init = subprocess.run([sys.executable, "-m", "qtrader.cli", "init", "--warehouse", str(db)],
                          cwd=tmp_path, env=_env(prefect_home), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert init.returncode == 0, init.stderr
    cli = Cli(["decide", "--interval", "1d", "--warehouse", str(db)],
              _env(prefect_home, QTRADER_FAULT_WAIT="decide:start"), tmp_path)  # fmt: skip
    servers: list[psutil.Process] = []
    try:
        cli.wait_for("fault point decide:start reached")
        servers = cli.servers()
        os.killpg(cli.proc.pid, signal.SIGTERM)
        got, took = cli.stop_within(STOP_S)
        said = _after(cli.lines, "fault point decide:start reached")
        assert got == 143, f"exit {got} after {took:.1f} s:\n" + "\n".join(said[-30:])
        print(f"decide SIGTERM: exit {got} {took:.1f} s after the signal")
        assert _gone(servers, 10), "the temporary Prefect server outlived the CLI"
    finally:
        cli.cleanup(servers)
    runs = query_df(db, "SELECT flow, status, interval, message FROM pipeline_runs")
    assert runs[["flow", "status", "interval"]].values.tolist() == [["decide", "interrupted", "1d"]]
    assert _flow_run_state(prefect_home, "decide") in ("CRASHED", "CANCELLED")
    status = subprocess.run([sys.executable, "-m", "qtrader.cli", "status", "--warehouse", str(db)],
                            cwd=tmp_path, env=_env(prefect_home), capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "Last decide runs" in status.stdout and "interrupted" in status.stdout
