"""Ingest throughput: synthetic bars through the GX gate and the DuckDB upsert.

Cases (from the Foundation issue): 500 symbols x 10 years of daily bars (~1.26M rows) and
100 symbols x 60 sessions of 5m bars (~470k rows). Generation is timed separately and excluded
from rows/s. Target on a 2-core machine: >= 500k rows/s end to end including the gate, peak RSS <= 2 GiB.

    .venv/bin/python benchmarks/ingest.py [--daily-symbols 500] [--years 10] [--intraday-symbols 100] [--sessions 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, peak_rss_mib  # noqa: E402
from expectations.gate import gate_bars  # noqa: E402
from qtrader.calendar import get_calendar  # noqa: E402
from qtrader.settings import GateSettings  # noqa: E402
from sources.base import FetchRequest  # noqa: E402
from sources.synthetic import SyntheticSource  # noqa: E402
from warehouse.ingest import IngestRun, write_ingest  # noqa: E402

END = pd.Timestamp("2026-10-30 21:00", tz="UTC")


def run_case(
    label: str, source: SyntheticSource, request: FetchRequest, db: Path, gate: GateSettings
) -> dict:
    t0 = time.perf_counter()
    bars = source.fetch(request).bars
    gen_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    gated = gate_bars(bars, interval=request.interval, settings=gate, run_id=label, reference_end=request.end)
    gate_s = time.perf_counter() - t1
    now = pd.Timestamp.now(tz="UTC")
    out = gated.passed.assign(source="synthetic", run_id=label, ingested_at=now)
    run = IngestRun(
        run_id=label,
        source="synthetic",
        interval=request.interval,
        symbols=list(request.symbols),
        started_at=now,
        finished_at=now,
        rows_in=len(bars),
        rows_written=len(out),
    )
    t2 = time.perf_counter()
    write_ingest(
        db,
        run,
        out,
        gated.quarantined.assign(run_id=label, stage="raw_bars", source="synthetic", quarantined_at=now),
        gated.dq_results,
    )
    write_s = time.perf_counter() - t2
    total = gate_s + write_s
    return {
        "case": label,
        "rows": len(bars),
        "generate_s": gen_s,
        "gate_s": gate_s,
        "upsert_s": write_s,
        "gate+upsert_s": total,
        "rows_per_s": len(bars) / total,
        "quarantined": len(gated.quarantined),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daily-symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--intraday-symbols", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=60)
    args = ap.parse_args()

    print(f"machine: {describe()}")
    src = SyntheticSource(seed=11, now=END)
    gate = GateSettings()
    cal = get_calendar("XNYS")
    sessions = cal.sessions_in_range(
        (END - pd.Timedelta(days=120)).tz_localize(None).normalize(), END.tz_localize(None).normalize()
    )
    intraday_start = cal.schedule.loc[sessions[-args.sessions], "open"]
    cases = [
        (
            "daily",
            FetchRequest(
                [f"D{i:04d}" for i in range(args.daily_symbols)],
                "1d",
                END.normalize() - pd.DateOffset(years=args.years),
                END,
            ),
        ),
        (
            "intraday-5m",
            FetchRequest([f"I{i:04d}" for i in range(args.intraday_symbols)], "5m", intraday_start, END),
        ),
    ]
    # GX's import and context creation (~4 s) happen once per process: pay them before timing.
    t0 = time.perf_counter()
    warm = src.fetch(FetchRequest(["WARM"], "1d", END - pd.Timedelta(days=30), END)).bars
    gate_bars(warm, interval="1d", settings=gate, run_id="warm-up", reference_end=END)
    print(f"one-time GX start-up (excluded): {time.perf_counter() - t0:.2f}s")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        for label, req in cases:
            results.append(run_case(label, src, req, db, gate))
        # Re-ingesting the same daily window exercises the replace path of the upsert.
        results.append(run_case("daily-reingest", src, cases[0][1], db, gate))
    df = pd.DataFrame(results)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda x: f"{x:,.2f}"))
    total_rows = df["rows"].sum()
    total_s = df["gate+upsert_s"].sum()
    print(
        f"\nend to end (gate + upsert): {total_rows:,} rows in {total_s:.2f}s = {total_rows / total_s:,.0f} rows/s "
        f"(target >= 500,000)"
    )
    print(f"peak RSS: {peak_rss_mib():,.0f} MiB (target <= 2048)")


if __name__ == "__main__":
    main()
