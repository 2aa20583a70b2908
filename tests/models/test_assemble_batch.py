"""The column-batched ``assemble`` against the per-candidate algorithm it replaced (kept here as the
oracle): same rows, same brackets, for randomized bars (candidates, account, health, settings)."""

import dataclasses
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import decision as dm
from models import engine as me
from models.brackets import Bracket, InvalidBracket, Side, client_order_id, split_quantity
from models.exits import adaptive_profile, plan_levels
from models.sizing import SizeCaps, performance_multiplier, position_size
from models.trade_filter import Candidate, FilterContext, Reason, filter_candidate, health_driver_text
from qtrader.settings import ExitSettings, FilterSettings, SizingSettings

TS = datetime(2026, 11, 20, 15, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(30)]


def _base_row(
    sig: dm.Signal, ctx: dm.DecisionContext, common: dict[str, Any] | None = None, ts_iso: str | None = None
) -> dict[str, Any]:
    """A candidate's row before the verdict: ``common`` is ``dm._context_row(ctx)`` and ``ts_iso`` the bar's
    time as text, both made once per bar."""
    side = dm._BUY if sig.direction > 0 else dm._SELL if sig.direction < 0 else None
    row = dict(common) if common is not None else dm._context_row(ctx)
    row.update(
        decision_id=f"{ctx.strategy}|{ctx.interval}|{sig.symbol}|{ts_iso or dm._iso(ctx.ts)}",
        symbol=sig.symbol,
        side=side,
        direction=int(sig.direction),
        consensus=str(sig.consensus),
        voters=int(sig.voters),
        agree=int(sig.agree),
        contributors=sig.contributors or None,
        module_p_up=sig.module_p_up_json or dm.p_up_json(sig.module_p_up),
        confidence_raw=dm._num(sig.confidence_raw),
        confidence_seed=dm._num(sig.confidence_seed),
        confidence_calibrated=dm._num(sig.confidence_calibrated),
        atr=dm._num(sig.atr),
        vol_state=sig.vol_state,
        entry_ref=dm._num(sig.close),
        client_order_ids=[],
    )
    return row


def _reject(row: dict[str, Any], code: str, failed: Iterable[str] = (), **details: Any) -> dict[str, Any]:
    row["reason_code"] = code
    row["failed"] = ", ".join(failed) or code
    row["details"] = dm._JSON.encode(details)
    return row


