"""prefect.yaml is the one declaration of deployments: check it and that `qtrader serve` reads it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qtrader.orchestration import (
    INTERVAL_CHOICES,
    PREFECT_YAML,
    TEST_ONLY,
    cadences,
    deployment_specs,
    runner_deployments,
)
from qtrader.prefect_env import STARTUP_TIMEOUT_VAR, PrefectUnavailable, resolve
from tasks import writer
from tasks.writer import WRITER_LIMIT, WriterLimitError, warehouse_writer

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_points_at_a_flow_file_and_has_a_schedule():
    specs = deployment_specs()
    assert {s.name for s in specs} >= {
        "ingest-daily",
        "ingest-intraday",
        "features",
        "retrain-daily",
        "benchmark-daily",
        "health",
        "thresholds",
        "decide",
    }
    for s in specs:
        file, fn = s.entrypoint.split(":")
        assert (ROOT / file).exists(), s.entrypoint
        assert f"def {fn}(" in (ROOT / file).read_text()
        assert s.crons and all(tz == "America/New_York" for _, tz in s.crons)


def test_serve_builds_the_same_deployments_with_the_same_schedules():
    deployments = runner_deployments(PREFECT_YAML)
    by_name = {d.name: d for d in deployments}
    for spec in deployment_specs():
        d = by_name[spec.name]
        assert d.parameters == spec.parameters
        assert [s.schedule.cron for s in d.schedules] == [c for c, _ in spec.crons]
        assert len(d.triggers) == len(spec.triggers) and d.tags == list(spec.tags)


def test_every_deployment_says_its_time_zone_and_carries_a_stage_tag():
    for s in deployment_specs():
        assert "America/New_York" in s.description, s.name
        assert any(t.startswith("stage:") for t in s.tags), s.name


def test_features_and_decide_are_chained_by_completion_events():
    by_name = {s.name: s for s in deployment_specs()}

    def upstream(name: str) -> list[str]:
        (trigger,) = by_name[name].triggers
        assert trigger["expect"] == ["prefect.flow-run.Completed"]
        assert trigger["match_related"]["prefect.resource.role"] == "deployment"
        names = trigger["match_related"]["prefect.resource.name"]
        return [names] if isinstance(names, str) else list(names)

    assert upstream("features") == ["ingest-daily", "ingest-intraday"]
    assert upstream("decide") == ["features"]
    assert by_name["features"].crons and by_name["decide"].crons  # the fallback


def test_the_compressed_cadence_covers_every_deployment_in_pipeline_order():
    c = cadences()["compressed"]
    names = [s.name for s in deployment_specs()]
    assert set(c.every) == set(names)
    order = ["ingest-daily", "ingest-intraday", "features", "retrain-daily", "retrain-intraday",
             "benchmark-daily", "benchmark-intraday", "health", "thresholds", "decide"]  # fmt: skip
    assert sorted(names, key=c.offset.__getitem__) == order
    assert c.pool_concurrency == 1  # one run at a time: each stage starts after the one before


def test_the_run_form_describes_every_parameter_and_leaves_out_test_hooks():
    """The parameter schema `prefect deploy` stores (what the UI's run form shows)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    for spec in deployment_specs():
        file, fn = spec.entrypoint.split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / file}:{fn}")
        props = parameter_schema(flow).model_dump()["properties"]
        assert not set(TEST_ONLY) & set(props), f"{spec.name}: test-only parameters on the form"
        for name, prop in props.items():
            assert prop.get("description"), f"{spec.name}: parameter {name} has no description"
        if "interval" in props:
            (choice, _null) = (
                props["interval"]["anyOf"] if "anyOf" in props["interval"] else (props["interval"], 0)
            )
            assert choice["enum"] == INTERVAL_CHOICES
        for key in spec.parameters:
            assert key in props, f"{spec.name}: prefect.yaml sets {key}, which the form does not have"
    ingest = load_flow_from_entrypoint(f"{ROOT}/flows/ingest.py:ingest")
    source = parameter_schema(ingest).model_dump()["properties"]["source"]["anyOf"][0]
    assert source["enum"] == ["synthetic", "yfinance", "files"]


# ------------------------------------------------------------------------------ the warehouse-writer limit


def _delete_writer_limit() -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(WRITER_LIMIT)
        except ObjectNotFound:
            pass


def _writer_flow():
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="writer-probe")
    def write_once(path: str) -> int:
        """Takes the writer slot and reports how many slots are held meanwhile."""
        with warehouse_writer(30, path), get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(WRITER_LIMIT).active_slots

    return write_once


