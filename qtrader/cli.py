"""The ``qtrader`` command line. Every command exits non-zero with a one-line reason on failure."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="qtrader: Prefect flows that ingest, gate and trade market data into a DuckDB warehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Wide enough for the tables when output is piped (rich assumes 80 columns without a terminal).
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

WarehouseOpt = Annotated[
    Path | None,
    typer.Option(
        "--warehouse", "-w", help="DuckDB file (default data/warehouse.duckdb, env QTRADER_WAREHOUSE)."
    ),
]

DEMO_FAULTS = [
    "nan_price:MSFT",
    "high_below:NVDA",
    "negative_volume:AMZN",
    "duplicate_ts:GOOGL",
    "out_of_order:META",
    "stale:TSLA",
    "big_move:JPM",
]

DEMO_QUERIES = [
    (
        "Latest daily close and 20-day return per symbol",
        """SELECT symbol, strftime(max(ts), '%Y-%m-%d') AS last_day, round(arg_max(close, ts), 2) AS last_close,
       round(100 * (arg_max(close, ts) / arg_min(close, ts) - 1), 2) AS ret_pct_window
FROM (SELECT * FROM bars WHERE interval = '1d'
      QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) <= 20)
GROUP BY symbol ORDER BY ret_pct_window DESC LIMIT 5""",
    ),
    (
        "What the gate quarantined, by rule and symbol",
        """SELECT rule, severity, symbol, interval, count(*) AS rows, min(ts) AS first_ts
FROM quarantine GROUP BY ALL ORDER BY rows DESC, rule, symbol LIMIT 10""",
    ),
    (
        "Intraday volume by time of day (the U shape)",
        """SELECT strftime(ts AT TIME ZONE 'America/New_York', '%H:%M') AS bar_start_ny,
       round(avg(volume)) AS avg_volume
FROM bars WHERE interval = '5m' GROUP BY 1 ORDER BY 1""",
    ),
]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def _guard(fn: Callable[[], object]) -> object:
    """Run fn; turn any exception into a one-line reason and exit code 1."""
    try:
        from qtrader.prefect_env import wait_ready

        wait_ready()  # a temporary Prefect server started early must be up before a flow runs
        return fn()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the CLI's job is to say why in one line
        if os.environ.get("QTRADER_DEBUG"):
            raise
        from qtrader.prefect_env import explain

        if why := explain(exc):
            _fail(why)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(f"{type(exc).__name__}: {first}  (set QTRADER_DEBUG=1 for the traceback)")


def _quiet_third_parties() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", module="yfinance")
    warnings.filterwarnings("ignore", message=".*inplace keyword.*")
    for name in ("great_expectations", "urllib3", "yfinance", "peewee"):
        logging.getLogger(name).setLevel(logging.WARNING)


# Commands that run flows: they need a Prefect API (docs/orchestration.md, "One Prefect home").
FLOW_COMMANDS = {
    "ingest",
    "features",
    "retrain",
    "benchmark",
    "health",
    "decide",
    "backtest",
    "demo",
    "serve",
}
GATED_COMMANDS = {"ingest", "features", "retrain", "decide", "backtest", "demo"}  # they run a GX gate


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A qtrader.toml (default ./qtrader.toml, env QTRADER_CONFIG)."),
    ] = None,
) -> None:
    if config is not None:
        if not config.exists():
            _fail(f"config file {config} does not exist")
        os.environ["QTRADER_CONFIG"] = str(config)
    _quiet_third_parties()
    if ctx.invoked_subcommand in FLOW_COMMANDS:
        _use_prefect(ctx)


def _use_prefect(ctx: typer.Context) -> None:
    """One Prefect home and API for every command (qtrader/prefect_env.py), chosen before Prefect loads."""
    from qtrader.prefect_env import PrefectUnavailable, resolve, start_temporary_server

    try:
        target = resolve()
    except PrefectUnavailable as exc:
        _fail(str(exc))
    err.print(f"[dim]Prefect: {target.describe()}[/]", highlight=False)
    if target.api_url is None and ctx.invoked_subcommand != "health":  # health runs a flow only with --run
        start_temporary_server()
    if ctx.invoked_subcommand in GATED_COMMANDS:
        from expectations.runtime import warm_up

        warm_up()  # one GX context per process, made while the command imports and starts its flow


def _settings(**overrides):
    from qtrader.settings import load_settings

    return load_settings(**overrides)


@app.command()
def config(warehouse: WarehouseOpt = None) -> None:
    """Print the merged configuration (CLI > environment > qtrader.toml > defaults), secrets masked."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    console.print_json(json.dumps(settings.masked()))


@app.command()
def init(warehouse: WarehouseOpt = None) -> None:
    """Create the warehouse file and apply every pending migration."""
    from warehouse.db import connect

    settings = _guard(lambda: _settings(warehouse=warehouse))

    def run():
        with connect(settings.warehouse) as con:
            return con.execute("SELECT max(version), count(*) FROM schema_version").fetchall()[0]

    version, n = _guard(run)
    console.print(f"warehouse [bold]{settings.warehouse}[/] is at schema version {version} ({n} migrations)")


