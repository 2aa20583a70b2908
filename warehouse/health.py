"""Reads and writes of the health stage: the inputs of the health scores, metric history, learned
thresholds and alerts. ``learned_threshold`` is what other stages call.

Every write is one transaction: a health run's scores, metric points and alert changes land together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace

import pandas as pd

from models.alerts import AlertChanges, Evaluation
from models.health import HealthInputs
from models.thresholds import LearnedThreshold, MetricSpec, default_threshold, metric_specs
from qtrader.calendar import is_daily
from warehouse.db import WarehouseLike, WarehouseMissing, connect, insert_frame, query_df, transaction

HEALTH_COLUMNS = [
    "ts", "module", "score", "components", "capped_by", "baseline", "gate", "gate_source", "drivers", "run_id",
    "recorded_at",
]  # fmt: skip
METRIC_COLUMNS = ["module", "metric", "ts", "value", "run_id", "recorded_at"]
THRESHOLD_COLUMNS = [
    "module", "metric", "learned_at", "value", "bound", "method", "window_points", "n", "center", "spread",
    "k", "quantile", "is_default", "reason", "window_start", "window_end", "run_id",
]  # fmt: skip

# ------------------------------------------------------------------------------------------ health inputs

_CHAMPIONS_SQL = """
SELECT module, interval, version, trained_at, confirmed_at, train_start, train_end, feature_set_version, metrics
FROM model_registry WHERE status = 'champion' ORDER BY module, interval
"""
_NEWEST_BARS_SQL = "SELECT interval, max(ts) AS ts FROM bars WHERE ts <= ? GROUP BY interval"
# Per (module, interval): the newest bar with a valid prediction, and the newest predict run (by its
# write time; a run whose every row the predictions gate quarantined counts too) with its stored rows,
# invalid probabilities, quarantined rows and p95 latency. A quarantined row names its module first in
# its detail ("direction v3: ...").
_PREDICTIONS_SQL = """
WITH valid AS (
    SELECT module, interval, max(ts) AS newest_ts FROM predictions WHERE ts <= $now GROUP BY module, interval
),
runs AS (
    SELECT module, interval, run_id, max(predicted_at) AS run_at FROM predictions WHERE ts <= $now GROUP BY ALL
    UNION ALL
    SELECT split_part(detail, ' ', 1) AS module, interval, run_id, max(quarantined_at) AS run_at
    FROM quarantine WHERE stage = 'predictions' AND ts <= $now GROUP BY ALL
),
newest AS (
    SELECT module, interval, arg_max(run_id, run_at) AS run_id, max(run_at) AS predicted_at
    FROM runs GROUP BY module, interval
),
run_rows AS (
    SELECT p.module, p.interval, count(*) AS rows,
           count(*) FILTER (WHERE NOT (isfinite(p.p_up) AND p.p_up BETWEEN 0 AND 1
                                       AND isfinite(p.p_up_calibrated) AND p.p_up_calibrated BETWEEN 0 AND 1)) AS bad,
           quantile_cont(p.predict_latency_ms, 0.95) AS latency_p95_ms
    FROM predictions p JOIN newest n USING (module, interval, run_id)
    WHERE p.ts <= $now
    GROUP BY p.module, p.interval
),
quarantined AS (
    SELECT q.run_id, q.interval, split_part(q.detail, ' ', 1) AS module, count(*) AS quarantined
    FROM quarantine q WHERE q.stage = 'predictions' AND q.run_id IN (SELECT run_id FROM newest)
    GROUP BY ALL
)
SELECT n.module, n.interval, v.newest_ts, n.run_id, n.predicted_at, coalesce(r.rows, 0) AS rows,
       coalesce(r.bad, 0) AS bad, coalesce(q.quarantined, 0) AS quarantined, r.latency_p95_ms
