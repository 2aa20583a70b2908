"""The trade filter (seed 000 section 2.1): may this candidate open a position now?

Pure: the caller gathers the context (health, calendar, broker state, today's P&L) and passes it in.
Every rule is evaluated; ``reason_code`` is the first failure in this order (the cheapest explanation for
an operator first), ``failed`` lists all of them.

| code | rule (defaults from ``FilterSettings``) |
|---|---|
| market_closed | the exchange session is not open |
| daily_loss_limit | today's loss >= 2% of start-of-day equity: the kill switch, no new entries |
| weak_consensus | consensus not UNANIMOUS or STRONG |
| low_confidence | calibrated confidence < 0.55 (or missing) |
| ai_health_degraded | overall health < 80 (or unknown) |
| module_health_degraded | health of the signal's source module < 70 (or unknown) |
| position_open | a position in the symbol is already open |
| order_pending | an order in the symbol is still working |
| max_positions | open positions >= 10 |
| cooldown | the symbol's last exit was < 30 minutes ago |
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from models.brackets import Side
from qtrader.settings import FilterSettings


class Reason(StrEnum):
    accepted = "accepted"
    market_closed = "market_closed"
    daily_loss_limit = "daily_loss_limit"
    weak_consensus = "weak_consensus"
    low_confidence = "low_confidence"
    ai_health_degraded = "ai_health_degraded"
    module_health_degraded = "module_health_degraded"
    position_open = "position_open"
    order_pending = "order_pending"
    max_positions = "max_positions"
    cooldown = "cooldown"


@dataclass(frozen=True)
class Candidate:
    symbol: str
    side: Side
    consensus: str  # models/signals/ensemble.py ConsensusType value
    confidence: float | None  # calibrated confidence of the predicted side
    source_module: str
    ts: datetime  # the decision bar


@dataclass(frozen=True)
class FilterContext:
    market_open: bool
    overall_health: float | None
    module_health: Mapping[str, float | None]
    open_position_symbols: Collection[str] = ()
    pending_order_symbols: Collection[str] = ()
    open_positions: int = 0
    start_of_day_equity: float | None = None
    day_pnl: float = 0.0  # realised + unrealised since the session opened
    last_exit_ts: Mapping[str, datetime] = field(default_factory=dict)
    now: datetime | None = None  # defaults to the candidate's ts


@dataclass(frozen=True)
class FilterResult:
    accepted: bool
    reason_code: Reason
    details: dict[str, Any]
    failed: tuple[Reason, ...] = ()


def _num(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def filter_candidate(
    candidate: Candidate, context: FilterContext, cfg: FilterSettings | None = None
) -> FilterResult:
    cfg = cfg or FilterSettings()
    sym = candidate.symbol
    failed: list[Reason] = []
    details: dict[str, Any] = {"symbol": sym}

    if not context.market_open:
        failed.append(Reason.market_closed)

    sod = _num(context.start_of_day_equity)
    if sod is not None and sod > 0:
        loss_pct = max(0.0, -context.day_pnl) / sod
        details["day_loss_pct"] = loss_pct
        if loss_pct >= cfg.daily_loss_limit_pct:
            failed.append(Reason.daily_loss_limit)

    details["consensus"] = candidate.consensus
    if str(candidate.consensus) not in cfg.allowed_consensus:
        failed.append(Reason.weak_consensus)

    conf = _num(candidate.confidence)
    details["confidence"] = conf
    if conf is None or conf < cfg.min_confidence:
        failed.append(Reason.low_confidence)

    overall = _num(context.overall_health)
    details["overall_health"] = overall
    mod = _num(context.module_health.get(candidate.source_module))
    details["module_health"] = {candidate.source_module: mod}
    if cfg.health_gating:
        if overall is None or overall < cfg.min_overall_health:
            failed.append(Reason.ai_health_degraded)
        if mod is None or mod < cfg.min_module_health:
            failed.append(Reason.module_health_degraded)

    if sym in context.open_position_symbols:
        failed.append(Reason.position_open)
    if sym in context.pending_order_symbols:
        failed.append(Reason.order_pending)

    details["open_positions"] = context.open_positions
    if context.open_positions >= cfg.max_open_positions:
        failed.append(Reason.max_positions)

    last_exit = context.last_exit_ts.get(sym)
    if last_exit is not None:
        now = context.now or candidate.ts
        since = now - last_exit
        details["since_last_exit_min"] = since / timedelta(minutes=1)
        if since < timedelta(minutes=cfg.cooldown_minutes):
            failed.append(Reason.cooldown)

    if failed:
        return FilterResult(False, failed[0], details, tuple(failed))
    return FilterResult(True, Reason.accepted, details, ())
