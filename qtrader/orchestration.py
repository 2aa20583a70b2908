"""Deployments from prefect.yaml: for `qtrader serve` (one process, no work pool or worker), for cadence
profiles applied to a running server, and the run form (parameter schema) of the deployed flows.

prefect.yaml stays the one place where deployments, schedules, triggers and cadences are declared:
`make deploy` hands it to `prefect deploy --all`, `qtrader serve` reads the same entries here, and
``python -m qtrader.orchestration --cadence compressed`` swaps the deployed schedules for a cadence of
``definitions.cadences`` (docs/orchestration.md).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
POOL = "qtrader-process"
PRODUCTION = "production"  # the cadence prefect.yaml's schedules give: no profile applied


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # flows/x.py:fn
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    crons: tuple[tuple[str, str], ...] = ()  # (cron, timezone)
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ()
    triggers: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Cadence:
    """Interval schedules for every deployment: ``every`` seconds, the first ``start_in + offset`` seconds
    after the cadence is applied; ``pool_concurrency`` runs at once on the work pool (None: unlimited)."""

    name: str
    every: dict[str, int]
    offset: dict[str, int]
    start_in: int = 0
    pool_concurrency: int | None = None


def _config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def deployment_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    specs = []
    for d in _config(path).get("deployments", []):
        crons = tuple((s["cron"], s.get("timezone", "UTC")) for s in d.get("schedules") or [] if "cron" in s)
        specs.append(
            DeploymentSpec(
                name=d["name"],
                entrypoint=d["entrypoint"],
                description=d.get("description", ""),
                parameters=dict(d.get("parameters") or {}),
                crons=crons,
                concurrency_limit=d.get("concurrency_limit"),
                tags=tuple(d.get("tags") or ()),
                triggers=tuple(dict(t) for t in d.get("triggers") or ()),
            )
        )
    return specs


def cadences(path: Path = PREFECT_YAML) -> dict[str, Cadence]:
    raw = (_config(path).get("definitions") or {}).get("cadences") or {}
    out = {}
    for name, c in raw.items():
        deps = c.get("deployments") or {}
        out[name] = Cadence(
            name=name,
            every={k: int(v["every"]) for k, v in deps.items()},
            offset={k: int(v.get("offset", 0)) for k, v in deps.items()},
            start_in=int(c.get("start_in", 0)),
            pool_concurrency=c.get("pool_concurrency"),
        )
    return out


def runner_deployments(path: Path = PREFECT_YAML, root: Path | None = None) -> list[Any]:
    """RunnerDeployments for prefect.serve, one per prefect.yaml entry, with the same schedules,
    triggers and tags."""
    from prefect.events import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron
    from pydantic import TypeAdapter

    triggers = TypeAdapter(DeploymentTriggerTypes)
    root = root or Path(path).resolve().parent
    out = []
    for spec in deployment_specs(path):
        file, fn = spec.entrypoint.split(":")
        flow = load_flow_from_entrypoint(f"{root / file}:{fn}")
        out.append(
            flow.to_deployment(
                name=spec.name,
                description=spec.description,
                parameters=spec.parameters,
                schedules=[Cron(c, timezone=tz) for c, tz in spec.crons],
                concurrency_limit=spec.concurrency_limit,
                tags=list(spec.tags),
                triggers=[triggers.validate_python(dict(t)) for t in spec.triggers],
            )
        )
    return out


def apply_cadence(name: str, path: Path = PREFECT_YAML, now: datetime | None = None) -> list[str]:
    """Replace the schedules of every deployed prefect.yaml deployment with cadence ``name`` on the current
    Prefect API, drop the runs the old schedules had queued, and set the pool's concurrency. Returns one
    line per change. ``production`` only lifts the pool limit (``make deploy`` restores the crons)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.schedules import IntervalSchedule

    known = cadences(path)
    if name != PRODUCTION and name not in known:
        raise ValueError(f"unknown cadence {name!r}: prefect.yaml defines {sorted(known) + [PRODUCTION]}")
    lines = []
    with get_client(sync_client=True) as client:
        if name == PRODUCTION:
            client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=None))
            return [f"work pool {POOL}: no concurrency limit; schedules as deployed from prefect.yaml"]
        cadence = known[name]
        client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=cadence.pool_concurrency))
        lines.append(f"work pool {POOL}: concurrency {cadence.pool_concurrency or 'unlimited'}")
        start = (now or datetime.now(UTC)) + timedelta(seconds=cadence.start_in)
        names = [s.name for s in deployment_specs(path)]
        deployed = {
            d.name: d
            for d in client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
            )
        }
        missing = sorted(set(names) - set(deployed))
        if missing:
            raise ValueError(f"deployments {missing} are not on {client.api_url}: run `make deploy` first")
        for dep_name in names:
            d = deployed[dep_name]
            for s in client.read_deployment_schedules(d.id):
                client.delete_deployment_schedule(d.id, s.id)
            queued = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
            )
            for run in queued:
                if run.auto_scheduled:
                    client.delete_flow_run(run.id)
            if dep_name not in cadence.every:
                lines.append(f"{dep_name}: no schedule (triggers only)")
                continue
            every, first = cadence.every[dep_name], start + timedelta(seconds=cadence.offset.get(dep_name, 0))
            client.create_deployment_schedules(
                d.id, [(IntervalSchedule(interval=timedelta(seconds=every), anchor_date=first), True)]
            )
            lines.append(f"{dep_name}: every {every} s from {first:%H:%M:%S} UTC")
    return lines


