"""The fixed backtest whose full trade lists pin the decision path's behaviour across refactors.

``python -m tests.golden.record OUT_DIR`` runs it and writes one CSV per table (decisions, orders, fills,
trades, equity) with a ``mode`` column; ``tests/flows/test_trade_parity.py`` runs the same backtest and
compares it with the files in ``tests/data/golden/``. Regenerate them only for a change another issue
asks for, and name that change in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

SYMBOLS = ["S000", "S001", "S002", "S003", "S004", "S005"]
# Loose enough that the near-chance synthetic modules trade in every mode (as the demo's policy).
POLICY = {"trade_filter": {"min_confidence": 0.5, "allowed_consensus": ["UNANIMOUS", "STRONG", "WEAK"],
                           "min_overall_health": 50.0, "min_module_health": 40.0}}  # fmt: skip
OVERRIDES = {"backtest": {"policy": POLICY, "retrain_every_bars_daily": 10}}
FIRST, LAST = 760, 799  # bar indexes of the replayed period (40 bars after ~3 years of warm-up)
SIGNALS = [("S001", 761, "buy"), ("S002", 763, "sell"), ("S003", 770, "buy"), ("S001", 781, "sell")]

# Columns compared: what a trade is, not when it was recorded or which run made it.
COLUMNS = {
    "decisions": ["ts", "symbol", "side", "accepted", "reason_code", "qty", "entry_ref", "stop_price",
                  "tp1_price", "tp2_price", "tp3_price", "size_multiplier", "confidence_calibrated",
                  "client_order_ids"],
    "orders": ["client_order_id", "decision_id", "leg", "symbol", "side", "qty", "entry_ref", "take_profit",
               "stop_price"],
    "fills": ["ts", "symbol", "side", "role", "qty", "price", "commission", "client_order_id"],
    "trades": ["decision_id", "symbol", "side", "entry_ts", "exit_ts", "qty", "entry_price", "exit_price",
               "pnl", "exit_reason", "legs"],
    "equity": ["ts", "equity", "cash"],
    "stops": ["ts", "symbol", "client_order_id", "old_stop", "new_stop", "rule"],
}  # fmt: skip
SORT = {
    "decisions": ["mode", "ts", "symbol"],
    "orders": ["mode", "client_order_id"],
    "fills": ["mode", "ts", "symbol", "role", "client_order_id"],
    "trades": ["mode", "decision_id"],
    "equity": ["mode", "ts"],
    "stops": ["mode", "ts", "client_order_id"],
}


def build_market(folder: Path) -> Path:
    from tests.flows._market import build_warehouse, synthetic_bars

    folder.mkdir(parents=True, exist_ok=True)
    return build_warehouse(folder / "warehouse.duckdb", synthetic_bars(20, 3.5))


def canonical(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Sorted, typed the same way whatever produced it (floats rounded to 1e-6, times as ISO text)."""
    out = frame.reindex(columns=["mode", *COLUMNS[name]]).copy()
    for c in out.columns:
        s = out[c]
        if c.endswith("ts") or c in ("ts",):
            out[c] = pd.to_datetime(s, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif s.dtype == object and c not in (
            "mode",
            "symbol",
            "side",
            "role",
            "reason_code",
            "exit_reason",
            "client_order_id",
            "decision_id",
            "client_order_ids",
            "rule",
        ):
            num = pd.to_numeric(s, errors="coerce")
            if num.notna().sum() == s.notna().sum():
                out[c] = num.astype(float).round(6)
        elif pd.api.types.is_float_dtype(s):
            out[c] = s.astype(float).round(6)
    return out.sort_values(SORT[name], kind="stable").reset_index(drop=True)


def run(folder: Path) -> dict[str, pd.DataFrame]:
    """Run the fixed backtest in ``folder`` and return the canonical tables of every mode."""
    from flows.backtest import backtest
    from models.backtest import MODES
    from models.backtest import SIGNALS as SIGNALS_MODE
    from tests.flows.conftest import data_dir
    from warehouse.db import query_df

    db = build_market(folder)
    times = query_df(db, "SELECT DISTINCT ts FROM bars ORDER BY ts")["ts"]
    entries = folder / "entries.csv"
    pd.DataFrame([{"symbol": s, "ts": times.iloc[i], "side": side} for s, i, side in SIGNALS]).to_csv(
        entries, index=False
    )
    with data_dir(folder / "data"):
        result = backtest(
            start=str(times.iloc[FIRST]), end=str(times.iloc[LAST]), symbols=SYMBOLS, modes=list(MODES),
            signals=str(entries), warehouse=str(db), overrides=OVERRIDES, report=False,
        )  # fmt: skip
    return collect(result, [*MODES, SIGNALS_MODE])


def collect(result: dict, modes: list[str]) -> dict[str, pd.DataFrame]:
    from warehouse.db import query_df

    sql = {
        "decisions": "SELECT * FROM decisions",
        "orders": "SELECT * FROM decision_orders",
        "fills": "SELECT * FROM broker_fills",
        "trades": "SELECT * FROM v_trades",
        "equity": "SELECT ts, equity, cash FROM account_snapshots",
        "stops": "SELECT * FROM exit_adjustments",
    }
    out = {}
    for name, q in sql.items():
        frames = [query_df(f"{result['scratch']}/{m}.duckdb", q).assign(mode=m) for m in modes]
        out[name] = canonical(name, pd.concat(frames, ignore_index=True))
    return out


def main(out: str) -> None:
    import tempfile

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tables = run(Path(tmp))
    for name, frame in tables.items():
        frame.to_csv(target / f"{name}.csv", index=False)
        print(f"{name}: {len(frame)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