@app.command()
def ingest(
    source: Annotated[
        str | None, typer.Option(help="synthetic | yfinance | files (default from config).")
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option(help="Comma-separated tickers (default: the configured universe; files: all)."),
    ] = None,
    interval: Annotated[
        str | None,
        typer.Option(help="Bar interval such as 1d or 5m (default: configured intervals; files: inferred)."),
    ] = None,
    start: Annotated[str | None, typer.Option(help="Window start, e.g. 2024-01-01 (UTC if no zone).")] = None,
    end: Annotated[str | None, typer.Option(help="Window end (default: now).")] = None,
    path: Annotated[
        Path | None, typer.Option(help="Folder of CSV/Parquet files, one per symbol (files source).")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="Synthetic only: inject a fault, e.g. nan_price:MSFT (repeatable)."),
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Fetch bars, gate them with Great Expectations, and upsert them into the warehouse."""
    if path is not None and source is None:
        source = "files"
    if path is not None and not path.is_dir():
        _fail(f"--path {path} is not a folder of CSV/Parquet files")
    result = _run_ingest(
        source=source,
        symbols=[s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None,
        interval=interval,
        start=start,
        end=end,
        path=str(path) if path else None,
        warehouse=str(warehouse) if warehouse else None,
        faults=fault or None,
    )
    _print_ingest(result)


def _with_progress(fn: Callable[[], object], *, eta: bool = False) -> object:
    """Run ``fn`` with a progress bar per stage that library code reports (qtrader.progress); ``eta``:
    with each stage's time remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from qtrader import progress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *([TextColumn("ETA"), TimeRemainingColumn()] if eta else []),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        def run():
            with progress.listening(on_progress):
                return fn()

        return _guard(run)


def _run_ingest(**params) -> dict:
    from flows.ingest import ingest as ingest_flow

    return _with_progress(lambda: ingest_flow(**params))


def _print_ingest(result: dict) -> None:
    table = Table(title="Ingested", show_lines=False)
    for col in (
        "interval",
        "source",
        "symbols",
        "rows in",
        "written",
        "quarantined",
        "blocked",
        "failed",
        "status",
    ):
        table.add_column(col, justify="right" if col not in ("interval", "source", "status") else "left")
    for r in result["runs"]:
        table.add_row(
            r["interval"],
            r["source"],
            str(len(r["symbols"])),
            f"{r['rows_in']:,}",
            f"{r['rows_written']:,}",
            f"{r['rows_quarantined']:,}",
            str(len(r["symbols_blocked"])),
            str(len(r["symbols_failed"])),
            r["status"],
        )
    console.print(table)
    if result["findings"]:
        console.print("[bold]Quarantined and why[/] (one line per symbol):")
        for line in result["findings"]:
            console.print(f"  {line}")
    else:
        console.print("Every row passed the data-quality gate.")
    if result.get("dq_docs"):
        console.print(f"Data Docs: {result['dq_docs']}")
    console.print(f"Warehouse: {result['warehouse']}")


@app.command()
def demo(warehouse: WarehouseOpt = None) -> None:
    """Run the pipeline on the embedded synthetic market (with a few injected faults to show the gate)."""
    console.rule("qtrader demo: ingest a synthetic market through the data-quality gate")
    result = _run_ingest(
        source="synthetic",
        warehouse=str(warehouse) if warehouse else None,
        faults=DEMO_FAULTS,
        symbols=None,
        interval=None,
        start=None,
        end=None,
        path=None,
    )
    _print_ingest(result)
    console.rule("Three queries to try")
    db = result["warehouse"]
    for title, sql in DEMO_QUERIES:
        console.print(f"[bold]{title}[/]")
        console.print(f'  qtrader sql "{" ".join(sql.split())}"', soft_wrap=True, highlight=False)
        _print_sql(db, sql, max_rows=8)
    _demo_models(db)
    _demo_health(db)
    _demo_decide(db)
    _demo_backtest(db)


def _print_sql(db: str | Path, sql: str, max_rows: int = 50) -> None:
    from warehouse.db import query_df

    df = _guard(lambda: query_df(db, sql))
    table = Table(show_edge=False)
    for c in df.columns:
        table.add_column(str(c), justify="right" if df[c].dtype.kind in "iuf" else "left")
    for row in df.head(max_rows).itertuples(index=False):
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)
    if len(df) > max_rows:
        console.print(f"... {len(df) - max_rows} more rows")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='SQL to run, e.g. "SELECT * FROM v_bar_coverage".')],
    warehouse: WarehouseOpt = None,
    max_rows: Annotated[int, typer.Option(help="Rows to print.")] = 50,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """Run SQL against the warehouse on a read-only connection and print a table."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    if csv:
        from warehouse.db import query_df

        df = _guard(lambda: query_df(settings.warehouse, query))
        sys.stdout.write(df.to_csv(index=False))
        return
    _print_sql(settings.warehouse, query, max_rows=max_rows)


@app.command()
def status(warehouse: WarehouseOpt = None) -> None:
    """What is in the warehouse, the last ingest runs, and recent quarantines."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    db = settings.warehouse
    console.rule(f"Warehouse {db}")
    _print_sql(
        db,
        """SELECT interval, count(*) AS symbols, sum(bars)::BIGINT AS bars, min(first_ts) AS first_ts,
                  max(last_ts) AS last_ts, max(last_ingested_at) AS last_ingested_at
           FROM v_bar_coverage GROUP BY interval ORDER BY interval""",
    )
    console.rule("Last ingest runs")
    _print_sql(
        db,
        """SELECT run_id, source, interval, len(symbols) AS symbols, rows_in, rows_written, rows_quarantined,
                  len(symbols_failed) AS failed, len(symbols_blocked) AS blocked, status,
                  round(epoch(finished_at - started_at), 1) AS seconds
           FROM ingest_runs ORDER BY started_at DESC LIMIT 10""",
    )
    console.rule("Recent quarantines")
    _print_sql(
        db,
        """SELECT run_id, rule, severity, symbol, interval, count(*) AS rows, any_value(detail) AS example
           FROM quarantine GROUP BY ALL ORDER BY max(quarantined_at) DESC, rows DESC LIMIT 15""",
    )