def reference(signals, ctx, filter_cfg, sizing_cfg, exit_cfg):
    """The per-candidate assemble (one filter_candidate call and one dict row per candidate)."""
    ordered = sorted(signals, key=lambda s: (-(ctx.confidence(s) or -1.0), s.symbol))
    multiplier, mult_reason = performance_multiplier(ctx.accuracy, ctx.performance_score, sizing_cfg)
    open_positions, buying_power, gross = (
        ctx.open_positions,
        float(ctx.buying_power),
        float(ctx.gross_exposure),
    )
    pending = set(ctx.pending_order_symbols)
    rows, brackets = [], []
    common, ts_iso = dm._context_row(ctx), dm._iso(ctx.ts)
    for sig in ordered:
        row = _base_row(sig, ctx, common, ts_iso)
        rows.append(row)
        side = Side.buy if sig.direction > 0 else Side.sell
        if sig.direction < 0 and not ctx.allow_short:
            _reject(row, dm.SHORT_DISABLED)
            continue
        candidate = Candidate(sig.symbol, side, sig.consensus, ctx.confidence(sig), ctx.source_module, ctx.ts)
        fctx = FilterContext(
            market_open=ctx.market_open, overall_health=ctx.overall_health, module_health=ctx.module_health,
            open_position_symbols=ctx.open_position_symbols, pending_order_symbols=pending,
            open_positions=open_positions, start_of_day_equity=ctx.start_of_day_equity, day_pnl=ctx.day_pnl,
            last_exit_ts=ctx.last_exit_ts, now=ctx.ts, health_baselines=ctx.health_baselines,
            health_floor=ctx.health_floor, health_drivers=ctx.health_drivers,
        )  # fmt: skip
        verdict = filter_candidate(candidate, fctx, filter_cfg)
        row["health_drivers"] = health_driver_text(verdict.details)
        if sig.direction == 0 and verdict.accepted:
            _reject(row, Reason.weak_consensus.value, details=verdict.details)
            continue
        if not verdict.accepted:
            _reject(row, verdict.reason_code.value, [f.value for f in verdict.failed], **verdict.details)
            continue
        atr = dm._num(sig.atr)
        if atr is None or atr <= 0:
            _reject(row, dm.NO_ATR, atr=sig.atr)
            continue
        try:
            profile = adaptive_profile(atr, ctx.hit_rates, ctx.learned_stop_atr, sig.vol_state, exit_cfg)
            levels = plan_levels(sig.close, side, profile)
        except ValueError as exc:
            _reject(row, dm.EXIT_PLAN_INVALID, error=str(exc))
            continue
        row.update(exit_profile=profile.reason, stop_price=levels.stop, tp1_price=levels.tp1,
                   tp2_price=levels.tp2, tp3_price=levels.tp3)  # fmt: skip
        caps = SizeCaps.from_account(ctx.equity, gross, buying_power, sizing_cfg)
        size = position_size(ctx.equity, sizing_cfg.risk_per_trade, profile.stop, multiplier, sig.close, caps)
        row.update(size_multiplier=size.multiplier, size_reason=f"{mult_reason}; {size.reason}",
                   capped_by=", ".join(size.capped_by) or None)  # fmt: skip
        if size.rejected:
            _reject(row, dm.SIZE_REJECTED, reason=size.reason)
            continue
        try:
            planned = [
                dm.PlannedBracket(row["decision_id"], leg.leg, Bracket(
                    symbol=sig.symbol, side=side, qty=leg.qty, entry_ref=float(sig.close),
                    take_profit=float(levels.take_profits[leg.leg - 1]), stop=float(levels.stop),
                    client_order_id=client_order_id(ctx.strategy, sig.symbol, ctx.ts, leg.leg),
                    time_in_force=ctx.time_in_force, tick=ctx.tick))
                for leg in split_quantity(size.shares, ctx.tp_weights)
            ]  # fmt: skip
        except (InvalidBracket, ValueError) as exc:
            _reject(row, dm.INVALID_BRACKET, error=str(exc))
            continue
        row.update(qty=size.shares, accepted=True, reason_code=dm.ACCEPTED, details=dm._JSON.encode(verdict.details),
                   client_order_ids=[p.bracket.client_order_id for p in planned])  # fmt: skip
        brackets.extend(planned)
        open_positions += 1
        pending.add(sig.symbol)
        notional = size.shares * float(sig.close)
        buying_power -= notional
        gross += notional
    return rows, brackets


