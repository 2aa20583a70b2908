"""Deployments from prefect.yaml, for `qtrader serve` (one process, no work pool or worker).

prefect.yaml stays the one place where deployments and schedules are declared: `make deploy` hands it
to `prefect deploy --all`, and `qtrader serve` reads the same entries here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # flows/x.py:fn
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    crons: tuple[tuple[str, str], ...] = ()  # (cron, timezone)
    concurrency_limit: int | None = None


def deployment_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    cfg = yaml.safe_load(Path(path).read_text())
    specs = []
    for d in cfg.get("deployments", []):
        crons = tuple((s["cron"], s.get("timezone", "UTC")) for s in d.get("schedules") or [] if "cron" in s)
        specs.append(
            DeploymentSpec(
                name=d["name"],
                entrypoint=d["entrypoint"],
                description=d.get("description", ""),
                parameters=dict(d.get("parameters") or {}),
                crons=crons,
                concurrency_limit=d.get("concurrency_limit"),
            )
        )
    return specs


def runner_deployments(path: Path = PREFECT_YAML, root: Path | None = None) -> list[Any]:
    """RunnerDeployments for prefect.serve, one per prefect.yaml entry, with the same schedules."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

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
            )
        )
    return out
