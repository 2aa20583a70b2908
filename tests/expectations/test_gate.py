"""The raw-bars gate: one injected fault per rule, severities, the no-row-lost invariant, Data Docs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from expectations.gate import SUITE_PATH, GateResult, build_data_docs, gate_bars, load_suite
from qtrader.calendar import expected_bars
from qtrader.settings import GateSettings, Severity
from sources.base import BAR_COLUMNS, to_canonical

DAILY_START, DAILY_END = "2024-01-02", "2024-05-14"
DAILY_REF = pd.Timestamp("2024-05-14 21:00", tz="UTC")  # after the close of the last session
INTRADAY_REF = pd.Timestamp("2024-05-15 20:00", tz="UTC")  # the close of the last 5m session
NOW = pd.Timestamp("2024-05-15 00:00", tz="UTC")
SYMBOLS = ["AAPL", "MSFT", "TSLA"]


def make_bars(symbol: str, ts: pd.DatetimeIndex, interval: str, seed: int) -> pd.DataFrame:
    """A clean series on real bar slots: small moves, high/low around open/close, positive volume."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
    open_ = close * (1 + rng.normal(0, 0.003, len(ts)))
    return pd.DataFrame(
        {
            "symbol": symbol,
            "interval": interval,
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * 1.005,
            "low": np.minimum(open_, close) * 0.995,
            "close": close,
            "volume": rng.integers(1_000, 100_000, len(ts)).astype(float),
        }
    )


def daily(symbols=SYMBOLS, end=DAILY_END) -> pd.DataFrame:
    ts = expected_bars("1d", DAILY_START, end)
    return to_canonical(
        pd.concat([make_bars(s, ts, "1d", i) for i, s in enumerate(symbols)], ignore_index=True)
    )


def intraday(symbols=SYMBOLS) -> pd.DataFrame:
    ts = expected_bars("5m", "2024-05-13", INTRADAY_REF)
    return to_canonical(
        pd.concat([make_bars(s, ts, "5m", i) for i, s in enumerate(symbols)], ignore_index=True)
    )


def gate(bars: pd.DataFrame, interval: str = "1d", settings: GateSettings | None = None, **kw) -> GateResult:
    kw.setdefault("reference_end", DAILY_REF if interval == "1d" else INTRADAY_REF)
    return gate_bars(
        bars, interval=interval, settings=settings or GateSettings(), run_id="t-1", now=NOW, **kw
    )


def pos(bars: pd.DataFrame, symbol: str, k: int) -> int:
    """Input position of the k-th row of a symbol."""
    return int(np.flatnonzero(bars["symbol"].to_numpy() == symbol)[k])


