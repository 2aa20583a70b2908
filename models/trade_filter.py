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
| ai_health_degraded | overall health < its gate (or unknown) |
| module_health_degraded | health of the signal's source module < its gate (or unknown) |

The health gates (models/health.gate_value): the module's learned baseline (a robust lower bound of its own
health history, ``FilterContext.health_baselines``), never above the seed's 80 overall / 70 per module
(``min_overall_health`` / ``min_module_health``, also the fallback before a baseline exists) and never below
the kill-switch floor (``health_floor``). A rejection by either rule records the gate and the components
that drove the score down (``details["health_gate"]``).
| position_open | a position in the symbol is already open |
| order_pending | an order in the symbol is still working |
| max_positions | open positions >= 10 |
| cooldown | the symbol's last exit was < 30 minutes ago |
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

import numpy as np
import pandas as pd

from models.brackets import Side
from models.health import OVERALL, gate_value
from qtrader.settings import FilterSettings

HEALTH_RULES = ("ai_health_degraded", "module_health_degraded")


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
    # Learned baselines of the health scores ({module or "overall": value}; missing: the seed gate), the
    # kill-switch floor (HealthSettings.kill_floor; None: no floor), and what drove each score down
    # ({module or "overall": [{component, lost, ...}]}, recorded with a rejection).
    health_baselines: Mapping[str, float | None] = field(default_factory=dict)
    health_floor: float | None = None
    health_drivers: Mapping[str, Any] = field(default_factory=dict)


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
    source = candidate.source_module
    mod = _num(context.module_health.get(source))
    details["module_health"] = {source: mod}
    if cfg.health_gating:
        floor = context.health_floor if context.health_floor is not None else -math.inf
        g_overall = gate_value(cfg.min_overall_health, _num(context.health_baselines.get(OVERALL)), floor,
                               learned=cfg.learned_gates)  # fmt: skip
        g_module = gate_value(cfg.min_module_health, _num(context.health_baselines.get(source)), floor,
                              learned=cfg.learned_gates)  # fmt: skip
        details["gates"] = {OVERALL: g_overall.value, source: g_module.value}
        blocked = {}
        if g_overall.blocks(overall):
            failed.append(Reason.ai_health_degraded)
            blocked[Reason.ai_health_degraded.value] = {
                "score": overall, "gate": g_overall.value, "gate_source": g_overall.source,
                "drivers": list(context.health_drivers.get(OVERALL) or []),
            }  # fmt: skip
        if g_module.blocks(mod):
            failed.append(Reason.module_health_degraded)
            blocked[Reason.module_health_degraded.value] = {
                "module": source, "score": mod, "gate": g_module.value, "gate_source": g_module.source,
                "drivers": list(context.health_drivers.get(source) or []),
            }  # fmt: skip
        if blocked:
            details["health_gate"] = blocked

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


# The rules in evaluation order: bit k of a ``FilterBatch`` mask is ``RULES[k]``.
RULES = tuple(r for r in Reason if r is not Reason.accepted)
_BIT = {r: 1 << k for k, r in enumerate(RULES)}
# Rules that are the same for every candidate of a bar (the account, the calendar, the health scores).
_BAR_RULES = (Reason.market_closed, Reason.daily_loss_limit, Reason.ai_health_degraded,
              Reason.module_health_degraded)  # fmt: skip
_JSON = json.JSONEncoder(sort_keys=True, default=str)
_PROBE = "\x00probe"  # a symbol no candidate has: the probe reads only the bar-wide rules and details


