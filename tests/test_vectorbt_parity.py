"""Parity of the local fill engine with vectorbt's ``Portfolio.from_signals`` (fixed stop-loss / take-profit).

``models.fixed_brackets.replay`` runs signals through the live broker's fill engine; ``vectorbt_inputs``
maps the same work onto vectorbt 1.2.0. Two vectorbt runs are compared:

- **daily**: one row per bar, the usual set-up. vectorbt executes one order per bar and checks stops only
  from the bar after the entry, so it cannot exit in the entry's own bar, and it checks the stop before
  looking at whether the open already decided a gap;
- **split**: each bar as two rows, (open) then (bar). That lets vectorbt do what the live rules do, and
  leaves only the documented differences.

Tolerance: prices within 1e-4 (the ledger rounds fills to 0.0001; vectorbt does not), pnl and commission
within 2e-4 per share; exit bar and exit reason exact. The levels reach vectorbt to the last bit, so a bar
that touches a level exactly triggers it in both. Every other mismatch must be one of the known
differences (``docs/backtest.md``):

1. ``same_bar_exit``: ours exits in the entry's bar, vectorbt (daily) cannot;
2. ``gap_beyond_take_profit``: a bar opens beyond the take-profit and its range also reaches the stop:
   ours takes the take-profit at the open, vectorbt (daily) the stop; with split rows only on the entry
   bar (``entry_bar_gap``);
3. ``take_profit_slippage``: the take-profit is a limit (no slippage) here, vectorbt applies one
   ``stop_exit_price`` to both stops;
4. a missing bar after the signal: ours waits for the next bar's open, vectorbt fills at the previous
   close (only in an explicit case: the synthetic bars have no holes).

A trade after a timing difference on the same symbol can differ too (the position was open on one side
and not the other); those are counted as a ``cascade`` until both sides take the same trade again.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from models.brackets import Bracket, InvalidBracket, client_order_id, tick_for
from models.fills import FillCosts, money, settle
from models.fixed_brackets import (
    WideBars,
    bracket_levels,
    classify_differences,
    compare_trades,
    random_walk_bars,
    replay,
    settle_many,
    trades_from_vectorbt,
    vectorbt_inputs,
)

vbt = pytest.importorskip("vectorbt")

PRICE_TOL = 1e-4
STOP_PCT, TP_PCT, QTY = 0.03, 0.05, 10
COSTS = FillCosts(slippage_bps=5.0, commission_per_share=0.005, commission_bps=1.0)
T0 = pd.Timestamp("2020-01-02", tz="UTC")


def gbm_bars(n_bars: int, n_sym: int, seed: int) -> WideBars:
    return random_walk_bars(n_bars, n_sym, seed, start=T0, freq="D", price_range=(5.0, 400.0), gap_scale=0.5)


def random_signals(shape: tuple[int, int], rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    on = rng.random(shape) < rate
    return np.where(on, np.where(rng.random(shape) < 0.5, 1, -1), 0).astype(np.int8)


@pytest.fixture(scope="module")
def run_vbt():
    """vectorbt runner; the first call compiles its numba kernels (~10 s), done once here."""

    def run(bars, sig, *, split=False, **kw):
        inputs = vectorbt_inputs(bars, sig, split_open=split, **kw)
        pf = vbt.Portfolio.from_signals(**inputs)
        return trades_from_vectorbt(pf.exit_trades.records, bars, inputs)

    kw = dict(stop_pct=STOP_PCT, take_profit_pct=TP_PCT, qty=QTY, costs=COSTS)
    for n_sym in (2, 1):  # one column compiles its own specialisation
        run(gbm_bars(20, n_sym, 0), random_signals((20, n_sym), 0.3, 0), **kw)
    return run


@pytest.fixture(scope="module")
def market():
    bars = gbm_bars(500, 40, seed=11)
    return bars, random_signals((500, 40), 0.03, seed=12)


def _trades(bars, sig, costs=FillCosts(), tick=0.01, **kw):
    args = dict(stop_pct=STOP_PCT, take_profit_pct=TP_PCT, qty=QTY, costs=costs, tick=tick)
    args.update(kw)
    return replay(bars, sig, **args), args


# --- random market ----------------------------------------------------------------------------------


def test_split_rows_reproduce_every_trade_without_costs(market, run_vbt):
    bars, sig = market
    ours, args = _trades(bars, sig)
    m = compare_trades(ours, run_vbt(bars, sig, split=True, **args), PRICE_TOL)
    labels = classify_differences(m, bars, 0.0)
    assert len(ours) > 300 and ours.attrs["skipped"]["busy"] > 0
    assert (ours["exit_ts"] == ours["entry_ts"]).sum() > 20  # same-bar exits occur and still match
    assert set(labels) <= {"match", "entry_bar_gap", "cascade"}, labels.value_counts().to_dict()
    assert (labels == "match").mean() >= 0.99


def test_split_rows_with_costs_differ_only_by_take_profit_slippage(market, run_vbt):
    bars, sig = market
    ours, args = _trades(bars, sig, costs=COSTS)
    m = compare_trades(ours, run_vbt(bars, sig, split=True, **args), PRICE_TOL)
    labels = classify_differences(m, bars, COSTS.slippage_bps / 1e4)
    counts = labels.value_counts().to_dict()
    assert set(counts) <= {"match", "take_profit_slippage", "entry_bar_gap", "cascade"}, counts
    tp_exits = m["exit_reason"].eq("take_profit") & m["exit_reason_vbt"].eq("take_profit")
    assert (labels[tp_exits] == "take_profit_slippage").all()
    assert (labels[m["exit_reason"].eq("stop_loss")] == "match").all()  # stops: same price, slippage incl.


@pytest.mark.parametrize("costs", [FillCosts(), COSTS], ids=["no_costs", "costs"])
def test_daily_rows_differ_only_by_the_known_differences(market, run_vbt, costs):
    bars, sig = market
    ours, args = _trades(bars, sig, costs=costs)
    m = compare_trades(ours, run_vbt(bars, sig, **args), PRICE_TOL)
    labels = classify_differences(m, bars, costs.slippage_bps / 1e4)
    counts = labels.value_counts().to_dict()
    assert counts.get("unexplained", 0) == 0, m[labels == "unexplained"].head().to_string()
    assert counts["same_bar_exit"] > 20
    assert counts["gap_beyond_take_profit"] >= 1
    assert counts.get("cascade", 0) < counts["same_bar_exit"]
    if costs == FillCosts():
        assert counts["match"] / len(m) > 0.75


@pytest.mark.parametrize("tick", [0.01, None])
def test_vectorbt_gets_our_levels_to_the_last_bit(market, tick):
    """vectorbt computes a stop as reference x (1 -/+ fraction): the inputs make that our level exactly."""
    bars, sig = market
    inputs = vectorbt_inputs(bars, sig, stop_pct=STOP_PCT, take_profit_pct=TP_PCT, qty=QTY, tick=tick)
    t, s = np.nonzero(inputs["entries"] | inputs["short_entries"])
    side = np.where(inputs["entries"][t, s], 1.0, -1.0)
    p, sl, tp = inputs["val_price"][t, s], inputs["sl_stop"][t, s], inputs["tp_stop"][t, s]
    # vectorbt's get_stop_price_nb: below the reference x (1 - stop), above it x (1 + stop)
    vbt_sl = np.where(side > 0, p * (1 - sl), p * (1 + sl))
    vbt_tp = np.where(side > 0, p * (1 + tp), p * (1 - tp))
    lv = bracket_levels(bars.close, sig, STOP_PCT, TP_PCT, tick)
    at = {c: k for k, c in enumerate(lv.cells.tolist())}
    k = np.array([at[(ti - 1) * bars.open.shape[1] + si] for ti, si in zip(t, s, strict=True)])
    assert (sl >= 0).all() and (tp >= 0).all()
    assert (vbt_sl == lv.stop[k]).all()
    assert (vbt_tp == lv.take_profit[k]).all()


def test_prices_on_a_cent_grid_ties_at_a_level_trigger_in_both(run_vbt):
    """Bars in whole cents touch a cent-rounded level exactly, often; both engines must agree on it.

    (With levels passed as the signal close x (1 -/+ pct) instead, a few of these ties flip in vectorbt.)
    """
    raw = gbm_bars(500, 40, seed=13)
    cents = [np.round(getattr(raw, c) / 5, 2) for c in ("open", "high", "low", "close")]  # $1-$80
    bars = WideBars.build(raw.ts, raw.symbols, *cents)
    sig = random_signals((500, 40), 0.03, seed=14)
    ours, args = _trades(bars, sig)
    touched = 0
    for r in ours.itertuples():
        t, s = bars.ts.get_loc(r.exit_ts), int(np.flatnonzero(bars.symbols == r.symbol)[0])
        level = r.stop_price if r.exit_reason == "stop_loss" else r.take_profit_price
        touched += level in (bars.low[t, s], bars.high[t, s])
    assert touched > 40
    m = compare_trades(ours, run_vbt(bars, sig, split=True, **args), PRICE_TOL)
    assert set(classify_differences(m, bars)) <= {"match", "entry_bar_gap"}


def test_a_different_take_profit_breaks_parity(market, run_vbt):
    """The comparison can fail: vectorbt run with another take-profit no longer matches."""
    bars, sig = market
    ours, args = _trades(bars, sig)
    other = run_vbt(bars, sig, split=True, **{**args, "take_profit_pct": TP_PCT * 1.2})
    m = compare_trades(ours, other, PRICE_TOL)
    assert m["match"].mean() < 0.8
    assert (classify_differences(m, bars, 0.0) == "unexplained").any()


# --- explicit cases: one symbol, a buy signal on bar 0 (close 100), stop 95, take-profit 105 -------


def one_symbol(rows: list[tuple[float, float, float, float]]) -> WideBars:
    a = np.array(rows, dtype=float)
    ts = pd.date_range(T0, periods=len(rows), freq="D")
    return WideBars.build(ts, ["AAA"], *(a[:, [k]] for k in range(4)))


QUIET = (100.0, 100.5, 99.5, 100.0)


def case(rows, signals=((0, 1),), costs=FillCosts(), run_vbt=None):
    bars = one_symbol(rows)
    sig = np.zeros((len(rows), 1), dtype=np.int8)
    for t, s in signals:
        sig[t, 0] = s
    args = dict(stop_pct=0.05, take_profit_pct=0.05, qty=QTY, costs=costs, tick=0.01)
    ours = replay(bars, sig, **args)
    day = run_vbt(bars, sig, **args)
    split = run_vbt(bars, sig, split=True, **args)
    return ours, day, split


def _exit(frame, k=0):
    r = frame.iloc[k]
    return (r["exit_ts"] - T0).days, r["exit_reason"], round(float(r["exit_price"]), 4)


def test_same_bar_exit_only_live_and_split(run_vbt):
    """Known difference 1: the entry bar's low reaches the stop. Live exits that bar; vectorbt cannot."""
    ours, day, split = case([QUIET, (100, 101, 94, 96), (96, 97, 93, 94)], run_vbt=run_vbt)
    assert _exit(ours) == (1, "stop_loss", 95.0)
    assert _exit(day) == (2, "stop_loss", 95.0)  # checked from the next bar only
    assert _exit(split) == (1, "stop_loss", 95.0)
    ours, day, _ = case([QUIET, (100, 101, 94, 96)], run_vbt=run_vbt)  # the entry bar is the last bar
    assert _exit(ours) == (1, "stop_loss", 95.0)
    assert _exit(day) == (1, "open_at_end", 96.0)
    m = compare_trades(ours, day, PRICE_TOL)
    assert classify_differences(m, one_symbol([QUIET, (100, 101, 94, 96)])).tolist() == ["same_bar_exit"]


