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
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from qtrader import validation as checks
from qtrader.tables import KEEP, LOW, NORMAL, Column, Kind, frame_columns, jsonable, records, render
from qtrader.validation import EXIT_FAILURE, EXIT_PARTIAL, EXIT_USAGE, BadInput, Refused

_PLAIN_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "PATH", "bool": ""}


def _plain_metavars(ctx, params: list) -> list:
    """Help shows TEXT / INTEGER / PATH and nothing for flags, not typer's <str>, <bool>, <list[str]>
    (a repeatable option says so in its help)."""
    for p in params:
        if isinstance(p, TyperOption) and p.metavar is None:
            label = p.display_type(ctx).strip("<>")
            if label.startswith("list[") and label.endswith("]"):
                label = label[5:-1]
            p.metavar = "" if p.is_flag else _PLAIN_TYPES.get(label, label)
        elif isinstance(p, TyperArgument) and "display_type_rich" not in vars(p):
            # An argument's metavar would rename it too: only the type column changes.
            label = _PLAIN_TYPES.get(p.display_type(ctx).strip("<>"), None)
            if label is not None:
                p.display_type_rich = lambda ctx, label=label: label
    return params


class _Command(TyperCommand):
    def get_params(self, ctx) -> list:
        return _plain_metavars(ctx, super().get_params(ctx))


VERBOSE_FLAGS = ("-v", "--verbose")


class _Group(TyperGroup):
    def get_params(self, ctx) -> list:
        return _plain_metavars(ctx, super().get_params(ctx))

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        """``qtrader ingest -v`` as well as ``qtrader -v ingest``: -v/--verbose after the command moves in
        front of it (no command has an option or value of that name)."""
        named = [i for i, a in enumerate(args) if a in self.commands]
        if named and "--" not in args:
            head, tail = args[: named[0]], args[named[0] :]
            moved = [a for a in tail if a in VERBOSE_FLAGS]
            args = [*head, *moved, *[a for a in tail if a not in VERBOSE_FLAGS]]
        return super().parse_args(ctx, args)


class _App(typer.Typer):
    def command(self, *args, cls=_Command, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


app = _App(
    cls=_Group,
    help="qtrader: Prefect flows that ingest, gate and trade market data into a DuckDB warehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def terminal_width(environ=None) -> int:
    """Columns to fit: COLUMNS when set, else the terminal on stdout, else the one on stderr (``qtrader
    status | less`` fits the window it is read in), else 80."""
    env = os.environ if environ is None else environ
    if str(env.get("COLUMNS", "")).isdigit() and int(env["COLUMNS"]) > 0:
        return int(env["COLUMNS"])
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return 80


def _consoles() -> tuple[Console, Console]:
    width = terminal_width()
    return Console(width=width), Console(stderr=True, width=width)


# Remade for each invocation (the main callback) so the width is the one of this run.
console, err = _consoles()

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the data as JSON on stdout (and nothing else there).")
]


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")


def _table(columns: list[Column], rows, *, title: str | None = None, caption: str | None = None) -> None:
    """Rows (dicts, or a frame) as a table that fits the terminal (qtrader/tables.py)."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    console.print(render(columns, rows, console.width, title=title, caption=caption))


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


def _fail(message: str, code: int = EXIT_FAILURE) -> None:
    # soft_wrap: the reason stays one line however long (a terminal may still fold it visually).
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _usage(problem: BadInput | str) -> None:
    """Bad usage: one line, exit 2 (nothing has been started)."""
    _fail(str(problem), EXIT_USAGE)


_FLOWS_PENDING: tuple | None = None  # (Prefect target, command): set by the app callback, see _begin_flows
_GUARDED = 0  # depth of _guard calls: a signal inside one is reported by _guard, outside by the handler
_COMMAND: str | None = None
_STOPPED_WITH: list[int] = []  # the exit code of a command stopped by a signal


def _stopped(signum: int) -> None:
    """One line for SIGINT / SIGTERM, then exit 130 / 143 (README, "Exit codes")."""
    import signal

    from qtrader.interrupts import exit_code

    code = exit_code(signum)
    _STOPPED_WITH.append(code)
    what = f"qtrader {_COMMAND}" if _COMMAND else "qtrader"
    err.print(f"interrupted: {what} stopped by {signal.Signals(signum).name}; a run it started is recorded "
              f"as interrupted (exit {code})", soft_wrap=True, highlight=False, markup=False)  # fmt: skip
    raise typer.Exit(code)


def _stop_on_signals(command: str) -> None:
    """SIGINT (Ctrl-C) and SIGTERM stop a flow command within seconds: the flow records its run as
    interrupted and Prefect's run as Crashed, the temporary server stops, one line is printed."""
    import atexit

    from qtrader import interrupts

    global _COMMAND
    _COMMAND = command

    def skip_finalization() -> None:
        # Registered before Prefect's exit handlers, so it runs after them (the flow's logs and events
        # drained, the temporary server stopped); then the interpreter's final garbage collection, which
        # takes seconds after a flow on a loaded machine, is skipped.
        if _STOPPED_WITH:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(_STOPPED_WITH[0])

    atexit.register(skip_finalization)

    def first(signum: int) -> None:
        if not _GUARDED:  # no flow running (imports, argument checks): end here
            try:
                _stopped(signum)
            except typer.Exit as done:
                raise SystemExit(done.exit_code) from None

    interrupts.install(first)


def _guard(fn: Callable[[], object]) -> object:
    """Run fn; turn any exception into a one-line reason: exit 2 for bad input, else 1; a signal 130/143."""
    global _GUARDED
    _GUARDED += 1
    try:
        from qtrader.prefect_env import wait_ready

        wait_ready()  # a temporary Prefect server started early must be up before a flow runs
        return fn()
    except typer.Exit:
        raise
    except BadInput as exc:  # a setting, an argument or the query itself: the user fixes it
        _usage(exc)
    except Refused as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI's job is to say why in one line
        if os.environ.get("QTRADER_DEBUG"):
            raise
        from qtrader.prefect_env import explain

        if why := explain(exc):
            _fail(why)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(f"{type(exc).__name__}: {first}  (set QTRADER_DEBUG=1 for the traceback)")
    except BaseException as exc:  # KeyboardInterrupt, our Stopped, Prefect's TerminationSignal
        from qtrader.interrupts import stopping_signal

        signum = stopping_signal(exc)
        if signum is None:
            raise
        _stopped(signum)
    finally:
        _GUARDED -= 1


def _quiet_third_parties() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", module="yfinance")
    warnings.filterwarnings("ignore", message=".*inplace keyword.*")
    warnings.filterwarnings("ignore", message="SOCKS support in urllib3")  # no proxy is used
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
# They run a Great Expectations gate (decide gates its bars in memory: expectations.frame_gate.gate_rows).
GATED_COMMANDS = {"ingest", "features", "retrain", "backtest", "demo"}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("qtrader")
        except PackageNotFoundError:  # run from a source tree that is not installed
            v = "unknown"
        sys.stdout.write(f"qtrader {v}\n")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A qtrader.toml (default ./qtrader.toml, env QTRADER_CONFIG)."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show Prefect's INFO logs on the terminal (warnings and errors always show).",
        ),
    ] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    global console, err
    console, err = _consoles()
    from qtrader.logs import prefect_console

    prefect_console(verbose)
    if config is not None:
        if not config.is_file():
            _usage(f"--config {config}: no such file")
        os.environ["QTRADER_CONFIG"] = str(config)
    _quiet_third_parties()
    if ctx.invoked_subcommand in FLOW_COMMANDS:
        _stop_on_signals(ctx.invoked_subcommand)
        _use_prefect(ctx)


