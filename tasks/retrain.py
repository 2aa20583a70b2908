"""Prefect tasks of the retrain flow: load, train each module, register, gate and record predictions.

The learning itself is in ``models/training.py`` (pure); these tasks read the warehouse, write artifacts
under ``data/models/<warehouse>-<id>/`` (content-addressed) and record everything in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from expectations.frame_gate import FrameGateResult, build_frame_docs, gate_frame, gate_rows
from models.features import FEATURE_SET_VERSION
from models.training import (
    ENSEMBLE,
    Candidate,
    Decision,
    EnsembleConfig,
    FitCache,
    ModelArtifact,
    TrainingConfig,
    TrainingData,
    WalkForwardPlan,
    canonical_json,
    compare_with_champion,
    config_hash,
    ensemble_candidate,
    live_predictions,
    module_params,
    plan_walk_forward,
    prepare_training_data,
    train_candidate,
    walk_forward_frame,
)
from qtrader import artifacts as qa
from qtrader.calendar import is_daily
from qtrader.settings import Settings
from tasks.resources import data_docs_site, warehouse
from warehouse.models import (
    artifact_check_changes,
    artifact_dir,
    latest_versions,
    load_champion_artifacts,
    load_training_frame,
    record_artifact_checks,
    save_artifact,
    write_retrain,
)

# ------------------------------------------------------------------------------------ settings -> config


def training_config(settings: Settings, interval: str) -> TrainingConfig:
    r, s = settings.retrain, settings.signal
    daily = is_daily(interval)
    return TrainingConfig(
        label_horizon=s.label_horizon_daily if daily else s.label_horizon_intraday,
        n_splits=r.n_splits,
        train_window=r.train_window_bars_daily if daily else r.train_window_bars_intraday,
        min_train_window=r.min_train_bars,
        test_window=r.test_window_bars_daily if daily else r.test_window_bars_intraday,
        embargo=r.embargo_bars_daily if daily else r.embargo_bars_intraday,
        calibration_methods=tuple(r.calibration_methods),
        calibration_holdout_fraction=r.calibration_holdout_fraction,
        calibration_min_samples=r.calibration_min_samples,
        seed_accuracy_prior=r.seed_accuracy_prior,
        seed_accuracy_weight=r.seed_accuracy_weight,
        seed_confidence_floor=r.seed_confidence_floor,
        seed_confidence_cap=r.seed_confidence_cap,
        n_bins=settings.benchmark.ece_bins,
        skip_warmup=r.skip_warmup,
        random_state=s.random_state,
    )


def ensemble_config(settings: Settings) -> EnsembleConfig:
    s = settings.signal
    return EnsembleConfig(
        min_edge=s.ensemble_min_edge,
        strong=s.ensemble_strong,
        weak=s.ensemble_weak,
        min_voters=s.ensemble_min_voters,
        weight_floor=s.accuracy_weight_floor,
    )


def score_params(settings: Settings) -> dict[str, float]:
    """performance_score's keyword arguments from BenchmarkSettings."""
    b = settings.benchmark
    return {
        "w_accuracy": b.score_w_accuracy,
        "w_auc": b.score_w_auc,
        "w_calibration": b.score_w_calibration,
        "accuracy_span": b.score_accuracy_span,
        "auc_span": b.score_auc_span,
        "ece_span": b.score_ece_span,
    }


def bars_needed(config: TrainingConfig) -> int:
    """Bar timestamps to load: a full training window, the gaps and test blocks, and the unlabelled tail."""
    gaps = config.label_horizon + config.embargo
    return config.train_window + gaps + config.n_splits * config.test_window + config.label_horizon


# -------------------------------------------------------------------------------------------------- load


