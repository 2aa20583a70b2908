"""Prefect tasks of the features flow: load bars (incremental), compute per symbol batch, gate, write.

Loads and the write run in the flow process; ``compute_batch`` is the only task sent to the task runner.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from expectations.features_gate import features_view
from expectations.frame_gate import FrameGateResult, gate_frame
from models.features import (
    DAILY_CONTEXT_SOURCES,
    FEATURE_SET_VERSION,
    WARMUP_BARS,
    add_daily_context,
    compute_features_many,
)
from qtrader import artifacts as qa
from qtrader.calendar import is_daily
from qtrader.settings import Settings
from sources.base import BAR_COLUMNS
from tasks.resources import warehouse
from warehouse.features import bars_for_features, load_features, write_features


@task(name="load-bars-for-features", cache_policy=NO_CACHE)
def load_bars(settings: Settings, interval: str, symbols: list[str] | None, full: bool) -> pd.DataFrame:
    bars = bars_for_features(
        warehouse(settings),
        interval,
        FEATURE_SET_VERSION,
        WARMUP_BARS,
        symbols=symbols,
        full=full,
    )
    get_run_logger().info(
        "%s: %d bars of %d symbols to read (new bars plus %d warm-up bars per symbol)",
        interval,
        len(bars),
        bars["symbol"].nunique() if len(bars) else 0,
        WARMUP_BARS,
    )
    return bars


def _new_rows(bars: pd.DataFrame) -> np.ndarray:
    """Bars not computed yet; the others are warm-up rows (computed, then dropped)."""
    last_done = bars["last_done"].to_numpy(dtype=np.float64)
    return np.isnan(last_done) | (bars["bar_number"].to_numpy() > last_done)


@task(name="load-daily-context", cache_policy=NO_CACHE)
def load_daily_context(settings: Settings, bars: pd.DataFrame, interval: str) -> pd.DataFrame | None:
    """Daily features the new intraday bars take their d_ context from (None for daily bars).

    Read here, in the flow process, and handed to the batches: task-runner workers never open the warehouse.
    """
    if is_daily(interval) or bars.empty:
        return None
    new = _new_rows(bars)
    if not new.any():
        return None
    return load_features(
        warehouse(settings),
        "1d",
        FEATURE_SET_VERSION,
        symbols=sorted(bars.loc[new, "symbol"].unique()),
        start=pd.to_datetime(bars.loc[new, "ts"], utc=True).min() - pd.Timedelta(days=10),
        columns=DAILY_CONTEXT_SOURCES,
    )


@task(name="compute-features-batch", cache_policy=NO_CACHE)
def compute_batch(
    bars: pd.DataFrame, interval: str, daily: pd.DataFrame | None, exchange: str
) -> pd.DataFrame:
    """Features of the new bars of one symbol batch (warm-up rows are computed, then dropped).

    Pure computation on the frames it is given, no warehouse access: it runs wherever the task runner puts
    it (a thread of the flow process or a Dask worker on another machine). Features are point in time per
    symbol, so any split into symbol batches gives the same rows.
    """
    started = time.perf_counter()
    feats = compute_features_many(bars[BAR_COLUMNS])
    same_rows = (feats["symbol"].to_numpy() == bars["symbol"].to_numpy()).all() and (
        feats["ts"].to_numpy() == pd.to_datetime(bars["ts"], utc=True).to_numpy()
    ).all()
    if not same_rows:
        raise RuntimeError("features rows do not line up with the bars they came from")
    feats["bar_number"] = bars["bar_number"].to_numpy()
    feats = feats[_new_rows(bars)].reset_index(drop=True)
    if daily is not None and len(feats):
        feats = add_daily_context(
            feats, daily[daily["symbol"].isin(feats["symbol"].unique())], exchange=exchange
        )
    get_run_logger().info(
        "%s: features for %d new bars of %d symbols in %.2fs",
        interval,
        len(feats),
        bars["symbol"].nunique(),
        time.perf_counter() - started,
    )
    return feats


@task(name="gate-features", cache_policy=NO_CACHE)
def gate(features: pd.DataFrame, run_id: str) -> FrameGateResult:
    result = gate_frame(features, suite="features", run_id=run_id, stage="features", derive=features_view)
    log = get_run_logger()
    for line in result.summary_lines():
        log.warning(line)
    return result


@task(name="write-features", cache_policy=NO_CACHE)
def write(settings: Settings, gated: FrameGateResult, run_id: str) -> int:
    now = pd.Timestamp.now(tz="UTC")
    rows = gated.passed.drop(columns=["bar_number"]).assign(
        feature_set_version=FEATURE_SET_VERSION, run_id=run_id, computed_at=now
    )
    quarantine = gated.quarantined[["symbol", "interval", "ts", "rule", "severity", "detail"]].assign(
        run_id=run_id, stage="features", quarantined_at=now
    )
    n = write_features(warehouse(settings), rows, quarantine, gated.dq_results)
    get_run_logger().info(
        "wrote %d feature rows (%d quarantined) to %s", n, len(quarantine), settings.warehouse
    )
    return n


def features_markdown(
    summary: list[dict], findings: list[str], run_id: str, runner_name: str, docs: str | None
) -> str:
    """The features flow's artifact: per interval what was read, computed, written and quarantined."""
    head = ["Interval", "Bars read", "Batches", "New", "Written", "Quarantined"]
    keys = ["interval", "bars_read", "batches", "new", "written", "quarantined"]
    rows = [{h: (s[k] if k == "interval" else qa.count(s[k])) for h, k in zip(head, keys, strict=True)}
            for s in summary]  # fmt: skip
    md = [
        "# Features",
        "",
        f"feature set `{FEATURE_SET_VERSION}`, run `{run_id}`, task runner `{runner_name}`",
        "",
    ]
    md += qa.md_table(rows, head, head[1:])
    md += [""] + [f"- {f}" for f in findings] + ([f"\nData Docs: {qa.file_link(docs)}"] if docs else [])
    return "\n".join(md)