def _use_prefect(ctx: typer.Context) -> None:
    """One Prefect home and API for every command (qtrader/prefect_env.py), chosen before Prefect loads."""
    from qtrader.prefect_env import PrefectUnavailable, resolve

    try:
        target = resolve()
    except PrefectUnavailable as exc:
        _fail(str(exc))
    global _FLOWS_PENDING
    _FLOWS_PENDING = (target, ctx.invoked_subcommand)


def _begin_flows() -> None:
    """Say where flows run and start the temporary server and the GX context in the background, once the
    command's arguments are checked (a refused argument is one line and starts nothing); the flow modules
    then import while the server starts."""
    global _FLOWS_PENDING
    if _FLOWS_PENDING is None:
        return
    target, command = _FLOWS_PENDING
    _FLOWS_PENDING = None
    from qtrader.prefect_env import start_temporary_server

    err.print(f"[dim]Prefect: {target.describe()}[/]", highlight=False)
    if target.api_url is None:
        start_temporary_server()
    if command in GATED_COMMANDS:
        from expectations.runtime import warm_up

        warm_up()  # one GX context per process, made while the command imports and starts its flow


def _settings(**overrides):
    from qtrader.settings import load_settings

    return load_settings(**overrides)


@app.command()
def config(warehouse: WarehouseOpt = None, as_json: JsonOpt = False) -> None:
    """Print the merged configuration (CLI > environment > qtrader.toml > defaults), secrets masked."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    if as_json:
        _print_json(settings.masked())
        return
    console.print_json(json.dumps(settings.masked()))


@app.command()
def init(warehouse: WarehouseOpt = None, as_json: JsonOpt = False) -> None:
    """Create the warehouse file and apply every pending migration."""
    from warehouse.db import connect

    settings = _guard(lambda: _settings(warehouse=warehouse))

    def run():
        with connect(settings.warehouse) as con:
            return con.execute("SELECT max(version), count(*) FROM schema_version").fetchall()[0]

    version, n = _guard(run)
    if as_json:
        _print_json({"warehouse": str(settings.warehouse), "schema_version": version, "migrations": n})
        return
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
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Judge stale last bars against this date (default: the window end; files: each file's own "
            "last bar, so a history file loads whole)."
        ),
    ] = None,
    date_format: Annotated[
        str | None,
        typer.Option(
            help="Files source: the strptime format of dates that are not ISO, yyyymmdd or epoch, e.g. "
            "%d/%m/%Y (default: the day/month order read from each file; a file that reads both ways is refused)."
        ),
    ] = None,
    warehouse: WarehouseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch bars, gate them with Great Expectations, and upsert them into the warehouse.

    Exit code 3 when part of it failed (a file or symbol failed, a symbol was blocked) and the rest was
    written."""
    if path is not None and source is None:
        source = "files"
    args = _guard(lambda: _ingest_arguments(source, symbols, interval, start, end, path, fault, as_of,
                                              date_format, warehouse))  # fmt: skip
    result = _run_ingest(**args)
    if as_json:
        _print_json(result)
    else:
        _print_ingest(result)
    _exit_if_partial(result)


def _ingest_arguments(source, symbols, interval, start, end, path, fault, as_of, date_format, warehouse):
    """The ingest flow's parameters from the command line, every one checked (BadInput otherwise)."""
    from qtrader.settings import SourceName

    if source is not None:
        checks.choice(source, [s.value for s in SourceName], "--source")
    if path is not None and not path.is_dir():
        raise BadInput(f"--path {path} is not a folder of CSV/Parquet files")
    settings = _settings(warehouse=warehouse, source=source, files_path=path)
    picked = (
        []
        if symbols is None
        else checks.symbols(symbols, "--symbols", settings.symbol_pattern, settings.symbol_max_length)
    )
    if interval is not None:
        checks.interval(interval)
    checks.time_window(start, end)
    if as_of is not None:
        checks.timestamp(as_of, "--as-of")
    if date_format is not None:
        checks.date_format(date_format, "--date-format")
        if settings.source != SourceName.files:
            raise BadInput("--date-format applies to the files source only (--source files --path DIR)")
    if fault:
        if settings.source != SourceName.synthetic:
            raise BadInput(
                f"--fault injects faults into the synthetic source only, not {settings.source.value}"
            )
        from sources.base import SourceError
        from sources.synthetic import parse_faults

        try:
            parse_faults(fault)
        except SourceError as exc:
            raise BadInput(f"--fault: {exc}") from None
    return dict(source=source, symbols=picked or None, interval=interval, start=start, end=end,
                path=str(path) if path else None, warehouse=str(warehouse) if warehouse else None,
                faults=fault or None, as_of=as_of, date_format=date_format)  # fmt: skip


def _exit_if_partial(result: dict) -> None:
    """Exit 3 when some of an ingest failed (files, symbols, a blocked symbol) and the rest was written."""
    runs = result["runs"]
    if all(r["status"] == "success" for r in runs):
        return

    def few(names: set[str]) -> str:
        names = sorted(names)
        return f"{len(names)} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"

    failed = {s for r in runs for s in r["symbols_failed"]}
    blocked = {s for r in runs for s in r["symbols_blocked"]}
    empty = [r["interval"] for r in runs if r["status"] == "failed"]
    parts = [f"{few(failed)} failed"] if failed else []
    parts += [f"{few(blocked)} blocked by the gate"] if blocked else []
    parts += [f"interval {', '.join(empty)} wrote nothing"] if empty else []
    err.print(f"partial: {'; '.join(parts)}; the rest was written (exit 3)", soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_PARTIAL)


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
    _begin_flows()
    from flows.ingest import ingest as ingest_flow  # after the arguments are checked: Prefect, GX are slow

    return _with_progress(lambda: ingest_flow(**params))


