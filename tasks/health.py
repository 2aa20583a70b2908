"""Prefect tasks of the health and thresholds flows: read, score, evaluate alerts, learn, record, summarise.

The decisions are in ``models/health.py``, ``models/thresholds.py`` and ``models/alerts.py`` (pure);
the reads and writes in ``warehouse/health.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.alerts import AlertChanges, Evaluation, evaluate_all
from models.health import OVERALL, Gate, HealthInputs, ModuleAssessment, overall_drivers
from models.health_timeline import combined_modules, score_inputs, trade_gates
from models.thresholds import LearnedThreshold, learn_all, metric_specs
from qtrader.settings import Settings
from tasks.resources import warehouse
from tasks.steps import step
from warehouse.health import (
    active_alerts,
    latest_thresholds,
    read_health_inputs,
    read_metric_history,
    read_metric_window,
    read_open_alerts,
    threshold_rows,
    thresholds_map,
    write_health,
    write_thresholds,
)

ENSEMBLE = "ensemble"


def monitored_modules(settings: Settings) -> list[str]:
    """The configured signal modules (and the ensemble when it is built); the registry may add more."""
    members = list(settings.signal.members)
    return members + ([ENSEMBLE] if settings.signal.ensemble and ENSEMBLE not in members else [])


# ------------------------------------------------------------------------------------------------ health


@task(name="load-health-inputs", cache_policy=NO_CACHE)
def load_health_inputs(settings: Settings, now: pd.Timestamp) -> HealthInputs:
    inputs = read_health_inputs(
        warehouse(settings), monitored_modules(settings), list(settings.intervals), now, settings.health,
        combined=combined_modules(settings),
    )  # fmt: skip
    get_run_logger().info(
        "health inputs: %d champions, newest bars %s, %d prediction runs, %d benchmarks",
        len(inputs.champions),
        {iv: str(ts) for iv, ts in inputs.newest_bars.items()},
        len(inputs.predictions),
        len(inputs.benchmarks),
    )
    return inputs


@dataclass
class AlertContext:
    history: pd.DataFrame  # metric_history within the alert lookback
    thresholds: dict[tuple[str, str], LearnedThreshold]
    open_alerts: dict[tuple[str, str], str]


@task(name="load-alert-context", cache_policy=NO_CACHE)
def load_alert_context(settings: Settings, now: pd.Timestamp) -> AlertContext:
    since = now - pd.Timedelta(hours=settings.alerts.lookback_hours)
    history = read_metric_history(warehouse(settings), since, now)
    learned = thresholds_map(latest_thresholds(warehouse(settings)), metric_specs(settings))
    opened = read_open_alerts(warehouse(settings))
    open_map = {
        (str(m), str(x)): str(a)
        for m, x, a in zip(opened["module"], opened["metric"], opened["alert_id"], strict=True)
    }
    return AlertContext(history, learned, open_map)


@dataclass
class HealthResult:
    assessments: dict[str, ModuleAssessment]
    overall: float | None
    rows: pd.DataFrame  # health table rows (ts, module, score, components, capped_by, baseline, gate, ...)
    points: pd.DataFrame  # metric_history points (module, metric, ts, value)
    gates: dict[str, Gate] = None  # the trade filter's gate per module and OVERALL


def health_rows(
    settings: Settings,
    assessments: dict[str, ModuleAssessment],
    overall: float | None,
    gates: dict[str, Gate],
    thresholds: dict[tuple[str, str], LearnedThreshold],
    now: pd.Timestamp,
) -> pd.DataFrame:
    """One health row per module and the overall row, with the gate and what drove each score down."""
    cfg = settings.health

    def baseline(module: str) -> float | None:
        t = thresholds.get((module, "health_score"))
        return None if t is None or t.is_default else float(t.value)

    rows = [
        {"ts": now, "module": m, "score": a.health.score, "components": a.health.components_json(),
         "capped_by": a.health.capped_by, "baseline": baseline(m), "gate": gates[m].value,
         "gate_source": gates[m].source, "drivers": a.health.drivers()}
        for m, a in assessments.items()
    ]  # fmt: skip
    scores = {m: a.health.score for m, a in assessments.items()}
    rows.append(
        {
            "ts": now, "module": OVERALL, "score": overall, "capped_by": None,
            "components": {m: {"score": s, "weight": cfg.module_weights.get(m, 1.0)} for m, s in scores.items()},
            "baseline": baseline(OVERALL), "gate": gates[OVERALL].value, "gate_source": gates[OVERALL].source,
            "drivers": overall_drivers({m: a.health for m, a in assessments.items()}, cfg.module_weights),
        }
    )  # fmt: skip
    return pd.DataFrame(rows)


@task(name="score-health", cache_policy=NO_CACHE)
def score_health(
    settings: Settings,
    inputs: HealthInputs,
    thresholds: dict[tuple[str, str], LearnedThreshold],
    now: pd.Timestamp,
) -> HealthResult:
    assessments, overall, points = score_inputs(inputs, now, settings, thresholds)
    gates = trade_gates(settings, list(assessments), thresholds)
    rows = health_rows(settings, assessments, overall, gates, thresholds, now)
    log = get_run_logger()
    for m, a in assessments.items():
        movers = ", ".join(f"{name} -{pts:.0f}" for name, pts, _ in a.health.movers()[:3])
        log.info("health %s: %s (gate %s)%s", m, _fmt(a.health.score), _fmt(gates[m].value),
                 f" ({movers})" if movers else "")  # fmt: skip
    log.info(
        "overall health: %s (gate %s, %s)", _fmt(overall), _fmt(gates[OVERALL].value), gates[OVERALL].source
    )
    return HealthResult(assessments, overall, rows, points, gates)


@task(name="evaluate-alerts", cache_policy=NO_CACHE)
def evaluate_alerts(
    settings: Settings, context: AlertContext, result: HealthResult, now: pd.Timestamp
) -> tuple[list[Evaluation], AlertChanges]:
    """Trend each watched metric over the stored history plus this run's points; open/update/resolve."""
    points = pd.concat([context.history, result.points], ignore_index=True)
    if len(points):
        points["ts"] = pd.to_datetime(points["ts"], utc=True)
        points = points.drop_duplicates(["module", "metric", "ts"], keep="last").sort_values(
            ["module", "metric", "ts"]
        )
    evaluations, changes = evaluate_all(
        points, context.thresholds, context.open_alerts, now, settings.alerts, metric_specs(settings)
    )
    log = get_run_logger()
    for ev in changes.opened:
        log.warning("alert opened: %s/%s %s: %s", ev.module, ev.metric, ev.severity.value, ev.reason)
    for aid, why in changes.resolved:
        log.info("alert resolved: %s (%s)", aid, why)
    return evaluations, changes


