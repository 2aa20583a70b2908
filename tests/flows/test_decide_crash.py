"""A decision run killed at any point of a bar, then run again, leaves the same books as a run that never
crashed: decisions, the brackets they sent, fills, stop moves, closed trades and the paper account.

The victim runs in a subprocess and dies with ``os._exit`` at a fault point (qtrader/faults.py: no cleanup,
as a ``kill -9``); the second run is the normal flow. Points, in the order a bar reaches them:
``decided`` (planned in memory), ``planned`` (the plan stored, nothing sent), ``order1`` (the first order
reached the broker, not recorded), ``sent`` (every order sent, none recorded), ``stored`` (all recorded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.decide import decide
from tests.flows.test_decide_flow import NOW, OPEN_POLICY, _warehouse
from warehouse.db import query_df

BARS = 4
POINTS = ["decide:decided", "decide:planned", "decide:order1", "decide:sent", "decide:stored"]
BOOKS = {
    "decisions": "SELECT decision_id, accepted, reason_code, qty, stop_price, client_order_ids FROM decisions",
    "decision_orders": "SELECT client_order_id, decision_id, leg, qty, broker_order_id FROM decision_orders",
    "fills": "SELECT fill_key, symbol, role, qty, price FROM broker_fills",
    "stop_moves": "SELECT replaced_order_id, new_order_id, new_stop, rule FROM exit_adjustments",
    "trades": "SELECT decision_id, qty, pnl, exit_reason FROM v_trades",
    "paper_orders": "SELECT id, status, filled_qty, filled_avg_price, replaced_by FROM paper_orders",
    "cash": "SELECT sum(amount) AS cash, count(*) AS entries FROM paper_cash_ledger",
    "records": "SELECT client_order_id, status, origin FROM order_records",
}


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


def books(db: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name, sql in BOOKS.items():
        frame = query_df(db, sql)
        out[name] = frame.sort_values(list(frame.columns[:1])).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def reference(retrained, tmp_path_factory, prefect_harness):
    db = _warehouse(retrained, tmp_path_factory.mktemp("crash-reference"))
    decide(interval="1d", bars=BARS, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    got = books(db)
    assert len(got["decision_orders"]) > 0 and len(got["fills"]) > 0
    return retrained, got


def _kill_at(point: str, db: Path) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    script = Path(__file__).with_name("_crash_decide.py")
    env = {**os.environ, "QTRADER_FAULT": point, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run(
        [sys.executable, str(script), str(db), str(BARS), NOW, json.dumps(OPEN_POLICY)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_any_point_leaves_whole_books_after_a_rerun(reference, point, tmp_path):
    retrained, expected = reference
    db = _warehouse(retrained, tmp_path)
    victim = _kill_at(point, db)
    assert victim.returncode == 137, victim.stdout[-2000:] + victim.stderr[-4000:]
    decide(interval="1d", bars=BARS, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    got = books(db)
    for name in BOOKS:
        pd.testing.assert_frame_equal(got[name], expected[name], obj=f"{name} after a kill at {point}")
