"""Reads and writes of the features stage."""

from __future__ import annotations

import pandas as pd

from warehouse.db import WarehouseLike, connect, insert_frame, transaction
from warehouse.ingest import DQ_COLUMNS, QUARANTINE_COLUMNS

FEATURE_KEYS = ("symbol", "interval", "ts", "feature_set_version")  # the features table's primary key

# Bars a features run needs per symbol: everything after the last computed bar, plus `warmup` bars before
# it so long-window indicators are exact. bar_number counts from the symbol's first stored bar.
_BARS_FOR_FEATURES_SQL = """
WITH ranked AS (
    SELECT symbol, interval, ts, open, high, low, close, volume,
           row_number() OVER (PARTITION BY symbol ORDER BY ts) - 1 AS bar_number
    FROM bars
    WHERE interval = ? AND (? OR list_contains(?, symbol))
),
done AS (
    SELECT symbol, max(ts) AS last_ts FROM features
    WHERE interval = ? AND feature_set_version = ? AND NOT ?
    GROUP BY symbol
),
start AS (
    SELECT r.symbol, max(CASE WHEN r.ts <= d.last_ts THEN r.bar_number END) AS last_done,
           max(r.bar_number) AS last_bar
    FROM ranked r LEFT JOIN done d USING (symbol)
    GROUP BY r.symbol
)
SELECT r.symbol, r.interval, r.ts, r.open, r.high, r.low, r.close, r.volume, r.bar_number, s.last_done
FROM ranked r JOIN start s USING (symbol)
WHERE s.last_done IS NULL OR (s.last_bar > s.last_done AND r.bar_number > s.last_done - ?)
ORDER BY r.symbol, r.ts
"""


def bars_for_features(
    wh: WarehouseLike,
    interval: str,
    version: str,
    warmup: int,
    *,
    symbols: list[str] | None = None,
    full: bool = False,
) -> pd.DataFrame:
    """Bars to compute features from, with ``bar_number`` and ``last_done`` (the last computed bar number).

    Incremental: symbols already computed come back from ``warmup`` bars before their last computed bar.
    ``full`` recomputes everything (needed when stored bars were corrected after features were computed).
    """
    params = [interval, symbols is None, symbols or [], interval, version, full, warmup]
    with connect(wh, read_only=False) as con:  # read-write: creates tables on a new file
        return con.execute(_BARS_FOR_FEATURES_SQL, params).df()


def write_features(
    wh: WarehouseLike,
    features: pd.DataFrame,
    quarantine: pd.DataFrame,
    dq_results: pd.DataFrame,
) -> int:
    """Upsert feature rows, record quarantined rows and GX verdicts, in one transaction."""
    with transaction(wh) as con:
        # Time order (migration 014): a bar's rows sit together, so a one-timestamp read skips the row
        # groups of other times.
        insert_frame(con, "features", features, keys=FEATURE_KEYS, order_by=("interval", "ts", "symbol"))
        insert_frame(con, "quarantine", quarantine.reindex(columns=QUARANTINE_COLUMNS))
        insert_frame(con, "dq_results", dq_results.reindex(columns=DQ_COLUMNS))
    return len(features)


def load_features(
    wh: WarehouseLike,
    interval: str,
    version: str,
    *,
    symbols: list[str] | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Stored features ordered by symbol and ts (all feature columns unless ``columns`` is given)."""
    if columns is not None and not all(c.isidentifier() for c in columns):
        raise ValueError(f"not column names: {columns}")
    cols = "*" if columns is None else ", ".join(["symbol", "interval", "ts", *columns])
    sql = (
        f"SELECT {cols} FROM features WHERE interval = ? AND feature_set_version = ?"  # column names only; values are bound
        " AND (? OR list_contains(?, symbol)) AND (? IS NULL OR ts >= ?) AND (? IS NULL OR ts <= ?)"
        " ORDER BY symbol, ts"
    )
    params = [interval, version, symbols is None, symbols or [], start, start, end, end]
    with connect(wh, read_only=True) as con:
        return con.execute(sql, params).df()
