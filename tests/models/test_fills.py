from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.base import OrderRole, OrderStatus, submit_idempotent
from models.brackets import Bracket, client_order_id, split_quantity
from models.exits import adaptive_profile, breakeven_after_tp1, plan_levels
from models.fills import (
    CANCELED,
    ENTRY,
    FILLED,
    HELD,
    LIMIT,
    MARKET,
    STOP,
    STOP_LOSS,
    TAKE_PROFIT,
    WORKING,
    FillCosts,
    OrderBook,
    PaperBook,
    PositionState,
    apply_fill,
    money,
    settle,
    step,
)
from warehouse.db import connect, insert_frame, transaction
from warehouse.paper import paper_broker
from warehouse.trading import record_exit_adjustment

NAN = float("nan")


def book_of(brackets, after=None) -> OrderBook:
    """brackets: (sym, side, qty, take_profit, stop); rows per bracket: entry, take-profit, stop."""
    rows = []
    for g, (sym, side, qty, tp, sl) in enumerate(brackets):
        rows += [
            (sym, side, qty, MARKET, ENTRY, NAN, NAN, g, WORKING),
            (sym, -side, qty, LIMIT, TAKE_PROFIT, tp, NAN, g, HELD),
            (sym, -side, qty, STOP, STOP_LOSS, NAN, sl, g, HELD),
        ]
    cols = list(zip(*rows, strict=True))
    return OrderBook.build(*cols, after=None if after is None else np.repeat(after, 3))


def bar(o, h, lo):
    return np.array([o], float), np.array([h], float), np.array([lo], float)


def run(book, bars, costs=FillCosts()):
    """Step one symbol through [(o, h, l)] bars; returns the StepResults."""
    out = []
    for t, (o, h, lo) in enumerate(bars):
        res = step(book, t, *bar(o, h, lo), costs)
        book.status = res.status
        out.append(res)
    return out


# --- rules ------------------------------------------------------------------------------------------------


def test_market_entry_fills_at_the_next_open_plus_slippage_and_releases_its_legs():
    book = book_of([(0, 1, 10, 102.0, 98.0)], after=[0])
    res = step(book, 0, *bar(100, 101, 99), FillCosts(slippage_bps=10))
    assert len(res.fills) == 0  # the decision bar itself: not after the submission
    res = step(book, 1, *bar(100, 101, 99), FillCosts(slippage_bps=10))
    assert res.fills.tolist() == [0] and res.price[0] == pytest.approx(100.1)
    assert res.status.tolist() == [FILLED, WORKING, WORKING] and res.activated.tolist() == [1, 2]


def test_sell_entry_slippage_is_against_you():
    book = book_of([(0, -1, 10, 98.0, 102.0)])
    res = step(book, 0, *bar(100, 101, 99), FillCosts(slippage_bps=10))
    assert res.price[0] == pytest.approx(99.9)


def test_take_profit_at_its_limit_and_at_the_open_on_a_gap():
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 101, 99.5), (101, 102.5, 100.5)])
    assert r[1].fills.tolist() == [1] and r[1].price.tolist() == [102.0]
    assert book.status.tolist() == [FILLED, FILLED, CANCELED]  # OCO
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 101, 99.5), (103, 104, 102.5)])
    assert r[1].price.tolist() == [103.0]  # gapped beyond the limit: the open, a better price


def test_stop_at_its_stop_and_at_the_open_on_a_gap_with_slippage():
    costs = FillCosts(slippage_bps=10)
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 101, 99.5), (99, 99.5, 97.0)], costs)
    assert r[1].fills.tolist() == [2] and r[1].price[0] == pytest.approx(98.0 * 0.999)
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 101, 99.5), (96, 97, 95)], costs)
    assert r[1].price[0] == pytest.approx(96.0 * 0.999)
    assert book.status.tolist() == [FILLED, CANCELED, FILLED]


def test_both_legs_in_one_bar_the_stop_fills_first():
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 101, 99.5), (100, 103, 97)])
    assert r[1].fills.tolist() == [2] and r[1].price.tolist() == [98.0]
    assert book.status.tolist() == [FILLED, CANCELED, FILLED]
    short = book_of([(0, -1, 10, 98.0, 102.0)])
    r = run(short, [(100, 101, 99.5), (100, 103, 97)])
    assert r[1].fills.tolist() == [2] and r[1].price.tolist() == [102.0]