INGEST_COLUMNS = [
    Column("interval", "interval", priority=KEEP), Column("source", "source", priority=LOW),
    Column("symbols", "symbols", Kind.int), Column("rows_in", "rows in", Kind.int, LOW),
    Column("rows_written", "written", Kind.int, KEEP), Column("rows_quarantined", "quarantined", Kind.int, KEEP),
    Column("blocked", "blocked", Kind.int), Column("failed", "failed", Kind.int),
    Column("status", "status", priority=KEEP), Column("seconds", "seconds", Kind.score, LOW),
]  # fmt: skip


def _print_ingest(result: dict) -> None:
    rows = [
        {**r, "symbols": len(r["symbols"]), "blocked": len(r["symbols_blocked"]), "failed": len(r["symbols_failed"]),
         "seconds": sum(r.get(k) or 0 for k in ("fetch_s", "gate_s", "write_s"))}
        for r in result["runs"]
    ]  # fmt: skip
    _table(INGEST_COLUMNS, rows, title="Ingested")
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
    _guard(lambda: _settings(warehouse=warehouse))  # a bad configuration stops here (exit 2)
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
    """Print one of qtrader's own queries (the user's go through ``qtrader sql``'s locked connection)."""
    from warehouse.db import query_df

    _print_frame(_guard(lambda: query_df(db, sql)), max_rows)


def _print_frame(df, max_rows: int = 50) -> None:
    """A query's rows: kinds from the column types (short timestamps, one precision per column), fitted
    to the terminal; NULL, NaN and NaT print blank."""
    more = f"... {len(df) - max_rows} more rows" if len(df) > max_rows else None
    _table(frame_columns(df), df.head(max_rows), caption=more)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='SQL to run, e.g. "SELECT * FROM v_bar_coverage".')],
    warehouse: WarehouseOpt = None,
    max_rows: Annotated[int, typer.Option(help="Rows to print.")] = 50,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run SQL on a locked-down read-only connection (no writes, files, ATTACH or extensions); print a table."""
    from warehouse.console import check_not_empty, run_query
    from warehouse.db import Warehouse

    _guard(lambda: check_not_empty(query))
    _guard(lambda: checks.non_negative_int(max_rows, "--max-rows"))
    settings = _guard(lambda: _settings(warehouse=warehouse))
    df = _guard(lambda: run_query(Warehouse.from_settings(settings), query))
    if csv:
        sys.stdout.write(df.to_csv(index=False))
        return
    if as_json:
        _print_json(records(df))  # every row: --max-rows is for the terminal
        return
    _print_frame(df, max_rows)


STATUS_SQL = {
    "coverage": """SELECT interval, count(*) AS symbols, sum(bars)::BIGINT AS bars, min(first_ts) AS first_ts,
                          max(last_ts) AS last_ts, max(last_ingested_at) AS last_ingested_at
                   FROM v_bar_coverage GROUP BY interval ORDER BY interval""",
    "ingest_runs": """SELECT run_id, started_at, source, interval, len(symbols) AS symbols, rows_in, rows_written,
                             rows_quarantined, len(symbols_failed) AS failed, len(symbols_blocked) AS blocked,
                             status, round(epoch(finished_at - started_at), 1) AS seconds, message
                      FROM ingest_runs ORDER BY started_at DESC LIMIT 10""",
    "decide_runs": """SELECT run_id, interval, status, stage, started_at,
                             round(epoch(finished_at - started_at), 1) AS seconds, message
                      FROM pipeline_runs WHERE flow = 'decide' ORDER BY started_at DESC LIMIT 10""",
    "quarantine": """SELECT run_id, rule, severity, symbol, interval, count(*) AS rows, min(ts) AS first_bar,
                            any_value(detail) AS example
                     FROM quarantine GROUP BY ALL ORDER BY max(quarantined_at) DESC, rows DESC LIMIT 15""",
}
STATUS_COLUMNS = {
    "coverage": [
        Column("interval", "interval", priority=KEEP), Column("symbols", "symbols", Kind.int),
        Column("bars", "bars", Kind.int), Column("first_ts", "first bar", Kind.ts, KEEP, interval_key="interval"),
        Column("last_ts", "last bar", Kind.ts, KEEP, interval_key="interval"), Column("last_ingested_at", "last ingested", Kind.ts),
    ],
    "ingest_runs": [
        Column("started_at", "started", Kind.ts, KEEP), Column("interval", "interval", priority=KEEP),
        Column("source", "source"), Column("symbols", "symbols", Kind.int, LOW, short="syms"),
        Column("rows_in", "rows in", Kind.int, LOW), Column("rows_written", "written", Kind.int, KEEP),
        Column("rows_quarantined", "quarantined", Kind.int, short="quar."),
        Column("failed", "failed", Kind.int, LOW), Column("blocked", "blocked", Kind.int, LOW),
        Column("status", "status", priority=KEEP), Column("seconds", "seconds", Kind.score, LOW, short="secs"),
        Column("run_id", "run id", Kind.id, LOW), Column("message", "message", Kind.text, LOW),
    ],
    "decide_runs": [
        Column("started_at", "started", Kind.ts, KEEP), Column("interval", "interval", priority=KEEP),
        Column("status", "status", priority=KEEP), Column("stage", "stage"),
        Column("seconds", "seconds", Kind.score, LOW, short="secs"), Column("run_id", "run id", Kind.id, LOW),
        Column("message", "message", Kind.text, LOW),
    ],
    "quarantine": [
        Column("first_bar", "first bar", Kind.ts, KEEP, interval_key="interval"), Column("symbol", "symbol", priority=KEEP),
        Column("interval", "interval", short="iv"), Column("rule", "rule", Kind.id, KEEP),
        Column("severity", "severity", priority=LOW), Column("rows", "rows", Kind.int),
        Column("example", "example", Kind.text, min_width=16), Column("run_id", "run id", Kind.id, LOW),
    ],
}  # fmt: skip


@app.command()
def status(warehouse: WarehouseOpt = None, as_json: JsonOpt = False) -> None:
    """What is in the warehouse, the last ingest and decide runs (interrupted and crashed ones too), and
    recent quarantines."""
    from warehouse.db import query_df

    settings = _guard(lambda: _settings(warehouse=warehouse))
    db = settings.warehouse
    _guard(lambda: _mark_crashed_runs(settings))
    frames = {k: _guard(lambda q=q: query_df(db, q)) for k, q in STATUS_SQL.items()}
    if as_json:
        _print_json({"warehouse": str(db), **{k: records(df) for k, df in frames.items()}})
        return
    for key, title in (("coverage", "Warehouse"), ("ingest_runs", "Last ingest runs"),
                       ("decide_runs", "Last decide runs"), ("quarantine", "Recent quarantines")):  # fmt: skip
        console.rule(title)
        if key == "coverage":
            console.print(str(db), highlight=False, overflow="fold")  # a long path folds, never cut
        if frames[key].empty:
            console.print("none")
        else:
            _table(STATUS_COLUMNS[key], frames[key])


def _mark_crashed_runs(settings) -> None:
    """Runs of this machine whose process is gone without closing them (kill -9) are marked crashed now,
    so status shows them so (qtrader/runs.py); a warehouse busy with a writer is left for the next start."""
    from qtrader.runs import reap_crashed
    from warehouse.db import Warehouse, WarehouseBusy

    wh = Warehouse.from_settings(settings)
    if not wh.exists():
        return
    try:
        reap_crashed(wh)
    except WarehouseBusy:
        pass


@app.command()
def serve() -> None:
    """Serve every deployment of prefect.yaml on its schedule in this process (no work pool or worker).

    With `make ui` running, the runs show in its UI (qtrader uses that server when it answers).
    """
    _begin_flows()
    from prefect import serve as prefect_serve

    from qtrader.orchestration import runner_deployments

    deployments = _guard(runner_deployments)
    console.print(f"serving {len(deployments)} deployments: " + ", ".join(d.name for d in deployments))
    _guard(lambda: prefect_serve(*deployments))


# ------------------------------------------------------------------------------ signal modules (retrain)

SCOREBOARD_COLUMNS = [
    Column("module", "module", priority=KEEP), Column("n", "n", Kind.int),
    Column("coverage", "coverage", Kind.rate, LOW, short="cov"), Column("accuracy", "accuracy", Kind.metric, KEEP, short="acc"),
    Column("auc", "AUC", Kind.metric, KEEP), Column("ece", "ECE raw→seed→fit", Kind.id, LOW),
    Column("brier_raw", "Brier", Kind.metric, LOW), Column("tp1_rate", "TP1", Kind.rate),
    Column("tp2_rate", "TP2", Kind.rate, LOW), Column("tp3_rate", "TP3", Kind.rate, LOW),
    Column("stop_rate", "stop", Kind.rate), Column("avg_r", "avg R", Kind.r),
    Column("performance_score", "score", Kind.score, KEEP), Column("champion", "champion", Kind.id),
    Column("champion_since", "champion since", Kind.ts, short="since"),
]  # fmt: skip


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
    as_json: JsonOpt = False,
) -> None:
    """Compute point-in-time TA-Lib features (all 61 candlestick patterns) for stored bars, through the gate."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    intervals = _guard(lambda: checks.intervals(interval) if interval else None)
    picked = _guard(lambda: _symbols_arg(symbols, settings))
    _begin_flows()
    from flows.features import features as features_flow

    result = _with_progress(lambda: features_flow(intervals=intervals, symbols=picked, full=full,
                                                  warehouse=str(settings.warehouse)))  # fmt: skip
    if as_json:
        _print_json(result)
        return
    for s in result["intervals"]:
        console.print(
            f"  {s['interval']}: {s['written']:,} feature rows written, {s['quarantined']} quarantined"
        )


