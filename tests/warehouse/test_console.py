"""`qtrader sql` as a user types it: read-only, nothing outside the warehouse reachable, one clear line."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from qtrader.cli import app

runner = CliRunner()


def _init(db: Path) -> None:
    assert runner.invoke(app, ["init", "--warehouse", str(db)]).exit_code == 0


def _sql(db: Path, query: str):
    # "--" ends the options, as a user types it for a query that starts with "--".
    return runner.invoke(app, ["sql", "--warehouse", str(db), "--", query])


def _one_line_error(out) -> str:
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1, out.output
    assert "Traceback" not in out.output
    return lines[0]


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "w.duckdb"
    _init(path)
    return path


def test_copy_to_the_warehouse_file_is_refused_and_the_warehouse_stays_whole(db):
    out = _sql(db, f"COPY (SELECT 'x') TO '{db}' (FORMAT csv)")
    assert out.exit_code == 1
    assert "refused" in _one_line_error(out)
    with duckdb.connect(str(db), read_only=True) as con:  # still a DuckDB file with its migrations
        assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] >= 7


def test_attach_another_database_read_write_is_refused_and_its_rows_stay(db, tmp_path):
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
    out = _sql(db, f"ATTACH '{other}' AS o (READ_WRITE); DELETE FROM o.t")
    assert out.exit_code == 1 and "refused" in _one_line_error(out)
    with duckdb.connect(str(other), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "LOAD httpfs",
        # A local repository URL: the old code would try to download here, never the internet.
        "INSTALL httpfs FROM 'http://127.0.0.1:9'",
        "SET enable_external_access = true",
    ],
)
def test_files_extensions_and_settings_are_out_of_reach(db, query):
    out = _sql(db, query)
    assert out.exit_code == 1
    line = _one_line_error(out)
    assert "refused" in line and "root:" not in out.output


def test_writes_are_refused_as_read_only(db):
    out = _sql(db, "DELETE FROM bars")
    assert out.exit_code == 1 and "read-only" in _one_line_error(out)


@pytest.mark.parametrize("query", ["", "   ", "-- only a comment", ";"])
def test_an_empty_query_is_bad_usage_with_one_line(db, query):
    out = _sql(db, query)
    assert out.exit_code == 2, out.output
    assert "empty" in _one_line_error(out)


def test_ordinary_queries_still_work_in_utc(db):
    out = runner.invoke(
        app, ["sql", "--csv", "SELECT current_setting('TimeZone') AS tz, 1 AS one", "--warehouse", str(db)]
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip().splitlines() == ["tz,one", "UTC,1"]