def test_an_open_beyond_the_take_profit_decides_the_bar():
    # Opens at 103 (beyond TP 102): the take-profit filled at the open before the later dip to 97.
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 101, 99.5), (103, 103.5, 97)])
    assert r[1].fills.tolist() == [1] and r[1].price.tolist() == [103.0]


def test_legs_work_in_the_entry_bar():
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(100, 102.5, 99.5)])
    assert r[0].fills.tolist() == [0, 1]
    book = book_of([(0, 1, 10, 102.0, 98.0)])
    r = run(book, [(97, 99, 96)])  # opens below the stop: in at 97, out at 97
    assert r[0].fills.tolist() == [0, 2] and r[0].price.tolist() == [97.0, 97.0]


def test_symbols_without_a_bar_do_nothing():
    book = book_of([(0, 1, 10, 102.0, 98.0), (1, 1, 5, 51.0, 49.0)])
    res = step(book, 0, np.array([NAN, 50.0]), np.array([NAN, 50.5]), np.array([NAN, 49.5]))
    assert res.fills.tolist() == [3]


def test_settlement_is_exact():
    costs = FillCosts(slippage_bps=0, commission_per_share=0.005, commission_bps=1.0)
    s = settle(1, 10, 100.1, costs)
    assert s.price == Decimal("100.1000")
    assert s.commission == Decimal("0.0500") + Decimal("0.1001")
    assert s.cash_delta == Decimal("-1001.0000") - s.commission
    assert settle(-1, 10, 100.1, costs).cash_delta == Decimal("1001.0000") - s.commission


def test_average_cost_positions():
    p = apply_fill(PositionState(), 1, 10, Decimal("100"))
    p = apply_fill(p, 1, 10, Decimal("110"))
    assert p == PositionState(20, Decimal("105.000000"))
    p = apply_fill(p, -1, 5, Decimal("120"))
    assert p == PositionState(15, Decimal("105.000000"))
    assert apply_fill(p, -1, 20, Decimal("90")) == PositionState(-5, Decimal("90"))
    assert apply_fill(p, -1, 15, Decimal("90")) == PositionState(0, Decimal(0))


# --- properties -------------------------------------------------------------------------------------------


@st.composite
def scenarios(draw):
    n_sym = draw(st.integers(1, 3))
    n_bars = draw(st.integers(1, 12))
    bars = []
    for _ in range(n_bars):
        row = []
        for _ in range(n_sym):
            o = draw(st.floats(80, 120))
            h = o + draw(st.floats(0, 6))
            lo = o - draw(st.floats(0, 6))
            missing = draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans())
            row.append((NAN, NAN, NAN) if missing else (o, h, lo))
        bars.append(row)
    brackets, after = [], []
    for _ in range(draw(st.integers(1, 8))):
        side = draw(st.sampled_from([1, -1]))
        tp_off, sl_off = draw(st.floats(0.5, 8)), draw(st.floats(0.5, 8))
        brackets.append((draw(st.integers(0, n_sym - 1)), side, draw(st.integers(1, 50)),
                         100 + side * tp_off, 100 - side * sl_off))  # fmt: skip
        after.append(draw(st.integers(-1, n_bars - 1)))
    costs = FillCosts(
        draw(st.floats(0, 20)), draw(st.sampled_from([0.0, 0.005, 0.01])), draw(st.floats(0, 5))
    )
    return n_sym, bars, brackets, after, costs


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_properties_of_the_fill_engine(scenario):
    n_sym, bars, brackets, after, costs = scenario
    book = book_of(brackets, after=after)
    cash0 = Decimal("100000")
    paper = PaperBook(book, cash0, costs)
    fills = []
    marks = {s: Decimal(100) for s in range(n_sym)}
    for t, row in enumerate(bars):
        o, h, lo = (np.array([r[k] for r in row]) for k in range(3))
        res, got = paper.advance(t, o, h, lo)
        fills += got
        for f in got:
            if f.role == ENTRY:  # slippage is never in your favour
                assert f.side * (f.settlement.price - money(o[f.sym])) >= 0
            if f.role == TAKE_PROFIT:  # a limit fills at its price or better
                assert f.side * (money(book.limit[f.index]) - f.settlement.price) >= 0
        for s in range(n_sym):
            if not np.isnan(o[s]):
                marks[s] = money(o[s] + (h[s] - lo[s]) / 3)  # any mark inside the bar
        # No negative or oversized quantities, ever.
        assert (book.qty > 0).all()

    status = book.status.reshape(-1, 3)
    # Never both legs of one bracket; legs fill only after their entry.
    assert not ((status[:, 1] == FILLED) & (status[:, 2] == FILLED)).any()
    assert not ((status[:, 0] != FILLED) & ((status[:, 1] == FILLED) | (status[:, 2] == FILLED))).any()
    # Each order fills at most once.
    idx = [f.index for f in fills]
    assert len(idx) == len(set(idx))

    # Positions are the open brackets, signed.
    expect = {s: 0 for s in range(n_sym)}
    for g, (sym, side, qty, _, _) in enumerate(brackets):
        if status[g, 0] == FILLED and FILLED not in status[g, 1:]:
            expect[sym] += side * qty
    assert {s: paper.positions.get(s, PositionState()).qty for s in range(n_sym)} == expect

    # Cash plus position value is conserved net of costs: equity equals the starting cash plus each
    # bracket's own P&L (exit, or the mark while open) minus its commissions, to the cent-of-a-cent.
    by_group: dict[int, list] = {}
    for f in fills:
        by_group.setdefault(f.group, []).append(f)
    pnl = Decimal(0)
    for g, fs in by_group.items():
        sym, side, qty = brackets[g][:3]
        entry = next(f for f in fs if f.index == 3 * g)
        leg = next((f for f in fs if f.index != 3 * g), None)
        exit_px = leg.settlement.price if leg else marks[sym]
        pnl += side * qty * (exit_px - entry.settlement.price) - sum(f.settlement.commission for f in fs)
    assert paper.equity(marks) == cash0 + pnl