def _symbols_arg(text: str | None, settings, what: str = "--symbols") -> list[str] | None:
    if text is None:
        return None
    return checks.symbols(text, what, settings.symbol_pattern, settings.symbol_max_length)


@app.command()
def retrain(
    interval: Annotated[str, typer.Option(help="Bar interval to retrain, e.g. 1d or 5m.")] = "1d",
    modules: Annotated[
        str | None, typer.Option(help="Comma-separated modules (default: the configured members + ensemble).")
    ] = None,
    warehouse: WarehouseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk-forward retrain of the signal modules; a challenger replaces the champion only if it beats it.

    Exit code 3 when a module could not be trained and the others were."""
    from qtrader.settings import DEFAULT_SIGNAL_MEMBERS

    settings = _guard(lambda: _settings(warehouse=warehouse))
    _guard(lambda: checks.interval(interval))
    picked = _guard(
        lambda: (
            checks.choices(modules, [*DEFAULT_SIGNAL_MEMBERS, "ensemble"], "--modules") if modules else None
        )
    )
    _begin_flows()
    from flows.retrain import retrain as retrain_flow

    result = _with_progress(
        lambda: retrain_flow(interval=interval, modules=picked, warehouse=str(settings.warehouse))
    )
    if as_json:
        _print_json(result)
    else:
        _print_retrain(result)
    if result["failed"]:
        err.print(f"partial: not trained: {', '.join(result['failed'])} (exit 3)", soft_wrap=True)
        raise typer.Exit(EXIT_PARTIAL)


RETRAIN_COLUMNS = [
    Column("module", "module", priority=KEEP), Column("version", "version", Kind.id, short="v"),
    Column("status", "status", priority=KEEP), Column("champion_now", "champion now", Kind.id, short="champion"),
    Column("val_accuracy", "val acc", Kind.metric), Column("val_auc", "val AUC", Kind.metric, KEEP),
    Column("champion_auc", "champion AUC", Kind.metric, short="champ AUC"),
    Column("calibration", "calibration", Kind.text, LOW),
]  # fmt: skip


def _print_retrain(result: dict) -> None:
    _table(
        RETRAIN_COLUMNS,
        [{**r, "version": f"v{r['version']}"} for r in result["changes"]],
        title=f"Retrain {result['interval']} (labelled bars up to {result['newest_labelled'][:10]})",
    )
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
    as_json: JsonOpt = False,
) -> None:
    """Score every module's stored predictions per window; writes benchmarks and exit_stats."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    _guard(lambda: checks.interval(interval))
    spans = _guard(
        lambda: (
            [checks.benchmark_window(w, "--windows") for w in checks.csv_items(windows, "--windows")]
            if windows
            else None
        )
    )
    _begin_flows()
    from flows.benchmark import benchmark as benchmark_flow

    result = _guard(
        lambda: benchmark_flow(interval=interval, windows=spans, warehouse=str(settings.warehouse))
    )
    if as_json:
        _print_json(result)
        return
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
    as_json: JsonOpt = False,
) -> None:
    """The latest benchmark of every module for one window: which module is good now, and since when."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    _guard(lambda: checks.interval(interval))
    if window is not None:
        _guard(lambda: checks.benchmark_window(window))
    if as_json:
        window, df = _scoreboard(settings.warehouse, interval, window)
        _print_json({"interval": interval, "window": window, "modules": records(df)})
        return
    _print_scoreboard(settings.warehouse, interval, window)


def _fmt(value, digits: int = 3) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if f != f else f"{f:.{digits}f}"


def _scoreboard(db: str | Path, interval: str, window: str | None):
    """(the window, the scoreboard frame) with the configured window when none is given."""
    from qtrader.calendar import is_daily
    from warehouse.models import scoreboard as load_scoreboard

    settings = _guard(lambda: _settings(warehouse=db))
    if window is None:
        b = settings.benchmark
        window = b.scoreboard_window_daily if is_daily(interval) else b.scoreboard_window_intraday
    return window, _guard(lambda: load_scoreboard(db, interval, window))


def _print_scoreboard(db: str | Path, interval: str, window: str | None) -> None:
    from qtrader.calendar import is_daily
    from qtrader.tables import format_cell

    window, df = _scoreboard(db, interval, window)
    if df.empty:
        console.print(
            f"no {interval} benchmark for window {window}: run `qtrader benchmark --interval {interval}`"
        )
        return
    end = df["window_end"].max()
    rows = []
    for r in df.to_dict("records"):
        has_champion = _fmt(r["champion_version"]) != ""
        rows.append({
            **r,
            "ece": f"{_fmt(r['ece_raw'])}→{_fmt(r['ece_seed'])}→{_fmt(r['ece_calibrated'])}",
            "champion": f"v{int(r['champion_version'])}" if has_champion else "",
            "champion_since": r["champion_since"] if has_champion else None,
        })  # fmt: skip
    _table(
        SCOREBOARD_COLUMNS,
        rows,
        title=f"Module scoreboard {interval}, window {window} (to {format_cell(end, Kind.ts, dates_only=is_daily(interval))})",
    )
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
    _begin_flows()
    from flows.benchmark import benchmark as benchmark_flow

    _begin_flows()
    from flows.features import features as features_flow

    _begin_flows()
    from flows.retrain import retrain as retrain_flow

    console.rule("Features: point-in-time TA-Lib features through their gate")
    feats = _with_progress(lambda: features_flow(warehouse=db))
    for s in feats["intervals"]:
        console.print(
            f"  {s['interval']}: {s['written']:,} feature rows written, {s['quarantined']} quarantined"
        )
    settings = _guard(lambda: _settings(warehouse=db))
    for interval in settings.intervals:
        console.rule(f"Retrain {interval}: walk-forward, calibration, champion vs challenger")
        _print_retrain(_with_progress(lambda iv=interval: retrain_flow(interval=iv, warehouse=db)))
        console.rule(f"Benchmark {interval}")
        _guard(lambda iv=interval: benchmark_flow(interval=iv, warehouse=db))
        _print_scoreboard(db, interval, None)


@app.command()
def health(
    warehouse: WarehouseOpt = None,
    run: Annotated[
        bool, typer.Option("--run", help="Run the health flow first (else: the latest stored run).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Module health scores with what moved them, learned thresholds, and active predictive alerts."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    if run:
        _begin_flows()
        from flows.health import health as health_flow

        _guard(lambda: health_flow(warehouse=str(settings.warehouse)))
    if as_json:
        _print_json(_health_json(settings.warehouse))
        return
    _print_health(settings.warehouse)


def _health_frames(db: str | Path):
    from warehouse.health import active_alerts, latest_health, latest_thresholds

    scores = _guard(lambda: latest_health(db))
    if scores.empty:
        _fail("no health run yet: run `qtrader health --run` (or the health flow)")
    return scores, _guard(lambda: latest_thresholds(db)), _guard(lambda: active_alerts(db))


def _health_json(db: str | Path) -> dict:
    scores, th, alerts = _health_frames(db)
    overall = scores[scores["module"] == "overall"]["score"]
    modules = scores[scores["module"] != "overall"].assign(
        components=[
            json.loads(c) if isinstance(c, str) else c
            for c in scores[scores["module"] != "overall"]["components"]
        ]
    )
    learned = th[~th["is_default"].astype(bool)] if len(th) else th
    defaults = th[th["is_default"].astype(bool)] if len(th) else th
    return {
        "ts": jsonable(scores["ts"].iloc[0]),
        "overall": None if overall.empty else jsonable(overall.iloc[0]),
        "modules": records(modules),
        "thresholds": records(learned),
        "default_thresholds": records(defaults),
        "alerts": records(alerts),
    }


HEALTH_COLUMNS = [
    Column("module", "module", priority=KEEP), Column("score", "score", Kind.id, KEEP),
    Column("movers", "what moved it (points lost)", Kind.text, min_width=24),
]  # fmt: skip
THRESHOLD_COLUMNS = [
    Column("module", "module", priority=KEEP), Column("metric", "metric", priority=KEEP),
    Column("bound", "bound", short="b"), Column("value", "threshold", Kind.sig, KEEP),
    Column("method", "method", priority=LOW), Column("n", "points", Kind.int, LOW),
    Column("learned_at", "learned at", Kind.ts, LOW), Column("center_spread", "median, spread", Kind.id, LOW),
]  # fmt: skip
ALERT_COLUMNS = [
    Column("module", "module", priority=KEEP), Column("metric", "metric", priority=KEEP),
    Column("severity", "severity", priority=KEEP), Column("current", "current", Kind.sig, KEEP),
    Column("threshold", "threshold", Kind.sig, KEEP), Column("slope", "slope/h", Kind.sig, LOW),
    Column("hours", "hours to threshold", Kind.id, short="hours left"), Column("ts", "since", Kind.ts),
    Column("reason", "reason", Kind.text, LOW),
]  # fmt: skip


def _g4(v) -> str:
    return "" if v is None or v != v else f"{v:.4g}"


def _print_health(db: str | Path) -> None:
    scores, th, alerts = _health_frames(db)
    ts = scores["ts"].iloc[0]
    overall = scores[scores["module"] == "overall"]["score"]
    overall_txt = "n/a" if overall.empty or overall.isna().all() else f"{overall.iloc[0]:.1f}"
    console.rule(f"Module health at {ts:%Y-%m-%d %H:%M} UTC: overall {overall_txt}")
    rows = []
    for row in scores[scores["module"] != "overall"].itertuples(index=False):
        comps = json.loads(row.components) if isinstance(row.components, str) else row.components
        lost = sorted(
            ((k, v) for k, v in comps.items() if not k.startswith("_") and (v.get("lost") or 0) >= 0.5),
            key=lambda kv: -kv[1]["lost"],
        )
        movers = "; ".join(f"{k} -{v['lost']:.1f}: {v['detail']}" for k, v in lost) or "-"
        capped = f" (capped: {row.capped_by})" if isinstance(row.capped_by, str) and row.capped_by else ""
        score = "n/a" if row.score is None or row.score != row.score else f"{row.score:.1f}"
        rows.append({"module": row.module, "score": score + capped, "movers": movers})
    _table(HEALTH_COLUMNS, rows)

    console.rule("Learned thresholds")
    learned = th[~th["is_default"].astype(bool)] if len(th) else th
    if learned.empty:
        console.print("None learned yet: every metric uses its documented default (history too short).")
    else:
        _table(THRESHOLD_COLUMNS, [
            {**r, "center_spread": f"{_g4(r['center'])}, {_g4(r['spread'])}"} for r in learned.to_dict("records")
        ])  # fmt: skip
    defaults = th[th["is_default"].astype(bool)] if len(th) else th
    if len(defaults):
        metrics = ", ".join(sorted(defaults["metric"].unique()))
        console.print(
            f"{len(defaults)} (module, metric) pairs still use their default, history too short: {metrics}"
        )

    console.rule("Active alerts")
    if alerts.empty:
        console.print("No active alerts.")
        return
    rows = []
    for a in alerts.to_dict("records"):
        hours = a["time_to_threshold_hours"]
        hours_txt = (
            "n/a" if hours is None or hours != hours else ("breached" if hours == 0 else f"{hours:.1f}")
        )
        rows.append({**a, "hours": hours_txt})
    _table(ALERT_COLUMNS, rows)


def _demo_health(db: str) -> None:
    """The demo's last step, after benchmark: score health, learn thresholds, show both and the alerts."""
    _begin_flows()
    from flows.health import health as health_flow

    _begin_flows()
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
    as_json: JsonOpt = False,
) -> None:
    """Decide at the newest bar: reconcile, move stops, filter, size, plan exits, send bracket orders.

    Bars at or before the champions' training end are never decided: a --bars or --at reaching into the
    training window is refused (exit 2) with the largest --bars that stays after it."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    interval = _guard(lambda: checks.interval(interval) if interval else settings.decision.interval)
    at_ts = _guard(lambda: checks.timestamp(at, "--at") if at else None)
    _guard(lambda: checks.positive_int(bars, "--bars", "the newest N bars to replay"))
    _guard(lambda: _check_replay(settings, interval, at, at_ts, bars))
    _begin_flows()
    from flows.decide import decide as decide_flow

    result = _flow_result(
        _guard(lambda: decide_flow(at=at, interval=interval, bars=bars, warehouse=str(settings.warehouse)))
    )
    if result.get("refused"):
        _fail("refused to trade: " + "; ".join(result["refused"]))
    if as_json:
        _print_json(result)
        return
    _print_decide(result)


def _check_replay(settings, interval: str, at: str | None, at_ts, bars: int) -> None:
    """BadInput when the replay would decide bars inside the champions' training window (in-sample)."""
    from warehouse.console import replay_window
    from warehouse.db import Warehouse

    w = replay_window(Warehouse.from_settings(settings), interval, at_ts, bars)
    if w is None or w.train_end is None or w.first is None or w.first > w.train_end:
        return
    trained = f"the champions' training window (their {interval} models were trained on bars up to {w.train_end:%Y-%m-%d %H:%M})"
    if w.after_training == 0:
        what = f"--at {at}" if at else f"the newest {interval} bar"
        raise BadInput(f"{what} is inside {trained}: decide at a later bar, or retrain")
    raise BadInput(
        f"--bars {bars} would replay from {w.first:%Y-%m-%d %H:%M}, inside {trained}; "
        f"at most {w.after_training} bars come after it: use --bars {w.after_training}"
    )


