"""The decision flow's work for 500 symbols at one bar: target <= 5 s wall (Prefect server start excluded).

Setup (not timed): 500 symbols of daily synthetic bars and their features in a new warehouse; champions
trained by the retrain flow on the first 50 symbols (so 450 symbols have no stored prediction at the bar
and the champions predict them, as in a live run); health rows; a paper account with 10 open brackets.

Timed: ``tasks.decide.run_bar`` for the newest bar (broker step, reconciliation, fills, predictions of 6
member champions, ensemble, stop management, filter, sizing, exit plans, order gate, submissions,
records), called plainly on the second newest bar; then the newest bar through the whole flow
(``flows.decide.decide``) after a warm-up flow run on the third newest, so that figure includes the Prefect
task and flow overhead but not the server start.

    .venv/bin/python benchmarks/decide.py [--symbols 500] [--years 3.5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.machine import describe, peak_rss_mib  # noqa: E402
from models.features import FEATURE_SET_VERSION, compute_features_many  # noqa: E402
from sources.base import BAR_COLUMNS, FetchRequest  # noqa: E402
from sources.synthetic import SyntheticSource  # noqa: E402
from warehouse.db import transaction  # noqa: E402
from warehouse.features import write_features  # noqa: E402
from warehouse.ingest import IngestRun, write_ingest  # noqa: E402

TARGET_S = 5.0
END = pd.Timestamp("2026-10-30", tz="UTC")
POLICY = {
    "trade_filter": {
        "min_confidence": 0.5,
        "allowed_consensus": ["UNANIMOUS", "STRONG", "WEAK"],
        "max_open_positions": 60,
    }
}
MODULES = ["patterns", "volatility", "regime", "selector", "imbalance", "direction", "ensemble"]


def write_market(db: Path, symbols: list[str], years: float, run: str) -> None:
    start = END - pd.Timedelta(days=int(365.25 * years))
    bars = SyntheticSource(seed=7).fetch(FetchRequest(symbols, "1d", start, END)).bars
    bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)[BAR_COLUMNS]
    now = pd.Timestamp.now(tz="UTC")
    ingest = IngestRun(run_id=run, source="synthetic", interval="1d", symbols=symbols, started_at=now,
                       finished_at=now, rows_in=len(bars), rows_written=len(bars))  # fmt: skip
    empty = pd.DataFrame()
    write_ingest(db, ingest, bars.assign(source="synthetic", run_id=run, ingested_at=now),
                 empty.reindex(columns=["run_id"]), empty.reindex(columns=["run_id"]))  # fmt: skip
    feats = compute_features_many(bars).assign(
        feature_set_version=FEATURE_SET_VERSION, run_id=run, computed_at=now
    )
    write_features(db, feats, pd.DataFrame(), pd.DataFrame())


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())  # 1/5/15-minute load averages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--trained", type=int, default=50)
    ap.add_argument("--years", type=float, default=3.5)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="qtrader-bench-decide-"))
    db = tmp / "warehouse.duckdb"
    os.environ["QTRADER_DATA_DIR"] = str(tmp)
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    t0 = time.perf_counter()
    write_market(db, symbols[: args.trained], args.years, "bench-a")

    from flows.decide import decide
    from flows.retrain import retrain
    from qtrader.settings import load_settings
    from tasks.decide import decision_broker, new_trader, read_health, run_bar
    from tasks.resources import warehouse
    from tasks.retrain import Champion
    from warehouse.decisions import decision_bars
    from warehouse.models import load_champion_artifacts

    retrain(interval="1d", warehouse=str(db))  # starts the temporary Prefect server too
    write_market(db, symbols[args.trained :], args.years, "bench-b")
    now = pd.Timestamp.now(tz="UTC")
    with transaction(db) as con:
        for m in [*MODULES, "overall"]:
            con.execute(  # by name: migration 008 added the gate columns
                "INSERT INTO health (ts, module, score, components, capped_by, run_id, recorded_at) "
                "VALUES (?, ?, 90, '{}', NULL, 'bench', ?)",
                [now, m, now],
            )
    times = decision_bars(db, "1d", None, 3)
    # Open positions to manage: a warm-up flow run on the first of the three newest bars.
    decide(interval="1d", bars=1, at=str(times[0]), warehouse=str(db), overrides=POLICY)
    print(
        f"setup: {args.symbols} symbols x {args.years} years of daily bars, champions on {args.trained} symbols, "
        f"in {time.perf_counter() - t0:.1f}s (not timed)"
    )

    settings = load_settings(warehouse=str(db), **POLICY)
    wh = warehouse(settings)
    broker = decision_broker(settings, "1d", wh)
    trader = new_trader(settings, wh, broker, "bench-run")
    champs = {
        c.row["module"]: Champion(c.row, c.artifact, c.problem) for c in load_champion_artifacts(db, "1d")
    }
    health = read_health(wh)
    t, cpu = time.perf_counter(), time.process_time()
    summary = run_bar(settings, wh, trader, "1d", times[1], champs, health, "bench-run")
    plain, plain_cpu = time.perf_counter() - t, time.process_time() - cpu
    print(
        f"run_bar (plain functions): {plain:.2f}s wall, {plain_cpu:.2f}s CPU (load {_load()}); "
        f"{summary['candidates']} candidates, "
        f"{summary['predictions_made']} predictions made, {summary['accepted']} accepted, "
        f"{summary['submitted']} brackets sent, {len(summary['stop_moves'])} stop moves, {summary['fills']} fills; "
        f"stages {summary['timings_s']}"
    )
    t, cpu = time.perf_counter(), time.process_time()
    result = decide(interval="1d", bars=1, at=str(times[2]), warehouse=str(db), overrides=POLICY)
    flow_s, flow_cpu = time.perf_counter() - t, time.process_time() - cpu
    worst = max(plain, flow_s)
    status = "OK" if worst <= TARGET_S else "SLOWER THAN TARGET"
    print(
        f"decide flow, the next bar (server running): {flow_s:.2f}s wall, {flow_cpu:.2f}s CPU (load {_load()}); target <= {TARGET_S:.0f}s: {status}; "
        f"peak RSS {peak_rss_mib():,.0f} MiB; the bar's stages {result['bars'][0]['timings_s']} (the rest of the "
        "flow: the run record, its inputs, Prefect's flow and tasks)"
    )
    print(f"machine: {describe()}")


if __name__ == "__main__":
    main()
