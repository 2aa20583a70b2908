"""Backtest storage: the history a replay reads, its scratch warehouses, and the results it records.

A replay never writes to the user's warehouse until the end: it reads the bars and features once, then
works in scratch warehouses (``data/backtests/<run_id>/<mode>.duckdb``) that grow one bar at a time, so
every stage reading them sees exactly what the live warehouse held at that bar. The results land in
``backtest_runs`` / ``backtest_trades`` / ``backtest_equity`` of the user's warehouse in one transaction.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from brokers.simulated import BarBatch
from warehouse.db import WarehouseLike, connect, insert_frame, query_df, transaction

# What a decision replay writes: cleared when a mode starts from the shared model timeline.
TRADING_TABLES = (
    "paper_account", "paper_orders", "paper_fills", "paper_cash_ledger", "paper_positions", "order_records",
    "exit_adjustments", "account_snapshots", "position_snapshots", "decisions", "decision_orders",
    "broker_fills",
)  # fmt: skip


def load_history(
    wh: WarehouseLike,
    interval: str,
    feature_set_version: str,
    *,
    symbols: list[str] | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bars, features) of ``interval`` up to ``end`` (all stored symbols unless ``symbols``), by ts."""
    where = (
        "interval = ?"
        + (" AND list_contains(?, symbol)" if symbols else "")
        + (" AND ts <= ?" if end else "")
    )
    params: list = [interval] + ([symbols] if symbols else []) + ([end] if end is not None else [])
    with connect(wh, read_only=True) as con:
        bars = con.execute(f"SELECT * FROM bars WHERE {where} ORDER BY ts, symbol", params).df()
        feats = con.execute(
            f"SELECT * FROM features WHERE {where} AND feature_set_version = ? ORDER BY ts, symbol",
            [*params, feature_set_version],
        ).df()
    return bars, feats


def bar_times(bars: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(bars["ts"], utc=True).unique()).sort_values()