DECIDE_COLUMNS = [
    Column("ts", "bar", Kind.ts, KEEP), Column("candidates", "candidates", Kind.int, short="cand."),
    Column("accepted", "accepted", Kind.int, KEEP, short="acc."), Column("submitted", "brackets sent", Kind.int, short="sent"),
    Column("stop_moves", "stop moves", Kind.int, LOW), Column("fills", "fills", Kind.int),
    Column("equity", "equity", Kind.money, KEEP), Column("why", "why not", Kind.text, min_width=16),
]  # fmt: skip


def _print_decide(result: dict, max_bars: int = 60) -> None:
    rows = []
    for b in result["bars"][-max_bars:]:
        why = ", ".join(f"{k} {v}" for k, v in b["reasons"].items() if k != "accepted")
        gate = b.get("order_gate_failures") or {}
        if gate:
            why = f"ORDER GATE: {', '.join(gate)}; " + why
        rows.append({**b, "ts": pd_ts(b["ts"]), "stop_moves": len(b["stop_moves"]), "why": why})
    earlier = result["bars"][:-max_bars] if len(result["bars"]) > max_bars else []
    caption = None
    if earlier:
        caption = (
            f"{len(earlier)} earlier bars not shown: {sum(b['candidates'] for b in earlier)} candidates, "
            f"{sum(b['accepted'] for b in earlier)} accepted, {sum(b['fills'] for b in earlier)} fills (--json has all)"
        )
    _table(DECIDE_COLUMNS, rows, title=f"Decisions {result['interval']} (broker {result.get('broker')})",
           caption=caption)  # fmt: skip
    if result.get("skipped"):
        console.print(f"{len(result['skipped'])} bar(s) skipped: already decided")


