"""Data Docs a user can open offline: local assets only, every validation kept and listed, failures that
name symbol, timestamp, rule and severity, warnings that do not read as failures, one site per warehouse."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from expectations.gate import build_data_docs
from tests.expectations.test_gate import _jump, _set, daily, gate, pos


class _Page(HTMLParser):
    """Every URL a page loads or links to, its table rows as text cells, and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "data-src", "srcset") and value:
                self.urls.append((tag, name, value))
            if name == "style" and value and "url(" in value:
                self.urls.append((tag, name, value))
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def html_files(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_every_page_loads_only_local_files(tmp_path):
    index = build_data_docs([gate(_set("close", np.nan)(daily()))], tmp_path / "docs")
    site = index.parent
    pages = html_files(site)
    assert len(pages) >= 2  # the index and the validation's page
    for path in pages:
        page = parse(path)
        raw = path.read_text(encoding="utf-8")
        # No CDN or any other remote asset: no scheme-qualified or protocol-relative URL in the markup,
        # nor in inline CSS (@import / url()).
        remote = [u for u in page.urls if re.match(r"^(https?:)?//", u[2].strip(), re.I)]
        assert remote == [], f"{path.relative_to(site)} loads remote URLs: {remote[:5]}"
        assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", raw, re.I), path
        # Every local file a page references exists in the site.
        for _tag, _attr, url in page.urls:
            if url.startswith(("#", "mailto:", "data:")):
                continue
            target = (path.parent / url.split("#")[0].split("?")[0]).resolve()
            assert target.exists(), f"{path.relative_to(site)} links to missing {url}"


def _index_rows(index: Path) -> list[list[str]]:
    return [r for r in parse(index).rows if r and r[0] and r[0][0].isdigit()]


def test_every_validation_is_kept_and_listed_in_the_index_without_javascript(tmp_path):
    docs = tmp_path / "docs"
    bars = daily()
    first = gate_run(bars, "ingest-1", pd.Timestamp("2024-05-15 00:00", tz="UTC"))
    build_data_docs([first], docs)
    second = gate_run(_set("close", np.nan)(daily()), "ingest-2", pd.Timestamp("2024-05-16 00:00", tz="UTC"))
    index = build_data_docs([second], docs)
    rows = _index_rows(index)
    listed = " ".join(" ".join(r) for r in rows)
    # Both runs are listed in the static HTML itself (offline, no script fills the table) ...
    assert "ingest-1" in listed and "ingest-2" in listed, rows
    # ... and each row links to a page that exists.
    links = [u for t, a, u in parse(index).urls if t == "a" and a == "href" and u.endswith(".html")]
    assert len([u for u in links if (index.parent / u).exists()]) >= 2


def gate_run(bars, run_id, now):
    from expectations.gate import gate_bars
    from qtrader.settings import GateSettings
    from tests.expectations.test_gate import DAILY_REF

    return gate_bars(
        bars, interval="1d", settings=GateSettings(), run_id=run_id, now=now, reference_end=DAILY_REF
    )


def _validation_page(index: Path) -> Path:
    links = [u for t, a, u in parse(index).urls if t == "a" and u.endswith(".html") and "index" not in u]
    assert links, "the index links to no validation page"
    return index.parent / links[0]


def test_a_failure_names_symbol_timestamp_rule_and_severity(tmp_path):
    bars = daily()
    at = pos(bars, "MSFT", 20)
    ts = bars.loc[at, "ts"]
    result = gate(_set("close", np.nan)(bars))  # price_not_null: critical, one row quarantined
    page = parse(_validation_page(build_data_docs([result], tmp_path / "docs")))
    day = f"{ts:%Y-%m-%d}"
    hits = [r for r in page.rows if "MSFT" in r and any(day in c for c in r) and "price_not_null" in r]
    assert hits, f"no row naming MSFT, {day} and price_not_null: {page.rows[:12]}"
    assert "critical" in hits[0]


def test_a_warning_only_run_does_not_read_as_failed(tmp_path):
    bars = daily()
    jump_ts = bars.loc[pos(bars, "MSFT", 40), "ts"]
    result = gate(_jump(bars))  # move_beyond_limit is a warning by default: rows kept
    assert result.quarantined.empty and len(result.warnings)
    index = build_data_docs([result], tmp_path / "docs")
    text = " ".join(parse(index).text)
    assert not re.search(r"\bfailed\b", " ".join(" ".join(r) for r in _index_rows(index)), re.I), text
    assert re.search(r"warning", text, re.I)
    page = parse(_validation_page(index))
    hits = [r for r in page.rows if "MSFT" in r and "move_beyond_limit" in r and "warning" in r]
    assert hits and any(f"{jump_ts:%Y-%m-%d}" in c for c in hits[0])
    assert not any("failed" in " ".join(r).lower() and "move_beyond_limit" in r for r in page.rows)


def test_a_scratch_warehouse_never_overwrites_the_projects_site(tmp_path):
    from qtrader.settings import Settings
    from tasks.ingest import build_dq_docs

    project = Settings(warehouse=tmp_path / "data" / "warehouse.duckdb", data_dir=tmp_path / "data")
    scratch = Settings(warehouse=tmp_path / "scratch" / "w.duckdb", data_dir=tmp_path / "data")
    mine = gate_run(daily(), "project-run", pd.Timestamp("2024-05-15 00:00", tz="UTC"))
    theirs = gate_run(daily(), "scratch-run", pd.Timestamp("2024-05-16 00:00", tz="UTC"))
    project_index = Path(build_dq_docs.fn(project, [mine]))
    scratch_index = Path(build_dq_docs.fn(scratch, [theirs]))
    assert project_index != scratch_index
    listed = " ".join(" ".join(r) for r in _index_rows(project_index))
    assert "project-run" in listed and "scratch-run" not in listed
    assert "scratch-run" in " ".join(" ".join(r) for r in _index_rows(scratch_index))


def test_a_predictions_failure_names_symbol_timestamp_rule_and_severity_offline(tmp_path):
    """The frame gates (features, predictions) write to the same offline site, with the same findings."""
    from expectations.frame_gate import build_frame_docs, gate_frame

    ts = pd.date_range("2026-04-01 14:30", periods=6, freq="5min", tz="UTC")
    preds = pd.DataFrame({"symbol": "NVDA", "interval": "5m", "ts": ts, "module": "direction", "model_version": 1,
                          "p_up": 0.6, "p_up_calibrated": 0.58, "confidence_raw": 0.6, "confidence_seed": 0.55,
                          "confidence_calibrated": 0.58, "direction": 1})  # fmt: skip
    preds.loc[3, "p_up"] = 1.2
    result = gate_frame(preds, suite="predictions", run_id="retrain-x", stage="predictions")
    index = build_frame_docs([result], tmp_path / "docs")
    for path in html_files(index.parent):
        remote = [u for _, _, u in parse(path).urls if re.match(r"(https?:)?//", u)]
        assert not remote, f"{path.name} loads {remote}"
    page = parse(_validation_page(index))
    when = f"{ts[3]:%Y-%m-%d %H:%M}"
    hits = [r for r in page.rows if "NVDA" in r and any(when in c for c in r)]
    assert hits, f"no row naming NVDA at {when}: {page.rows[:12]}"
    assert "probability_in_unit_interval" in hits[0] and "critical" in hits[0]