def test_both_levels_in_one_bar_stop_first_in_both(run_vbt):
    """Not a difference: with the open between the levels, both engines take the stop."""
    ours, day, split = case([QUIET, QUIET, (100, 106, 94, 100)], run_vbt=run_vbt)
    assert _exit(ours) == _exit(day) == _exit(split) == (2, "stop_loss", 95.0)


def test_gap_through_the_stop_fills_at_the_open_in_both(run_vbt):
    ours, day, split = case([QUIET, QUIET, (93, 94, 92, 93)], run_vbt=run_vbt)
    assert _exit(ours) == _exit(day) == _exit(split) == (2, "stop_loss", 93.0)


def test_gap_through_the_take_profit_fills_at_the_open_in_both(run_vbt):
    ours, day, split = case([QUIET, QUIET, (107, 108, 106.5, 107)], run_vbt=run_vbt)
    assert _exit(ours) == _exit(day) == _exit(split) == (2, "take_profit", 107.0)


def test_open_beyond_take_profit_then_range_to_the_stop(run_vbt):
    """Known difference 2: the open (107) is past the take-profit and the bar then falls to the stop.

    Live: the open decides, take-profit at 107. vectorbt checks the stop first whatever the open: 95.
    With split rows the open is a bar of its own, so vectorbt takes 107 too.
    """
    ours, day, split = case([QUIET, QUIET, (107, 108, 94, 95)], run_vbt=run_vbt)
    assert _exit(ours) == (2, "take_profit", 107.0)
    assert _exit(day) == (2, "stop_loss", 95.0)
    assert _exit(split) == (2, "take_profit", 107.0)