def pd_ts(value):
    import pandas as pd

    return pd.Timestamp(value)


@app.command()
def account(
    warehouse: WarehouseOpt = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write the account report (HTML and PNG).")] = False,
    symbol: Annotated[
        str | None, typer.Option(help="The report's price panel symbol (default: the most traded).")
    ] = None,
    recent: Annotated[int, typer.Option(help="Rows of fills, trades and stop moves to show.")] = 15,
    as_json: JsonOpt = False,
) -> None:
    """Paper account review: equity, positions, open brackets, fills, closed trades (R, exit reason),
    module attribution, and why candidates were not traded (as of the last decision run)."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    _guard(lambda: checks.non_negative_int(recent, "--recent"))
    if as_json:
        data = _account_json(settings.warehouse, str(settings.broker), recent)
        if plot:
            html, png = _guard(
                lambda: _plot_equity(settings.warehouse, str(settings.broker), settings.data_dir)
            )
            data["plots"] = [str(Path(html).resolve()), str(Path(png).resolve())]
        _print_json(data)
        return
    _print_account(settings.warehouse, str(settings.broker), recent)
    if plot:
        html, png = _guard(
            lambda: _plot_equity(settings.warehouse, str(settings.broker), settings.data_dir, symbol)
        )
        console.print(f"Account report: {Path(html).resolve()}\nAccount report: {Path(png).resolve()}")


def _money(v) -> str:
    return "" if v is None or v != v else f"{float(v):,.2f}"


def _account_review(db, broker: str, recent: int) -> dict:
    from warehouse.decisions import account_review

    r = _guard(lambda: account_review(db, broker, recent=recent))
    if r["account"].empty:
        _fail(f"no {broker} account snapshot yet: run `qtrader decide` first")
    return r


def _account_json(db, broker: str, recent: int) -> dict:
    r = _account_review(db, broker, recent)
    out = {"broker": broker, "account": records(r["account"])[0]}
    for key in ("positions", "open_orders", "fills", "adjustments", "trades", "attribution", "rejections"):
        out[key] = records(r[key])
    return out


ACCOUNT_TABLES = {
    "positions": ("Positions", None, [
        Column("symbol", "symbol", priority=KEEP), Column("qty", "qty", Kind.int, KEEP),
        Column("avg_entry_price", "avg entry", Kind.price), Column("mark", "mark", Kind.price),
        Column("market_value", "value", Kind.money, KEEP), Column("unrealized_pnl", "unrealized P&L", Kind.money, KEEP,
                                                                  short="unreal. P&L"),
    ]),
    "open_orders": ("Open brackets (entry, take-profit leg, stop leg)", 2, [
        Column("decided_at", "decided", Kind.ts, KEEP), Column("symbol", "symbol", priority=KEEP),
        Column("side", "side", priority=KEEP), Column("leg", "leg", Kind.int), Column("qty", "qty", Kind.int, KEEP),
        Column("status", "status", priority=LOW), Column("entry_ref", "entry ref", Kind.price, short="entry"),
        Column("take_profit", "take profit", Kind.price, KEEP, short="TP"),
        Column("initial_stop", "initial stop", Kind.price, LOW, short="stop0"),
        Column("stop_now", "stop now", Kind.price, KEEP, short="stop"),
        Column("last_rule", "last stop move", Kind.text, LOW),
    ]),
    "fills": ("Recent fills", 1, [
        Column("ts", "bar", Kind.ts, KEEP), Column("symbol", "symbol", priority=KEEP),
        Column("side", "side", priority=KEEP), Column("role", "role"), Column("qty", "qty", Kind.int, KEEP),
        Column("price", "price", Kind.price, KEEP), Column("commission", "commission", Kind.money, LOW, short="fee"),
        Column("client_order_id", "client order id", Kind.id, LOW),
    ]),
    "adjustments": ("Recent stop moves (exit_adjustments)", 1, [
        Column("ts", "bar", Kind.ts, KEEP), Column("symbol", "symbol", priority=KEEP),
        Column("old_stop", "old", Kind.price, KEEP), Column("new_stop", "new", Kind.price, KEEP),
        Column("rule", "rule"), Column("reason", "reason", Kind.text, LOW),
    ]),
    "trades": ("Closed trades (R = P&L / initial risk)", 1, [
        Column("exit_ts", "exit", Kind.ts, KEEP), Column("symbol", "symbol", priority=KEEP),
        Column("side", "side"), Column("qty", "qty", Kind.int),
        Column("entry_price", "entry", Kind.price), Column("exit_price", "exit price", Kind.price, short="exit px"),
        Column("pnl", "P&L", Kind.money, KEEP), Column("r_multiple", "R", Kind.r, KEEP),
        Column("exit_reason", "exit reason", Kind.text, short="reason"),
        Column("legs", "legs", Kind.text, LOW), Column("contributors", "modules that voted", Kind.text, LOW),
    ]),
    "attribution": (
        "P&L by module (a closed trade counts for every module that voted for it)", None, [
        Column("module", "module", priority=KEEP), Column("trades", "trades", Kind.int),
        Column("wins", "wins", Kind.int, LOW), Column("win_rate", "win rate", Kind.rate),
        Column("pnl", "P&L", Kind.money, KEEP), Column("pnl_shared", "P&L shared", Kind.money, KEEP),
        Column("avg_r", "mean R", Kind.r),
    ]),
    "rejections": ("Candidates not traded, by reason", None, [
        Column("reason_code", "reason", priority=KEEP), Column("n", "candidates", Kind.int, KEEP),
    ]),
}  # fmt: skip


def _print_account(db, broker: str, recent: int = 15) -> None:
    r = _account_review(db, broker, recent)
    a = r["account"].iloc[0]
    console.rule(f"Paper account ({broker}) as of {a['as_of']:%Y-%m-%d %H:%M} UTC")
    realized = r["trades"]["pnl"].sum() if len(r["trades"]) else 0.0
    unrealized = r["positions"]["unrealized_pnl"].sum() if len(r["positions"]) else 0.0
    console.print(
        f"equity {_money(a['equity'])}   cash {_money(a['cash'])}   buying power {_money(a['buying_power'])}   "
        f"P&L {_money(a['pnl_since_first_snapshot'])} (closed trades {_money(realized)}, "
        f"open positions {_money(unrealized)})",
        highlight=False,
    )
    for key, (title, per_recent, columns) in ACCOUNT_TABLES.items():
        df = r[key]
        console.rule(title)
        if df.empty:
            console.print("none")
            continue
        n = recent * per_recent if per_recent else None
        more = f"... {len(df) - n} more (qtrader sql)" if n and len(df) > n else None
        _table(columns, df.head(n) if n else df, caption=more)
        if key == "trades":
            counts = ", ".join(f"{k} {v}" for k, v in df["exit_reason"].value_counts().items())
            console.print(f"{len(df)} closed trades; exit reasons: {counts}; mean R {df['r_multiple'].mean():.2f}",
                          highlight=False)  # fmt: skip
    console.print(
        'Why was a trade taken: qtrader sql "SELECT ts, symbol, side, consensus, contributors, '
        "confidence_calibrated, overall_health, size_multiplier, exit_profile FROM decisions WHERE accepted "
        'ORDER BY ts DESC LIMIT 10"',
        soft_wrap=True,
        highlight=False,
    )


def _plot_equity(db, broker: str, data_dir, symbol: str | None = None) -> tuple[Path, Path]:
    """The account report (tasks/account_report.py): data/reports/account.html and account.png."""
    from tasks.account_report import write_account_report

    return write_account_report(db, broker, Path(data_dir) / "reports", symbol=symbol)


def _demo_decide(db: str) -> None:
    """The demo's last step: the decision flow on daily bars, then the paper account review."""
    _begin_flows()
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
    _print_decide(result, max_bars=10)  # the demo's summary: the last bars, the earlier ones counted
    _explain_rejections(db, times[-1])
    settings = _guard(lambda: _settings(warehouse=db))
    _print_account(db, str(settings.broker), recent=12)
    html, png = _guard(lambda: _plot_equity(db, str(settings.broker), settings.data_dir))
    console.print(f"Account report: {html} and {png}  (any time: qtrader account --plot)")


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
    _begin_flows()
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
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            help="Also replay each mode at each value: --sweep exits.tp1_atr=1,1.5,2; repeat it for a grid; "
            "a JSON list for list values (docs/backtest.md). Only what the replay reads can vary: "
            "trade_filter, sizing, exits, orders, paper. With a sweep the default modes are: adaptive.",
            metavar="SECTION.FIELD=V1,V2",
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
    as_json: JsonOpt = False,
) -> None:
    """Replay history through the live decision code: static (seed 002's old system) vs adaptive and one
    ablation per enhancement, with costs; prints the table and writes the report.

    Results land in backtest_runs / backtest_trades / backtest_equity; each mode's scratch warehouse
    (every decision, order and fill) stays under data/backtests/<run_id>/ for SQL."""
    settings = _guard(lambda: _settings(warehouse=warehouse))
    args = _guard(
        lambda: _backtest_arguments(settings, interval, start, end, symbols, modes, signals, symbol, sweep)
    )
    _begin_flows()
    from flows.backtest import backtest as backtest_flow

    result = _with_progress(
        lambda: backtest_flow(**args, warehouse=str(settings.warehouse), report=report), eta=True
    )
    if as_json:
        from warehouse.backtest import latest_table

        _print_json(
            {**result, "modes": records(_guard(lambda: latest_table(settings.warehouse, result["run_id"])))}
        )
        return
    _print_backtest(settings.warehouse, result)