def test_the_writer_limit_is_created_on_first_use_and_its_slot_is_held(prefect_harness, tmp_path, caplog):
    """A server where nobody ran `make deploy` (the demo's, the CLI's): the first write creates the limit
    and really takes its slot; nothing is skipped or warned about."""
    _delete_writer_limit()
    writer._ensured.clear()
    held = _writer_flow()(str(tmp_path / "w.duckdb"))
    assert held == 1, "the write ran without holding a slot of the writer limit"
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(WRITER_LIMIT)
    assert limit.limit == 1 and limit.active and limit.active_slots == 0
    assert not [r for r in caplog.records if "do not exist" in r.getMessage()]


def test_a_writer_limit_removed_under_a_running_process_is_an_error_not_a_skip(prefect_harness, tmp_path):
    probe = _writer_flow()
    probe(str(tmp_path / "w.duckdb"))  # the limit exists and this process knows it
    _delete_writer_limit()
    with pytest.raises(WriterLimitError, match="warehouse-writer.*removed or switched off"):
        probe.fn(str(tmp_path / "w.duckdb"))
    assert probe(str(tmp_path / "w.duckdb")) == 1  # the next write creates it again


def test_a_pinned_warehouse_skips_the_limit(tmp_path):
    from warehouse.db import pinned

    with pinned(tmp_path / "w.duckdb"), warehouse_writer(1, tmp_path / "w.duckdb"):
        pass  # no Prefect API at all: nothing was asked of one


# ------------------------------------------------------------------------------ one Prefect home and API


@pytest.fixture
def health_server():
    """A stand-in for `make ui`'s server: answers Prefect's /api/health on a free port."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"true" if self.path == "/api/health" else b"null"
            self.send_response(200 if self.path == "/api/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api"
    server.shutdown()


def test_prefect_home_defaults_to_the_project_data_folder_with_a_longer_start_up(tmp_path):
    env = {"QTRADER_HOME": str(tmp_path), "QTRADER_PREFECT_UI_URL": ""}
    target = resolve(env)
    assert target.home == tmp_path / "data" / "prefect" and target.home.is_dir()
    assert env["PREFECT_HOME"] == str(tmp_path / "data" / "prefect")
    assert target.api_url is None and env[STARTUP_TIMEOUT_VAR] == "120"
    assert "PREFECT_API_URL" not in env


def test_a_running_ui_server_is_used_and_a_set_url_must_answer(tmp_path, health_server):
    env = {"PREFECT_HOME": str(tmp_path / "home"), "QTRADER_PREFECT_UI_URL": health_server}
    target = resolve(env)
    assert target.api_url == health_server == env["PREFECT_API_URL"] and target.source == "make ui"
    dead = health_server.replace(health_server.rsplit(":", 1)[1].split("/")[0], "1")  # port 1: nobody
    with pytest.raises(PrefectUnavailable, match=r"PREFECT_API_URL=http://127.0.0.1:1/api does not answer"):
        resolve({"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_API_URL": dead})


def test_a_temporary_server_that_cannot_start_is_one_clear_line(tmp_path):
    """A new Prefect home (its database must migrate) and a 1 s start-up allowance: the command stops with
    one line that says what happened and what to do, not Prefect's bare time-out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QTRADER_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "new-home"), STARTUP_TIMEOUT_VAR: "1", "QTRADER_PREFECT_UI_URL": "",
            "QTRADER_WAREHOUSE": str(tmp_path / "w.duckdb"), "QTRADER_DATA_DIR": str(tmp_path)}  # fmt: skip
    qtrader = Path(sys.executable).parent / "qtrader"
    done = subprocess.run([str(qtrader), "ingest", "--interval", "1d", "--symbols", "AAA"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the temporary Prefect server did not start within 1 s (PREFECT_HOME={tmp_path / 'new-home'}): "
        f"start one with `make ui` (qtrader then uses it), or raise {STARTUP_TIMEOUT_VAR}"
    ], done.stderr


def test_a_cadence_needs_the_deployments_and_production_lifts_the_pool_limit(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    from qtrader.orchestration import POOL, apply_cadence

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=1))
        with pytest.raises(ValueError, match="are not on .*: run `make deploy` first"):
            apply_cadence("compressed")
        with pytest.raises(ValueError, match="unknown cadence 'hourly'"):
            apply_cadence("hourly")
        assert apply_cadence("production")
        assert client.read_work_pool(POOL).concurrency_limit is None


def test_only_a_dead_holder_on_this_host_is_taken_for_gone():
    import os
    import socket
    import subprocess
    import sys

    from tasks.writer import _holder_gone, _started

    here = socket.gethostname()
    me = {"pid": os.getpid(), "host": here, "started": _started(os.getpid())}
    assert not _holder_gone(me)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert _holder_gone({"pid": int(dead.stdout), "host": here, "started": None})
    assert not _holder_gone({"pid": int(dead.stdout), "host": here + "-elsewhere", "started": None})
    assert _holder_gone(me | {"started": "1"}), "a reused pid was taken for the holder"