def test_entry_bar_opens_beyond_take_profit_then_reaches_the_stop(run_vbt):
    """Known difference 2 on the entry bar: split rows cannot help (the entry takes the open row)."""
    ours, day, split = case([QUIET, (106, 107, 94, 95), QUIET], run_vbt=run_vbt)
    assert ours.iloc[0]["entry_price"] == 106.0
    assert _exit(ours) == (1, "take_profit", 106.0)  # in at the open, out at the open: a zero-length trade
    assert _exit(split) == (1, "stop_loss", 95.0)
    assert _exit(day) == (2, "open_at_end", 100.0)  # no stop checked on bar 1; bar 2 reaches neither


def test_take_profit_slippage(run_vbt):
    """Known difference 3: slippage on the take-profit. Live: a limit, no slippage; vectorbt: slipped."""
    costs = FillCosts(slippage_bps=10.0)
    ours, day, split = case([QUIET, QUIET, (101, 106, 100.5, 105)], costs=costs, run_vbt=run_vbt)
    assert ours.iloc[0]["entry_price"] == pytest.approx(100.1, abs=1e-9)  # QUIET's open + 10 bps
    assert day.iloc[0]["entry_price"] == pytest.approx(100.1)
    assert _exit(ours) == (2, "take_profit", 105.0)
    assert day.iloc[0]["exit_price"] == pytest.approx(105 * 0.999)
    ours, day, _ = case([QUIET, QUIET, (101, 101.5, 94, 95)], costs=costs, run_vbt=run_vbt)
    assert _exit(ours) == (2, "stop_loss", 94.905)  # the stop is a market order: slipped in both
    assert day.iloc[0]["exit_price"] == pytest.approx(94.905)


