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