def _backtest_arguments(settings, interval, start, end, symbols, modes, signals, symbol, sweep=None) -> dict:
    """The backtest flow's parameters, every one checked (BadInput otherwise); symbols against the warehouse."""
    from models import backtest as mb
    from models.backtest import MODES
    from qtrader.settings import load_settings
    from warehouse.console import stored_symbols
    from warehouse.db import Warehouse

    iv = checks.interval(interval) if interval else settings.backtest.interval
    checks.time_window(start, end)
    picked = _symbols_arg(symbols, settings)
    if picked:
        stored = stored_symbols(Warehouse.from_settings(settings), iv)
        if stored is not None:
            checks.unknown_symbols(picked, stored, "--symbols", f"the warehouse's {iv} bars")
    if signals is not None and not signals.is_file():
        raise BadInput(f"--signals {signals}: no such file (a CSV or Parquet of symbol, ts, side)")
    report_symbol = _symbols_arg(symbol, settings, "--symbol")
    if report_symbol and len(report_symbol) > 1:
        raise BadInput(f"--symbol takes one symbol, got {', '.join(report_symbol)}")
    grid = None
    if sweep:
        try:
            grid = mb.check_sweep(mb.parse_sweep(sweep), settings.backtest.max_sweep_variants)
            mb.check_sweep_values(grid, lambda o: load_settings(warehouse=settings.warehouse, **o))
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    return dict(
        interval=interval, start=start, end=end, symbols=picked, sweep=grid,
        modes=checks.choices(modes, MODES, "--modes") if modes else None,
        signals=str(signals) if signals else None, report_symbol=report_symbol[0] if report_symbol else None,
    )  # fmt: skip


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="The backtest run (default: the newest).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol whose price shows the trade markers.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder of report.html and report.png (default: the run's folder).")
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Redraw a stored backtest's report (HTML and PNG), e.g. with another symbol's price panel."""
    from tasks.backtest_report import write_report
    from warehouse.db import query_df

    settings = _guard(lambda: _settings(warehouse=warehouse))
    db = settings.warehouse
    if run_id is None:
        newest = _guard(
            lambda: query_df(db, "SELECT run_id FROM backtest_runs ORDER BY started_at DESC LIMIT 1")
        )
        if newest.empty:
            _fail("no backtest has been recorded yet: run `qtrader backtest` first")
        run_id = str(newest["run_id"].iloc[0])
    if out is None:
        scratch = _guard(
            lambda: query_df(db, "SELECT max(scratch) AS s FROM backtest_runs WHERE run_id = ?", [run_id])
        )
        s = scratch["s"].iloc[0] if len(scratch) else None
        out = Path(s).parent if isinstance(s, str) and s else Path(settings.data_dir) / "backtests" / run_id
    html, png = _guard(lambda: write_report(db, run_id, out, symbol=symbol))
    console.print(
        f"Report: {Path(html).resolve()}\nReport: {Path(png).resolve()}", soft_wrap=True, highlight=False
    )


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
        keep, low = (
            {"mode", "Avg P&L/trade", "Sharpe", "Max DD", "Trades"},
            {"Sortino", "Exposure", "Turnover"},
        )
        columns = [
            Column(
                c,
                c,
                Kind.id if c == "mode" else Kind.figure,
                KEEP if c in keep else LOW if c in low else NORMAL,
            )
            for c in rows[0]
        ]  # a mode's name is shown whole: no_predictive_tightening and no_performance_sizing differ at the end
        _table(columns, rows, title=title if "annualised" in caption else None, caption=caption)
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
