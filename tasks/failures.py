"""A failed run leaves an artifact explaining the failure, next to the run in the Prefect UI."""

from __future__ import annotations

import json
import logging

from prefect.artifacts import create_markdown_artifact

log = logging.getLogger(__name__)


def failure_markdown(flow_name: str, run_name: str, message: str | None, parameters: dict) -> str:
    params = json.dumps(parameters, default=str, indent=2, sort_keys=True)
    return (
        f"# {flow_name} failed\n\n**Run:** `{run_name}`\n\n**Why:** {message or 'no message'}\n\n"
        f"**Parameters:**\n\n```json\n{params}\n```\n\n"
        "The warehouse is as it was before this run: each write is one transaction. "
        "Fix the cause and re-run; re-runs are idempotent."
    )


def publish_failure(flow, flow_run, state) -> None:
    """Prefect on_failure / on_crashed hook. Never raises: a broken hook must not hide the failure."""
    try:
        create_markdown_artifact(
            key=f"{flow.name}-failure",
            markdown=failure_markdown(
                flow.name, flow_run.name, state.message, dict(flow_run.parameters or {})
            ),
            description=f"Why {flow.name} failed",
        )
    except Exception:  # noqa: BLE001
        log.exception("could not publish the failure artifact of %s", flow_run.name)