class History:
    """Bars and features split by bar time, for feeding a scratch warehouse one bar at a time."""

    def __init__(self, bars: pd.DataFrame, features: pd.DataFrame) -> None:
        self.bars = bars.assign(ts=pd.to_datetime(bars["ts"], utc=True))
        self.features = features.assign(ts=pd.to_datetime(features["ts"], utc=True))
        self.times = bar_times(self.bars)
        self._bars = dict(tuple(self.bars.groupby("ts", sort=True)))
        self._feats = dict(tuple(self.features.groupby("ts", sort=True)))
        self._batches: dict[pd.Timestamp, BarBatch] = {}

    def upto(self, ts: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.bars[self.bars["ts"] <= ts], self.features[self.features["ts"] <= ts]

    def at(self, ts: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
        empty_b, empty_f = self.bars.iloc[:0], self.features.iloc[:0]
        return self._bars.get(ts, empty_b), self._feats.get(ts, empty_f)

    def batch(self, ts: pd.Timestamp) -> BarBatch:
        """The bars of one bar time as arrays, made once (every mode of a run replays the same bars)."""
        if not self._batches:
            # Every bar time's at once: one conversion of the whole frame, then a slice each, instead of
            # a DataFrame conversion per bar (~1 ms each). Modes in threads may both build it: same dict.
            whole = BarBatch.of(self.bars)
            self._batches = {
                t: whole.take(rows) for t, rows in self.bars.groupby("ts", sort=True).indices.items()
            }
        return self._batches[ts]

    def bars_between(self, symbols: list[str] | None, after, until) -> pd.DataFrame:
        """A ``brokers.simulated.BarFeed``: the bars with after < ts <= until (``after`` None: each symbol's
        newest bar at or before ``until``), oldest first."""
        until = pd.Timestamp(until)
        if after is None:
            upto = self.bars[self.bars["ts"] <= until]
            out = upto.sort_values("ts", kind="stable").drop_duplicates("symbol", keep="last")
        else:
            lo, hi = (
                self.times.searchsorted(pd.Timestamp(after), "right"),
                self.times.searchsorted(until, "right"),
            )
            groups = [self._bars[t] for t in self.times[lo:hi]]
            out = groups[0] if len(groups) == 1 else (pd.concat(groups) if groups else self.bars.iloc[:0])
        if symbols is not None:
            out = out[out["symbol"].isin(symbols)]
        return out


class HistoryFeed:
    """The bar feed of a simulated broker replaying a ``History``: one bar time after another, as arrays
    made once per bar time (every mode of a run replays the same bars)."""

    def __init__(self, history: History) -> None:
        self.history = history

    def bars(self, symbols: list[str] | None, after, until) -> pd.DataFrame | BarBatch:
        h = self.history
        if symbols is None and after is not None:
            lo, hi = (
                h.times.searchsorted(pd.Timestamp(after), "right"),
                h.times.searchsorted(pd.Timestamp(until), "right"),
            )
            if hi - lo == 1:
                return h.batch(h.times[lo])
        return h.bars_between(symbols, after, until)


def seed_scratch(path: str | Path, bars: pd.DataFrame, features: pd.DataFrame) -> Path:
    """A new scratch warehouse at ``path`` holding ``bars`` and ``features`` (replaces an old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    append_bar(path, bars, features)
    return path


def append_bar(path: str | Path, bars: pd.DataFrame, features: pd.DataFrame) -> None:
    """Bars and features of the next bar time(s), as ingest and the features flow would have written them."""
    with transaction(path) as con:
        insert_frame(con, "bars", bars)
        insert_frame(con, "features", features)


def append_predictions(
    path: str | Path, predictions: pd.DataFrame, dq_results: pd.DataFrame | None = None
) -> int:
    """A bar's predictions, unless the retrain already stored one for (symbol, ts, module): the decision
    flow also uses a stored prediction as it is."""
    with transaction(path) as con:
        if dq_results is not None and len(dq_results):
            insert_frame(con, "dq_results", dq_results)
        if not len(predictions):
            return 0
        con.register("incoming_predictions", predictions)
        try:
            con.execute("INSERT OR IGNORE INTO predictions BY NAME SELECT * FROM incoming_predictions")
        finally:
            con.unregister("incoming_predictions")
    return len(predictions)


def predictions_at(path: str | Path, ts: pd.Timestamp) -> pd.DataFrame:
    """The stored predictions of bar ``ts`` (what the decision at ``ts`` reads)."""
    return query_df(path, "SELECT * FROM predictions WHERE ts = ?", [ts])


def copy_scratch(
    source: str | Path, target: str | Path, decision_predictions: pd.DataFrame | None = None
) -> Path:
    """A copy of a (closed) scratch warehouse with its trading tables emptied: the same market, models,
    health and thresholds, and a new paper account.

    ``decision_predictions``: the predictions of each replayed bar as they stood at that bar. A later
    retrain rewrites the walk-forward predictions of earlier bars; the copy puts back what the decision
    saw then.
    """
    target = Path(target)
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    with transaction(target) as con:
        for table in TRADING_TABLES:
            con.execute(f"DELETE FROM {table}")  # noqa: S608 - names from TRADING_TABLES above
        if decision_predictions is not None and len(decision_predictions):
            con.register("as_of", decision_predictions)
            try:
                con.execute("DELETE FROM predictions WHERE ts IN (SELECT DISTINCT ts FROM as_of)")
                con.execute("INSERT INTO predictions BY NAME SELECT * FROM as_of")
            finally:
                con.unregister("as_of")
    return target


def new_mode_records(path: str | Path) -> Path:
    """Start a mode's results file afresh (an older file of the same name is removed)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    return path


def append_mode_decisions(path: str | Path, decisions: pd.DataFrame) -> int:
    """Add a chunk of a replay's decisions to its results file (in one transaction)."""
    from warehouse.decisions import DECISION_COLUMNS

    with transaction(path) as con:
        _insert(con, "decisions", decisions, DECISION_COLUMNS)
    return len(decisions)


def write_mode_records(
    path: str | Path,
    *,
    decisions: pd.DataFrame,
    orders: pd.DataFrame,
    fills: pd.DataFrame,
    stops: pd.DataFrame,
    accounts: pd.DataFrame,
    positions: pd.DataFrame,
    order_records: pd.DataFrame,
    fresh: bool = True,
) -> Path:
    """A mode's results file: the trading tables of a warehouse holding what its replay did (the review
    views work on it as on the live warehouse). ``fresh``: replaces an older file of the same name; else
    adds to the decisions already appended (``append_mode_decisions``)."""
    path = new_mode_records(path) if fresh else Path(path)
    from warehouse.decisions import DECISION_COLUMNS, DECISION_ORDER_COLUMNS, FILL_COLUMNS

    with transaction(path) as con:
        _insert(con, "decisions", decisions, DECISION_COLUMNS)
        _insert(con, "decision_orders", orders, DECISION_ORDER_COLUMNS)
        _insert(con, "broker_fills", fills, FILL_COLUMNS, money=("price", "commission"))
        _insert(con, "exit_adjustments", stops, None, money=("old_stop", "new_stop"))
        _insert(con, "account_snapshots", accounts, None, money=("cash", "equity", "buying_power"))
        _insert(con, "position_snapshots", positions, None, money=("avg_entry_price", "market_value"))
        _insert(con, "order_records", order_records, None, money=("take_profit", "stop_price"))
    return path


def _insert(
    con, table: str, frame: pd.DataFrame, columns: list[str] | None, money: tuple[str, ...] = ()
) -> None:
    if frame is None or not len(frame):
        return
    frame = frame if columns is None else frame.reindex(columns=columns)
    frame = frame.copy()
    for c in money:  # exact: as text, cast by the table's DECIMAL column
        frame[c] = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in frame[c]]
    insert_frame(con, table, frame)


def mode_results(path: str | Path, broker: str) -> dict[str, pd.DataFrame]:
    """A mode's closed trades (v_trades), equity per bar, open trades and traded notional."""
    with connect(path, read_only=True) as con:
        trades = con.execute(
            "SELECT * FROM v_trades WHERE broker = ? ORDER BY exit_ts, symbol", [broker]
        ).df()
        equity = con.execute(
            "SELECT a.ts, a.equity::DOUBLE AS equity, a.cash::DOUBLE AS cash, "
            "coalesce(sum(abs(p.market_value)), 0)::DOUBLE AS gross "
            "FROM account_snapshots a LEFT JOIN position_snapshots p "
            "ON p.broker = a.broker AND p.ts = a.ts AND p.qty <> 0 "
            "WHERE a.broker = ? GROUP BY ALL ORDER BY a.ts",
            [broker],
        ).df()
        fills = con.execute(
            "SELECT coalesce(sum(qty * price), 0)::DOUBLE AS notional, coalesce(sum(commission), 0)::DOUBLE "
            "AS commission FROM broker_fills WHERE broker = ?",
            [broker],
        ).fetchall()[0]
        open_trades = con.execute(
            "SELECT count(DISTINCT decision_id) FROM v_bracket_results WHERE broker = ? AND NOT closed",
            [broker],
        ).fetchall()[0][0]
    return {
        "trades": trades,
        "equity": equity,
        "notional": float(fills[0]),
        "commission": float(fills[1]),
        "open_trades": int(open_trades or 0),
    }


def write_results(
    wh: WarehouseLike,
    runs: pd.DataFrame,
    trades: pd.DataFrame,
    equity: pd.DataFrame,
    stages: pd.DataFrame | None = None,
) -> dict[str, int]:
    """One transaction: a failed write leaves earlier backtests untouched. ``stages``: run_id, stage,
    seconds, position (backtest_stage_timings)."""
    with transaction(wh) as con:
        counts = {
            "backtest_runs": insert_frame(con, "backtest_runs", runs, replace=True),
            "backtest_trades": insert_frame(con, "backtest_trades", trades, replace=True),
            "backtest_equity": insert_frame(con, "backtest_equity", equity, replace=True),
        }
        if stages is not None and len(stages):
            counts["backtest_stage_timings"] = insert_frame(
                con, "backtest_stage_timings", stages, replace=True
            )
    return counts


def stage_timings(wh: WarehouseLike, run_id: str) -> pd.DataFrame:
    """Seconds per stage of a backtest run (stage, seconds), in the run's order."""
    return query_df(
        wh, "SELECT stage, seconds FROM backtest_stage_timings WHERE run_id = ? ORDER BY position", [run_id]
    )


def latest_table(wh: WarehouseLike, run_id: str | None = None):
    if run_id:
        return query_df(
            wh,
            "SELECT * FROM backtest_runs WHERE run_id = ? ORDER BY mode <> 'static', mode <> 'adaptive', mode",
            [run_id],
        )
    return query_df(wh, "SELECT * FROM v_backtest_latest")


_REGISTRY_SQL = (
    "SELECT module, interval, version, trained_at, train_start, train_end, feature_set_version, metrics, status,"
    " run_id, confirmed_at FROM model_registry"
)
_PREDICTIONS_SQL = (
    "SELECT symbol, interval, ts, module, model_version, p_up, predict_latency_ms, run_id, predicted_at"
    " FROM predictions"
)
_BENCHMARKS_SQL = (
    "SELECT module, interval, window_name, accuracy, n, coverage, computed_at, run_id FROM benchmarks"
)


def model_state(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(registry, predictions, benchmarks) of a scratch warehouse, as the health flow's inputs read them."""
    with connect(path, read_only=True) as con:
        return (
            con.execute(_REGISTRY_SQL).df(),
            con.execute(_PREDICTIONS_SQL).df(),
            con.execute(_BENCHMARKS_SQL).df(),
        )