@task(name="load-training-data", cache_policy=NO_CACHE)
def load_training_data(
    settings: Settings, interval: str, config: TrainingConfig
) -> tuple[TrainingData, WalkForwardPlan]:
    log = get_run_logger()
    started = time.perf_counter()
    frame = load_training_frame(warehouse(settings), interval, FEATURE_SET_VERSION, bars_needed(config))
    if frame.empty or not frame["has_features"].any():
        raise ValueError(
            f"no {interval} features in {settings.warehouse}: run `qtrader ingest` and the features flow first"
        )
    data = prepare_training_data(frame, config)
    if data.newest_labelled is None:
        raise ValueError(f"no labelled {interval} bars with features in {settings.warehouse}")
    plan = plan_walk_forward(data.keys["ts"], config)
    log.info(
        "%s: %d labelled rows (%d symbols) up to %s, %d fresh rows; %d splits, training window %d bars",
        interval, len(data.X), data.keys["symbol"].nunique(), data.newest_labelled, len(data.fresh_X),
        len(plan.splits), plan.train_window,
    )  # fmt: skip
    log.info("loaded and labelled in %.2fs", time.perf_counter() - started)
    return data, plan


@dataclass
class Champion:
    row: dict[str, Any]
    artifact: ModelArtifact | None
    problem: str | None = None


@task(name="load-champions", cache_policy=NO_CACHE)
def load_champions(
    settings: Settings, interval: str, now: pd.Timestamp | None = None
) -> tuple[dict[str, Champion], dict[str, int]]:
    """Current champions with their artifacts, each checked against the registry's hash before it is
    unpickled. A refused one (missing, changed, unhashed: ``warehouse.models.load_artifact``) comes back
    with artifact None and the reason, and the registry row is marked unusable with that reason (health
    reads it; the retrain compares against nothing, the decide flow cannot use the module)."""
    log = get_run_logger()
    wh = warehouse(settings)
    checks = load_champion_artifacts(wh, interval)
    for c in checks:
        if c.problem:
            log.warning("champion %s v%s refused: %s", c.row["module"], c.row["version"], c.problem)
    changed = artifact_check_changes(checks)
    if changed:
        record_artifact_checks(wh, changed, now or pd.Timestamp.now(tz="UTC"))
    found = {c.row["module"]: Champion(c.row, c.artifact, c.problem) for c in checks}
    return found, latest_versions(wh, interval)


# ------------------------------------------------------------------------------------------------- train


@dataclass
class Trained:
    """A candidate with its version and promotion decision."""

    candidate: Candidate
    version: int
    decision: Decision
    champion: Champion | None
    seconds: float = 0.0


def _decide(
    candidate: Candidate, champion: Champion | None, data, plan, config, settings: Settings
) -> Decision:
    def compare(artifact: ModelArtifact | None) -> Decision:
        return compare_with_champion(
            artifact,
            candidate.metrics,
            data,
            plan,
            config,
            metric=settings.retrain.promotion_metric,
            margin=settings.retrain.promotion_margin,
            score_params=score_params(settings),
        )

    if champion is None:
        return compare(None)
    if champion.artifact is None:
        decision = compare(None)
        decision.reason = f"{champion.problem}; {decision.reason}"
        return decision
    try:
        return compare(champion.artifact)
    except (KeyError, ValueError, TypeError) as exc:  # e.g. it reads a column the features no longer have
        decision = compare(None)
        decision.reason = f"champion v{champion.row['version']} cannot predict ({exc}); {decision.reason}"
        return decision


@task(name="train-module", cache_policy=NO_CACHE)
def train_module(
    name: str,
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    settings: Settings,
    champion: Champion | None,
    version: int,
    fits: FitCache | None = None,
) -> Trained | None:
    """Walk-forward, calibration and the champion comparison of one member module (None if it cannot train).
    ``fits``: split models of earlier retrains to reuse where their training rows did not change."""
    log = get_run_logger()
    started = time.perf_counter()
    params = module_params(name, settings.signal.module_params.get(name), config)
    try:
        candidate = train_candidate(name, params, data, plan, config, score_params(settings), fits)
    except ValueError as exc:  # e.g. a module that needs both classes in a split's training rows
        log.error("%s could not be trained: %s", name, exc)
        return None
    decision = _decide(candidate, champion, data, plan, config, settings)
    seconds = time.perf_counter() - started
    log.info(
        "%s v%d: validation acc %.4f auc %.4f (%s calibration) in %.1fs; %s",
        name, version, candidate.metrics["accuracy"], candidate.metrics["auc"], candidate.calibration.method,
        seconds, decision.reason,
    )  # fmt: skip
    return Trained(candidate, version, decision, champion, seconds)


