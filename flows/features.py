"""Features flow: gated bars -> point-in-time TA-Lib features -> GX gate -> `features` table."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from expectations.frame_gate import build_frame_docs
from models.features import FEATURE_SET_VERSION
from qtrader.calendar import is_daily
from qtrader.settings import load_settings
from tasks.failures import publish_failure
from tasks.features import compute, gate, load_bars, write
from tasks.ingest import new_run_id


@flow(
    name="features",
    description="Compute point-in-time features for new gated bars (incremental).",
    on_failure=[publish_failure],
    on_crashed=[publish_failure],
)
def features(
    intervals: list[str] | None = None,
    symbols: list[str] | None = None,
    full: bool = False,
    warehouse: str | None = None,
) -> dict:
    """Daily first: intraday bars get daily regime context joined point in time from the daily features."""
    settings = load_settings(warehouse=warehouse)
    ordered = sorted(intervals or settings.intervals, key=lambda iv: not is_daily(iv))
    run_id = new_run_id("features")
    summary, findings, gated_all = [], [], []
    for iv in ordered:
        bars = load_bars(settings, iv, symbols, full)
        computed = compute(settings, bars, iv)
        if computed.empty:
            summary.append({"interval": iv, "bars_read": len(bars), "new": 0, "written": 0, "quarantined": 0})
            continue
        gated = gate(computed, run_id)
        written = write(settings, gated, run_id)
        gated_all.append(gated)
        findings += [f"[{iv}] {line}" for line in gated.summary_lines()]
        summary.append(
            {
                "interval": iv,
                "bars_read": len(bars),
                "new": len(computed),
                "written": written,
                "quarantined": len(gated.quarantined),
            }
        )
    docs = str(build_frame_docs(gated_all, settings.dq_docs_dir / "features")) if gated_all else None
    md = [
        "# Features",
        "",
        f"feature set `{FEATURE_SET_VERSION}`, run `{run_id}`",
        "",
        "| interval | bars read | new | written | quarantined |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {s['interval']} | {s['bars_read']} | {s['new']} | {s['written']} | {s['quarantined']} |"
        for s in summary
    ]
    md += [""] + [f"- {f}" for f in findings] + ([f"\nData Docs: `{docs}`"] if docs else [])
    create_markdown_artifact(key="features-summary", markdown="\n".join(md), description="Features computed")
    get_run_logger().info(
        "features: %s", "; ".join(f"{s['interval']} {s['written']} written" for s in summary)
    )
    return {"run_id": run_id, "intervals": summary, "findings": findings, "dq_docs": docs}