@dataclass(frozen=True)
class FilterBatch:
    """``filter_candidate``'s verdicts for many candidates of one bar, as columns: the failed rules as a
    bit mask per candidate (``RULES``), and what the details JSON and the health-driver line are made of."""

    symbol: Sequence[str]
    consensus: Sequence[str]
    confidence: list[float | None]
    open_positions: list[int]
    since_last_exit_min: list[float | None]
    mask: np.ndarray  # int64, 0: accepted
    bar_details: dict[str, Any]  # the keys every candidate shares (day_loss_pct, gates, health ...)
    health_drivers: str | None

    @property
    def accepted(self) -> np.ndarray:
        return self.mask == 0

    def with_slots(self, open_positions: np.ndarray, pending: np.ndarray, cfg: FilterSettings) -> FilterBatch:
        """The verdicts with other open-position counts and working orders (``filter_batch`` with them)."""
        slots = _BIT[Reason.order_pending] | _BIT[Reason.max_positions]
        op = np.asarray(open_positions)
        mask = (self.mask & ~slots) | np.asarray(pending, dtype=bool) * _BIT[Reason.order_pending]
        mask |= (op >= cfg.max_open_positions) * _BIT[Reason.max_positions]
        return replace(self, mask=mask, open_positions=op.tolist())

    def reason_codes(self) -> list[str]:
        return [_reason_of(m) for m in self.mask.tolist()]

    def failed(self) -> list[str]:
        """``", ".join`` of each candidate's failed rules ("" when accepted)."""
        return [_failed_of(m) for m in self.mask.tolist()]

    def details_json(self) -> list[str]:
        """Each candidate's ``details`` as ``json.dumps(details, sort_keys=True, default=str)`` writes them:
        the shared keys are encoded once and each candidate's own values spliced in, in sorted key order
        (confidence, consensus, day_loss_pct, gates, health_gate, module_health, open_positions,
        overall_health, since_last_exit_min, symbol)."""
        b = self.bar_details
        mid = "".join(f', "{k}": {_JSON.encode(b[k])}' for k in ("day_loss_pct", "gates", "health_gate",
                                                                 "module_health") if k in b)  # fmt: skip
        over = f', "overall_health": {_JSON.encode(b["overall_health"])}'
        return [
            f'{{"confidence": {"null" if c is None else float.__repr__(c)}, "consensus": {_json_str(cons)}{mid}'
            f', "open_positions": {op}{over}'
            f'{"" if s is None else ", " + chr(34) + "since_last_exit_min" + chr(34) + ": " + float.__repr__(s)}'
            f', "symbol": {_json_str(sym)}}}'
            for c, cons, op, s, sym in zip(self.confidence, self.consensus, self.open_positions,
                                           self.since_last_exit_min, self.symbol, strict=True)
        ]  # fmt: skip


_REASON_OF: dict[int, str] = {}
_FAILED_OF: dict[int, str] = {}


def _reason_of(mask: int) -> str:
    out = _REASON_OF.get(mask)
    if out is None:
        out = _REASON_OF[mask] = next((r.value for r in RULES if mask & _BIT[r]), Reason.accepted.value)
    return out


def _failed_of(mask: int) -> str:
    out = _FAILED_OF.get(mask)
    if out is None:
        out = _FAILED_OF[mask] = ", ".join(r.value for r in RULES if mask & _BIT[r])
    return out


def filter_batch(
    symbol: Sequence[str],
    consensus: Sequence[str],
    confidence: np.ndarray,
    source_module: str,
    ts: datetime,
    context: FilterContext,
    cfg: FilterSettings | None = None,
    *,
    open_positions: np.ndarray | None = None,
    pending: np.ndarray | None = None,
) -> FilterBatch:
    """``filter_candidate`` over a bar's candidates at once (same verdicts, same details: a property test
    holds them equal). ``confidence``: NaN when missing. ``open_positions`` / ``pending``: each candidate's
    open-position count and whether its symbol has a working order (default: the context's), for a caller
    that takes candidates one after another and fills slots as it goes.

    The rules that depend on the bar only (market, daily loss, health gates) and their details come from
    one ``filter_candidate`` call on a probe candidate; the per-candidate rules are array operations."""
    cfg = cfg or FilterSettings()
    n = len(symbol)
    probe = filter_candidate(
        Candidate(_PROBE, "buy", next(iter(cfg.allowed_consensus), ""), 1.0, source_module, ts),
        replace(context, open_positions=0, pending_order_symbols=(), last_exit_ts={}),
        cfg,
    )
    bar_mask = sum(_BIT[r] for r in probe.failed if r in _BAR_RULES)
    bar_details = {k: v for k, v in probe.details.items() if k not in ("symbol", "consensus", "confidence",
                                                                         "open_positions")}  # fmt: skip
    conf = np.asarray(confidence, dtype=np.float64)
    finite = np.isfinite(conf)
    mask = np.full(n, bar_mask, dtype=np.int64)
    allowed = set(cfg.allowed_consensus)
    mask |= np.fromiter((str(c) not in allowed for c in consensus), bool, n) * _BIT[Reason.weak_consensus]
    low = ~finite | (np.where(finite, conf, 0.0) < cfg.min_confidence)
    mask |= low * _BIT[Reason.low_confidence]
    held = context.open_position_symbols
    mask |= np.fromiter((s in held for s in symbol), bool, n) * _BIT[Reason.position_open]
    if pending is None:
        working = context.pending_order_symbols
        pending = np.fromiter((s in working for s in symbol), bool, n)
    mask |= np.asarray(pending, dtype=bool) * _BIT[Reason.order_pending]
    if open_positions is None:
        open_positions = np.full(n, context.open_positions, dtype=np.int64)
    mask |= (np.asarray(open_positions) >= cfg.max_open_positions) * _BIT[Reason.max_positions]
    since: list[float | None] = [None] * n
    exits = context.last_exit_ts
    if exits:
        cool = timedelta(minutes=cfg.cooldown_minutes)
        for i, s in enumerate(symbol):
            last = exits.get(s)
            if last is None:
                continue
            d = (context.now or ts) - last
            since[i] = d / timedelta(minutes=1)
            if d < cool:
                mask[i] |= _BIT[Reason.cooldown]
    conf_list = np.where(finite, conf, np.nan).tolist()
    return FilterBatch(
        symbol, [str(c) for c in consensus], [x if x == x else None for x in conf_list],
        np.asarray(open_positions).tolist(), since, mask, bar_details, health_driver_text(probe.details),
    )  # fmt: skip


