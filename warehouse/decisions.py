"""Reads and writes of the decision flow: its inputs at one bar, the decisions it made, the brackets they
sent, the broker's fills, and the account review views (warehouse/sql/006_decisions.sql).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from brokers.base import Fill, Order, flatten
from warehouse.db import WarehouseLike, connect, insert_frame, query_df, within

DECISION_COLUMNS = [
    "decision_id", "ts", "interval", "symbol", "strategy", "broker", "side", "direction", "consensus",
    "voters", "agree", "contributors", "module_p_up", "source_module", "model_version", "calibration",
    "confidence_raw", "confidence_seed", "confidence_calibrated", "overall_health", "module_health",
    "health_ts", "accuracy", "performance_score", "size_multiplier", "size_reason", "capped_by", "atr",
    "vol_state", "tp1_rate", "tp2_rate", "tp3_rate", "learned_stop_atr", "exit_profile", "entry_ref",
    "stop_price", "tp1_price", "tp2_price", "tp3_price", "qty", "accepted", "submitted", "reason_code",
    "failed", "details", "health_drivers", "client_order_ids", "run_id", "decided_at",
]  # fmt: skip
DECISION_ORDER_COLUMNS = [
    "client_order_id", "decision_id", "leg", "symbol", "side", "qty", "entry_ref", "take_profit",
    "stop_price", "broker", "broker_order_id", "recorded_at", "plan_seq",
]  # fmt: skip
FILL_COLUMNS = [
    "fill_key", "broker", "order_id", "client_order_id", "entry_client_order_id", "symbol", "side", "role",
    "qty", "price", "commission", "ts", "recorded_at",
]  # fmt: skip


# ------------------------------------------------------------------------------------------------- inputs


def decision_bars(wh: WarehouseLike, interval: str, at: pd.Timestamp | None, n: int) -> list[pd.Timestamp]:
    """The newest ``n`` bar times of ``interval`` at or before ``at`` (None: the newest), oldest first."""
    df = query_df(
        wh,
        "SELECT DISTINCT ts FROM bars WHERE interval = ? AND (? IS NULL OR ts <= ?) ORDER BY ts DESC LIMIT ?",
        [interval, at, at, int(n)],
    )
    return sorted(pd.Timestamp(t).tz_convert("UTC") for t in df["ts"])


def readiness(
    wh: WarehouseLike, interval: str, bars: list[pd.Timestamp], feature_set_version: str,
) -> pd.DataFrame:  # fmt: skip
    """Per bar time: gated bars and gated feature rows stored for it."""
    return query_df(
        wh,
        "WITH t AS (SELECT unnest(?::TIMESTAMPTZ[]) AS ts) "
        "SELECT t.ts, (SELECT count(*) FROM bars b WHERE b.interval = ? AND b.ts = t.ts) AS bars, "
        "(SELECT count(*) FROM features f WHERE f.interval = ? AND f.ts = t.ts AND f.feature_set_version = ?) "
        "AS features FROM t ORDER BY t.ts",
        [list(bars), interval, interval, feature_set_version],
    )


def paper_account_interval(wh: WarehouseLike) -> str | None:
    with connect(wh, read_only=True) as con:
        rows = con.execute("SELECT interval FROM paper_account ORDER BY created_at LIMIT 1").fetchall()
    return rows[0][0] if rows else None


def last_decided_bar(wh: WarehouseLike, interval: str, strategy: str, broker: str) -> pd.Timestamp | None:
    with connect(wh, read_only=True) as con:
        v = con.execute(
            "SELECT max(ts) FROM decisions WHERE interval = ? AND strategy = ? AND broker = ?",
            [interval, strategy, broker],
        ).fetchall()[0][0]
    return None if v is None else pd.Timestamp(v).tz_convert("UTC")


def bar_frame(
    wh: WarehouseLike,
    interval: str,
    ts: pd.Timestamp,
    feature_set_version: str,
    modules: list[str],
    broker: str,
) -> dict[str, pd.DataFrame | dict]:
    """Everything the decision at ``ts`` reads from the warehouse, in one short read-only connection.

    features (with the bar's close), the stored predictions of ``modules`` at ``ts``, the last exit
    per symbol, and the start-of-day equity (the newest account snapshot before the bar's UTC day).
    """
    with connect(wh, read_only=True) as con:
        features = con.execute(
            "SELECT f.* EXCLUDE (feature_set_version, run_id, computed_at), b.close AS bar_close "
            "FROM features f JOIN bars b USING (symbol, interval, ts) "
            "WHERE f.interval = ? AND f.ts = ? AND f.feature_set_version = ? ORDER BY f.symbol",
            [interval, ts, feature_set_version],
        ).df()
        predictions = con.execute(
            "SELECT symbol, module, model_version, p_up, p_up_calibrated, confidence_calibrated "
            "FROM predictions WHERE interval = ? AND ts = ? AND list_contains(?, module)",
            [interval, ts, modules],
        ).df()
        exits = con.execute(
            "SELECT symbol, max(ts) AS ts FROM broker_fills WHERE broker = ? AND role <> 'entry' AND ts <= ? "
            "GROUP BY symbol",
            [broker, ts],
        ).df()
        sod = con.execute(
            "SELECT arg_max(equity, ts) FROM account_snapshots WHERE broker = ? AND ts < date_trunc('day', ?)",
            [broker, ts],
        ).fetchall()[0][0]
    return {"features": features, "predictions": predictions, "exits": exits, "sod_equity": sod}


def latest_module_stats(
    wh: WarehouseLike, module: str, interval: str, window: str
) -> dict[str, float | None]:
    """The newest benchmark (accuracy, performance score) and exit hit rates (trades first, else labels)."""
    out: dict[str, float | None] = dict.fromkeys(["accuracy", "performance_score", "tp1", "tp2", "tp3"])
    with connect(wh, read_only=True) as con:
        b = con.execute(
            "SELECT accuracy, performance_score FROM v_latest_benchmarks "
            "WHERE module = ? AND interval = ? AND window_name = ?",
            [module, interval, window],
        ).fetchall()
        e = con.execute(
            "SELECT tp1_rate, tp2_rate, tp3_rate FROM exit_stats WHERE module = ? AND interval = ? "
            "AND window_name = ? ORDER BY basis = 'trades' DESC, computed_at DESC LIMIT 1",
            [module, interval, window],
        ).fetchall()
    if b:
        out["accuracy"], out["performance_score"] = b[0]
    if e:
        out["tp1"], out["tp2"], out["tp3"] = e[0]
    return {k: (None if v is None or pd.isna(v) else float(v)) for k, v in out.items()}


def trader_history(wh: WarehouseLike, broker: str) -> dict[str, pd.DataFrame]:
    """What a trader carries between bars, as stored: which bracket belongs to which decision and leg, the
    decisions whose TP1 took profit, each symbol's newest exit fill, and the account snapshots."""
    with connect(wh, read_only=True) as con:
        return {
            "legs": con.execute(
                "SELECT client_order_id, decision_id, leg FROM decision_orders WHERE broker = ?", [broker]
            ).df(),
            "tp1": con.execute(
                "SELECT DISTINCT o.decision_id FROM broker_fills f JOIN decision_orders o "
                "ON o.client_order_id = f.entry_client_order_id WHERE f.broker = ? AND f.role = 'take_profit' "
                "AND o.leg = 1",
                [broker],
            ).df(),
            "exits": con.execute(
                "SELECT symbol, max(ts) AS ts FROM broker_fills WHERE broker = ? AND role <> 'entry' GROUP BY symbol",
                [broker],
            ).df(),
            "equity": con.execute(
                "SELECT ts, equity::DOUBLE AS equity FROM account_snapshots WHERE broker = ? ORDER BY ts",
                [broker],
            ).df(),
        }


def decision_orders(wh: WarehouseLike, broker: str) -> pd.DataFrame:
    with connect(wh, read_only=True) as con:
        return con.execute("SELECT * FROM decision_orders WHERE broker = ?", [broker]).df()


def last_fill_ts(wh: WarehouseLike, broker: str) -> pd.Timestamp | None:
    with connect(wh, read_only=True) as con:
        v = con.execute("SELECT max(ts) FROM broker_fills WHERE broker = ?", [broker]).fetchall()[0][0]
    return None if v is None else pd.Timestamp(v)


# ------------------------------------------------------------------------------------------------- writes


def fill_rows(broker: str, fills: Iterable[Fill], orders: Iterable[Order], recorded_at) -> pd.DataFrame:
    """broker_fills rows, each tied to its bracket's entry through the broker's order tree."""
    entry_of: dict[str, str] = {}
    for o in orders:
        entry_of[o.id] = o.client_order_id
        for leg in o.legs:
            entry_of[leg.id] = o.client_order_id
    rows = [
        {
            "fill_key": f"{broker}|{f.order_id}|{pd.Timestamp(f.ts).isoformat()}|{f.qty}",
            "broker": broker,
            "order_id": f.order_id,
            "client_order_id": f.client_order_id,
            "entry_client_order_id": entry_of.get(f.order_id),
            "symbol": f.symbol,
            "side": f.side.value,
            "role": f.role.value if f.role is not None else None,
            "qty": int(f.qty),
            "price": str(f.price),
            "commission": str(f.commission),
            "ts": pd.Timestamp(f.ts),
            "recorded_at": recorded_at,
        }
        for f in fills
    ]
    return pd.DataFrame(rows, columns=FILL_COLUMNS)


def write_fills(wh: WarehouseLike, rows: pd.DataFrame) -> int:
    if rows.empty:
        return 0
    with within(wh) as con:
        con.register("incoming_fills", rows)
        try:
            n = con.execute(
                "INSERT OR IGNORE INTO broker_fills BY NAME SELECT * REPLACE "
                "(CAST(price AS DECIMAL(18,4)) AS price, CAST(commission AS DECIMAL(18,4)) AS commission) "
                "FROM incoming_fills RETURNING fill_key"
            ).fetchall()
        finally:
            con.unregister("incoming_fills")
    return len(n)


def write_decisions(
    wh: WarehouseLike,
    decisions: pd.DataFrame,
    orders: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    dq_results: pd.DataFrame | None = None,
    *,
    prediction_columns: list[str] | None = None,
) -> int:
    """One bar's decisions (first write of a bar wins), its brackets, new predictions and gate verdicts."""
    with within(wh) as con:
        n = 0
        if len(decisions):
            con.register("incoming_decisions", decisions.reindex(columns=DECISION_COLUMNS))
            try:
                n = len(
                    con.execute(
                        "INSERT OR IGNORE INTO decisions BY NAME SELECT * FROM incoming_decisions "
                        "RETURNING decision_id"
                    ).fetchall()
                )
            finally:
                con.unregister("incoming_decisions")
        if len(orders):
            con.register("incoming_orders", orders.reindex(columns=DECISION_ORDER_COLUMNS))
            try:
                con.execute("INSERT OR IGNORE INTO decision_orders BY NAME SELECT * FROM incoming_orders")
            finally:
                con.unregister("incoming_orders")
        if predictions is not None and len(predictions):
            cols = prediction_columns or list(predictions.columns)
            insert_frame(con, "predictions", predictions.reindex(columns=cols), replace=True)
        if dq_results is not None and len(dq_results):
            insert_frame(con, "dq_results", dq_results)
    return n


STOP_PLAN_COLUMNS = [
    "replaced_order_id", "ts", "broker", "symbol", "client_order_id", "decision_id", "leg", "side", "entry_price",
    "old_stop", "new_stop", "rule", "reason", "planned_at",
]  # fmt: skip


def write_stop_plans(wh, rows: list[dict]) -> int:
    """The stop moves a bar planned (before the broker is asked); a stop planned before is kept."""
    if not rows:
        return 0
    frame = pd.DataFrame(rows, columns=STOP_PLAN_COLUMNS)
    for c in ("entry_price", "old_stop", "new_stop"):
        frame[c] = [str(v) for v in frame[c]]
    with within(wh) as con:
        con.register("incoming_stop_plans", frame)
        try:
            con.execute("INSERT OR IGNORE INTO stop_move_plans BY NAME SELECT * FROM incoming_stop_plans")
        finally:
            con.unregister("incoming_stop_plans")
    return len(frame)


def record_sent(wh, sent: list[tuple[str, str]]) -> None:
    """The broker's order id of each bracket sent (or found at the broker): (client order id, order id)."""
    if not sent:
        return
    frame = pd.DataFrame(sent, columns=["client_order_id", "broker_order_id"])
    with within(wh) as con:
        con.register("sent_orders", frame)
        try:
            con.execute(
                "UPDATE decision_orders SET broker_order_id = s.broker_order_id FROM sent_orders s "
                "WHERE decision_orders.client_order_id = s.client_order_id"
            )
        finally:
            con.unregister("sent_orders")


def record_refusals(wh, refused: dict[str, str], created: Iterable[str]) -> None:
    """Decisions the broker refused (not accepted any more; their unsent brackets dropped) and those that
    sent a bracket now."""
    with within(wh) as con:
        for did, why in refused.items():
            con.execute(
                "UPDATE decisions SET accepted = false, reason_code = 'broker_rejected', failed = ? "
                "WHERE decision_id = ?",
                [why, did],
            )
            con.execute(
                "DELETE FROM decision_orders WHERE decision_id = ? AND broker_order_id IS NULL", [did]
            )
        ids = sorted(created)
        if ids:
            con.execute("UPDATE decisions SET submitted = true WHERE list_contains(?, decision_id)", [ids])


_UNSENT = (
    "SELECT o.*, o.rowid AS seq, d.ts FROM decision_orders o JOIN decisions d USING (decision_id) "
    "WHERE o.broker = ? AND o.broker_order_id IS NULL"
)
_UNMOVED = (
    "SELECT p.* FROM stop_move_plans p WHERE p.broker = ? "
    "AND NOT EXISTS (SELECT 1 FROM exit_adjustments a WHERE a.replaced_order_id = p.replaced_order_id)"
)


def unfinished_bars(wh: WarehouseLike, interval: str, broker: str) -> list[pd.Timestamp]:
    """Bars whose plan was stored but not all of it reached the broker's records (a run that died)."""
    with connect(wh, read_only=True) as con:
        rows = con.execute(
            f"SELECT DISTINCT ts FROM ({_UNSENT} AND d.interval = ?) UNION "
            f"SELECT DISTINCT p.ts FROM ({_UNMOVED}) p JOIN decisions d ON d.ts = p.ts AND d.interval = ? "
            "ORDER BY ts",
            [broker, interval, broker, interval],
        ).fetchall()
    return [pd.Timestamp(r[0]).tz_convert("UTC") for r in rows]


def unfinished_plan(wh: WarehouseLike, broker: str, ts: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(brackets planned at ``ts`` without a broker order id, stop moves planned at ``ts`` not recorded)."""
    with connect(wh, read_only=True) as con:
        # In the order they were planned (the order the broker sees them matters for buying power).
        legs = con.execute(f"{_UNSENT} AND d.ts = ? ORDER BY o.plan_seq NULLS LAST, seq", [broker, ts]).df()
        stops = con.execute(
            f"{_UNMOVED} AND p.ts = ? ORDER BY p.planned_at, p.replaced_order_id", [broker, ts]
        ).df()
    return legs, stops


# ------------------------------------------------------------------------------------------ account review


def account_review(wh: WarehouseLike, broker: str, *, recent: int = 10):
    """The frames `qtrader account` prints: account, positions, open brackets, recent fills, trades,
    module attribution and the equity curve (account snapshots over time)."""
    with connect(wh, read_only=True) as con:

        def q(sql: str, params: list) -> pd.DataFrame:
            return con.execute(sql, params).df()

        return {
            "account": q("SELECT * FROM v_account WHERE broker = ?", [broker]),
            "positions": q("SELECT * FROM v_positions WHERE broker = ? ORDER BY symbol", [broker]),
            "open_orders": q(
                "SELECT * FROM v_open_orders WHERE broker = ? ORDER BY decided_at DESC, symbol, leg", [broker]
            ),
            "fills": q(
                "SELECT ts, symbol, side, role, qty, price, commission, client_order_id FROM broker_fills "
                "WHERE broker = ? ORDER BY ts DESC, symbol, role LIMIT ?",
                [broker, recent],
            ),
            "trades": q("SELECT * FROM v_trades WHERE broker = ? ORDER BY exit_ts DESC, symbol", [broker]),
            "attribution": q(
                "SELECT * FROM v_module_attribution WHERE broker = ? ORDER BY pnl DESC, module", [broker]
            ),
            "adjustments": q(
                "SELECT ts, symbol, old_stop, new_stop, rule, reason FROM exit_adjustments WHERE broker = ? "
                "ORDER BY ts DESC LIMIT ?",
                [broker, recent],
            ),
            "rejections": q(
                "SELECT reason_code, count(*) AS n FROM decisions WHERE broker = ? AND NOT accepted "
                "GROUP BY ALL ORDER BY n DESC",
                [broker],
            ),
            "equity": q(
                "SELECT ts, cash, equity, buying_power FROM account_snapshots WHERE broker = ? ORDER BY ts",
                [broker],
            ),
        }


def orders_by_client_id(orders: Iterable[Order]) -> dict[str, Order]:
    return {o.client_order_id: o for o in flatten(list(orders))}