def _bar(seed: int):
    rng = random.Random(seed)
    n = rng.randint(0, 40)

    def conf():
        return rng.choice([None, 0.0, 0.55, rng.uniform(0.4, 0.95), rng.uniform(0.4, 0.95)])

    signals = []
    for _ in range(n):
        d = rng.choice([-1, 0, 1, 1])
        c = conf()
        signals.append(dm.Signal(
            rng.choice(SYMBOLS), d, rng.choice(["UNANIMOUS", "STRONG", "WEAK", "NONE"]), 6, rng.randint(3, 6),
            rng.choice(["a,b", ""]), c, c, conf() if rng.random() < 0.3 else c, round(rng.uniform(5, 300), 2),
            rng.choice([None, 0.0, rng.uniform(0.05, 8), rng.uniform(0.05, 8)]),
            rng.choice(["NORMAL", "HIGH_VOLATILITY", "LOW_VOLATILITY", None]), {"m": {"p_up": 0.6}},
        ))  # fmt: skip
    equity = rng.choice([20_000.0, 100_000.0])
    ctx = dm.DecisionContext(
        ts=TS, interval="1d", strategy="qtrader", broker="local", source_module="ensemble",
        market_open=rng.random() < 0.9, overall_health=rng.choice([None, 75.0, 90.0, 95.0]),
        module_health={"ensemble": rng.choice([60.0, 90.0])}, health_ts=rng.choice([TS, None]), model_version=3,
        calibration="isotonic", accuracy=rng.choice([None, 0.55, 0.65]), performance_score=60.0,
        hit_rates={"tp1": rng.choice([None, 0.75, 0.85]), "tp2": 0.45, "tp3": 0.2},
        learned_stop_atr=rng.choice([None, 1.2, 1.9]), equity=equity, buying_power=equity * rng.uniform(0, 1),
        gross_exposure=equity * rng.uniform(0, 0.5), open_position_symbols=set(rng.sample(SYMBOLS, 3)),
        pending_order_symbols=set(rng.sample(SYMBOLS, 2)), open_positions=rng.randint(0, 8),
        start_of_day_equity=equity, day_pnl=rng.uniform(-500, 100),
        last_exit_ts={s: TS - timedelta(days=rng.uniform(0, 3)) for s in rng.sample(SYMBOLS, 4)},
        allow_short=rng.random() < 0.7, use_calibration=rng.random() < 0.8,
        health_drivers={"overall": [{"component": "freshness", "lost": 4.0}]},
    )  # fmt: skip
    fcfg = FilterSettings(
        max_open_positions=rng.randint(2, 12),
        cooldown_minutes=rng.choice([30, 60 * 24]),
        allowed_consensus=rng.choice([["UNANIMOUS", "STRONG"], ["UNANIMOUS", "STRONG", "WEAK"]]),
    )
    xcfg = ExitSettings(adaptive=rng.random() < 0.8)
    return signals, ctx, fcfg, SizingSettings(), xcfg


@pytest.mark.parametrize("seed", range(200))
def test_assemble_matches_the_per_candidate_reference(seed):
    signals, ctx, fcfg, scfg, xcfg = _bar(seed)
    want_rows, want_brackets = reference(signals, ctx, fcfg, scfg, xcfg)
    for given in (signals, dm.SignalBatch.of(signals)):
        got = dm.assemble(given, ctx, fcfg, scfg, xcfg)
        assert got.brackets == want_brackets
        assert len(got.rows) == len(want_rows)
        for g, w in zip(got.rows, want_rows, strict=True):
            assert g == {k: w[k] for k in dm.DECISION_FIELDS}


def test_decision_fields_are_the_decision_columns():
    assert dm.DECISION_FIELDS == tuple(f.name for f in dataclasses.fields(me.Decision))


def test_decision_table_changes_and_frame():
    signals, ctx, fcfg, scfg, xcfg = _bar(7)
    cols, brackets = dm.assemble_columns(signals, ctx, fcfg, scfg, xcfg)
    result = me.BarResult(me.DecisionTable(cols), tuple(brackets), (), ctx)
    rows = [d.row() for d in result.decisions]
    pd.testing.assert_frame_equal(result.frame(), pd.DataFrame(rows))
    assert me.BarResult(tuple(result.decisions), (), (), ctx).decisions == result.decisions
    ids = [d.decision_id for d in result.decisions]
    blocked = me.block(result, dm.ORDER_GATE_FAILED, "x")
    assert not any(d.accepted for d in blocked.decisions) and blocked.brackets == ()
    assert [d.reason_code for d in result.decisions if d.accepted] == ["accepted"] * len(result.accepted)
    done = me.mark_submitted(result, set(ids[:2]))
    assert [d.submitted for d in done.decisions] == [i < 2 for i in range(len(ids))]
    assert not any(d.submitted for d in result.decisions)  # the original is unchanged
    assert np.array_equal(pd.DataFrame(rows)["decision_id"], ids)