def insert_after(bars: pd.DataFrame, at: int, row: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([bars.iloc[: at + 1], row, bars.iloc[at + 1 :]], ignore_index=True)


def failed_rules(result: GateResult) -> set[str]:
    dq = result.dq_results
    return set(dq.loc[~dq["success"], "rule"])


def assert_no_row_lost(bars: pd.DataFrame, result: GateResult) -> None:
    assert len(result.passed) + len(result.quarantined) == len(bars)
    assert not result.passed.duplicated(["symbol", "interval", "ts"]).any()
    key = ["symbol", "ts"]
    assert result.passed[key].equals(result.passed.sort_values(key).reset_index(drop=True)[key])
    # Every input row comes back exactly once, in passed or in quarantine.
    cols = BAR_COLUMNS
    back = pd.concat([result.passed[cols], result.quarantined[cols]], ignore_index=True)
    expect = bars[cols].sort_values(cols, ignore_index=True)
    pd.testing.assert_frame_equal(back.sort_values(cols, ignore_index=True), expect)


# ------------------------------------------------------------------------------------------- suite


def test_suite_json_names_every_rule_with_scope_and_description():
    raw = json.loads(SUITE_PATH.read_text())
    metas = [e["meta"] for e in raw["expectations"]]
    assert all({"rule", "scope", "description"} <= set(m) for m in metas)
    assert {m["rule"] for m in metas} == set(GateSettings().severity)
    assert {m["rule"] for m in metas if m["scope"] == "series"} == {
        "gap_beyond_tolerance", "stale_last_bar", "move_beyond_limit",
    }  # fmt: skip
    assert load_suite().name == "bars_raw"


# ------------------------------------------------------------------------------------------- clean


@pytest.mark.parametrize("frame, interval", [(daily, "1d"), (intraday, "5m")])
def test_clean_frame_passes_with_zero_quarantine(frame, interval):
    bars = frame()
    result = gate(bars, interval)
    assert result.quarantined.empty and result.warnings.empty and not result.blocked_symbols
    assert result.summary_lines() == []
    assert len(result.passed) == len(bars)
    assert list(result.passed.columns) == BAR_COLUMNS
    dq = result.dq_results
    assert len(dq) == len(load_suite().raw["expectations"]) and dq["success"].all()
    assert (
        set(dq["run_id"]) == {"t-1"} and set(dq["stage"]) == {"raw_bars"} and set(dq["suite"]) == {"bars_raw"}
    )
    assert (dq["validated_at"] == NOW).all()
    assert result.validation.success


def test_interleaved_delivery_is_clean_and_passed_is_sorted():
    bars = daily()
    by_time = bars.sort_values(
        ["ts", "symbol"], ascending=[True, False], ignore_index=True
    )  # wide-frame order
    result = gate(by_time)
    assert result.quarantined.empty and result.dq_results["success"].all()
    pd.testing.assert_frame_equal(result.passed, bars)


def test_empty_frame_gives_empty_results():
    result = gate(daily().iloc[:0])
    assert result.passed.empty and result.quarantined.empty and result.warnings.empty
    assert result.dq_results["success"].all() and result.summary_lines() == []


# ------------------------------------------------------------------------------ one fault per rule


def _set(col, value, symbol="MSFT", k=20):
    def apply(bars):
        bars.loc[pos(bars, symbol, k), col] = value
        return bars

    return apply


def _duplicate(bars):
    at = pos(bars, "MSFT", 20)
    return insert_after(bars, at, bars.iloc[[at]])  # same key right after the original


def _decreasing(bars, k=30):
    a, b = pos(bars, "MSFT", k), pos(bars, "MSFT", k + 1)
    order = np.arange(len(bars))
    order[[a, b]] = [b, a]  # the later-delivered row is now the earlier bar
    return bars.iloc[order].reset_index(drop=True)


def _saturday(bars, k=50):
    fridays = [j for j in range(k, k + 5) if bars.loc[pos(bars, "MSFT", j), "ts"].day_name() == "Friday"]
    at = pos(bars, "MSFT", fridays[0])
    row = bars.iloc[[at]].copy()
    row["ts"] = row["ts"] + pd.Timedelta(
        days=1
    )  # delivered between Friday and Monday: in order, not a session
    return insert_after(bars, at, row)


def _gap(bars):
    drop = [pos(bars, "MSFT", k) for k in range(30, 37)]  # 7 sessions missing > 5 tolerated
    return bars.drop(index=drop).reset_index(drop=True)


def _stale(bars):
    drop = [pos(bars, "MSFT", k) for k in range(-5, 0)]  # last 5 sessions missing > 3 tolerated
    return bars.drop(index=drop).reset_index(drop=True)


def _jump(bars):
    at = pos(bars, "MSFT", 40)
    bars.loc[at, ["open", "high", "low", "close"]] *= 1.6  # +60%, then back by 37.5%
    return bars


ONE_FAULT = {
    "price_not_null": (_set("close", np.nan), "row", 1),
    "price_positive": (_set("low", -1.0), "row", 1),
    "high_ge_open_close": (lambda b: _set("high", b.loc[pos(b, "MSFT", 20), "low"])(b), "row", 1),
    "low_le_open_close": (lambda b: _set("low", b.loc[pos(b, "MSFT", 20), "high"])(b), "row", 1),
    "volume_non_negative": (_set("volume", -5.0), "row", 1),
    "duplicate_timestamp": (_duplicate, "row", 1),
    "timestamp_decreasing": (_decreasing, "row", 1),
    "outside_session": (_saturday, "row", 1),
    "gap_beyond_tolerance": (_gap, "warning", 1),
    "stale_last_bar": (_stale, "blocked", None),
    "move_beyond_limit": (_jump, "warning", 1),
}


@pytest.mark.parametrize("rule", list(ONE_FAULT))
def test_one_fault_per_rule(rule):
    inject, outcome, n_bad = ONE_FAULT[rule]
    bars = inject(daily())
    result = gate(bars)

    assert failed_rules(result) == {rule}
    rule_rows = result.dq_results[result.dq_results["rule"] == rule]
    assert not rule_rows["success"].all() and rule_rows["unexpected_count"].sum() >= 1
    others = result.dq_results[result.dq_results["rule"] != rule]
    assert others["success"].all() and (others["unexpected_count"] == 0).all()
    assert_no_row_lost(bars, result)
    n_msft = int((bars["symbol"] == "MSFT").sum())

    if outcome == "row":
        q = result.quarantined
        assert len(q) == n_bad and set(q["rule"]) == {rule} and set(q["symbol"]) == {"MSFT"}
        assert set(q["severity"]) == {"critical"} and q["detail"].str.len().gt(0).all()
        assert len(result.passed) == len(bars) - n_bad and not result.blocked_symbols
        assert result.summary_lines() == [f"MSFT: quarantined {n_bad} of {n_msft} rows ({rule} x{n_bad})"]
    elif outcome == "blocked":
        assert result.blocked_symbols == {"MSFT": rule}
        q = result.quarantined
        assert len(q) == n_msft and set(q["rule"]) == {rule} and set(q["symbol"]) == {"MSFT"}
        assert len(result.passed) == len(bars) - n_msft and set(result.passed["symbol"]) == {"AAPL", "TSLA"}
        [line] = result.summary_lines()
        assert line.startswith(f"MSFT: BLOCKED by {rule} (")
    else:  # warning: recorded, every row kept
        assert result.quarantined.empty and len(result.passed) == len(bars)
        w = result.warnings
        assert len(w) == n_bad and set(w["rule"]) == {rule} and set(w["symbol"]) == {"MSFT"}
        [line] = result.summary_lines()
        assert line.startswith(f"MSFT: warning {rule} x{n_bad}")


def test_fault_details_say_what_is_wrong():
    bars = _stale(_jump(_set("low", -1.0, k=10)(_set("close", np.nan, symbol="AAPL")(daily()))))
    result = gate(bars)
    q = result.quarantined.set_index("symbol")
    assert q.loc["AAPL", "detail"] == "missing or non-finite: close"
    assert set(q.loc["MSFT", "rule"]) == {"stale_last_bar"}
    # A blocked row that also broke a row rule says so.
    assert q.loc["MSFT"]["detail"].str.endswith("also broke: price_positive").sum() == 1
    lines = result.summary_lines()
    assert lines[0] == "AAPL: quarantined 1 of 93 rows (price_not_null x1)"
    assert lines[1].startswith(
        "MSFT: BLOCKED by stale_last_bar (last bar 2024-05-07, 5 expected bars missing before 2024-05-14; "
    )
    assert lines[1].endswith("): all 88 rows quarantined; warning move_beyond_limit x1 (max |return| 58%)")


def test_missing_volume_and_non_finite_prices_are_quarantined():
    bars = _set("volume", np.nan, k=3)(_set("high", np.inf, k=5)(daily()))
    q = gate(bars).quarantined
    assert list(q["rule"]) == ["volume_non_negative", "price_not_null"]


def test_intraday_bar_outside_the_session_is_quarantined():
    bars = intraday()
    at = pos(bars, "AAPL", 0)
    early = bars.iloc[[at]].copy()
    early["ts"] = early["ts"] - pd.Timedelta(minutes=90)  # 08:00 New York, before the open
    bars = pd.concat([early, bars], ignore_index=True)
    result = gate(bars, "5m")
    assert list(result.quarantined["rule"]) == ["outside_session"]
    assert failed_rules(result) == {"outside_session"}
    assert len(result.passed) == len(bars) - 1


def test_intraday_gap_uses_the_session_grid():
    bars = intraday()
    # The overnight step between sessions is not a gap; 13 missing 5m bars inside a session are (> 12).
    drop = [pos(bars, "TSLA", k) for k in range(100, 113)]
    result = gate(bars.drop(index=drop).reset_index(drop=True), "5m")
    assert failed_rules(result) == {"gap_beyond_tolerance"}
    assert result.warnings["value"].tolist() == [13.0]


def test_intraday_symbol_that_stops_early_is_blocked():
    bars = intraday()
    drop = [pos(bars, "MSFT", k) for k in range(-13, 0)]  # the last hour and 5 minutes of the last session
    result = gate(bars.drop(index=drop).reset_index(drop=True), "5m")
    assert result.blocked_symbols == {"MSFT": "stale_last_bar"}
    assert result.blocked_detail["MSFT"] == (
        "last bar 2024-05-15 18:50 UTC, 13 expected bars missing before 2024-05-15 20:00 UTC; tolerance 12"
    )


# -------------------------------------------------------------------------------------- severities


def test_severity_override_warning_keeps_rows_and_critical_blocks():
    bars = _jump(_set("low", -1.0, symbol="AAPL")(daily()))
    settings = GateSettings(
        severity={"price_positive": Severity.warning, "move_beyond_limit": Severity.critical}
    )
    result = gate(bars, settings=settings)
    # price_positive is now a warning: the row is kept and recorded.
    assert "AAPL" not in set(result.quarantined["symbol"])
    assert len(result.passed[result.passed["symbol"] == "AAPL"]) == int((bars["symbol"] == "AAPL").sum())
    w = result.warnings
    assert list(w["rule"]) == ["price_positive"] and list(w["symbol"]) == ["AAPL"]
    # move_beyond_limit is now critical, and a series rule: the whole symbol is blocked.
    assert result.blocked_symbols == {"MSFT": "move_beyond_limit"}
    assert set(result.quarantined["rule"]) == {"move_beyond_limit"}
    assert len(result.quarantined) == int((bars["symbol"] == "MSFT").sum())
    sev = result.dq_results.groupby("rule")["severity"].first()
    assert sev["price_positive"] == "warning" and sev["move_beyond_limit"] == "critical"
    # Rules not named in the partial map keep their default severity.
    assert sev["stale_last_bar"] == "critical"


def test_critical_row_rule_override_quarantines():
    bars = daily()
    at = pos(bars, "MSFT", 10)
    bars.loc[at, "volume"] = -1.0
    warn = gate(bars, settings=GateSettings(severity={"volume_non_negative": Severity.warning}))
    assert warn.quarantined.empty and list(warn.warnings["rule"]) == ["volume_non_negative"]
    crit = gate(bars, settings=GateSettings(severity={"volume_non_negative": Severity.critical}))
    assert list(crit.quarantined["rule"]) == ["volume_non_negative"] and crit.warnings.empty


def test_duplicates_never_reach_passed_even_as_warning():
    bars = _duplicate(daily())
    result = gate(bars, settings=GateSettings(severity={"duplicate_timestamp": Severity.warning}))
    assert list(result.quarantined["severity"]) == ["warning"]
    assert_no_row_lost(bars, result)


def test_tolerances_are_suite_parameters():
    bars = _jump(daily())
    result = gate(bars, settings=GateSettings(max_abs_return_daily=0.7))
    assert result.warnings.empty and result.dq_results["success"].all()
    kwargs = {
        r.expectation_config.meta["rule"]: r.expectation_config.kwargs for r in result.validation.results
    }
    assert kwargs["move_beyond_limit"]["max_value"] == 0.7
    assert kwargs["gap_beyond_tolerance"]["max_value"] == 5


def test_a_broken_expectation_stops_the_gate():
    from expectations.gate import _failing_rows, _validate
    from expectations.runtime import GateError

    result = _validate(
        pd.DataFrame({"gap_bars": [1.0]}),
        "series",
        {"max_gap_bars": 5, "max_stale_bars": 3, "max_abs_return": 0.4},
    )
    with pytest.raises(GateError, match='column "stale_bars" in BatchData does not exist'):
        _failing_rows(result, 1, {})


def test_unknown_rule_in_settings_is_refused():
    with pytest.raises(ValueError, match="unknown gate rules"):
        GateSettings(severity={"price_is_nice": Severity.warning})


def test_rows_of_another_interval_are_refused():
    with pytest.raises(ValueError, match="intervals"):
        gate(daily(), "5m")


# -------------------------------------------------------------------------------- derived series


def test_nan_close_does_not_make_its_neighbours_big_moves():
    bars = daily()
    at = pos(bars, "MSFT", 20)
    bars.loc[at, "close"] = np.nan
    bars.loc[at + 1, "open"] = np.nan  # a second bad row right after it
    result = gate(bars)
    assert failed_rules(result) == {"price_not_null"}
    assert result.warnings.empty and len(result.quarantined) == 2


def test_bad_print_in_a_quarantined_row_is_not_a_move_or_gap():
    bars = daily()
    at = pos(bars, "MSFT", 20)
    bars.loc[at, ["open", "close"]] = bars.loc[at, ["open", "close"]] * 5  # high now below open/close
    result = gate(bars)
    assert failed_rules(result) == {"high_ge_open_close"}
    assert result.warnings.empty


def test_reference_end_defaults_to_newest_bar_of_the_batch():
    bars = _stale(daily())
    result = gate(bars, reference_end=None)
    assert result.blocked_symbols == {"MSFT": "stale_last_bar"}  # AAPL/TSLA set the newest bar
    later = gate(daily(), reference_end=pd.Timestamp("2024-05-22 21:00", tz="UTC"))  # 6 sessions later
    assert later.blocked_symbols == dict.fromkeys(SYMBOLS, "stale_last_bar")


def test_reference_end_per_symbol_judges_each_series_against_its_own_end():
    # A folder of history files: MSFT's file simply ends 5 sessions earlier. Judged against each file's own
    # end nothing is stale; judged against a stated as_of for MSFT alone, only MSFT is.
    bars = _stale(daily())
    own = {s: g["ts"].max() for s, g in bars.groupby("symbol")}
    assert gate(bars, reference_end=own).blocked_symbols == {}
    as_of = pd.Timestamp("2024-05-14", tz="UTC")
    result = gate(bars, reference_end={**own, "MSFT": as_of})
    assert result.blocked_symbols == {"MSFT": "stale_last_bar"}
    assert "5 expected bars missing before 2024-05-14" in result.blocked_detail["MSFT"]


# ------------------------------------------------------------------------------------- invariant


def test_no_row_lost_with_many_faults_at_once():
    bars = daily(["AAPL", "MSFT", "TSLA", "NVDA", "META"])
    bars = _set("close", np.nan, "AAPL", 3)(bars)
    bars = _set("low", -1.0, "AAPL", 3)(bars)  # two rules on one row
    bars = _set("high", 1.0, "AAPL", 7)(bars)
    bars = _set("volume", -1.0, "NVDA", 9)(bars)
    bars = _duplicate(bars)
    bars = _decreasing(bars)
    bars = _saturday(bars)
    bars = _stale(bars)  # MSFT blocked on top of its row faults
    bars = _set("close", np.nan, "META", 41)(_set("close", np.nan, "META", 40)(bars))
    bars.loc[pos(bars, "TSLA", 40), ["open", "high", "low", "close"]] *= 1.6
    at = pos(bars, "TSLA", 5)
    bars = pd.concat([bars, bars.iloc[[at, at, at]]], ignore_index=True)  # triplicates, delivered late
    result = gate(bars)

    assert_no_row_lost(bars, result)
    q = result.quarantined
    assert result.blocked_symbols == {"MSFT": "stale_last_bar"}
    assert (q.loc[q["symbol"] == "MSFT", "rule"] == "stale_last_bar").all()
    assert q.loc[q["symbol"] == "AAPL", "rule"].tolist() == ["price_not_null", "high_ge_open_close"]
    assert "also broke: price_positive" in q.loc[q["symbol"] == "AAPL", "detail"].iloc[0]
    assert q.loc[q["symbol"] == "TSLA", "rule"].tolist() == ["duplicate_timestamp"] * 3
    assert q.loc[q["symbol"] == "META", "rule"].tolist() == ["price_not_null"] * 2
    assert q.loc[q["symbol"] == "NVDA", "rule"].tolist() == ["volume_non_negative"]
    assert result.warnings[["symbol", "rule"]].values.tolist() == [["TSLA", "move_beyond_limit"]]
    assert failed_rules(result) == {
        "price_not_null", "price_positive", "high_ge_open_close", "volume_non_negative", "duplicate_timestamp",
        "timestamp_decreasing", "outside_session", "stale_last_bar", "move_beyond_limit",
    }  # fmt: skip


# ------------------------------------------------------------------------------------- data docs


def test_data_docs_index_is_written(tmp_path):
    first = gate(_set("close", np.nan)(daily()))
    second = gate(intraday(), "5m")
    index = build_data_docs([first, second], tmp_path / "dq_docs")
    assert index == (tmp_path / "dq_docs" / "index.html").resolve()
    assert index.is_file() and "bars_raw" in index.read_text()
    pages = list((tmp_path / "dq_docs" / "validations" / "bars_raw").rglob("*.html"))
    assert sorted(p.stem.split("-t-1-")[1] for p in pages) == ["raw_bars-1d", "raw_bars-5m"]


def _order_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """An order batch with a share of every kind of fault the orders suite looks for."""
    side = rng.choice(["buy", "sell", "hold"], n, p=[0.45, 0.45, 0.1])
    entry = rng.uniform(-5, 100, n)
    sign = np.where(side == "sell", -1.0, 1.0)
    cols = {
        "decision_id": np.array([f"d{i // 3}" for i in range(n)], dtype=object),
        "client_order_id": np.array([f"c{rng.integers(0, n)}" for _ in range(n)], dtype=object),
        "symbol": rng.choice(["AAA", "BBB"], n).astype(object),
        "side": side.astype(object),
        "leg": rng.integers(1, 4, n),
        "qty": rng.integers(-1, 50, n),
        "decision_qty": rng.integers(0, 150, n),
        "entry_ref": entry,
        "take_profit": entry + sign * rng.uniform(-1, 5, n),
        "stop": entry - sign * rng.uniform(-1, 5, n),
        "confidence_raw": rng.uniform(-0.1, 1.1, n),
        "confidence_calibrated": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(-0.1, 1.1, n)),
        "max_notional": rng.uniform(0, 8000, n),
    }
    return cols