@task(name="train-ensemble", cache_policy=NO_CACHE)
def train_ensemble(
    members: dict[str, Trained],
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    settings: Settings,
    champion: Champion | None,
    version: int,
) -> Trained | None:
    log = get_run_logger()
    if len(members) < settings.signal.ensemble_min_voters:
        log.warning(
            "ensemble skipped: %d members trained, it needs %d voters",
            len(members),
            settings.signal.ensemble_min_voters,
        )
        return None
    started = time.perf_counter()
    candidate = ensemble_candidate(
        {m: t.candidate for m, t in members.items()}, data, plan, config, ensemble_config(settings),
        score_params(settings),
    )  # fmt: skip
    decision = _decide(candidate, champion, data, plan, config, settings)
    seconds = time.perf_counter() - started
    log.info(
        "ensemble v%d of %s: validation acc %.4f auc %.4f; %s",
        version, ",".join(members), candidate.metrics["accuracy"], candidate.metrics["auc"], decision.reason,
    )  # fmt: skip
    return Trained(candidate, version, decision, champion, seconds)


# ---------------------------------------------------------------------------------------------- register


@dataclass
class RetrainRecord:
    registry: pd.DataFrame
    retire: list[dict[str, Any]]
    confirm: list[dict[str, Any]]  # champions this retrain evaluated and kept (module, interval, version)
    predictions: pd.DataFrame
    changes: pd.DataFrame  # one row per module: what happened and why (the artifact table)


def _metrics_json(t: Trained, plan: WalkForwardPlan) -> str:
    c = t.candidate
    return canonical_json(
        {
            **c.metrics,
            "walk_forward": c.walk_forward_metrics,
            "calibration": {
                "method": c.calibration.method,
                "holdout_ece": c.calibration.holdout_ece,
                "seed_accuracy": c.calibration.accuracy,
            },
            "champion": t.decision.champion_metrics,
            "n_splits": len(plan.splits),
            "train_window_bars": plan.train_window,
        }
    )


def _params(t: Trained, members: dict[str, Trained]) -> dict[str, Any]:
    params = dict(t.candidate.run.params)
    if t.candidate.run.module == ENSEMBLE:
        params = {
            **params,
            "weights": t.candidate.run.weights,
            "member_versions": {m: members[m].version for m in t.candidate.run.members or []},
        }
    return params