# --- scripted scenario through the local broker ---------------------------------------------------------

T0 = pd.Timestamp("2024-01-02 14:30", tz="UTC")
STEP = pd.Timedelta(minutes=5)
SCENARIO_BARS = [  # (open, high, low, close)
    (98.0, 98.6, 97.8, 98.5),  # trend
    (98.5, 99.1, 98.4, 99.0),
    (99.0, 99.6, 98.9, 99.5),
    (99.5, 100.1, 99.4, 100.0),  # 3: decision bar: buy, entry ref 100, ATR 2
    (100.0, 100.8, 99.6, 100.5),  # 4: entries fill at the open + 10 bps = 100.10
    (100.5, 102.3, 100.4, 102.0),  # 5: TP1 (102) fills; stops then move to breakeven
    (102.0, 105.4, 101.8, 105.0),  # 6: TP2 (105) fills
    (104.8, 105.2, 99.9, 100.2),  # 7: the rest is stopped at breakeven 100.10 (- 10 bps)
]


def _write_bars(path, rows, start=0, symbol="HND"):
    frame = pd.DataFrame(
        [
            (symbol, "5m", T0 + STEP * (start + i), o, h, lo, c, 1e4, "test", "scenario", T0)
            for i, (o, h, lo, c) in enumerate(rows)
        ],
        columns=["symbol", "interval", "ts", "open", "high", "low", "close", "volume", "source", "run_id",
                 "ingested_at"],
    )  # fmt: skip
    with transaction(path) as con:
        insert_frame(con, "bars", frame, replace=True)


