"""Warehouses with a synthetic market's bars and features, and one retrain shared by the model-flow tests."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.flows._market import build_warehouse, synthetic_bars

NOW = "2026-10-31 12:00"  # the registry clock of the retrains (the market ends 2026-10-30)


@dataclass
class Retrained:
    warehouse: Path
    data_dir: Path
    result: dict


@contextmanager
def data_dir(path: Path):
    """Artifacts go under QTRADER_DATA_DIR (settings.data_dir) while the block runs."""
    old = os.environ.get("QTRADER_DATA_DIR")
    os.environ["QTRADER_DATA_DIR"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("QTRADER_DATA_DIR", None)
        else:
            os.environ["QTRADER_DATA_DIR"] = old


@pytest.fixture(scope="session")
def market_warehouse(tmp_path_factory) -> Path:
    """20 symbols x 3.5 years of daily bars with the planted component, and their features (~2 s)."""
    path = tmp_path_factory.mktemp("market") / "warehouse.duckdb"
    return build_warehouse(path, synthetic_bars(20, 3.5))


def fresh_copy(base: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of ``base`` in ``folder`` and an empty data dir beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "warehouse.duckdb"
    shutil.copy(base, db)
    return db, folder / "data"


@pytest.fixture(scope="session")
def retrained(market_warehouse, tmp_path_factory, prefect_harness) -> Retrained:
    """Every module retrained once (all become champion v1) on a copy of the market warehouse."""
    from flows.retrain import retrain

    db, data = fresh_copy(market_warehouse, tmp_path_factory.mktemp("retrained"))
    with data_dir(data):
        result = retrain(interval="1d", warehouse=str(db), now=NOW)
    return Retrained(db, data, result)
