"""filter_batch against filter_candidate: the same verdicts, failed rules, details JSON and health-driver
line for randomized candidates and contexts."""

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models.trade_filter import Candidate, FilterContext, filter_batch, filter_candidate, health_driver_text
from qtrader.settings import FilterSettings

NOW = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
SYMBOLS = [f"S{i}" for i in range(12)] + ['Ä"q']  # a symbol JSON escapes
KINDS = ["UNANIMOUS", "STRONG", "WEAK", "SPLIT", "NONE"]


def _maybe(rng: random.Random, value, p: float = 0.2):
    return None if rng.random() < p else value


def _case(seed: int):
    rng = random.Random(seed)
    n = rng.randint(0, 25)
    symbols = [rng.choice(SYMBOLS) for _ in range(n)]
    consensus = [rng.choice(KINDS) for _ in range(n)]
    confidence = [rng.choice([None, float("nan"), float("inf"), 0.0, 0.55, rng.uniform(0.4, 0.9)])
                  for _ in range(n)]  # fmt: skip
    source = rng.choice(["ensemble", "direction"])
    ctx = FilterContext(
        market_open=rng.random() < 0.8,
        overall_health=_maybe(rng, rng.uniform(40, 100)),
        module_health={source: _maybe(rng, rng.uniform(40, 100))} if rng.random() < 0.9 else {},
        open_position_symbols=set(rng.sample(SYMBOLS, rng.randint(0, 4))),
        pending_order_symbols=set(rng.sample(SYMBOLS, rng.randint(0, 4))),
        open_positions=rng.randint(0, 12),
        start_of_day_equity=_maybe(rng, rng.choice([0.0, 100_000.0])),
        day_pnl=rng.uniform(-3_000, 1_000),
        last_exit_ts={s: NOW - timedelta(minutes=rng.uniform(0, 120)) for s in rng.sample(SYMBOLS, 4)},
        now=_maybe(rng, NOW + timedelta(minutes=5), 0.5),
        health_baselines=_maybe(rng, {"overall": rng.uniform(50, 90), source: rng.uniform(50, 90)}, 0.4) or {},
        health_floor=_maybe(rng, 55.0, 0.5),
        health_drivers={"overall": [{"component": "freshness", "lost": 7.5, "module": "ensemble"}],
                        source: [{"component": "accuracy", "lost": 12.0}]},
    )  # fmt: skip
    cfg = FilterSettings(
        max_open_positions=rng.randint(1, 12),
        health_gating=rng.random() < 0.8,
        learned_gates=rng.random() < 0.7,
        allowed_consensus=rng.choice([["UNANIMOUS", "STRONG"], ["UNANIMOUS", "STRONG", "WEAK"]]),
    )
    open_positions = [rng.randint(0, 12) for _ in range(n)]
    pending = [rng.random() < 0.2 for _ in range(n)]
    return symbols, consensus, confidence, source, ctx, cfg, open_positions, pending


@pytest.mark.parametrize("seed", range(300))
def test_filter_batch_gives_filter_candidates_verdicts(seed):
    symbols, consensus, confidence, source, ctx, cfg, open_positions, pending = _case(seed)
    conf = np.array([np.nan if c is None else c for c in confidence], dtype=float)
    for explicit in (False, True):
        kw = {"open_positions": np.array(open_positions), "pending": np.array(pending)} if explicit else {}
        batch = filter_batch(symbols, consensus, conf, source, NOW, ctx, cfg, **kw)
        if explicit:  # the same verdicts when the slots come after the first pass
            again = filter_batch(symbols, consensus, conf, source, NOW, ctx, cfg).with_slots(
                np.array(open_positions, dtype=np.int64), np.array(pending, dtype=bool), cfg
            )
            assert np.array_equal(again.mask, batch.mask) and again.details_json() == batch.details_json()
        codes, failed, details = batch.reason_codes(), batch.failed(), batch.details_json()
        for i, sym in enumerate(symbols):
            c = ctx
            if explicit:
                working = set(ctx.pending_order_symbols) - {sym} | ({sym} if pending[i] else set())
                c = replace(ctx, open_positions=open_positions[i], pending_order_symbols=working)
            want = filter_candidate(Candidate(sym, "buy", consensus[i], confidence[i], source, NOW), c, cfg)
            assert bool(batch.accepted[i]) == want.accepted
            assert codes[i] == want.reason_code.value
            assert failed[i] == ", ".join(f.value for f in want.failed)
            assert details[i] == json.dumps(want.details, sort_keys=True, default=str)
            assert batch.health_drivers == health_driver_text(want.details)