def test_missing_bar_after_the_signal(run_vbt):
    """Known difference 4: no bar after the signal. Live waits for the next open; vectorbt fills at the
    previous close on the missing row."""
    nan = (np.nan,) * 4
    ours, day, _ = case([QUIET, nan, (101, 102, 100, 101), QUIET], run_vbt=run_vbt)
    assert ((ours.iloc[0]["entry_ts"] - T0).days, ours.iloc[0]["entry_price"]) == (2, 101.0)
    assert ((day.iloc[0]["entry_ts"] - T0).days, day.iloc[0]["entry_price"]) == (1, 100.0)


def test_signals_while_busy_are_ignored_in_both(run_vbt):
    """A second buy and an opposite sell while the first position is open: both ignored."""
    rows = [QUIET, QUIET, QUIET, (100, 106, 99.8, 105), QUIET]
    ours, day, split = case(rows, signals=((0, 1), (1, -1), (2, 1)), run_vbt=run_vbt)
    assert len(ours) == len(day) == len(split) == 1
    assert ours.attrs["skipped"]["busy"] == 2
    assert _exit(ours) == _exit(day) == (3, "take_profit", 105.0)


def test_open_at_end_is_marked_at_the_last_close(run_vbt):
    ours, day, _ = case([QUIET, QUIET, (100, 101, 99, 100.7)], run_vbt=run_vbt)
    assert _exit(ours) == _exit(day) == (2, "open_at_end", 100.7)
    assert ours.iloc[0]["pnl"] == pytest.approx(day.iloc[0]["pnl"]) == pytest.approx(7.0)


