"""Data Docs that work offline and keep every validation.

Great Expectations' site builder (1.x) writes pages that load Bootstrap, jQuery, bootstrap-table, Font
Awesome and Vega from CDNs, lists its validations with JavaScript (offline: an empty index), keeps only
the validations of the process that built it, and reports a warning-only run as "Failed". qtrader keeps
GX as the judge (every verdict below is GX's ``ExpectationSuiteValidationResult``) and renders the site
itself: plain HTML with inline CSS, no script, no external reference.

A site is one folder per warehouse (``site_dir``), so a scratch warehouse never overwrites the project's:

    <site>/index.html                           every validation, newest first
    <site>/records/<suite>/<key>.json           one JSON record per validation (the history)
    <site>/validations/<suite>/<key>.html       one page per validation
    <site>/manifest.jsonl                       one summary line per validation (the index's source)

Each record keeps each expectation's rule (``meta.rule``), severity and GX's verdict, and the findings
behind a failure: symbol, timestamp, rule, severity and why. A validation's status is ``failed`` when a
critical rule failed, ``warnings`` when only warning rules did, else ``passed``.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

FAILED, WARNINGS, PASSED = "failed", "warnings", "passed"
STATUS_TEXT = {FAILED: "failed", WARNINGS: "passed with warnings", PASSED: "passed"}
CRITICAL, WARNING = "critical", "warning"
FINDINGS_PER_RULE = 50  # findings kept per rule and validation (the counts stay complete)
FINDING_COLUMNS = ["symbol", "ts", "rule", "severity", "detail"]
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class DocsItem:
    """One validation to publish: GX's result, the stage-and-interval it checked, each rule's severity
    and the rows behind its failures (columns of ``FINDING_COLUMNS``; ``symbol``/``ts`` may be absent)."""

    suite_name: str
    validation: Any
    batch_identifier: str
    severity: Mapping[str, str] | None = None
    findings: pd.DataFrame | None = None


def site_dir(root: str | Path, warehouse: str | Path) -> Path:
    """The Data Docs site of ``warehouse`` under ``root``: ``<stem>-<hash of its absolute path>``."""
    resolved = Path(warehouse).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode(), usedforsecurity=False).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", resolved.stem) or "warehouse"
    return Path(root).expanduser().resolve() / f"{stem}-{digest}"


# ---------------------------------------------------------------------------------------------- records


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    try:  # numpy scalars
        return _jsonable(value.item())
    except (AttributeError, ValueError):
        return str(value)


def _observed(res: Mapping[str, Any]) -> str:
    from expectations.runtime import observed

    return observed(dict(res))


def _run(validation: Any) -> tuple[str, pd.Timestamp]:
    meta = validation.meta or {}
    run = meta.get("run_id")
    name = getattr(run, "run_name", None) or (run.get("run_name") if isinstance(run, Mapping) else None)
    when = getattr(run, "run_time", None) or meta.get("validation_time")
    ts = pd.Timestamp(when) if when is not None else pd.Timestamp.now(tz="UTC")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return str(name or "run"), ts


def _findings(frame: pd.DataFrame | None, severity: Mapping[str, str]) -> tuple[list[dict], dict[str, int]]:
    if frame is None or frame.empty:
        return [], {}
    f = frame.reindex(columns=FINDING_COLUMNS).copy()
    f["severity"] = f["severity"].fillna(f["rule"].map(dict(severity)))
    counts = {str(k): int(v) for k, v in f.groupby("rule", sort=True).size().items()}
    ts = f["ts"]
    if len(ts) and not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts, utc=True, errors="coerce")
    f["ts"] = [_short_ts(t) for t in ts]
    kept = f.groupby("rule", sort=False, group_keys=False).head(FINDINGS_PER_RULE)
    rows = [{k: _jsonable(v) for k, v in r.items()} for r in kept.to_dict("records")]
    return rows, counts


def _short_ts(t: Any) -> str | None:
    if t is None or t is pd.NaT or (isinstance(t, float) and t != t):
        return None
    t = pd.Timestamp(t)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC")
    if t == t.normalize():
        return f"{t:%Y-%m-%d}"
    return f"{t:%Y-%m-%d %H:%M} UTC"


def record(item: DocsItem) -> dict[str, Any]:
    """The JSON record of one validation: what the site renders and keeps."""
    v = item.validation
    run_name, at = _run(v)
    severity = dict(item.severity or {})
    expectations, worst = [], PASSED
    for r in v.results:
        cfg, res = r.expectation_config, r.result or {}
        meta = cfg.meta or {}
        rule = str(meta.get("rule") or cfg.type)
        sev = severity.get(rule) or meta.get("severity") or CRITICAL
        from expectations.runtime import raised

        error = raised(r.exception_info)
        ok = bool(r.success) and not error
        status = PASSED if ok else (WARNINGS if sev == WARNING else FAILED)
        if status == FAILED or (status == WARNINGS and worst == PASSED):
            worst = status
        kwargs = {k: _jsonable(x) for k, x in (cfg.kwargs or {}).items() if k != "batch_id"}
        expectations.append(
            {
                "rule": rule,
                "severity": sev,
                "expectation": cfg.type,
                "column": kwargs.get("column") or ", ".join(kwargs.get("column_list") or []),
                "kwargs": kwargs,
                "status": status,
                "observed": error or _observed(res),
                "unexpected_count": _jsonable(res.get("unexpected_count")),
                "element_count": _jsonable(res.get("element_count")),
            }
        )
    findings, counts = _findings(item.findings, severity)
    qmeta = (v.meta or {}).get("qtrader") or {}
    key = f"{at:%Y%m%dT%H%M%S}-{_slug(run_name)}-{_slug(item.batch_identifier)}"
    return {
        "key": key,
        "suite": item.suite_name,
        "batch": item.batch_identifier,
        "stage": qmeta.get("stage") or item.batch_identifier.split("-")[0],
        "interval": qmeta.get("interval"),
        "run_id": run_name,
        "validated_at": at.isoformat(),
        "status": worst,
        "expectations": expectations,
        "findings": findings,
        "finding_counts": counts,
        "params": _jsonable(getattr(v, "suite_parameters", None) or {}),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_")[:80] or "x"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    failed = [e for e in rec["expectations"] if e["status"] == FAILED]
    warned = [e for e in rec["expectations"] if e["status"] == WARNINGS]
    return {
        "key": rec["key"],
        "suite": rec["suite"],
        "batch": rec["batch"],
        "run_id": rec["run_id"],
        "validated_at": rec["validated_at"],
        "status": rec["status"],
        "expectations": len(rec["expectations"]),
        "failed_rules": sorted({e["rule"] for e in failed}),
        "warning_rules": sorted({e["rule"] for e in warned}),
        "page": f"validations/{_slug(rec['suite'])}/{rec['key']}.html",
    }


def write_site(items: Iterable[DocsItem], site: str | Path) -> Path:
    """Add the validations to the site (records, pages, manifest) and re-render its index."""
    site = Path(site).expanduser().resolve()
    site.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in items:
        rec = record(item)
        suite = _slug(rec["suite"])
        _write_atomic(site / "records" / suite / f"{rec['key']}.json", json.dumps(rec, indent=1))
        _write_atomic(site / "validations" / suite / f"{rec['key']}.html", render_validation(rec))
        lines.append(json.dumps(_summary(rec)) + "\n")
    if lines:
        # One append per build: O_APPEND keeps concurrent builders' lines whole.
        with open(site / MANIFEST, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
    index = site / "index.html"
    _write_atomic(index, render_index(read_manifest(site), site))
    return index


def read_manifest(site: str | Path) -> list[dict[str, Any]]:
    """Every validation of the site, newest first (a re-built validation counts once: its last line)."""
    path = Path(site) / MANIFEST
    if not path.exists():
        return []
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                s = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: skip it, keep the rest
                continue
            out[s["page"]] = s
    return sorted(out.values(), key=lambda s: (s["validated_at"], s["key"]), reverse=True)


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0.1em 0.55em; border-radius: 0.8em; font-size: 0.85em;
         font-weight: 600; white-space: nowrap; }
.passed { background: #d9f2dd; color: #17602a; }
.warnings { background: #fff1c2; color: #7a5600; }
.failed { background: #fbd6d6; color: #8c1616; }
.critical { color: #8c1616; font-weight: 600; }
.warning { color: #7a5600; font-weight: 600; }
code { font-size: 0.9em; }
a { color: #1f5fa8; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{html.escape(STATUS_TEXT.get(status, status))}</span>'


def _when(iso: str) -> str:
    return _short_ts(pd.Timestamp(iso)) or ""


def _e(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


def render_index(summaries: list[dict[str, Any]], site: Path | None = None) -> str:
    counts = {s: sum(1 for x in summaries if x["status"] == s) for s in (FAILED, WARNINGS, PASSED)}
    where = f" · site <code>{_e(site)}</code>" if site is not None else ""
    body = [
        "<h1>qtrader data quality</h1>",
        f'<p class="sub">{len(summaries)} validations: {counts[FAILED]} failed, '
        f"{counts[WARNINGS]} passed with warnings, {counts[PASSED]} passed{where}. "
        "Failed means a critical rule failed (rows quarantined or a symbol blocked); warnings are recorded "
        "and the rows kept.</p>",
    ]
    if not summaries:
        body.append("<p>No validation yet.</p>")
        return _page("qtrader data quality", "\n".join(body))
    body.append(
        "<table>\n<tr><th>validated (UTC)</th><th>suite</th><th>stage</th><th>run</th><th>status</th>"
        "<th>critical rules failed</th><th>warnings</th></tr>"
    )
    for s in summaries:
        body.append(
            f"<tr><td>{_e(_when(s['validated_at']))}</td><td>{_e(s['suite'])}</td><td>{_e(s['batch'])}</td>"
            f'<td><a href="{html.escape(s["page"])}">{_e(s["run_id"])}</a></td><td>{_badge(s["status"])}</td>'
            f"<td>{_e(', '.join(s['failed_rules']))}</td><td>{_e(', '.join(s['warning_rules']))}</td></tr>"
        )
    body.append("</table>")
    return _page("qtrader data quality", "\n".join(body))


def render_validation(rec: dict[str, Any]) -> str:
    title = f"{rec['suite']} · {rec['batch']} · {rec['run_id']}"
    body = [
        '<p><a href="../../index.html">&larr; all validations</a></p>',
        f"<h1>{_e(title)} {_badge(rec['status'])}</h1>",
        f'<p class="sub">validated {_e(_when(rec["validated_at"]))} · suite <code>{_e(rec["suite"])}</code>'
        + (f" · interval {_e(rec['interval'])}" if rec.get("interval") else "")
        + (
            " · parameters " + ", ".join(f"{_e(k)} = {_e(v)}" for k, v in rec["params"].items())
            if rec.get("params")
            else ""
        )
        + "</p>",
    ]
    findings, counts = rec["findings"], rec["finding_counts"]
    body.append("<h2>Findings</h2>")
    if not findings:
        body.append("<p>No row broke a rule.</p>")
    else:
        shown = {r: sum(1 for f in findings if f["rule"] == r) for r in counts}
        cut = [f"{r}: {shown[r]} of {n} shown" for r, n in counts.items() if shown[r] < n]
        body.append(
            "<p>"
            + ", ".join(f"{_e(r)} &times; {n}" for r, n in counts.items())
            + (f" ({_e('; '.join(cut))})" if cut else "")
            + "</p>"
        )
        order = {CRITICAL: 0, WARNING: 1}
        rows = sorted(findings, key=lambda f: (order.get(f["severity"], 2), f["rule"], f.get("symbol") or "",
                                               f.get("ts") or ""))  # fmt: skip
        body.append(
            "<table>\n<tr><th>symbol</th><th>timestamp</th><th>rule</th><th>severity</th><th>detail</th></tr>"
        )
        for f in rows:
            body.append(
                f"<tr><td>{_e(f.get('symbol'))}</td><td>{_e(f.get('ts'))}</td><td>{_e(f['rule'])}</td>"
                f'<td class="{_e(f["severity"])}">{_e(f["severity"])}</td><td>{_e(f.get("detail"))}</td></tr>'
            )
        body.append("</table>")
    body.append("<h2>Expectations</h2>")
    body.append(
        "<table>\n<tr><th>rule</th><th>severity</th><th>expectation</th><th>column</th><th>status</th>"
        "<th>unexpected</th><th>observed</th></tr>"
    )
    for e in rec["expectations"]:
        unexpected = "" if e["unexpected_count"] is None else f"{e['unexpected_count']:,}"
        if e["element_count"] is not None and e["unexpected_count"] is not None:
            unexpected += f" of {e['element_count']:,}"
        body.append(
            f"<tr><td>{_e(e['rule'])}</td><td>{_e(e['severity'])}</td><td><code>{_e(e['expectation'])}</code></td>"
            f'<td>{_e(e["column"])}</td><td>{_badge(e["status"])}</td><td class="num">{_e(unexpected)}</td>'
            f"<td>{_e(e['observed'])}</td></tr>"
        )
    body.append("</table>")
    return _page(title, "\n".join(body))