@app.command()
def serve() -> None:
    """Serve every deployment of prefect.yaml on its schedule in this process (no work pool or worker).

    With `make ui` running, the runs show in its UI (qtrader uses that server when it answers).
    """
    from prefect import serve as prefect_serve

    from qtrader.orchestration import runner_deployments

    deployments = _guard(runner_deployments)
    console.print(f"serving {len(deployments)} deployments: " + ", ".join(d.name for d in deployments))
    _guard(lambda: prefect_serve(*deployments))


# ------------------------------------------------------------------------------ signal modules (retrain)

SCOREBOARD_COLUMNS = [
    ("module", "module"),
    ("n", "n"),
    ("coverage", "cov"),
    ("accuracy", "acc"),
    ("auc", "AUC"),
    ("ece", "ECE raw→seed→fit"),
    ("brier_raw", "Brier"),
    ("tp1_rate", "TP1"),
    ("tp2_rate", "TP2"),
    ("tp3_rate", "TP3"),
    ("stop_rate", "stop"),
    ("avg_r", "avg R"),
    ("performance_score", "score"),
    ("champion", "champion since"),
]


@app.command()
def features(
    warehouse: WarehouseOpt = None,
    interval: Annotated[
        str | None, typer.Option(help="Comma-separated intervals (default: all configured).")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: all stored).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every bar, not only new ones.")] = False,
) -> None:
    """Compute point-in-time TA-Lib features (all 61 candlestick patterns) for stored bars, through the gate."""
    from flows.features import features as features_flow

    settings = _guard(lambda: _settings(warehouse=warehouse))
    result = _guard(lambda: features_flow(intervals=_csv_list(interval), symbols=_csv_list(symbols), full=full,
                                          warehouse=str(settings.warehouse)))  # fmt: skip
    for s in result["intervals"]:
        console.print(
            f"  {s['interval']}: {s['written']:,} feature rows written, {s['quarantined']} quarantined"
        )