def test_the_in_memory_order_gate_agrees_with_great_expectations():
    """The backtest checks each bar's order batch with check_rules (no GX per bar); the live flow with GX.
    Same suite, same verdicts, on batches full of faults."""
    from expectations.frame_gate import check_rules, gate_frame
    from models import decision as dm

    rng = np.random.default_rng(3)
    for n in (1, 7, 60):
        for _ in range(4):
            cols = _order_batch(rng, n)
            frame = pd.DataFrame(cols, columns=dm.ORDER_BATCH_COLUMNS)
            gx = gate_frame(frame, suite="orders", run_id="t", stage="orders", derive=dm.order_gate_view)
            fast = check_rules(cols, "orders", derive=dm.order_gate_derived)
            assert {r: n for r, n in fast.items() if n} == {r: n for r, n in gx.failures.items() if n}
    assert any(check_rules(_order_batch(rng, 60), "orders", derive=dm.order_gate_derived).values())


def _predictions(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """New prediction rows with a share of every fault the predictions suite looks for."""
    p = rng.uniform(-0.1, 1.1, n)
    return pd.DataFrame({
        "symbol": rng.choice(["AAA", "BBB", None], n, p=[0.5, 0.45, 0.05]),
        "interval": "1d",
        "ts": pd.Timestamp("2026-10-30", tz="UTC") + pd.to_timedelta(rng.integers(0, 3, n), unit="D"),
        "module": rng.choice(["regime", "volatility"], n),
        "model_version": rng.integers(1, 3, n),
        "p_up": np.where(rng.random(n) < 0.1, np.nan, p),
        "p_up_calibrated": p,
        "confidence_raw": rng.uniform(0, 1.05, n),
        "confidence_seed": rng.uniform(0, 1, n),
        "confidence_calibrated": rng.uniform(0, 1, n),
        "direction": rng.choice([-1, 0, 1, 2], n, p=[0.3, 0.3, 0.3, 0.1]),
    })  # fmt: skip


def test_the_gate_without_great_expectations_gives_the_same_result():
    """The live decision gates its predictions and order batch with gate_rows (no GX per bar): the same
    passed and quarantined rows, failures and dq_results rows as gate_frame, on frames full of faults."""
    from expectations.frame_gate import gate_frame, gate_rows
    from models import decision as dm

    rng = np.random.default_rng(5)
    now = pd.Timestamp("2026-11-02 15:00", tz="UTC")
    cases = [("orders", pd.DataFrame(_order_batch(rng, n), columns=dm.ORDER_BATCH_COLUMNS), dm.order_gate_view)
             for n in (0, 1, 7, 60)] + [("predictions", _predictions(rng, n), None) for n in (1, 9, 80)]  # fmt: skip
    for n in (9, 80):  # missing timestamps too: null, and a key part (gate_rows reads them as datetime64)
        frame = _predictions(rng, n)
        frame.loc[rng.random(n) < 0.15, "ts"] = pd.NaT
        cases.append(("predictions", frame, None))
    for suite, frame, derive in cases:
        gx = gate_frame(frame, suite=suite, run_id="t", stage=suite, derive=derive, now=now)
        fast = gate_rows(frame, suite=suite, run_id="t", stage=suite, derive=derive, now=now)
        what = f"{suite}, {len(frame)} rows"
        pd.testing.assert_frame_equal(fast.passed, gx.passed, obj=what)
        pd.testing.assert_frame_equal(fast.quarantined, gx.quarantined, obj=what)
        assert fast.failures == gx.failures, what
        key = ["expectation", "column_name"]  # GX orders its results by column; the table has no order
        pd.testing.assert_frame_equal(
            fast.dq_results.sort_values(key, ignore_index=True),
            gx.dq_results.sort_values(key, ignore_index=True),
            obj=what,
        )
    assert any(gate_rows(f, suite=s, run_id="t", stage=s, derive=d).failures.values() for s, f, d in cases)