@task(name="record-health", cache_policy=NO_CACHE)
def record_health(
    settings: Settings, result: HealthResult, changes: AlertChanges, run_id: str, now: pd.Timestamp
) -> dict:
    counts = write_health(
        warehouse(settings),
        result.rows,
        result.points,
        changes,
        now=now,
        run_id=run_id,
    )
    get_run_logger().info("recorded health run %s: %s", run_id, counts)
    return counts


@task(name="health-summary", cache_policy=NO_CACHE)
def publish_health(
    settings: Settings, result: HealthResult, thresholds: dict, now: pd.Timestamp, run_id: str
) -> str:
    alerts = active_alerts(warehouse(settings))
    md = health_markdown(result, alerts, thresholds, now, run_id)
    create_markdown_artifact(key="health-summary", markdown=md, description="Module health and active alerts")
    return md


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _gate_text(result: HealthResult) -> str:
    gate = (result.gates or {}).get(OVERALL)
    return f"{_fmt(gate.value)} ({gate.reason})" if gate else "n/a"


def _hours(x) -> str:
    return "n/a" if x is None or pd.isna(x) else ("breached" if x == 0 else f"{x:.1f}")


def health_markdown(
    result: HealthResult,
    alerts: pd.DataFrame,
    thresholds: dict[tuple[str, str], LearnedThreshold],
    now,
    run_id: str,
) -> str:
    out = [
        f"# Module health at {pd.Timestamp(now):%Y-%m-%d %H:%M} UTC",
        "",
        f"Overall: **{_fmt(result.overall)}** / 100, gate {_gate_text(result)} (run `{run_id}`)",
        "",
        "| module | score | gate | what moved it (points lost) |",
        "|---|---|---|---|",
    ]
    for m, a in sorted(
        result.assessments.items(), key=lambda kv: (kv[1].health.score is not None, kv[1].health.score or 0)
    ):
        movers = "; ".join(f"{name} -{pts:.1f}: {detail}" for name, pts, detail in a.health.movers()) or "-"
        cap = f" (capped by {a.health.capped_by})" if a.health.capped_by else ""
        gate = result.gates[m] if result.gates else None
        gate_txt = f"{_fmt(gate.value)} ({gate.source})" if gate else "n/a"
        out.append(f"| {m} | {_fmt(a.health.score)}{cap} | {gate_txt} | {movers} |")
    out += ["", "## Active alerts", ""]
    if alerts.empty:
        out.append("None.")
    else:
        out += [
            "| module | metric | severity | current | threshold | slope / h | hours to threshold | since | reason |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in alerts.itertuples(index=False):
            out.append(
                f"| {a.module} | {a.metric} | {a.severity} | {_fmt(a.current, 4)} | {_fmt(a.threshold, 4)} | "
                f"{_fmt(a.slope, 4)} | {_hours(a.time_to_threshold_hours)} | {pd.Timestamp(a.ts):%Y-%m-%d %H:%M} | {a.reason} |"
            )
    learned = sorted((k, t) for k, t in thresholds.items() if not t.is_default)
    defaults = sorted(k for k, t in thresholds.items() if t.is_default)
    out += ["", "## Learned thresholds", ""]
    if not learned:
        out.append("None learned yet: every metric uses its documented default (history too short).")
    else:
        out += [
            "| module | metric | bound | threshold | method | points | how |",
            "|---|---|---|---|---|---|---|",
        ]
        for (module, metric), t in learned:
            out.append(
                f"| {module} | {metric} | {t.bound.value} | {t.value:.4g} | {t.method} | {t.n} | {t.reason} |"
            )
    if defaults:
        metrics = ", ".join(sorted({metric for _, metric in defaults}))
        out += [
            "",
            f"{len(defaults)} (module, metric) pairs still use their default (history too short): {metrics}.",
        ]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- thresholds


@task(name="load-metric-history", cache_policy=NO_CACHE)
def load_metric_history(settings: Settings, now: pd.Timestamp) -> pd.DataFrame:
    since = now - pd.Timedelta(days=settings.thresholds.history_days)
    history = read_metric_window(warehouse(settings), since, now, settings.thresholds.window)
    get_run_logger().info(
        "metric history: %d points of %d series",
        len(history),
        len(history.groupby(["module", "metric"])) if len(history) else 0,
    )
    return history


@task(name="learn-thresholds", cache_policy=NO_CACHE)
def learn_thresholds(settings: Settings, history: pd.DataFrame) -> list[tuple[str, LearnedThreshold]]:
    t = settings.thresholds
    watched = sorted(set(settings.alerts.metrics) | {"latency_ms"})
    pairs = [(m, x) for m in monitored_modules(settings) for x in watched]
    specs = metric_specs(settings)
    unknown = sorted(set(history["metric"]) - set(specs)) if len(history) else []
    if unknown:
        get_run_logger().info("metrics without a threshold spec (skipped): %s", unknown)
    return learn_all(history, pairs, specs, t)


@task(name="record-thresholds", cache_policy=NO_CACHE)
def record_thresholds(
    settings: Settings, learned: list[tuple[str, LearnedThreshold]], now: pd.Timestamp, run_id: str
) -> int:
    n = write_thresholds(warehouse(settings), threshold_rows(learned, now, run_id))
    defaults = sum(t.is_default for _, t in learned)
    get_run_logger().info("recorded %d thresholds (%d defaults: history too short)", n, defaults)
    return n


@task(name="thresholds-summary", cache_policy=NO_CACHE)
def publish_thresholds(learned: list[tuple[str, LearnedThreshold]], now: pd.Timestamp, run_id: str) -> str:
    out = [
        f"# Learned thresholds at {pd.Timestamp(now):%Y-%m-%d %H:%M} UTC",
        "",
        f"run `{run_id}`",
        "",
        "| module | metric | bound | threshold | method | points | how |",
        "|---|---|---|---|---|---|---|",
    ]
    for module, t in learned:
        out.append(
            f"| {module} | {t.metric} | {t.bound.value} | {t.value:.4g} | {t.method} | {t.n} | {t.reason} |"
        )
    md = "\n".join(out)
    create_markdown_artifact(key="thresholds-summary", markdown=md, description="Learned thresholds")
    return md


# -------------------------------------------------------------------------------------- the flows' bodies


@dataclass
class HealthPass:
    result: HealthResult
    context: AlertContext
    changes: AlertChanges
    counts: dict


def health_pass(settings: Settings, now: pd.Timestamp, run_id: str, *, tracked: bool = True) -> HealthPass:
    """Score, trend and record health at ``now`` (the health flow; the backtest runs it untracked)."""
    inputs = step(load_health_inputs, tracked)(settings, now)
    context = step(load_alert_context, tracked)(settings, now)
    result = step(score_health, tracked)(settings, inputs, context.thresholds, now)
    _, changes = step(evaluate_alerts, tracked)(settings, context, result, now)
    counts = step(record_health, tracked)(settings, result, changes, run_id, now)
    return HealthPass(result, context, changes, counts)


def thresholds_pass(
    settings: Settings, now: pd.Timestamp, run_id: str, *, tracked: bool = True
) -> tuple[list[tuple[str, LearnedThreshold]], int]:
    """Learn and record thresholds from the metric history up to ``now`` (the thresholds flow's body)."""
    history = step(load_metric_history, tracked)(settings, now)
    learned = step(learn_thresholds, tracked)(settings, history)
    return learned, step(record_thresholds, tracked)(settings, learned, now, run_id)
