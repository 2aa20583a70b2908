"""The external systems a flow works with, built once from the settings: the warehouse and the broker.

Flows and tasks ask here instead of threading a path, a lock policy and a writer limit by hand. The
warehouse's writer guard is Prefect's ``warehouse-writer`` global concurrency limit (tasks/writer.py), so
every write of every flow, the decision bar included, is serialised across worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

from brokers.base import Broker
from qtrader.settings import Settings
from tasks.writer import warehouse_writer
from warehouse.db import Warehouse


def warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse, its writes guarded by the ``warehouse-writer`` limit."""
    timeout = settings.lock_timeout_s

    def guard(wh: Warehouse) -> AbstractContextManager[None]:
        return warehouse_writer(timeout, wh.path)

    return Warehouse.from_settings(settings, writer=guard)


def data_docs_site(settings: Settings) -> Path:
    """The warehouse's own Data Docs site under ``settings.dq_docs_dir`` (one per warehouse file, so a
    scratch warehouse's validations never replace the project's)."""
    from expectations.docs import site_dir

    return site_dir(settings.dq_docs_dir, settings.warehouse)


def make_broker(
    settings: Settings, wh: Warehouse, *, clock: Callable[[], datetime] | None = None, autocommit: bool = True
) -> Broker:
    """The configured broker (``settings.broker``: local | alpaca). The local paper account lives in ``wh``
    (``autocommit`` False: the caller saves it once per bar, with the bar's records)."""
    if str(settings.broker) == "alpaca":
        from brokers.alpaca import AlpacaPaperBroker

        return AlpacaPaperBroker.from_settings(settings)
    from warehouse.paper import paper_broker

    p = settings.paper
    return paper_broker(
        wh, p.starting_cash, p.slippage_bps, p.commission_per_share, p.commission_bps, interval=p.interval,
        tick=settings.orders.tick, clock=clock, autocommit=autocommit,
    )  # fmt: skip
