"""A decision run killed at any point of a bar, then run again, leaves the same books as a run that never
crashed: decisions, the brackets they sent, fills, stop moves, closed trades and the paper account.

The victim runs in a subprocess and dies with ``os._exit`` at a fault point (qtrader/faults.py: no cleanup,
as a ``kill -9``); the second run is the normal flow. Points, in the order a bar reaches them:
``decided`` (planned in memory), ``planned`` (the plan stored, nothing sent), ``order1`` (the first order
reached the broker, not recorded), ``sent`` (every order sent, none recorded), ``stored`` (all recorded).

Both brokers' contract: the local paper broker (its account in the warehouse) and Alpaca paper, here the
strict fake Alpaca server of tests/brokers/fake_alpaca.py on 127.0.0.1, which the victim subprocess
reaches by URL (``alpaca.url_override``) and which outlives it, as Alpaca outlives a crashed client.
Its market orders fill as they arrive, at a fixed price per symbol, and its clock stands still, so an
uncrashed run and a crashed one meet the same market.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from flows.decide import decide
from tests.brokers.fake_alpaca import FakeAlpaca
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


def _kill_at(point: str, db: Path, policy: dict = OPEN_POLICY) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    script = Path(__file__).with_name("_crash_decide.py")
    env = {**os.environ, "QTRADER_FAULT": point, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run(
        [sys.executable, str(script), str(db), str(BARS), NOW, json.dumps(policy)],
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


# -- Alpaca paper (the fake server) -----------------------------------------------------------------------------

ALPACA_BOOKS = [
    "decisions",
    "decision_orders",
    "fills",
    "stop_moves",
    "trades",
    "records",
]  # no paper_* tables
FAKE_TIME = datetime(2026, 10, 30, 15, 0, tzinfo=UTC)


def _alpaca(db: Path) -> FakeAlpaca:
    """A fresh fake Alpaca account priced at each symbol's last close before the decisions."""
    fake = FakeAlpaca(clock=lambda: FAKE_TIME, fill_market_orders=True).start()
    closes = query_df(db, "SELECT symbol, arg_max(close, ts) AS close FROM bars WHERE interval = '1d' "
                          "AND ts <= ? GROUP BY symbol", [pd.Timestamp(NOW, tz="UTC")])  # fmt: skip
    for row in closes.itertuples(index=False):
        fake.set_price(row.symbol, round(float(row.close), 2))
    return fake


def _alpaca_policy(fake: FakeAlpaca) -> dict:
    return {**OPEN_POLICY, "broker": "alpaca", "alpaca": {"url_override": fake.url, "timeout_s": 5.0},
            "alpaca_api_key": fake.api_key, "alpaca_secret_key": fake.secret_key}  # fmt: skip


@pytest.fixture(scope="module")
def alpaca_reference(retrained, tmp_path_factory, prefect_harness):
    db = _warehouse(retrained, tmp_path_factory.mktemp("crash-reference-alpaca"))
    fake = _alpaca(db)
    try:
        decide(interval="1d", bars=BARS, warehouse=str(db), now=NOW, overrides=_alpaca_policy(fake))
    finally:
        fake.stop()
    got = books(db)
    assert len(got["decision_orders"]) > 0 and len(got["fills"]) > 0
    return retrained, got


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_any_point_on_alpaca_leaves_whole_books_after_a_rerun(
    alpaca_reference, point, tmp_path
):
    retrained, expected = alpaca_reference
    db = _warehouse(retrained, tmp_path)
    fake = _alpaca(db)
    try:
        victim = _kill_at(point, db, _alpaca_policy(fake))
        assert victim.returncode == 137, victim.stdout[-2000:] + victim.stderr[-4000:]
        decide(interval="1d", bars=BARS, warehouse=str(db), now=NOW, overrides=_alpaca_policy(fake))
    finally:
        fake.stop()
    got = books(db)
    for name in ALPACA_BOOKS:
        pd.testing.assert_frame_equal(
            got[name], expected[name], obj=f"{name} after a kill at {point} (alpaca)"
        )
