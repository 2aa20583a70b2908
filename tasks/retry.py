"""Retry only what can fail transiently (network blips, a broker that is briefly down)."""

from __future__ import annotations

from collections.abc import Callable

# Exponential backoff; Prefect adds the jitter (retry_jitter_factor).
NETWORK_RETRIES = 3
NETWORK_RETRY_DELAYS_S = [2, 5, 15]
NETWORK_RETRY_JITTER = 0.2


def retry_on(*transient: type[BaseException]) -> Callable:
    """A Prefect retry_condition_fn: retry when the task raised one of ``transient``, else fail fast."""

    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except transient:
            return True
        except Exception:  # noqa: BLE001 - bad input and bugs fail fast
            return False
        return False

    condition.__name__ = "retry_on_" + "_".join(t.__name__ for t in transient)
    return condition