def _csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command()
def retrain(
    interval: Annotated[str, typer.Option(help="Bar interval to retrain, e.g. 1d or 5m.")] = "1d",
    modules: Annotated[
        str | None, typer.Option(help="Comma-separated modules (default: the configured members + ensemble).")
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Walk-forward retrain of the signal modules; a challenger replaces the champion only if it beats it."""
    from flows.retrain import retrain as retrain_flow

    result = _guard(
        lambda: retrain_flow(
            interval=interval, modules=_csv_list(modules), warehouse=str(warehouse) if warehouse else None
        )
    )
    _print_retrain(result)


def _print_retrain(result: dict) -> None:
    table = Table(
        title=f"Retrain {result['interval']} (labelled bars up to {result['newest_labelled'][:10]})"
    )
    for col in (
        "module",
        "version",
        "status",
        "champion now",
        "val acc",
        "val AUC",
        "champion AUC",
        "calibration",
    ):
        table.add_column(col, justify="left" if col in ("module", "status", "calibration") else "right")
    for r in result["changes"]:
        table.add_row(
            r["module"], f"v{r['version']}", r["status"], r["champion_now"], _fmt(r["val_accuracy"]),
            _fmt(r["val_auc"]), _fmt(r["champion_auc"]), r["calibration"],
        )  # fmt: skip
    console.print(table)
    for r in result["changes"]:
        console.print(f"  {r['module']}: {r['reason']}", highlight=False)
    if result["failed"]:
        console.print(f"[bold red]not trained:[/] {', '.join(result['failed'])}")
    console.print(
        f"{result['predictions_written']:,} predictions written, {result['predictions_quarantined']} quarantined; "
        f"training window {result['train_window_bars']} bars"
    )


@app.command()
def benchmark(
    interval: Annotated[str, typer.Option(help="Bar interval, e.g. 1d or 5m.")] = "1d",
    windows: Annotated[
        str | None, typer.Option(help="Comma-separated windows, e.g. 30d,90d,all (default: configured).")
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Score every module's stored predictions per window; writes benchmarks and exit_stats."""
    from flows.benchmark import benchmark as benchmark_flow

    result = _guard(
        lambda: benchmark_flow(
            interval=interval, windows=_csv_list(windows), warehouse=str(warehouse) if warehouse else None
        )
    )
    console.print(
        f"benchmark {result['interval']}: {len(result['rows'])} rows ({', '.join(result['windows'])}) "
        f"up to {result['window_end'][:16]}, run {result['run_id']}"
    )
    _print_scoreboard(result["warehouse"], result["interval"], None)


@app.command()
def scoreboard(
    interval: Annotated[str, typer.Option(help="Bar interval, e.g. 1d or 5m.")] = "1d",
    window: Annotated[
        str | None, typer.Option(help="Benchmark window, e.g. 90d (default: configured).")
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """The latest benchmark of every module for one window: which module is good now, and since when."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    _print_scoreboard(settings.warehouse, interval, window)


def _fmt(value, digits: int = 3) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if f != f else f"{f:.{digits}f}"


def _print_scoreboard(db: str | Path, interval: str, window: str | None) -> None:
    from rich import box

    from qtrader.calendar import is_daily
    from warehouse.models import scoreboard as load_scoreboard

    settings = _guard(lambda: _settings(warehouse=db))
    if window is None:
        b = settings.benchmark
        window = b.scoreboard_window_daily if is_daily(interval) else b.scoreboard_window_intraday
    df = _guard(lambda: load_scoreboard(db, interval, window))
    if df.empty:
        console.print(
            f"no {interval} benchmark for window {window}: run `qtrader benchmark --interval {interval}`"
        )
        return
    end = df["window_end"].max()
    table = Table(
        title=f"Module scoreboard {interval}, window {window} (to {str(end)[:16]})", box=box.SIMPLE_HEAD
    )
    for key, title in SCOREBOARD_COLUMNS:
        table.add_column(title, justify="left" if key in ("module", "champion") else "right", no_wrap=True)
    for r in df.to_dict("records"):
        has_champion = _fmt(r["champion_version"]) != ""
        champion = f"v{int(r['champion_version'])} {str(r['champion_since'])[:16]}" if has_champion else ""
        ece = f"{_fmt(r['ece_raw'])}→{_fmt(r['ece_seed'])}→{_fmt(r['ece_calibrated'])}"
        table.add_row(
            r["module"], f"{int(r['n']):,}", _fmt(r["coverage"], 2), _fmt(r["accuracy"]), _fmt(r["auc"]), ece, _fmt(r["brier_raw"]),
            _fmt(r["tp1_rate"], 2), _fmt(r["tp2_rate"], 2), _fmt(r["tp3_rate"], 2), _fmt(r["stop_rate"], 2),
            _fmt(r["avg_r"], 2), _fmt(r["performance_score"], 1), champion,
        )  # fmt: skip
    console.print(table)
    console.print(
        "ECE/Brier: confidence of the predicted side vs hit (raw, seed formula, fitted map); TP/stop rates and "
        "avg R: the seed exit profile on the predicted side (triple-barrier labels). Try:"
    )
    console.print(
        f"  qtrader sql \"SELECT * FROM v_scoreboard WHERE interval = '{interval}' ORDER BY window_name, "
        'performance_score DESC"',
        soft_wrap=True,
        highlight=False,
    )


def _demo_models(db: str) -> None:
    """The demo after ingestion: features, retrain, benchmark, scoreboard (daily and 5-minute bars)."""
    from flows.benchmark import benchmark as benchmark_flow
    from flows.features import features as features_flow
    from flows.retrain import retrain as retrain_flow

    console.rule("Features: point-in-time TA-Lib features through their gate")
    feats = _guard(lambda: features_flow(warehouse=db))
    for s in feats["intervals"]:
        console.print(
            f"  {s['interval']}: {s['written']:,} feature rows written, {s['quarantined']} quarantined"
        )
    settings = _guard(lambda: _settings(warehouse=db))
    for interval in settings.intervals:
        console.rule(f"Retrain {interval}: walk-forward, calibration, champion vs challenger")
        _print_retrain(_guard(lambda iv=interval: retrain_flow(interval=iv, warehouse=db)))
        console.rule(f"Benchmark {interval}")
        _guard(lambda iv=interval: benchmark_flow(interval=iv, warehouse=db))
        _print_scoreboard(db, interval, None)


@app.command()
def health(
    warehouse: WarehouseOpt = None,
    run: Annotated[
        bool, typer.Option("--run", help="Run the health flow first (else: the latest stored run).")
    ] = False,
) -> None:
    """Module health scores with what moved them, learned thresholds, and active predictive alerts."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    if run:
        from flows.health import health as health_flow

        _guard(lambda: health_flow(warehouse=str(settings.warehouse)))
    _print_health(settings.warehouse)


def _print_health(db: str | Path) -> None:
    from warehouse.health import active_alerts, latest_health, latest_thresholds

    scores = _guard(lambda: latest_health(db))
    if scores.empty:
        _fail("no health run yet: run `qtrader health --run` (or the health flow)")
    ts = scores["ts"].iloc[0]
    overall = scores[scores["module"] == "overall"]["score"]
    overall_txt = "n/a" if overall.empty or overall.isna().all() else f"{overall.iloc[0]:.1f}"
    console.rule(f"Module health at {ts:%Y-%m-%d %H:%M} UTC: overall {overall_txt}")
    table = Table(show_edge=False)
    for col in ("module", "score", "what moved it (points lost)"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for row in scores[scores["module"] != "overall"].itertuples(index=False):
        comps = json.loads(row.components) if isinstance(row.components, str) else row.components
        lost = sorted(
            ((k, v) for k, v in comps.items() if not k.startswith("_") and (v.get("lost") or 0) >= 0.5),
            key=lambda kv: -kv[1]["lost"],
        )
        movers = "; ".join(f"{k} -{v['lost']:.1f}: {v['detail']}" for k, v in lost) or "-"
        capped = f" (capped: {row.capped_by})" if isinstance(row.capped_by, str) and row.capped_by else ""
        score = "n/a" if row.score is None or row.score != row.score else f"{row.score:.1f}"
        table.add_row(row.module, score + capped, movers)
    console.print(table)

    console.rule("Learned thresholds")
    th = _guard(lambda: latest_thresholds(db))
    learned = th[~th["is_default"].astype(bool)] if len(th) else th
    if learned.empty:
        console.print("None learned yet: every metric uses its documented default (history too short).")
    else:
        t = Table(show_edge=False)
        for col in (
            "module",
            "metric",
            "bound",
            "threshold",
            "method",
            "points",
            "learned at",
            "median, spread",
        ):
            t.add_column(col, justify="right" if col in ("threshold", "points") else "left")
        for r in learned.itertuples(index=False):
            t.add_row(r.module, r.metric, r.bound, f"{r.value:.4g}", r.method, str(r.n),
                      f"{r.learned_at:%Y-%m-%d %H:%M}", f"{r.center:.4g}, {r.spread:.4g}")  # fmt: skip
        console.print(t)
    defaults = th[th["is_default"].astype(bool)] if len(th) else th
    if len(defaults):
        metrics = ", ".join(sorted(defaults["metric"].unique()))
        console.print(
            f"{len(defaults)} (module, metric) pairs still use their default, history too short: {metrics}"
        )

    console.rule("Active alerts")
    alerts = _guard(lambda: active_alerts(db))
    if alerts.empty:
        console.print("No active alerts.")
        return
    t = Table(show_edge=False)
    for col in (
        "module",
        "metric",
        "severity",
        "current",
        "threshold",
        "slope/h",
        "hours to threshold",
        "since",
        "reason",
    ):
        t.add_column(
            col,
            justify="right" if col in ("current", "threshold", "slope/h", "hours to threshold") else "left",
        )
    for a in alerts.itertuples(index=False):
        hours = a.time_to_threshold_hours
        hours_txt = (
            "n/a" if hours is None or hours != hours else ("breached" if hours == 0 else f"{hours:.1f}")
        )
        slope = "" if a.slope is None or a.slope != a.slope else f"{a.slope:.4g}"
        t.add_row(a.module, a.metric, a.severity, f"{a.current:.4g}", f"{a.threshold:.4g}", slope, hours_txt,
                  f"{a.ts:%Y-%m-%d %H:%M}", a.reason)  # fmt: skip
    console.print(t)


def _demo_health(db: str) -> None:
    """The demo's last step, after benchmark: score health, learn thresholds, show both and the alerts."""
    from flows.health import health as health_flow
    from flows.thresholds import thresholds as thresholds_flow

    console.rule("Health: module scores, learned thresholds, predictive alerts")
    _guard(lambda: health_flow(warehouse=db))
    _guard(lambda: thresholds_flow(warehouse=db))
    _print_health(db)


# ------------------------------------------------------------------------------------- decide and account

DEMO_DECIDE_BARS = 40
DEMO_DECIDE_INTERVAL = "1d"
# The demo trades with the default policy (health gates included). When the synthetic modules have too
# little edge for the confidence filter, the demo says so (which rule rejected how many candidates).
DEMO_POLICY: dict = {}


def _flow_result(result):
    """A flow that returned a Prefect state (the decision flow's refusal) gives back that state's data."""
    from prefect.states import State

    return result.result() if isinstance(result, State) else result


@app.command()
def decide(
    warehouse: WarehouseOpt = None,
    interval: Annotated[str | None, typer.Option(help="Bar interval (default: decision.interval).")] = None,
    at: Annotated[
        str | None, typer.Option(help="Decision bar, e.g. 2026-11-20 (default: the newest).")
    ] = None,
    bars: Annotated[int, typer.Option(help="Replay the newest N bars up to --at in one run.")] = 1,
) -> None:
    """Decide at the newest bar: reconcile, move stops, filter, size, plan exits, send bracket orders."""
    from flows.decide import decide as decide_flow

    settings = _guard(lambda: _settings(warehouse=warehouse))
    result = _flow_result(
        _guard(lambda: decide_flow(at=at, interval=interval, bars=bars, warehouse=str(settings.warehouse)))
    )
    if result.get("refused"):
        _fail("refused to trade: " + "; ".join(result["refused"]))
    _print_decide(result)


def _print_decide(result: dict, max_bars: int = 60) -> None:
    table = Table(show_edge=False, title=f"Decisions {result['interval']} (broker {result.get('broker')})")
    for col in ("bar", "candidates", "accepted", "brackets sent", "stop moves", "fills", "equity", "why not"):
        table.add_column(col, justify="left" if col in ("bar", "why not") else "right")
    for b in result["bars"][-max_bars:]:
        why = ", ".join(f"{k} {v}" for k, v in b["reasons"].items() if k != "accepted")
        gate = b.get("order_gate_failures") or {}
        if gate:
            why = f"ORDER GATE: {', '.join(gate)}; " + why
        table.add_row(f"{pd_ts(b['ts']):%Y-%m-%d %H:%M}", str(b["candidates"]), str(b["accepted"]), str(b["submitted"]),
                      str(len(b["stop_moves"])), str(b["fills"]), f"{b['equity']:,.2f}", why)  # fmt: skip
    console.print(table)
    if result.get("skipped"):
        console.print(f"{len(result['skipped'])} bar(s) skipped: already decided")


def pd_ts(value):
    import pandas as pd

    return pd.Timestamp(value)


@app.command()
def account(
    warehouse: WarehouseOpt = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write the equity curve (HTML and PNG).")] = False,
    recent: Annotated[int, typer.Option(help="Rows of fills, trades and stop moves to show.")] = 15,
) -> None:
    """Paper account review: equity, positions, open brackets, fills, closed trades (R, exit reason),
    module attribution, and why candidates were not traded (as of the last decision run)."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    _print_account(settings.warehouse, str(settings.broker), recent)
    if plot:
        html, png = _guard(lambda: _plot_equity(settings.warehouse, str(settings.broker), settings.data_dir))
        console.print(f"Equity curve: {html}\nEquity curve: {png}")


def _money(v) -> str:
    return "" if v is None or v != v else f"{float(v):,.2f}"


def _print_account(db, broker: str, recent: int = 15) -> None:
    from warehouse.decisions import account_review

    r = _guard(lambda: account_review(db, broker, recent=recent))
    if r["account"].empty:
        _fail(f"no {broker} account snapshot yet: run `qtrader decide` first")
    a = r["account"].iloc[0]
    console.rule(f"Paper account ({broker}) as of {a['as_of']:%Y-%m-%d %H:%M} UTC")
    realized = r["trades"]["pnl"].sum() if len(r["trades"]) else 0.0
    unrealized = r["positions"]["unrealized_pnl"].sum() if len(r["positions"]) else 0.0
    console.print(
        f"equity {_money(a['equity'])}   cash {_money(a['cash'])}   buying power {_money(a['buying_power'])}   "
        f"P&L {_money(a['pnl_since_first_snapshot'])} (closed trades {_money(realized)}, "
        f"open positions {_money(unrealized)})"
    )

    def show(title: str, df, cols: dict[str, str], n: int | None = None) -> None:
        console.rule(title)
        if df.empty:
            console.print("none")
            return
        t = Table(show_edge=False)
        for label in cols.values():
            t.add_column(label)
        for _, row in (df.head(n) if n else df).iterrows():
            cells = []
            for c in cols:
                v = row[c]
                if hasattr(v, "strftime"):
                    v = f"{v:%Y-%m-%d %H:%M}"
                elif isinstance(v, float):
                    v = "" if v != v else f"{v:,.4g}" if abs(v) < 10 else f"{v:,.2f}"
                cells.append("" if v is None else str(v))
            t.add_row(*cells)
        console.print(t)
        if n and len(df) > n:
            console.print(f"... {len(df) - n} more (qtrader sql)")

    show(
        "Positions",
        r["positions"],
        {
            "symbol": "symbol",
            "qty": "qty",
            "avg_entry_price": "avg entry",
            "mark": "mark",
            "market_value": "value",
            "unrealized_pnl": "unrealized P&L",
        },
    )
    show(
        "Open brackets (entry, take-profit leg, stop leg)",
        r["open_orders"],
        {
            "decided_at": "decided",
            "symbol": "symbol",
            "side": "side",
            "leg": "leg",
            "qty": "qty",
            "status": "status",
            "entry_ref": "entry ref",
            "take_profit": "take profit",
            "initial_stop": "initial stop",
            "stop_now": "stop now",
            "last_rule": "last stop move",
        },
        recent * 2,
    )
    show(
        "Recent fills",
        r["fills"],
        {
            "ts": "bar",
            "symbol": "symbol",
            "side": "side",
            "role": "role",
            "qty": "qty",
            "price": "price",
            "client_order_id": "client order id",
        },
        recent,
    )
    show(
        "Recent stop moves (exit_adjustments)",
        r["adjustments"],
        {
            "ts": "bar",
            "symbol": "symbol",
            "old_stop": "old",
            "new_stop": "new",
            "rule": "rule",
            "reason": "reason",
        },
        recent,
    )
    show(
        "Closed trades (R = P&L / initial risk)",
        r["trades"],
        {
            "exit_ts": "exit",
            "symbol": "symbol",
            "side": "side",
            "qty": "qty",
            "entry_price": "entry",
            "exit_price": "exit price",
            "pnl": "P&L",
            "r_multiple": "R",
            "exit_reason": "exit reason",
            "legs": "legs",
            "contributors": "modules that voted",
        },
        recent,
    )
    trades = r["trades"]
    if len(trades):
        counts = ", ".join(f"{k} {v}" for k, v in trades["exit_reason"].value_counts().items())
        console.print(
            f"{len(trades)} closed trades; exit reasons: {counts}; mean R {trades['r_multiple'].mean():.2f}"
        )
    show(
        "Which modules earned money (each closed trade counted for every module that voted for it)",
        r["attribution"],
        {
            "module": "module",
            "trades": "trades",
            "wins": "wins",
            "win_rate": "win rate",
            "pnl": "P&L",
            "pnl_shared": "P&L shared",
            "avg_r": "mean R",
        },
    )
    show("Candidates not traded, by reason", r["rejections"], {"reason_code": "reason", "n": "candidates"})
    console.print(
        'Why was a trade taken: qtrader sql "SELECT ts, symbol, side, consensus, contributors, '
        "confidence_calibrated, overall_health, size_multiplier, exit_profile FROM decisions WHERE accepted "
        'ORDER BY ts DESC LIMIT 10"',
        soft_wrap=True,
        highlight=False,
    )


def _plot_equity(db, broker: str, data_dir) -> tuple[Path, Path]:
    """The equity curve from account snapshots: Plotly HTML (self-contained) and a matplotlib PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    from warehouse.decisions import account_review

    eq = account_review(db, broker)["equity"]
    if eq.empty:
        raise ValueError("no account snapshots yet: run `qtrader decide` first")
    out = Path(data_dir) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    html, png = out / "equity.html", out / "equity.png"
    fig = go.Figure()
    fig.add_scatter(x=eq["ts"], y=eq["equity"].astype(float), name="equity")
    fig.add_scatter(x=eq["ts"], y=eq["cash"].astype(float), name="cash", line={"dash": "dot"})
    fig.update_layout(title=f"Paper account equity ({broker})", xaxis_title="bar", yaxis_title="USD")
    fig.write_html(html, include_plotlyjs=True)  # self-contained: works offline
    ax = plt.figure(figsize=(9, 4)).gca()
    ax.plot(eq["ts"], eq["equity"].astype(float), label="equity")
    ax.set_title(f"Paper account equity ({broker})")
    ax.grid(alpha=0.3)
    ax.legend()
    plt.tight_layout()
    plt.savefig(png, dpi=110)
    plt.close("all")
    return html, png


def _demo_decide(db: str) -> None:
    """The demo's last step: the decision flow on daily bars, then the paper account review."""
    from flows.decide import decide as decide_flow
    from warehouse.decisions import decision_bars

    times = _guard(lambda: decision_bars(db, DEMO_DECIDE_INTERVAL, None, DEMO_DECIDE_BARS + 1))
    if len(times) < 2:
        _fail("not enough daily bars for the decision demo")
    console.rule(f"Decide {DEMO_DECIDE_INTERVAL} at {times[0]:%Y-%m-%d} with the default policy")
    first = _flow_result(
        _guard(lambda: decide_flow(at=str(times[0]), interval=DEMO_DECIDE_INTERVAL, warehouse=db))
    )
    if first.get("refused"):
        console.print("refused to trade: " + "; ".join(first["refused"]))
        return
    _print_decide(first)
    console.print("Every rule each candidate failed (decisions.failed):")
    _print_sql(
        db,
        "SELECT trim(f.rule) AS rule, count(*) AS candidates FROM decisions, "
        "unnest(string_split(failed, ',')) AS f(rule) WHERE NOT accepted AND ts = "
        f"'{times[0].isoformat()}' GROUP BY ALL ORDER BY candidates DESC",
    )
    console.rule(f"Replay the last {DEMO_DECIDE_BARS} daily bars with the default policy")
    result = _flow_result(
        _guard(lambda: decide_flow(interval=DEMO_DECIDE_INTERVAL, bars=DEMO_DECIDE_BARS, warehouse=db,
                                   overrides=DEMO_POLICY))
    )  # fmt: skip
    if result.get("refused"):
        console.print("refused to trade: " + "; ".join(result["refused"]))
        return
    _print_decide(result)
    _explain_rejections(db, times[-1])
    settings = _guard(lambda: _settings(warehouse=db))
    _print_account(db, str(settings.broker), recent=12)
    html, png = _guard(lambda: _plot_equity(db, str(settings.broker), settings.data_dir))
    console.print(f"Equity curve: {html} and {png}  (any time: qtrader account --plot)")


def _explain_rejections(db: str, since) -> None:
    """Why candidates were not traded over the replay, the health gate's blocks with what drove them."""
    from models.trade_filter import gate_block_counts
    from warehouse.db import query_df

    rows = _guard(lambda: query_df(db, "SELECT reason_code, failed, details, accepted FROM decisions WHERE ts >= ?",
                                   [since]))  # fmt: skip
    if rows.empty:
        return
    blocks = gate_block_counts(rows)
    low_conf = int(rows["failed"].fillna("").str.contains("low_confidence").sum())
    console.print(
        f"{int(rows['accepted'].sum())} of {len(rows)} candidates accepted; the health gate blocked "
        + ", ".join(
            f"{r.rule} {r.any} ({r.only} on its own; most often {r.top_driver})" for r in blocks.itertuples()
        )
        + f"; low_confidence rejected {low_conf}."
    )
    if low_conf and low_conf >= 0.9 * (len(rows) - int(rows["accepted"].sum())):
        console.print(
            "Most candidates fail the confidence filter (calibrated confidence < trade_filter.min_confidence "
            "0.55): the synthetic market's planted edge is weak (about 54% accuracy at best, docs/synthetic.md), "
            "so few calls reach 55% confidence. That is the modules' edge, not the health gate; the demo "
            "keeps the default policy rather than loosening it."
        )


# ----------------------------------------------------------------------------------------------- backtest

DEMO_BACKTEST_BARS = 40
# The demo's three years of daily history hold ~756 sessions: a 3-split walk-forward fits in 600 bars of
# warm-up, so the last 40 bars can be replayed with a monthly retrain (the default needs 750 + 4 splits).
DEMO_BACKTEST = {"retrain": {"n_splits": 3}, "backtest": {"warmup_bars": 600}}


def _demo_backtest(db: str) -> None:
    from flows.backtest import backtest as backtest_flow
    from warehouse.decisions import decision_bars

    times = _guard(lambda: decision_bars(db, "1d", None, DEMO_BACKTEST_BARS))
    console.rule(f"Backtest the last {len(times)} daily bars: static vs adaptive and each ablation")
    console.print(f"Settings for the demo: {DEMO_BACKTEST}  (full run: qtrader backtest)")
    result = _with_progress(
        lambda: backtest_flow(start=str(times[0]), warehouse=db, overrides=DEMO_BACKTEST), eta=True
    )
    _print_backtest(db, result)


@app.command()
def backtest(
    warehouse: WarehouseOpt = None,
    interval: Annotated[
        str | None, typer.Option(help="Bar interval (default: backtest.interval, 1d).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First replayed bar (default: after backtest.warmup_bars of history).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last replayed bar (default: the newest stored).")] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: all stored).")
    ] = None,
    modes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated modes: static, adaptive, no_adaptive_exits, no_health_gating, "
            "no_performance_sizing, no_calibration, no_predictive_tightening (default: all)."
        ),
    ] = None,  # fmt: skip
    signals: Annotated[
        Path | None,
        typer.Option(
            help="CSV/Parquet of your own entries (symbol, ts, side): replayed through qtrader's "
            "exit planner and fills as mode 'signals'."
        ),
    ] = None,  # fmt: skip
    report: Annotated[bool, typer.Option(help="Write the HTML and PNG report.")] = True,
    symbol: Annotated[str | None, typer.Option(help="Symbol whose price shows the trade markers.")] = None,
) -> None:
    """Replay history through the live decision code: static (seed 002's old system) vs adaptive and one
    ablation per enhancement, with costs; prints the table and writes the report.

    Results land in backtest_runs / backtest_trades / backtest_equity; each mode's scratch warehouse
    (every decision, order and fill) stays under data/backtests/<run_id>/ for SQL."""
    from flows.backtest import backtest as backtest_flow

    settings = _guard(lambda: _settings(warehouse=warehouse))
    result = _with_progress(
        lambda: backtest_flow(
            interval=interval, start=start, end=end, symbols=_csv_list(symbols), modes=_csv_list(modes),
            signals=str(signals) if signals else None, warehouse=str(settings.warehouse), report=report,
            report_symbol=symbol,
        ),
        eta=True,
    )  # fmt: skip
    _print_backtest(settings.warehouse, result)


def _print_backtest(db, result: dict) -> None:
    from tasks.backtest import table_rows
    from warehouse.backtest import latest_table, stage_timings

    runs = _guard(lambda: latest_table(db, result["run_id"]))
    r0 = runs.iloc[0]
    title = (
        f"Backtest {result['run_id']}: {r0['interval']} bars {pd_ts(r0['start_ts']):%Y-%m-%d} to "
        f"{pd_ts(r0['end_ts']):%Y-%m-%d} ({r0['bars']} bars, {r0['symbols']} symbols), costs included"
    )
    for rows, caption in (
        (
            table_rows(runs, with_diff=False),
            "Sharpe/Sortino annualised from per-bar equity returns, risk-free 0",
        ),
        (table_rows(runs, diff_only=True), "difference from static"),
    ):
        if not rows:
            continue
        table = Table(show_edge=False, title=title if "annualised" in caption else None, caption=caption)
        for col in rows[0]:
            table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row.values())
        console.print(table)
    console.print(
        f"model timeline: {result['timeline_seconds']}s ({', '.join(f'{k} {v}' for k, v in result['model_runs'].items())}); "
        f"modes: {', '.join(f'{k} {v}s' for k, v in result['mode_seconds'].items())}"
    )
    stages = _guard(lambda: stage_timings(db, result["run_id"]))
    if len(stages):
        console.print(
            "seconds per stage: "
            + ", ".join(f"{s} {v:.1f}" for s, v in zip(stages["stage"], stages["seconds"], strict=True))
        )
    if result.get("report"):
        console.print(f"Report: {result['report'][0]} and {result['report'][1]}")
    console.print(f"Scratch warehouses (every decision, order and fill per mode): {result['scratch']}")
    console.print(
        "SQL: qtrader sql \"SELECT mode, exit_reason, count(*) AS n, round(avg(pnl_pct) * 100, 2) AS avg_pct "
        "FROM backtest_trades WHERE run_id = (SELECT max(run_id) FROM backtest_runs) GROUP BY ALL ORDER BY ALL\"",
        soft_wrap=True, highlight=False,
    )  # fmt: skip


if __name__ == "__main__":
    app()
