"""The backtest flow on the synthetic market: the live decision code replayed in simulated time.

One replay (static, adaptive and the user's own entries) on a warehouse whose bars after ``MID`` were
changed, and one that stops at ``MID`` on the original: every decision and fill up to ``MID`` must be the
same (no look-ahead), and the recorded results must agree with the mode's own scratch warehouse.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.backtest import backtest
from tests.flows.conftest import data_dir, fresh_copy
from warehouse.db import query_df, transaction

SYMBOLS = ["S000", "S001", "S002", "S003", "S004", "S005"]
# Lets the near-chance synthetic modules pass the confidence and consensus filters, so the replay has orders
# to fill; the health gate keeps its defaults (seed 80/70 until learned): on this calm market it must not block.
POLICY = {"trade_filter": {"min_confidence": 0.5, "allowed_consensus": ["UNANIMOUS", "STRONG", "WEAK"]}}
OVERRIDES = {"backtest": {"policy": POLICY, "retrain_every_bars_daily": 10}}
# The shorter run also sweeps TP1: the default (1.0 ATR) and twice it, beside its plain adaptive mode.
SWEEP = {"exits.tp1_atr": [1.0, 2.0]}


@pytest.fixture(scope="module")
def replays(market_warehouse, tmp_path_factory, prefect_harness):
    times = query_df(market_warehouse, "SELECT DISTINCT ts FROM bars ORDER BY ts")["ts"]
    start, mid, end = (pd.Timestamp(times.iloc[i]).tz_convert("UTC") for i in (760, 772, 784))
    folder = tmp_path_factory.mktemp("backtest")
    changed, data = fresh_copy(market_warehouse, folder / "changed")
    with transaction(changed) as con:  # the future moves: +25% on every price after MID
        con.execute(
            "UPDATE bars SET open = open * 1.25, high = high * 1.25, low = low * 1.25, close = close * 1.25 "
            "WHERE ts > ?",
            [mid],
        )
    signals = folder / "entries.csv"
    pd.DataFrame({"symbol": ["S001", "S002", "S001"], "ts": [times.iloc[761], times.iloc[763], times.iloc[775]],
                  "side": ["buy", "sell", "buy"]}).to_csv(signals, index=False)  # fmt: skip
    with data_dir(data):
        full = backtest(start=str(start), end=str(end), symbols=SYMBOLS, modes=["static", "adaptive"],
                        signals=str(signals), warehouse=str(changed), overrides=OVERRIDES)  # fmt: skip
    original, data2 = fresh_copy(market_warehouse, folder / "original")
    with data_dir(data2):
        upto = backtest(start=str(start), end=str(mid), symbols=SYMBOLS, modes=["adaptive"], sweep=SWEEP,
                        warehouse=str(original), overrides=OVERRIDES, report=False)  # fmt: skip
    return {"full": full, "upto": upto, "changed": changed, "original": original, "mid": mid, "start": start,
            "end": end}  # fmt: skip


def _scratch(result, mode):
    return f"{result['scratch']}/{mode}.duckdb"


def test_results_are_recorded_per_mode(replays):
    full, db = replays["full"], replays["changed"]
    runs = query_df(db, "SELECT * FROM backtest_runs WHERE run_id = ? ORDER BY mode", [full["run_id"]])
    assert sorted(runs["mode"]) == ["adaptive", "signals", "static"]
    assert (runs["bars"] == 25).all() and (runs["symbols"] == 6).all()
    assert full["model_runs"]["retrain"] == 3 and full["model_runs"]["health"] == 25
    for r in runs.itertuples():
        trades = query_df(
            db, "SELECT * FROM backtest_trades WHERE run_id = ? AND mode = ?", [full["run_id"], r.mode]
        )
        own = query_df(_scratch(full, r.mode), "SELECT * FROM v_trades")
        assert len(trades) == r.trades == len(own)
        assert trades["pnl"].sum() == pytest.approx(float(own["pnl"].astype(float).sum()))
        eq = query_df(db, "SELECT * FROM backtest_equity WHERE run_id = ? AND mode = ? ORDER BY ts",
                      [full["run_id"], r.mode])  # fmt: skip
        assert len(eq) == 25 and eq["equity"].iloc[-1] == pytest.approx(r.final_equity)
        assert (eq["drawdown"] <= 0).all() and eq["drawdown"].min() == pytest.approx(r.max_drawdown)
    static = runs.set_index("mode").loc["static"]
    assert static.trades > 0, "the replay should trade under the open policy"
    assert static.commission > 0  # costs are in


def test_the_run_record_has_seconds_per_stage(replays):
    full, db = replays["full"], replays["changed"]
    stages = query_df(db, "SELECT stage, seconds FROM backtest_stage_timings WHERE run_id = ? ORDER BY position",
                      [full["run_id"]])  # fmt: skip
    assert list(stages["stage"]) == ["load", "retrains", "model timeline", "replay static", "replay adaptive",
                                     "replay signals", "write", "total"]  # fmt: skip
    s = dict(zip(stages["stage"], stages["seconds"], strict=True))
    assert all(v >= 0 for v in s.values()) and s["retrains"] > 0
    # the timeline's two parts are its time; the stages run one after another (modes side by side)
    assert s["retrains"] + s["model timeline"] == pytest.approx(full["timeline_seconds"], abs=0.1)
    assert s["load"] + s["retrains"] + s["model timeline"] + s["write"] <= s["total"]


def test_static_uses_the_old_exit_profile_and_adaptive_the_health_of_its_bar(replays):
    full = replays["full"]
    static = query_df(_scratch(full, "static"), "SELECT exit_profile FROM decisions WHERE accepted")
    assert len(static) and static["exit_profile"].str.startswith("Fixed TP/SL").all()
    adaptive = query_df(_scratch(full, "adaptive"), "SELECT ts, health_ts, exit_profile FROM decisions")
    assert (adaptive["health_ts"] == adaptive["ts"]).all()  # health recomputed at every simulated bar
    accepted = query_df(_scratch(full, "adaptive"), "SELECT exit_profile FROM decisions WHERE accepted")
    assert accepted["exit_profile"].str.startswith("Adaptive TP/SL").all()


def test_signals_mode_trades_only_the_users_entries(replays):
    full = replays["full"]
    d = query_df(
        _scratch(full, "signals"), "SELECT symbol, ts, side, consensus, accepted FROM decisions ORDER BY ts"
    )
    assert d[["symbol", "side"]].values.tolist() == [["S001", "buy"], ["S002", "sell"], ["S001", "buy"]]
    assert (d["consensus"] == "EXTERNAL").all() and d["accepted"].iloc[0]


def test_no_look_ahead(replays):
    """Decisions and fills up to MID are the same whether the replay went on into a changed future or not."""
    mid = replays["mid"]
    cols = "symbol, ts, side, accepted, reason_code, qty, stop_price, tp1_price, confidence_calibrated, overall_health"
    sql = f"SELECT {cols} FROM decisions WHERE ts <= ? ORDER BY ts, symbol"
    a = query_df(_scratch(replays["full"], "adaptive"), sql, [mid])
    b = query_df(_scratch(replays["upto"], "adaptive"), sql, [mid])
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    fills = (
        "SELECT symbol, role, qty, price, ts FROM broker_fills WHERE ts <= ? ORDER BY ts, symbol, role, qty"
    )
    pd.testing.assert_frame_equal(
        query_df(_scratch(replays["full"], "adaptive"), fills, [mid]),
        query_df(_scratch(replays["upto"], "adaptive"), fills, [mid]),
    )
    # ...and the future did change: the changed prices are what the later fills saw.
    after = query_df(
        _scratch(replays["full"], "adaptive"), "SELECT count(*) AS n FROM decisions WHERE ts > ?", [mid]
    )
    assert after["n"].iloc[0] > 0


def test_report_files(replays):
    html, png = replays["full"]["report"]
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(html, encoding="utf-8").read()
    assert "adaptive" in text and "static" in text


def test_bad_signals_file_fails_before_replaying(market_warehouse, tmp_path, prefect_harness):
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,ts,side\nNOPE,2026-01-05,buy\n")
    state = backtest(signals=str(bad), warehouse=str(market_warehouse), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="unknown symbol"):
        state.result()


def test_health_gate_blocks_are_counted_per_mode(replays):
    """Each mode's row says how many candidates the health gate blocked (any of its rules failed) and how
    many it alone kept out, per rule with the component that drove the scores down; the numbers are the
    mode's own decisions'."""
    from models.trade_filter import HEALTH_RULES, gate_block_counts
    from tasks.backtest import table_markdown

    full, db = replays["full"], replays["changed"]
    runs = query_df(db, "SELECT * FROM backtest_runs WHERE run_id = ? ORDER BY mode", [full["run_id"]])
    for r in runs.itertuples():
        decisions = query_df(_scratch(full, r.mode), "SELECT reason_code, failed, details FROM decisions")
        counts = gate_block_counts(decisions).set_index("rule")
        gated = (
            decisions["failed"].fillna("").map(lambda f: any(rule in f.split(",") for rule in HEALTH_RULES))
        )
        assert r.health_blocked == int(gated.sum())
        assert r.health_blocked_only == int(counts["only"].sum())
        assert {b["rule"]: b["any"] for b in json.loads(r.gate_blocks)} == counts["any"].to_dict()
    adaptive = runs.set_index("mode").loc["adaptive"]
    assert adaptive.trades > 0 and adaptive.health_blocked == 0, (
        "a calm market: the default gate lets it trade"
    )
    md = table_markdown(runs, full["run_id"], None)
    assert "Gate blocks" in md and "health gate" in md


def test_a_sweep_replays_the_mode_at_each_point_of_the_grid(replays):
    """Sweep variants share the run's model timeline: at the default value a variant is its mode trade for
    trade; at twice TP1 the same first decision's TP1 lies twice as far from its entry reference."""
    upto = replays["upto"]
    same, wide = "adaptive[exits.tp1_atr=1.0]", "adaptive[exits.tp1_atr=2.0]"
    assert upto["modes"] == ["adaptive", same, wide]
    assert upto["model_runs"]["retrain"] == 2  # one timeline for the three replays
    db = replays["original"]
    runs = query_df(db, "SELECT mode, overrides FROM backtest_runs WHERE run_id = ?", [upto["run_id"]])
    over = {r.mode: json.loads(r.overrides) for r in runs.itertuples()}
    assert over[wide]["exits"]["tp1_atr"] == 2.0 and "tp1_atr" not in over["adaptive"].get("exits", {})
    cols = "symbol, ts, side, accepted, reason_code, qty, stop_price, tp1_price, tp2_price"
    decisions = {m: query_df(_scratch(upto, m), f"SELECT {cols}, entry_ref FROM decisions ORDER BY ts, symbol")
                 for m in upto["modes"]}  # fmt: skip
    pd.testing.assert_frame_equal(decisions["adaptive"], decisions[same])
    trades = query_df(db, "SELECT * EXCLUDE (mode) FROM backtest_trades WHERE run_id = ? AND mode = ? "
                          "ORDER BY decision_id", [upto["run_id"], "adaptive"])  # fmt: skip
    trades_same = query_df(db, "SELECT * EXCLUDE (mode) FROM backtest_trades WHERE run_id = ? AND mode = ? "
                               "ORDER BY decision_id", [upto["run_id"], same])  # fmt: skip
    assert len(trades) > 0
    pd.testing.assert_frame_equal(trades, trades_same)
    first = decisions["adaptive"][decisions["adaptive"]["accepted"]].iloc[0]
    mine = decisions[wide].set_index(["symbol", "ts"]).loc[(first["symbol"], first["ts"])]
    base = abs(first["tp1_price"] - first["entry_ref"])
    assert abs(mine["tp1_price"] - mine["entry_ref"]) == pytest.approx(2 * base, rel=0.02, abs=0.02)
