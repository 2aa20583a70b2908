"""Every write of the decision flow, the broker's books included, happens inside the writer limit.

The ``warehouse-writer`` global concurrency limit is what serialises writers across worker processes
(tasks/writer.py). Here it is replaced by a recorder, and every read-write open of the warehouse file is
checked: it must happen while the limit is held. Reads open read-only and need no limit.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import pytest

import tasks.writer
import warehouse.db
from flows.decide import decide
from tests.flows.test_decide_flow import NOW, OPEN_POLICY, _warehouse


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


def _record_opens_and_slots(db, monkeypatch) -> tuple[dict, list[tuple[bool, int]]]:
    """The writer limit replaced by a recorder; every open of ``db``: (read-only, limits held)."""
    held = {"depth": 0, "acquired": 0}
    opens: list[tuple[bool, int]] = []

    @contextmanager
    def recording_limit(*args, **kwargs):
        held["depth"] += 1
        held["acquired"] += 1
        try:
            yield
        finally:
            held["depth"] -= 1

    real_open = warehouse.db.open_with_retry

    def recording_open(path, read_only, *args, **kwargs):
        if path.resolve() == db.resolve():
            opens.append((read_only, held["depth"]))
        return real_open(path, read_only, *args, **kwargs)

    monkeypatch.setattr(tasks.writer, "writer_slot", recording_limit)
    monkeypatch.setattr(warehouse.db, "open_with_retry", recording_open)
    return held, opens


def test_every_decide_write_holds_the_writer_limit(retrained, tmp_path, monkeypatch):
    db = _warehouse(retrained, tmp_path)
    held, opens = _record_opens_and_slots(db, monkeypatch)
    result = decide(interval="1d", bars=3, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    assert len(result["bars"]) == 3 and sum(b["submitted"] for b in result["bars"]) > 0

    writes = [depth for read_only, depth in opens if not read_only]
    assert writes, "the flow wrote nothing"
    unguarded = sum(1 for depth in writes if depth == 0)
    assert unguarded == 0, f"{unguarded} of {len(writes)} read-write opens happened outside the writer limit"
    assert held["acquired"] > 0


def test_a_one_bar_decide_run_opens_the_warehouse_five_times(retrained, tmp_path, monkeypatch):
    """Each open of the (large) file costs 20-170 ms and each writer slot two API calls. One bar needs five
    of each: the run record's start with the run's inputs, the bar's reads and plan, the stored plan, the
    stored outcome, the run record's end (a connection never spans a fault point: the crash tests)."""
    db = _warehouse(retrained, tmp_path)
    held, opens = _record_opens_and_slots(db, monkeypatch)
    result = decide(interval="1d", bars=1, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    assert len(result["bars"]) == 1 and result["bars"][0]["submitted"] > 0
    assert (len(opens), held["acquired"]) == (5, 5), f"opens {opens}, writer slots {held['acquired']}"


class _Retries(logging.Handler):
    """Counts the Prefect client's back-offs on a 503 (it sleeps ~2 s before asking again)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retryable status code 503" in record.getMessage():
            self.count += 1


def test_a_write_after_a_task_boundary_does_not_wait_on_the_clients_503_backoff(tmp_path):
    """The test server answers the slot request with 503 (SQLite busy: its read-then-update transaction
    meets the server's own writes of the task runs' events) right after a task starts or ends. Each such
    write used to sleep through the client's 2 s back-off; the writer retries it at once instead."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    from tasks.writer import WRITER_LIMIT, warehouse_writer

    path = str(tmp_path / "w.duckdb")

    @task
    def write_in_a_task() -> None:
        with warehouse_writer(30, path):
            pass

    @flow
    def writes_around_tasks() -> None:
        for _ in range(4):
            write_in_a_task()
            with warehouse_writer(30, path):
                pass

    retries = _Retries()
    client_log = logging.getLogger("prefect.client")
    level = client_log.level
    client_log.addHandler(retries)
    client_log.setLevel(logging.DEBUG)
    try:
        writes_around_tasks()
    finally:
        client_log.removeHandler(retries)
        client_log.setLevel(level)
    assert retries.count == 0, f"{retries.count} writes slept through the client's 503 back-off"
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(WRITER_LIMIT).active_slots == 0


_HOLD_AND_DIE = """
import os, sys
from tasks.writer import warehouse_writer
with warehouse_writer(60, sys.argv[1]):
    print("held", flush=True)
    os._exit(137)  # a kill -9 inside a write: no release, no finally
"""


def test_a_writer_killed_while_holding_the_slot_frees_it_soon(tmp_path):
    """A CLI or worker killed mid-write (kill -9, OOM) cannot release its lease; the next writer must get
    the slot within the lease's short life, not wait minutes (every later test or run would stall)."""
    import os
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from tasks.writer import LEASE_S, warehouse_writer

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    victim = subprocess.run([sys.executable, "-c", _HOLD_AND_DIE, str(tmp_path / "w.duckdb")],
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert victim.returncode == 137 and "held" in victim.stdout, victim.stderr[-2000:]
    t0 = time.monotonic()
    with warehouse_writer(600, tmp_path / "w.duckdb"):
        waited = time.monotonic() - t0
    assert waited < 30, f"the next writer waited {waited:.0f}s for the slot of a writer that had died"
    assert LEASE_S <= 60, f"a writer dead on another host holds its slot for {LEASE_S:.0f}s"


def test_a_decided_bar_shares_its_warehouse_connections(retrained, tmp_path, monkeypatch):
    """A bar's reads share one connection (``Warehouse.session``); its plan and what the broker did are
    stored in one transaction each; the local broker's bar feed reads during the plan. Opening a large file
    and taking a writer slot cost tens of ms each: 3 bars took 38 opens and 11 slots before."""
    db = _warehouse(retrained, tmp_path)
    counts = {"acquired": 0, "opens": 0}

    @contextmanager
    def counting_limit(*args, **kwargs):
        counts["acquired"] += 1
        yield

    real_open = warehouse.db.open_with_retry

    def counting_open(path, *args, **kwargs):
        counts["opens"] += path.resolve() == db.resolve()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tasks.writer, "writer_slot", counting_limit)
    monkeypatch.setattr(warehouse.db, "open_with_retry", counting_open)
    bars = 3
    result = decide(interval="1d", bars=bars, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    assert len(result["bars"]) == bars
    # schema check, run record opened, the run's inputs, per bar: reads, feed, plan, outcome; record closed
    assert counts["opens"] <= 4 + 5 * bars, counts
    assert counts["acquired"] <= 3 + 3 * bars, counts


class _SlowSlotProxy:
    """An HTTP proxy in front of the test server that passes every request on at once but holds back
    the answer to the first slot request for ``delay_s``: the server has taken the slot, the client has
    not heard yet. Prefect's server does this by itself under load: it waits up to 60 s for its SQLite
    write lock, then takes the slot."""

    def __init__(self, upstream: str, delay_s: float) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        origin = httpx.URL(upstream)
        base = f"{origin.scheme}://{origin.host}:{origin.port}"
        proxy = self
        proxy.slot_requests = 0
        proxy._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}
                }
                with httpx.Client(timeout=120) as upstream_client:
                    answer = upstream_client.request(
                        self.command, base + self.path, content=body, headers=headers
                    )
                if self.path.endswith("/increment-with-lease"):
                    with proxy._lock:
                        proxy.slot_requests += 1
                        first = proxy.slot_requests == 1
                    if first:
                        time.sleep(delay_s)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in {
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    }:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{origin.raw_path.decode()}".rstrip("/")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_slot_granted_after_the_client_stopped_waiting_is_not_left_taken(tmp_path):
    """Under load Prefect's server can answer a slot request after the client's request time-out (its
    SQLite lock wait is 60 s, the client's default time-out too). A client that gave up and asked again
    met its own orphaned lease (423) and waited it out: on a temporary server it never expires, so every
    later write timed out. The writer waits for the slot request's answer instead."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_API_URL, temporary_settings

    from tasks.writer import WRITER_LIMIT, ensure_writer_limit, warehouse_writer

    ensure_writer_limit()
    proxy = _SlowSlotProxy(str(PREFECT_API_URL.value()), delay_s=4.0)
    try:
        with temporary_settings({PREFECT_API_URL: proxy.url, PREFECT_API_REQUEST_TIMEOUT: 2.0}):
            with warehouse_writer(20, tmp_path / "w.duckdb"):
                pass
    finally:
        proxy.close()
        with get_client(sync_client=True) as client:
            held = client.read_global_concurrency_limit_by_name(WRITER_LIMIT).active_slots
            if held:  # free the orphan so the session's later tests can write
                client.update_global_concurrency_limit(
                    WRITER_LIMIT, GlobalConcurrencyLimitUpdate(active_slots=0)
                )
    assert proxy.slot_requests == 1, f"the slot was asked for {proxy.slot_requests} times"
    assert held == 0, f"{held} slot(s) of {WRITER_LIMIT!r} left taken by a lease nobody holds"