def test_a_short_mirrors(run_vbt):
    ours, day, split = case([QUIET, (100, 106, 99, 104), QUIET], signals=((0, -1),), run_vbt=run_vbt)
    assert (ours.iloc[0]["side"], _exit(ours)) == ("sell", (1, "stop_loss", 105.0))
    assert _exit(split) == (1, "stop_loss", 105.0)
    assert _exit(day) == (2, "open_at_end", 100.0)


# --- faithful to the live code -------------------------------------------------------------------


def test_levels_equal_the_live_brackets_edge_prices():
    """Levels, and which brackets are refused, as ``Bracket`` and the local broker's check do it."""
    rng = np.random.default_rng(3)
    close = np.exp(rng.uniform(np.log(0.05), np.log(900), (600, 1)))
    close[:6, 0] = [100.0, 1.0, 99.99, 0.5, 20.05, 0.999]  # grid points and the $1 tick boundary
    sig = np.where(rng.random((600, 1)) < 0.5, 1, -1).astype(np.int8)
    lv = bracket_levels(close, sig, 0.03, 0.05, 0.01)
    refused = 0
    for k, (tp, sl, ok) in enumerate(zip(lv.take_profit, lv.stop, lv.ok, strict=True)):
        side = "buy" if sig[k, 0] > 0 else "sell"
        s = 1 if side == "buy" else -1
        ref = float(close[k, 0])
        try:
            b = Bracket("AAA", side, 1, ref, ref * (1 + s * 0.05), ref * (1 - s * 0.03), "x")
        except InvalidBracket:
            assert not ok, ref
            refused += 1
            continue
        live_tp, live_sl = b.edge_prices()
        base = money(ref)
        tick = Decimal(str(tick_for(float(base))))
        accepted = s * (live_tp - base) >= tick and s * (base - live_sl) >= tick and live_sl > 0
        assert ok == accepted, ref
        assert (tp, sl) == (float(live_tp), float(live_sl)), (ref, side)
    assert 0 < refused < len(close) // 2


def test_vectorised_settlement_equals_settle():
    rng = np.random.default_rng(5)
    raw = np.concatenate(
        [rng.uniform(0.5, 900, 2000), [1.00015, 2.00025, 105.00005, 33.33335, 0.12345, 100.0]]
    )
    side = np.where(rng.random(len(raw)) < 0.5, 1, -1)
    for costs in (FillCosts(), COSTS, FillCosts(commission_bps=2.5, commission_per_share=0.0035)):
        price, commission = settle_many(side, 7, raw, costs)
        for i in range(len(raw)):
            st = settle(int(side[i]), 7, float(raw[i]), costs)
            assert (price[i], commission[i]) == (float(st.price), float(st.commission)), raw[i]