@task(name="register-models", cache_policy=NO_CACHE)
def register_models(
    settings: Settings,
    interval: str,
    trained: dict[str, Trained],
    data: TrainingData,
    plan: WalkForwardPlan,
    config: TrainingConfig,
    run_id: str,
    now: pd.Timestamp,
) -> RetrainRecord:
    """Write each new version's artifact and build its registry row, status changes and predictions.

    Promoted (or first) versions become champion and the replaced champion is retired with the reason.
    Live predictions for the newest, unlabelled bars come from whoever is champion afterwards.
    """
    log = get_run_logger()
    ts = data.keys["ts"]
    train_ts, valid_ts = ts.iloc[plan.final_train_rows], ts.iloc[plan.validation_rows]
    data_hash = data.data_hash()
    rows, retire, confirm, frames, changes = [], [], [], [], []
    for name, t in trained.items():
        run, cal = t.candidate.run, t.candidate.calibration
        folder = artifact_dir(settings.data_dir, settings.warehouse, name, interval)
        artifact = ModelArtifact(
            module=name,
            interval=interval,
            version=t.version,
            estimator=run.final_estimator,
            calibrator=cal.calibrator,
            seed_accuracy=cal.accuracy,
            features=run.features,
            feature_set_version=FEATURE_SET_VERSION,
            label_horizon=config.label_horizon,
            params=_params(t, trained),
            config_hash=config_hash(name, run.params, config, run.features),  # learned weights excluded
            data_hash=data_hash,
            train_start=train_ts.min(),
            train_end=train_ts.max(),
            valid_start=valid_ts.min(),
            valid_end=valid_ts.max(),
            trained_at=now,
            weights=run.weights,
        )
        path, digest = save_artifact(artifact, folder, t.version)
        status = "champion" if t.decision.promoted else "challenger"
        old = t.champion.row if t.champion else None
        if not t.decision.promoted and old is not None:  # evaluated against its challenger and kept
            confirm.append({"module": name, "interval": interval, "version": old["version"]})
        if t.decision.promoted and old is not None:
            retire.append(
                {
                    "module": name,
                    "interval": interval,
                    "version": old["version"],
                    "retired_at": now,
                    "reason": f"replaced by v{t.version}: {t.decision.reason}",
                }
            )
        rows.append(
            {
                "module": name,
                "interval": interval,
                "version": t.version,
                "trained_at": now,
                "train_start": artifact.train_start,
                "train_end": artifact.train_end,
                "valid_start": artifact.valid_start,
                "valid_end": artifact.valid_end,
                "train_rows": len(plan.final_train_rows),
                "valid_rows": len(plan.validation_rows),
                "label_horizon": config.label_horizon,
                "feature_set_version": FEATURE_SET_VERSION,
                "params": canonical_json(artifact.params),
                "config_hash": artifact.config_hash,
                "data_hash": data_hash,
                "metrics": _metrics_json(t, plan),
                "calibration": cal.method,
                "status": status,
                "status_reason": t.decision.reason,
                "promoted_at": now if t.decision.promoted else None,
                "retired_at": None,
                "artifact_path": str(path),
                "run_id": run_id,
                "artifact_sha256": digest,
            }
        )
        frames.append(
            walk_forward_frame(t.candidate, data, version=t.version, label_horizon=config.label_horizon)
        )
        live_model = artifact if t.decision.promoted else (t.champion.artifact if t.champion else None)
        live_rows = 0
        if live_model is not None and len(data.fresh_X):
            frames.append(live_predictions(live_model, data.fresh_keys, data.fresh_X))
            live_rows = len(data.fresh_X)
        m = t.candidate.metrics
        changes.append(
            {
                "module": name,
                "version": t.version,
                "status": status,
                "replaces": f"v{old['version']}" if (t.decision.promoted and old is not None) else "",
                "champion_now": _champion_now(t, old),
                "val_accuracy": _round(m.get("accuracy")),
                "val_auc": _round(m.get("auc")),
                "champion_auc": _round((t.decision.champion_metrics or {}).get("auc")),
                "calibration": cal.method,
                "live_predictions": f"{live_rows} by v{live_model.version}" if live_rows else "",
                "seconds": round(t.seconds, 2),
                "reason": t.decision.reason,
            }
        )
        log.info("%s v%d registered as %s (%s)", name, t.version, status, path)
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return RetrainRecord(pd.DataFrame(rows), retire, confirm, predictions, pd.DataFrame(changes))


def _champion_now(t: Trained, old: dict[str, Any] | None) -> str:
    if t.decision.promoted:
        return f"v{t.version}"
    return f"v{old['version']}" if old else ""


def _round(value: Any, digits: int = 4) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


@task(name="gate-predictions", cache_policy=NO_CACHE)
def gate_predictions(predictions: pd.DataFrame, run_id: str, in_memory: bool = False) -> FrameGateResult:
    """The predictions suite on the retrain's rows: Great Expectations, or ``in_memory`` the same rules
    without it (``RetrainSettings.predictions_gate``; no validation object, so no Data Docs page)."""
    gate = gate_rows if in_memory else gate_frame
    result = gate(predictions, suite="predictions", run_id=run_id, stage="predictions")
    log = get_run_logger()
    for line in result.summary_lines():
        log.warning(line)
    log.info("predictions gate: %d rows passed, %d quarantined", len(result.passed), len(result.quarantined))
    return result


def quarantine_rows(gated: FrameGateResult, run_id: str, now: pd.Timestamp) -> pd.DataFrame:
    q = gated.quarantined
    if q.empty:
        return q
    detail = [
        f"{m} v{v}: {d} (p_up={p}, p_up_calibrated={pc})"
        for m, v, d, p, pc in zip(
            q["module"], q["model_version"], q["detail"], q["p_up"], q["p_up_calibrated"], strict=True
        )
    ]
    return pd.DataFrame(
        {
            "run_id": run_id,
            "stage": "predictions",
            "rule": q["rule"],
            "severity": q["severity"],
            "symbol": q["symbol"],
            "interval": q["interval"],
            "ts": q["ts"],
            "source": "retrain",
            "detail": detail,
            "quarantined_at": now,
        }
    )


