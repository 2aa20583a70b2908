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
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _guard(fn: Callable[[], object]) -> object:
    """Run fn; turn any exception into a one-line reason and exit code 1."""
    try:
        return fn()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the CLI's job is to say why in one line
        if os.environ.get("QTRADER_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(f"{type(exc).__name__}: {first}  (set QTRADER_DEBUG=1 for the traceback)")


def _quiet_third_parties() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    # The temporary Prefect server would try to send telemetry, which fails (and logs) offline.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    warnings.filterwarnings("ignore", module="yfinance")
    warnings.filterwarnings("ignore", message=".*inplace keyword.*")
    for name in ("great_expectations", "urllib3", "yfinance", "peewee"):
        logging.getLogger(name).setLevel(logging.WARNING)


@app.callback()
def main(
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


def _run_ingest(**params) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from qtrader import progress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        def run():
            from flows.ingest import ingest as ingest_flow

            with progress.listening(on_progress):
                return ingest_flow(**params)

        return _guard(run)


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

    Needs a Prefect server to show the runs in the UI: start one with `make ui` and set
    PREFECT_API_URL=http://127.0.0.1:4200/api.
    """
    from prefect import serve as prefect_serve

    from qtrader.orchestration import runner_deployments

    deployments = _guard(runner_deployments)
    console.print(f"serving {len(deployments)} deployments: " + ", ".join(d.name for d in deployments))
    _guard(lambda: prefect_serve(*deployments))


if __name__ == "__main__":
    app()