def health_driver_text(details: Mapping[str, Any]) -> str | None:
    """One line naming what drove the blocked health scores down, e.g.
    ``overall < 80: ensemble/prediction_freshness -7.1; ensemble < 70: prediction_freshness -50.0``."""
    gate = details.get("health_gate") or {}
    parts = []
    for rule in HEALTH_RULES:
        g = gate.get(rule)
        if not g:
            continue
        who = g.get("module", OVERALL)
        drivers = ", ".join(
            (f"{d['module']}/" if "module" in d else "") + f"{d['component']} -{float(d['lost']):.1f}"
            for d in g.get("drivers", [])
        )
        score = "unknown" if g.get("score") is None else f"{float(g['score']):.1f}"
        parts.append(f"{who} {score} < {float(g['gate']):g}" + (f": {drivers}" if drivers else ""))
    return "; ".join(parts) or None


def health_gated(decisions: pd.DataFrame) -> pd.DataFrame:
    """The rows where a health rule failed: the only ones gate_block_counts reads, found with one string
    search over the column (a long backtest has millions of rows, few of them blocked by health)."""
    if not len(decisions):
        return decisions
    failed = decisions["failed"] if "failed" in decisions.columns else pd.Series("", index=decisions.index)
    hit = failed.fillna("").astype(str).str.contains("_health_degraded", regex=False).to_numpy(dtype=bool)
    return decisions[hit]


def gate_block_counts(decisions: pd.DataFrame) -> pd.DataFrame:
    """How many candidates each health-gate rule blocked, from ``decisions`` rows (reason_code, failed,
    details): per rule, ``first`` (the rule was the candidate's reason code), ``any`` (the rule failed,
    first or not) and ``only`` (it was the only failed rule: the gate alone kept the candidate out), and
    the component that drove the blocked scores down most often (``top_driver``). ``attrs["candidates"]``:
    the candidates at least one health rule failed (a candidate failing both counts once).
    """
    rows = {rule: {"rule": rule, "first": 0, "any": 0, "only": 0, "drivers": {}} for rule in HEALTH_RULES}
    candidates = 0
    decisions = health_gated(decisions)
    for r in decisions.to_dict("records") if len(decisions) else []:
        failed = [f.strip() for f in str(r.get("failed") or "").split(",") if f.strip()]
        candidates += any(rule in failed for rule in HEALTH_RULES)
        details = r.get("details")
        details = json.loads(details) if isinstance(details, str) else (details or {})
        for rule in HEALTH_RULES:
            if rule not in failed:
                continue
            row = rows[rule]
            row["any"] += 1
            row["first"] += r.get("reason_code") == rule
            row["only"] += failed == [rule]
            for d in ((details.get("health_gate") or {}).get(rule) or {}).get("drivers", [])[:1]:
                key = (f"{d['module']}/" if "module" in d else "") + str(d["component"])
                row["drivers"][key] = row["drivers"].get(key, 0) + 1
    out = []
    for row in rows.values():
        drivers = row.pop("drivers")
        row["top_driver"] = max(drivers, key=drivers.get) if drivers else None
        out.append(row)
    table = pd.DataFrame(out, columns=["rule", "first", "any", "only", "top_driver"])
    table.attrs["candidates"] = candidates
    return table
