"""Every write of the decision flow, the broker's books included, happens inside the writer limit.

The ``warehouse-writer`` global concurrency limit is what serialises writers across worker processes
(tasks/writer.py). Here it is replaced by a recorder, and every read-write open of the warehouse file is
checked: it must happen while the limit is held. Reads open read-only and need no limit.
"""

from __future__ import annotations

from contextlib import contextmanager

import prefect.concurrency.sync
import pytest

import warehouse.db
from flows.decide import decide
from tests.flows.test_decide_flow import NOW, OPEN_POLICY, _warehouse


@pytest.fixture(autouse=True)
def _harness(prefect_harness):
    yield


def test_every_decide_write_holds_the_writer_limit(retrained, tmp_path, monkeypatch):
    db = _warehouse(retrained, tmp_path)
    held = {"depth": 0, "acquired": 0}
    opens: list[tuple[bool, int]] = []

    @contextmanager
    def recording_limit(*args, **kwargs):
        held["depth"] += 1
        held["acquired"] += 1
        try:
            yield
        finally:
            held["depth"] -= 1

    real_open = warehouse.db.open_with_retry

    def recording_open(path, read_only, *args, **kwargs):
        if path.resolve() == db.resolve():
            opens.append((read_only, held["depth"]))
        return real_open(path, read_only, *args, **kwargs)

    monkeypatch.setattr(prefect.concurrency.sync, "concurrency", recording_limit)
    monkeypatch.setattr(warehouse.db, "open_with_retry", recording_open)
    result = decide(interval="1d", bars=3, warehouse=str(db), now=NOW, overrides=OPEN_POLICY)
    assert len(result["bars"]) == 3 and sum(b["submitted"] for b in result["bars"]) > 0

    writes = [depth for read_only, depth in opens if not read_only]
    assert writes, "the flow wrote nothing"
    unguarded = sum(1 for depth in writes if depth == 0)
    assert unguarded == 0, f"{unguarded} of {len(writes)} read-write opens happened outside the writer limit"
    assert held["acquired"] > 0