# ------------------------------------------------------------------------------------------- the run form

# Flow parameters that exist for tests, backfills and the CLI (a pinned clock, injected faults, a broker
# object): callable as keyword arguments, but not on a deployment's run form.
TEST_ONLY = ("now", "faults", "broker")
# The bar intervals offered on the run form (the code accepts any `<n>m`, `<n>h` or `1d`).
INTERVAL_CHOICES = ["1d", "1h", "30m", "15m", "5m", "1m"]


def run_form(
    flow: Any, *, choices: Mapping[str, Iterable[str]] | None = None, hidden: Iterable[str] = TEST_ONLY
) -> Any:
    """Give ``flow`` the parameter schema its deployments show: ``hidden`` parameters left out, and
    ``choices`` as enumerations (``Literal``, so the UI offers a list). Descriptions come from the flow's
    docstring (``Args:``). The function itself keeps its signature, so tests and the CLI still pass the
    hidden parameters and any value the code accepts; only the deployment form is narrowed.
    """
    sig = inspect.signature(flow.fn)
    hidden = set(hidden)
    params = []
    for p in sig.parameters.values():
        if p.name in hidden:
            if p.default is inspect.Parameter.empty:
                raise ValueError(f"{flow.name}: parameter {p.name!r} has no default and cannot be hidden")
            continue
        if choices and p.name in choices:
            options = Literal[tuple(choices[p.name])]  # type: ignore[valid-type]
            annotation: Any = Optional[options] if p.default is None else options  # noqa: UP045
            if _is_list(p.annotation):
                annotation = Optional[list[options]] if p.default is None else list[options]  # noqa: UP045
            p = p.replace(annotation=annotation)
        params.append(p)
    flow.__signature__ = sig.replace(parameters=params)
    return flow


def _is_list(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "list[" in text


def run_name(
    flow_name: str, *keys: str, defaults: Callable[[], dict[str, Any]] | None = None
) -> Callable[[], str]:
    """A run-name function for ``@flow(flow_run_name=...)``: the flow and the values of ``keys`` that were
    given (``defaults()`` fills the others), e.g. ``ingest 5m synthetic``."""

    def name() -> str:
        from prefect.runtime import flow_run

        params = dict(flow_run.parameters or {})
        missing = [k for k in keys if params.get(k) in (None, [], "")]
        if missing and defaults is not None:
            try:
                fill = defaults()
            except Exception:  # noqa: BLE001 - a bad setting is reported by the flow itself, not here
                fill = {}
            params.update({k: fill[k] for k in missing if k in fill})
        parts = [flow_name]
        for k in keys:
            v = params.get(k)
            if v in (None, [], ""):
                continue
            parts.append(",".join(map(str, v)) if isinstance(v, list | tuple) else str(v))
        return " ".join(parts)

    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Apply a cadence of prefect.yaml to the deployed deployments.")
    ap.add_argument("--cadence", required=True, help=f"a name under definitions.cadences, or {PRODUCTION}")
    args = ap.parse_args(argv)
    try:
        for line in apply_cadence(args.cadence):
            print(line)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