FROM newest n
LEFT JOIN valid v USING (module, interval)
LEFT JOIN run_rows r USING (module, interval)
LEFT JOIN quarantined q ON q.run_id = n.run_id AND q.interval = n.interval AND q.module = n.module
"""
# Recent retrain runs of each interval (a run = a run_id in model_registry), and per module how many of
# them, since the module was first registered, registered nothing for it (the module raised).
_FAILED_RUNS_SQL = """
WITH runs AS (
    SELECT interval, run_id, min(trained_at) AS run_at FROM model_registry GROUP BY ALL
),
recent AS (
    SELECT * FROM runs QUALIFY row_number() OVER (PARTITION BY interval ORDER BY run_at DESC) <= ?
),
first_seen AS (
    SELECT module, interval, min(trained_at) AS first_at FROM model_registry GROUP BY ALL
)
SELECT f.module, f.interval,
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM model_registry m
           WHERE m.run_id = r.run_id AND m.module = f.module AND m.interval = f.interval)) AS failed
FROM first_seen f JOIN recent r ON r.interval = f.interval AND r.run_at >= f.first_at
GROUP BY ALL
"""
_BENCHMARKS_SQL = """
SELECT module, interval, window_name, accuracy, n, coverage, computed_at
FROM benchmarks
WHERE list_contains(?, window_name)
QUALIFY row_number() OVER (PARTITION BY module, interval, window_name ORDER BY computed_at DESC, run_id DESC) = 1
"""
# Critical verdicts of the newest runs feeding an interval: its ingest runs (raw_bars) and the features
# runs that wrote rows of it (a features run's verdicts cover all the intervals it computed).
_DQ_SQL = """
WITH ingest AS (
    SELECT run_id FROM ingest_runs WHERE interval = ? ORDER BY started_at DESC LIMIT ?
),
feats AS (
    SELECT run_id FROM features WHERE interval = ?
    GROUP BY run_id ORDER BY max(computed_at) DESC LIMIT ?
)
SELECT coalesce(sum(unexpected_count), 0) AS failing, coalesce(sum(element_count), 0) AS checked
FROM dq_results
WHERE severity = 'critical'
  AND ((stage = 'raw_bars' AND run_id IN (SELECT run_id FROM ingest))
       OR (stage = 'features' AND run_id IN (SELECT run_id FROM feats)))