def test_scripted_scenario_trend_entry_tp1_breakeven_tp2_stop(warehouse_path):
    clock = lambda: pd.Timestamp("2024-01-02 21:00", tz="UTC").to_pydatetime()  # noqa: E731
    broker = paper_broker(warehouse_path, Decimal("100000"), slippage_bps=10, commission_per_share=0.005,
                              interval="5m", clock=clock)  # fmt: skip
    _write_bars(warehouse_path, SCENARIO_BARS[:4])
    decision_ts = T0 + 3 * STEP
    broker.advance_to(decision_ts)

    # Decide at bar 3: the seed's base profile, 30 shares split over TP1/TP2/TP3.
    profile = adaptive_profile(2.0, {}, None, "NORMAL")
    levels = plan_levels(100.0, "buy", profile)
    assert (levels.tp1, levels.tp2, levels.tp3, levels.stop) == (102.0, 105.0, 108.0, 97.0)
    legs = split_quantity(30, [1, 1, 1])
    brackets = [
        Bracket(
            "HND",
            "buy",
            qty,
            100.0,
            levels.take_profits[leg - 1],
            levels.stop,
            client_order_id("scenario", "HND", decision_ts, leg),
        )  # fmt: skip
        for leg, qty in legs
    ]
    entries = [submit_idempotent(broker, b) for b in brackets]
    assert all(s.created for s in entries)
    # Re-running the same bar sends nothing new.
    again = [submit_idempotent(broker, b) for b in brackets]
    assert [s.created for s in again] == [False] * 3
    assert [s.order.id for s in again] == [s.order.id for s in entries]

    _write_bars(warehouse_path, SCENARIO_BARS[4:], start=4)
    r4 = broker.advance_to(T0 + 4 * STEP)
    assert [(f.role, f.qty, f.price, f.commission) for f in r4.fills] == [
        (OrderRole.entry, 10, Decimal("100.1000"), Decimal("0.0500"))
    ] * 3
    r5 = broker.advance_to(T0 + 5 * STEP)
    assert [(f.client_order_id, f.role, f.price) for f in r5.fills] == [
        (brackets[0].child_client_order_ids["take_profit"], OrderRole.take_profit, Decimal("102.0000"))
    ]

    # TP1 filled: move the remaining legs' stops to breakeven (the entry's fill price).
    open_brackets = broker.get_orders("open")
    assert [o.client_order_id for o in open_brackets] == [b.client_order_id for b in brackets[1:]]
    for o in open_brackets:
        sl = o.stop_loss
        upd = breakeven_after_tp1(float(o.filled_avg_price), float(sl.stop_price), "buy")
        new = broker.replace_stop(sl.id, upd.new_stop)
        assert new.stop_price == Decimal("100.10") and new.replaces == sl.id
        assert record_exit_adjustment(
            warehouse_path, broker="local", ts=T0 + 5 * STEP, symbol="HND", client_order_id=o.client_order_id,
            replaced_order_id=sl.id, new_order_id=new.id, old_stop=sl.stop_price, new_stop=new.stop_price,
            rule=upd.rule, reason=upd.reason, recorded_at=clock(),
        )  # fmt: skip
        assert broker.get_order(sl.id).status is OrderStatus.replaced

    r6 = broker.advance_to(T0 + 6 * STEP)
    assert [(f.role, f.price) for f in r6.fills] == [(OrderRole.take_profit, Decimal("105.0000"))]
    r7 = broker.advance_to(T0 + 7 * STEP)
    assert [(f.role, f.qty, f.price, f.commission) for f in r7.fills] == [
        (OrderRole.stop_loss, 10, Decimal("99.9999"), Decimal("0.0500"))
    ]

    # Everything is flat and the ledger is exact:
    # -3 x (1001.00 + 0.05) + (1020.00 - 0.05) + (1050.00 - 0.05) + (999.999 - 0.05)
    assert broker.positions() == []
    acct = broker.account()
    assert acct.cash == acct.equity == Decimal("100066.6990")
    assert broker.get_orders("open") == []
    closed = {o.client_order_id: o for o in broker.get_orders("closed")}
    assert closed[brackets[0].client_order_id].take_profit.status is OrderStatus.filled
    assert closed[brackets[0].client_order_id].stop_loss.status is OrderStatus.canceled
    assert closed[brackets[1].client_order_id].take_profit.status is OrderStatus.filled
    assert closed[brackets[1].client_order_id].stop_loss.status is OrderStatus.canceled
    assert closed[brackets[2].client_order_id].stop_loss.status is OrderStatus.filled
    assert closed[brackets[2].client_order_id].stop_loss.replaces is not None

    # Persisted: fills, the ledger and the two stop adjustments with the orders they replaced.
    assert [(f.ts, f.role.value, f.price) for f in broker.fills()] == [
        *[(T0 + 4 * STEP, "entry", Decimal("100.1000"))] * 3,
        (T0 + 5 * STEP, "take_profit", Decimal("102.0000")),
        (T0 + 6 * STEP, "take_profit", Decimal("105.0000")),
        (T0 + 7 * STEP, "stop_loss", Decimal("99.9999")),
    ]
    with connect(warehouse_path, read_only=True) as con:
        adj = con.execute(
            "SELECT symbol, old_stop, new_stop, rule FROM exit_adjustments ORDER BY new_order_id"
        ).fetchall()
        ledger = con.execute(
            "SELECT kind, count(*), sum(amount) FROM paper_cash_ledger GROUP BY kind ORDER BY kind"
        ).fetchall()
    assert adj == [("HND", Decimal("97.0000"), Decimal("100.1000"), "breakeven_after_tp1")] * 2
    assert ledger == [
        ("commission", 6, Decimal("-0.3000")),
        ("deposit", 1, Decimal("100000.0000")),
        ("trade", 6, Decimal("66.9990")),
    ]