@task(name="record-retrain", cache_policy=NO_CACHE)
def record_retrain(
    settings: Settings,
    record: RetrainRecord,
    gated: FrameGateResult,
    expected_versions: dict[str, int],
    run_id: str,
) -> int:
    now = pd.Timestamp.now(tz="UTC")
    predictions = gated.passed.assign(run_id=run_id, predicted_at=now)
    write_retrain(
        warehouse(settings),
        record.registry,
        record.retire,
        predictions,
        quarantine_rows(gated, run_id, now),
        gated.dq_results,
        expected_versions=expected_versions,
        confirm=record.confirm,
        run_id=run_id,
    )
    get_run_logger().info(
        "recorded %d model versions, %d retirements, %d predictions (%d quarantined) in %s",
        len(record.registry), len(record.retire), len(predictions), len(gated.quarantined), settings.warehouse,
    )  # fmt: skip
    return len(predictions)


@task(name="build-predictions-docs", cache_policy=NO_CACHE)
def build_predictions_docs(settings: Settings, gated: FrameGateResult) -> str | None:
    """The Data Docs page of a Great Expectations gate (None for an in-memory one: nothing to show)."""
    if gated.validation is None:
        return None
    return str(build_frame_docs([gated], data_docs_site(settings)))


@task(name="retrain-summary", cache_policy=NO_CACHE)
def publish_retrain_summary(
    interval: str, run_id: str, record: RetrainRecord, failed: list[str], gated: FrameGateResult
) -> str:
    table = retrain_table(record.changes)
    create_table_artifact(
        key=f"retrain-{interval}".replace("_", "-").lower(),
        table=table,
        description=f"Model registry changes of retrain {run_id} ({interval})",
    )
    md = retrain_markdown(interval, run_id, record, failed, gated)
    create_markdown_artifact(
        key=f"retrain-summary-{interval}".lower(), markdown=md, description="Who was promoted and why"
    )
    return md


# The retrain table's columns: header and format (the reasons are in the markdown summary).
_RETRAIN_COLUMNS = [("module", "Module", str), ("version", "Version", lambda v: f"v{v}"), ("status", "Status", str),
                    ("champion_now", "Champion now", str), ("val_accuracy", "Val accuracy", lambda v: qa.percent(v, 1)),
                    ("val_auc", "Val AUC", lambda v: qa.number(v, 3)),
                    ("champion_auc", "Champion AUC", lambda v: qa.number(v, 3)), ("calibration", "Calibration", str),
                    ("live_predictions", "Live predictions", str), ("seconds", "Seconds", lambda v: qa.number(v, 1))]  # fmt: skip


def retrain_table(changes: pd.DataFrame) -> list[dict]:
    """The registry changes as a table artifact: human headers, formatted cells, n/a for missing."""
    out = []
    for r in changes.to_dict("records"):
        row = {}
        for col, title, fmt in _RETRAIN_COLUMNS:
            v = r.get(col)
            row[title] = "n/a" if v is None or (not isinstance(v, str) and pd.isna(v)) else fmt(v)
        out.append(row)
    return out


def retrain_markdown(
    interval: str, run_id: str, record: RetrainRecord, failed: list[str], gated: FrameGateResult
) -> str:
    out = [
        f"# Retrain {interval}",
        "",
        f"run `{run_id}`",
        "",
        "| module | version | status | champion now | val acc | val AUC | champion AUC | calibration | why |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record.changes.to_dict("records"):
        out.append(
            f"| {r['module']} | v{r['version']} | {r['status']} | {r['champion_now']} | {r['val_accuracy']} | "
            f"{r['val_auc']} | {r['champion_auc']} | {r['calibration']} | {r['reason']} |"
        )
    if record.retire:
        out += ["", "## Retired", ""] + [
            f"- {r['module']} v{r['version']}: {r['reason']}" for r in record.retire
        ]
    if failed:
        out += ["", "## Not trained", ""] + [f"- {name}" for name in failed]
    lines = gated.summary_lines()
    if lines:
        out += ["", "## Predictions gate", ""] + [f"- {line}" for line in lines]
    return "\n".join(out)
