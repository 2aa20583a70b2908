"""The Recorder's decisions frame: the same frame as ``pd.DataFrame`` of the decisions' rows, whether its
text columns were packed along the way (long replays) or not."""

from decimal import Decimal
from types import SimpleNamespace

import pandas as pd
import pytest

from brokers.base import Account
from brokers.trader import BarOutcome, Recorder, TraderState
from models import decision as dm
from models import engine as me
from tests.models.test_assemble_batch import _bar


def _outcomes(n_bars: int):
    out = []
    for seed in range(n_bars):
        signals, ctx, fcfg, scfg, xcfg = _bar(seed)
        cols, brackets = dm.assemble_columns(signals, ctx, fcfg, scfg, xcfg)
        result = me.BarResult(me.DecisionTable(cols), tuple(brackets), (), ctx)
        ts = pd.Timestamp("2026-01-02", tz="UTC") + pd.Timedelta(days=seed)
        out.append(
            BarOutcome(ts, result, 0, [], [], [], Account(Decimal(1), Decimal(1), Decimal(1)), [], [], {}, [])
        )
    return out


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_decisions_frame_is_the_rows_frame(chunk):
    outcomes = _outcomes(25)
    rec = Recorder("local")
    rec.chunk_rows = chunk
    rows = []
    for o in outcomes:
        rec.bar(o, SimpleNamespace(state=TraderState()), "run")
        rows += [{**d.row(), "run_id": "run", "decided_at": o.ts} for d in o.result.decisions]
    pd.testing.assert_frame_equal(rec.frames()["decisions"], pd.DataFrame(rows), check_exact=True)


def test_no_decisions_is_an_empty_frame():
    assert Recorder("local").frames()["decisions"].equals(pd.DataFrame([]))


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_spilled_chunks_and_the_rest_are_every_row_once_in_order(chunk):
    """With ``spill`` the decisions leave in chunks as they are made (a long replay's results file fills
    as it goes); the chunks and the rest are the rows' frame, row for row."""
    outcomes = _outcomes(25)
    spilled: list[pd.DataFrame] = []
    rec = Recorder("local", spill=spilled.append)
    rec.chunk_rows = chunk
    rows = []
    for o in outcomes:
        rec.bar(o, SimpleNamespace(state=TraderState()), "run")
        rows += [{**d.row(), "run_id": "run", "decided_at": o.ts} for d in o.result.decisions]
    rest = rec.frames()["decisions"]
    assert sum(map(len, spilled)) + len(rest) == len(rows)
    if chunk < len(rows):
        assert spilled and all(len(f) >= chunk for f in spilled)
    whole = pd.concat([*spilled, rest], ignore_index=True).astype(object)
    want = pd.DataFrame(rows).astype(object)
    pd.testing.assert_frame_equal(whole.where(whole.notna(), None), want.where(want.notna(), None))