"""


def _feature_frames(con, interval: str, version: str, start, end, recent_bars: int, max_rows: int, now):
    """(training-window sample, recent rows): features of ``interval`` inside [start, end], and of the
    newest ``recent_bars`` timestamps up to ``now``. The sample is every k-th row by (ts, symbol), k the
    smallest stride that keeps at most ``max_rows`` (``models.health_timeline`` takes the same rows from
    frames in memory)."""
    train = con.execute(
        "SELECT * EXCLUDE (feature_set_version, run_id, computed_at) FROM features"
        " WHERE interval = ? AND feature_set_version = ? AND ts BETWEEN ? AND ?"
        " QUALIFY (row_number() OVER (ORDER BY ts, symbol) - 1)"
        "  % CAST(ceil(count(*) OVER () / ?) AS BIGINT) = 0 ORDER BY ts, symbol",
        [interval, version, start, end, int(max_rows)],
    ).df()
    recent = con.execute(
        "SELECT * EXCLUDE (feature_set_version, run_id, computed_at) FROM features"
        " WHERE interval = ? AND feature_set_version = ? AND ts <= ? AND ts >= ("
        "  SELECT min(ts) FROM (SELECT DISTINCT ts FROM features WHERE interval = ? AND feature_set_version = ?"
        "  AND ts <= ? ORDER BY ts DESC LIMIT ?))",
        [interval, version, now, interval, version, now, recent_bars],
    ).df()
    return train, recent


def read_health_inputs(
    wh: WarehouseLike,
    modules: list[str],
    default_intervals: list[str],
    now: pd.Timestamp,
    cfg,
    *,
    combined: dict[str, tuple[tuple[str, ...], int]] | None = None,
) -> HealthInputs:
    """Everything the health scores need, read in one short connection (``cfg``: HealthSettings).

    ``combined``: {module: (members, min_voters)} of a module combined from others (the ensemble).

    Read-write open: a warehouse that predates the health tables gets them (migrations) first.
    ``now`` bounds the bars and feature rows read (their event time); runs, predictions batches and
    benchmarks are the newest stored (their write times come from other flows' clocks).
    """
    with connect(wh) as con:
        champions = con.execute(_CHAMPIONS_SQL).df()
        newest = con.execute(_NEWEST_BARS_SQL, [now]).df()
        predictions = con.execute(_PREDICTIONS_SQL, {"now": now}).df()
        failed = con.execute(_FAILED_RUNS_SQL, [cfg.error_recent_runs]).df()
        windows = [cfg.accuracy_window_daily, cfg.accuracy_window_intraday]
        benchmarks = con.execute(_BENCHMARKS_SQL, [windows]).df()
        if len(benchmarks):  # the configured window of each interval family
            wanted = [
                cfg.accuracy_window_daily if is_daily(iv) else cfg.accuracy_window_intraday
                for iv in benchmarks["interval"]
            ]
            benchmarks = benchmarks[benchmarks["window_name"] == pd.Series(wanted, index=benchmarks.index)]
        intervals = sorted(set(default_intervals) | set(champions["interval"]) | set(newest["interval"]))
        dq = {}
        for iv in intervals:
            failing, checked = con.execute(
                _DQ_SQL, [iv, cfg.dq_recent_runs, iv, cfg.dq_recent_runs]
            ).fetchall()[0]
            dq[iv] = (float(failing), float(checked))
        features = {}
        for row in champions.itertuples(index=False):
            key = (row.interval, pd.Timestamp(row.train_start), pd.Timestamp(row.train_end))
            if key in features:
                continue
            recent_bars = (
                cfg.drift_recent_bars_daily if is_daily(row.interval) else cfg.drift_recent_bars_intraday
            )
            features[key] = _feature_frames(
                con, row.interval, row.feature_set_version, row.train_start, row.train_end, recent_bars,
                cfg.drift_max_rows, now,
            )  # fmt: skip
    return HealthInputs(
        modules=list(dict.fromkeys([*modules, *champions["module"]])),
        default_intervals=list(default_intervals),
        champions=champions,
        newest_bars={
            str(iv): pd.Timestamp(ts) for iv, ts in zip(newest["interval"], newest["ts"], strict=True)
        },
        predictions=predictions,
        failed_runs=failed,
        benchmarks=benchmarks,
        features=features,
        dq=dq,
        combined=dict(combined or {}),
    )


def read_metric_window(
    wh: WarehouseLike, since: pd.Timestamp, until: pd.Timestamp, points: int
) -> pd.DataFrame:
    """The newest ``points`` metric_history points of each (module, metric) with since < ts <= until."""
    return _read(
        wh,
        "SELECT module, metric, ts, value FROM metric_history WHERE ts > ? AND ts <= ? "
        "QUALIFY row_number() OVER (PARTITION BY module, metric ORDER BY ts DESC) <= ? ORDER BY module, metric, ts",
        [since, until, int(points)],
    )


def read_metric_history(wh: WarehouseLike, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """metric_history points with since < ts <= until, ordered by module, metric, ts."""
    return _read(
        wh,
        "SELECT module, metric, ts, value FROM metric_history WHERE ts > ? AND ts <= ? ORDER BY module, metric, ts",
        [since, until],
    )


def read_open_alerts(wh: WarehouseLike) -> pd.DataFrame:
    return _read(wh, "SELECT * FROM alerts WHERE resolved_at IS NULL ORDER BY module, metric", [])


def latest_thresholds(wh: WarehouseLike) -> pd.DataFrame:
    return _read(wh, "SELECT * FROM v_latest_thresholds ORDER BY module, metric", [])


def latest_health(wh: WarehouseLike, at: pd.Timestamp | None = None) -> pd.DataFrame:
    """The newest health run (the run at ``at`` when given): the overall row first, then modules by score
    (worst first)."""
    if at is not None:
        return _read(
            wh,
            "SELECT * FROM health WHERE ts = ? ORDER BY module <> 'overall', score NULLS FIRST, module",
            [at],
        )
    return _read(
        wh,
        "SELECT * FROM v_latest_health ORDER BY module <> 'overall', score NULLS FIRST, module",
        [],
    )


def active_alerts(wh: WarehouseLike, at: pd.Timestamp | None = None) -> pd.DataFrame:
    """Alerts not resolved (as they stood at ``at`` when given: opened by then and not resolved by then;
    an alert updated since shows its newest figures)."""
    if at is not None:
        return _read(
            wh,
            "SELECT * FROM alerts WHERE ts <= ? AND (resolved_at IS NULL OR resolved_at > ?) "
            "ORDER BY time_to_threshold_hours NULLS LAST, module, metric",
            [at, at],
        )
    return _read(wh, "SELECT * FROM v_active_alerts", [])


def _read(wh: WarehouseLike, sql: str, params: list) -> pd.DataFrame:
    """A read-only query; a warehouse without the health tables yet is opened read-write once to migrate."""
    try:
        return query_df(wh, sql, params)
    except WarehouseMissing:
        raise
    except Exception as exc:  # duckdb.CatalogException: tables of a migration not applied yet
        if "does not exist" not in str(exc):
            raise
        with connect(wh) as con:
            return con.execute(sql, params).df()


# ---------------------------------------------------------------------------------------- thresholds API


def threshold_from_row(row: pd.Series | dict, specs: dict[str, MetricSpec]) -> LearnedThreshold:
    spec = specs[str(row["metric"])]

    def opt(name):
        v = row.get(name)
        return None if v is None or pd.isna(v) else v

    return LearnedThreshold(
        metric=spec.name,
        bound=spec.bound,
        value=float(row["value"]),
        method=str(row["method"]),
        window=int(row["window_points"]),
        n=int(row["n"]),
        center=opt("center"),
        spread=opt("spread"),
        k=opt("k"),
        quantile=opt("quantile"),
        is_default=bool(row["is_default"]),
        reason=str(row["reason"]),
        window_start=opt("window_start"),
        window_end=opt("window_end"),
    )


def learned_threshold(
    module: str, metric: str, *, warehouse: WarehouseLike, specs: dict[str, MetricSpec] | None = None
) -> LearnedThreshold:
    """The newest learned threshold of (module, metric), or the metric's default with the reason.

    What other stages call: the exit planner's ``stop_distance_atr``, the health flow's ``latency_ms``,
    accuracy floors. Never raises for a missing warehouse or a threshold not learned yet. ``specs``:
    ``models.thresholds.metric_specs(settings)`` (default: of the default Settings).
    """
    if specs is None:
        from qtrader.settings import Settings

        specs = metric_specs(Settings())
    spec: MetricSpec = specs[metric]
    try:
        rows = query_df(
            warehouse,
            "SELECT * FROM v_latest_thresholds WHERE module = ? AND metric = ?",
            [module, metric],
        )
    except WarehouseMissing:
        return _fallback(spec, f"no warehouse at {warehouse}")
    except Exception as exc:  # the health migration not applied yet
        if "does not exist" not in str(exc):
            raise
        return _fallback(spec, "no thresholds table yet")
    if rows.empty:
        return _fallback(spec, f"no learned threshold for {module}/{metric} yet")
    return threshold_from_row(rows.iloc[0], specs)


def _fallback(spec: MetricSpec, why: str) -> LearnedThreshold:
    return replace(default_threshold(spec), reason=f"default {spec.default:g}: {why}")


def thresholds_map(
    frame: pd.DataFrame, specs: dict[str, MetricSpec]
) -> dict[tuple[str, str], LearnedThreshold]:
    """{(module, metric): LearnedThreshold} from rows of v_latest_thresholds (unknown metrics skipped)."""
    out = {}
    for _, row in frame.iterrows():
        if row["metric"] in specs:
            out[(str(row["module"]), str(row["metric"]))] = threshold_from_row(row, specs)
    return out


# ------------------------------------------------------------------------------------------------ writes


def threshold_rows(
    learned: Iterable[tuple[str, LearnedThreshold]], learned_at: pd.Timestamp, run_id: str
) -> pd.DataFrame:
    rows = []
    for module, t in learned:
        rows.append(
            {
                "module": module, "metric": t.metric, "learned_at": learned_at, "value": t.value,
                "bound": t.bound.value, "method": t.method, "window_points": t.window, "n": t.n,
                "center": t.center, "spread": t.spread, "k": t.k, "quantile": t.quantile,
                "is_default": t.is_default, "reason": t.reason, "window_start": t.window_start,
                "window_end": t.window_end, "run_id": run_id,
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)


def write_thresholds(wh: WarehouseLike, rows: pd.DataFrame) -> int:
    with transaction(wh) as con:
        return insert_frame(con, "thresholds", rows.reindex(columns=THRESHOLD_COLUMNS), replace=True)


def alert_id(ev: Evaluation, now: pd.Timestamp) -> str:
    return f"alert-{ev.module}-{ev.metric}-{pd.Timestamp(now):%Y%m%dT%H%M%S}"


def _alert_values(ev: Evaluation) -> dict:
    return {
        "current": ev.current, "level": ev.level, "threshold": ev.threshold, "slope": ev.slope_per_hour,
        "slope_low": ev.slope_low, "slope_high": ev.slope_high,
        "time_to_threshold_hours": ev.time_to_threshold_hours, "reason": ev.reason,
    }  # fmt: skip


def write_health(
    wh: WarehouseLike,
    health: pd.DataFrame,
    metrics: pd.DataFrame,
    changes: AlertChanges,
    *,
    now: pd.Timestamp,
    run_id: str,
) -> dict[str, int]:
    """Health rows, metric points and alert changes of one health run, in one transaction.

    Re-running with the same clock replaces the run's health rows and metric points (primary keys).
    """
    recorded = pd.Timestamp.now(tz="UTC")
    health = health.assign(
        components=[c if isinstance(c, str) else json.dumps(c, default=str) for c in health["components"]],
        run_id=run_id,
        recorded_at=recorded,
    )
    if "drivers" in health.columns:
        health["drivers"] = [
            d if d is None or isinstance(d, str) else json.dumps(d, default=str) for d in health["drivers"]
        ]
    metrics = metrics.assign(run_id=run_id, recorded_at=recorded)
    with transaction(wh) as con:
        insert_frame(con, "health", health.reindex(columns=HEALTH_COLUMNS), replace=True)
        insert_frame(con, "metric_history", metrics.reindex(columns=METRIC_COLUMNS), replace=True)
        for ev in changes.opened:
            con.execute(
                "INSERT OR REPLACE INTO alerts (alert_id, ts, module, metric, bound, current, level, threshold,"
                " slope, slope_low, slope_high, time_to_threshold_hours, severity, reason, updated_at, run_id)"
                " VALUES ($id, $now, $module, $metric, $bound, $current, $level, $threshold, $slope, $slope_low,"
                " $slope_high, $time_to_threshold_hours, $severity, $reason, $now, $run_id)",
                {
                    "id": alert_id(ev, now), "now": now, "module": ev.module, "metric": ev.metric,
                    "bound": ev.bound, "severity": ev.severity.value, "run_id": run_id, **_alert_values(ev),
                },
            )  # fmt: skip
        for aid, ev in changes.updated:
            # Inside the resolve band an evaluation has no severity of its own: the alert keeps its last.
            con.execute(
                "UPDATE alerts SET current = $current, level = $level, threshold = $threshold, slope = $slope,"
                " slope_low = $slope_low, slope_high = $slope_high,"
                " time_to_threshold_hours = $time_to_threshold_hours, severity = coalesce($severity, severity),"
                " reason = $reason, updated_at = $now, run_id = $run_id WHERE alert_id = $id",
                {
                    "id": aid, "now": now, "run_id": run_id,
                    "severity": ev.severity.value if ev.severity else None, **_alert_values(ev),
                },
            )  # fmt: skip
        for aid, why in changes.resolved:
            con.execute(
                "UPDATE alerts SET resolved_at = ?, resolve_reason = ?, updated_at = ?, run_id = ? WHERE alert_id = ?",
                [now, why, now, run_id, aid],
            )
    return {"health": len(health), "metrics": len(metrics), "opened": len(changes.opened),
            "updated": len(changes.updated), "resolved": len(changes.resolved)}  # fmt: skip
