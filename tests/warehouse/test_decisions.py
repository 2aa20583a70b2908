"""The account review views on hand-written rows: R-multiple, exit reasons, attribution, positions."""

import pandas as pd
import pytest

from warehouse.db import query_df, transaction

T0 = pd.Timestamp("2026-11-02", tz="UTC")


def day(n: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


def _decision(con, did, symbol, side, contributors):
    con.execute(
        "INSERT INTO decisions (decision_id, ts, interval, symbol, strategy, broker, side, direction, consensus, "
        "voters, agree, contributors, source_module, accepted, submitted, reason_code, run_id, decided_at) "
        "VALUES (?, ?, '1d', ?, 'qtrader', 'local', ?, 1, 'UNANIMOUS', 2, 2, ?, 'ensemble', true, true, "
        "'accepted', 'r', ?)",
        [did, day(0), symbol, side, contributors, day(0)],
    )


def _bracket(con, did, coid, leg, symbol, side, qty, stop, tp):
    con.execute(
        "INSERT INTO decision_orders (client_order_id, decision_id, leg, symbol, side, qty, entry_ref, take_profit, "
        "stop_price, broker, broker_order_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, 100.0, ?, ?, 'local', ?, ?)",
        [coid, did, leg, symbol, side, qty, tp, stop, f"id-{coid}", day(0)],
    )


def _fill(con, coid, role, symbol, side, qty, price, ts):
    con.execute(
        "INSERT INTO broker_fills VALUES (?, 'local', ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        [f"{coid}|{role}|{ts}", f"o-{coid}-{role}", coid, coid, symbol, side, role, qty, price, ts, ts],
    )


@pytest.fixture
def db(warehouse_path):
    with transaction(warehouse_path) as con:
        # AAA long: TP1 at 102, stop moved to breakeven, TP2/TP3 legs stopped at 100.
        _decision(con, "d-aaa", "AAA", "buy", "regime,direction")
        for leg, tp in ((1, 102.0), (2, 105.0), (3, 108.0)):
            _bracket(con, "d-aaa", f"aaa{leg}", leg, "AAA", "buy", 10, 97.0, tp)
            _fill(con, f"aaa{leg}", "entry", "AAA", "buy", 10, 100.0, day(1))
        _fill(con, "aaa1", "take_profit", "AAA", "sell", 10, 102.0, day(2))
        for leg in (2, 3):
            con.execute(
                "INSERT INTO exit_adjustments VALUES (?, ?, ?, 'local', 'AAA', ?, 97, 100, 'breakeven_after_tp1', "
                "'TP1 filled', ?)",
                [f"sl{leg}", f"sl{leg}.r", day(3), f"aaa{leg}", day(3)],
            )
            _fill(con, f"aaa{leg}", "stop_loss", "AAA", "sell", 10, 100.0, day(4))
        # BBB short, stopped out at the initial stop: -1R.
        _decision(con, "d-bbb", "BBB", "sell", "direction")
        _bracket(con, "d-bbb", "bbb1", 1, "BBB", "sell", 5, 54.0, 48.0)
        _fill(con, "bbb1", "entry", "BBB", "sell", 5, 50.0, day(1))
        _fill(con, "bbb1", "stop_loss", "BBB", "buy", 5, 54.0, day(2))
        # CCC still open: not a closed trade.
        _decision(con, "d-ccc", "CCC", "buy", "regime")
        _bracket(con, "d-ccc", "ccc1", 1, "CCC", "buy", 3, 90.0, 110.0)
        _fill(con, "ccc1", "entry", "CCC", "buy", 3, 100.0, day(3))
        con.execute(
            "INSERT INTO account_snapshots VALUES ('local', ?, 100000, 100000, 100000, ?)", [day(0), day(0)]
        )
        con.execute(
            "INSERT INTO account_snapshots VALUES ('local', ?, 99700, 100020, 99000, ?)", [day(4), day(4)]
        )
        con.execute("INSERT INTO position_snapshots VALUES ('local', ?, 'OLD', 1, 1, 1, ?)", [day(0), day(0)])
        con.execute(
            "INSERT INTO position_snapshots VALUES ('local', ?, 'CCC', 3, 100, 306, ?)", [day(4), day(4)]
        )
    return warehouse_path


def test_trades_with_r_multiple_and_exit_reason(db):
    t = query_df(db, "SELECT * FROM v_trades ORDER BY symbol").set_index("symbol")
    assert list(t.index) == ["AAA", "BBB"]
    aaa = t.loc["AAA"]
    assert float(aaa["pnl"]) == pytest.approx(20.0)  # 10 x 2 from TP1, the rest at breakeven
    assert float(aaa["initial_risk"]) == pytest.approx(90.0)  # 30 shares x 3
    assert float(aaa["r_multiple"]) == pytest.approx(20 / 90)
    assert aaa["exit_reason"] == "breakeven"
    assert aaa["legs"] == "tp1:TP1, tp2:breakeven, tp3:breakeven"
    bbb = t.loc["BBB"]
    assert float(bbb["r_multiple"]) == pytest.approx(-1.0) and bbb["exit_reason"] == "stop"


def test_module_attribution(db):
    a = query_df(db, "SELECT * FROM v_module_attribution ORDER BY module").set_index("module")
    assert a.loc["direction", "trades"] == 2 and a.loc["direction", "wins"] == 1
    assert float(a.loc["direction", "pnl"]) == pytest.approx(20.0 - 20.0)
    assert float(a.loc["regime", "pnl_shared"]) == pytest.approx(10.0)  # AAA's 20 shared by two modules
    assert "CCC" not in query_df(db, "SELECT symbol FROM v_trades")["symbol"].tolist()


def test_account_and_positions_at_the_newest_snapshot(db):
    acc = query_df(db, "SELECT * FROM v_account").iloc[0]
    assert float(acc["equity"]) == 100020 and float(acc["pnl_since_first_snapshot"]) == 20
    pos = query_df(db, "SELECT * FROM v_positions")
    assert pos["symbol"].tolist() == ["CCC"]  # the older snapshot's OLD is gone
    assert float(pos["unrealized_pnl"].iloc[0]) == pytest.approx(6.0)