def test_replay_equals_the_local_paper_broker(warehouse_path):
    """The same signals through ``LocalPaperBroker`` (DuckDB, bar by bar) give the same fills."""
    from tests.brokers.conftest import write_bars
    from warehouse.paper import paper_broker

    bars = gbm_bars(40, 2, seed=21)
    sig = random_signals((40, 2), 0.15, seed=22)
    costs = FillCosts(slippage_bps=5.0, commission_per_share=0.005, commission_bps=1.0)
    ours = replay(bars, sig, stop_pct=0.02, take_profit_pct=0.03, qty=QTY, costs=costs)
    rows = [
        (bars.symbols[s], bars.ts[t], bars.open[t, s], bars.high[t, s], bars.low[t, s], bars.close[t, s])
        for t in range(len(bars.ts))
        for s in range(2)
    ]
    write_bars(warehouse_path, rows, interval="1d")
    broker = paper_broker(warehouse_path, Decimal("1e7"), 5.0, 0.005, 1.0, interval="1d")
    busy: dict[str, str] = {}
    for t, ts in enumerate(bars.ts):
        for f in broker.advance_to(ts).fills:
            if f.role.value != "entry":
                busy.pop(f.symbol, None)
        lv = bracket_levels(bars.close[[t]], sig[[t]], 0.02, 0.03, None)
        for cell, tp, sl in zip(lv.cells, lv.take_profit, lv.stop, strict=True):
            sym = bars.symbols[cell]
            if sym in busy:
                continue
            side = "buy" if sig[t, cell] > 0 else "sell"
            cid = client_order_id("parity", sym, ts, 1)
            broker.submit_bracket(Bracket(sym, side, QTY, float(bars.close[t, cell]), tp, sl, cid))
            busy[sym] = cid
    fills = broker.fills()
    entries = [f for f in fills if f.role.value == "entry"]
    exits = {f.client_order_id.rsplit(".", 1)[0]: f for f in fills if f.role.value != "entry"}
    assert len(entries) == len(ours) >= 4
    for f, (_, r) in zip(sorted(entries, key=lambda f: (f.ts, f.symbol)), ours.iterrows(), strict=True):
        assert (f.symbol, f.ts, f.price) == (r["symbol"], r["entry_ts"], Decimal(str(r["entry_price"])))
        x = exits.get(f.client_order_id)
        if x is None:
            assert r["exit_reason"] == "open_at_end"
            continue
        assert (x.ts, x.role.value, x.price) == (
            r["exit_ts"],
            r["exit_reason"],
            Decimal(str(r["exit_price"])),
        )
        assert float(f.commission + x.commission) == pytest.approx(r["commission"], abs=1e-9)


def test_long_frames_give_the_same_trades_as_wide_arrays(market):
    bars, sig = market
    ours, args = _trades(bars, sig)
    t, s = np.nonzero(sig)
    entries = pd.DataFrame(
        {
            "symbol": bars.symbols[s],
            "ts": bars.ts[t],
            "side": np.where(sig[t, s] > 0, "buy", "sell"),
        }
    )
    n_t, n_sym = bars.open.shape
    long = pd.DataFrame(
        {
            "symbol": np.tile(bars.symbols, n_t),
            "ts": np.repeat(bars.ts, n_sym),
            **{c: getattr(bars, c).ravel() for c in ("open", "high", "low", "close")},
        }
    ).sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(replay(long, entries, **args), ours)


def test_bad_signals_are_refused(market):
    bars, _ = market
    one = pd.DataFrame({"symbol": ["S00"], "ts": [bars.ts[3]], "side": ["buy"]})
    with pytest.raises(ValueError, match="more than one signal"):
        replay(bars, pd.concat([one, one]), stop_pct=0.03, take_profit_pct=0.05, qty=1)
    with pytest.raises(ValueError, match="has no bar"):
        replay(bars, one.assign(symbol="NOPE"), stop_pct=0.03, take_profit_pct=0.05, qty=1)
    with pytest.raises(ValueError, match="side must be"):
        replay(bars, one.assign(side="hold"), stop_pct=0.03, take_profit_pct=0.05, qty=1)
    with pytest.raises(ValueError, match="qty"):
        replay(bars, one, stop_pct=0.03, take_profit_pct=0.05, qty=0)
