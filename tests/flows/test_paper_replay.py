"""Paper-to-replay parity: a live decision run on the local paper account, replayed through the backtest
path (engine, trader, simulated broker in memory), gives the same decisions, orders and fills."""

from __future__ import annotations

import pytest

from flows.decide import decide
from qtrader.settings import load_settings
from tasks.paper_replay import replay_paper
from tests.flows.test_decide_flow import NOW, OPEN_POLICY, _warehouse
from warehouse.db import query_df, transaction


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


@pytest.fixture(scope="module")
def traded(retrained, tmp_path_factory, prefect_harness):
    db = _warehouse(retrained, tmp_path_factory.mktemp("paper-replay"))
    decide(interval="1d", bars=15, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    orders = query_df(db, "SELECT count(*) AS n FROM paper_orders")["n"].iloc[0]
    again = decide(interval="1d", bars=1, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)  # the same bar
    return db, orders, again


def test_a_decided_bar_is_not_decided_again(traded):
    """A re-run of the newest decided bar once accepted another candidate (its first choice was now
    'order_pending', freeing a slot) and sent brackets its stored decision row said were rejected."""
    db, orders, again = traded
    assert again["bars"] == [] and len(again["skipped"]) == 1
    assert query_df(db, "SELECT count(*) AS n FROM paper_orders")["n"].iloc[0] == orders
    orphans = query_df(
        db,
        "SELECT count(*) AS n FROM decision_orders o JOIN decisions d USING (decision_id) WHERE NOT d.accepted",
    )["n"].iloc[0]
    assert orphans == 0


def test_the_replay_reproduces_the_paper_account_trade_for_trade(traded):
    replay = replay_paper(load_settings(warehouse=traded[0]), "1d", OPEN_POLICY)
    assert replay.bars == 15
    for table in ("decisions", "orders", "fills"):
        assert len(replay.live[table]) > 0, table
    assert replay.live["decisions"]["accepted"].any()
    assert replay.identical, "\n".join(replay.lines()) + "\n" + str(replay.differences)


def test_a_difference_is_reported(traded, tmp_path):
    import shutil

    copy = tmp_path / "changed.duckdb"
    shutil.copy(traded[0], copy)
    with transaction(copy) as con:
        con.execute(
            "UPDATE broker_fills SET price = price + 0.01 WHERE fill_key = (SELECT min(fill_key) FROM broker_fills)"
        )
    replay = replay_paper(load_settings(warehouse=copy), "1d", OPEN_POLICY)
    assert not replay.identical
    assert len(replay.differences["fills"]) == 2  # the live row and the replayed one
    assert replay.differences["decisions"].empty
