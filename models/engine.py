"""The decision engine: one bar's inputs in, typed decisions, brackets and stop moves out.

Pure: no I/O, no Prefect, no clock of its own (the bar time is an input). The live decision flow
(tasks/decide.py) and the backtest (tasks/backtest.py) both build a ``BarInputs`` and call ``decide``;
``brokers/trader.py`` carries the result to a broker. What it decides, in order:

1. stop moves for the open brackets (``models.decision.plan_stop_moves``: breakeven after TP1, the
   health-gated ensemble rule, predictive tightening);
2. one ``Decision`` per candidate signal, with the first reason it is not traded, or the brackets it sends
   (``models.decision.assemble_columns``: trade filter, exit plan, sizing, bracket legs), kept as columns
   in a ``DecisionTable`` that builds a ``Decision`` only when one is read.

``signals`` turns the member modules' probabilities at a bar into the candidates (the ensemble vote and its
calibration); it works on many bars at once, which the backtest uses to vote once per period.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from models import decision as dm
from models.brackets import DEFAULT_TICK
from models.decision import DecisionBatch, OpenBracket, PlannedBracket, Signal, StopMove
from models.health import gate_value
from qtrader.settings import ExitSettings, FilterSettings, Settings, SizingSettings


@dataclass(frozen=True)
class HealthView:
    """The newest health run the bar decides with: overall and per-module scores, and active alerts."""

    ts: pd.Timestamp | None
    overall: float | None
    modules: Mapping[str, float | None]
    alerts: Sequence[Mapping[str, Any]] = ()
    # Learned health baselines and what drove each score down ({module or "overall": ...}, see
    # models.health.gate_value); empty before the health flow records them.
    baselines: Mapping[str, float | None] = field(default_factory=dict)
    drivers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelView:
    """What sizing and the exit plan read of the source module: its champion, benchmarked record, TP hit
    rates and the learned stop cap."""

    source_module: str
    model_version: int | None
    calibration: str
    accuracy: float | None = None
    performance_score: float | None = None
    hit_rates: Mapping[str, float | None] = field(default_factory=dict)
    learned_stop_atr: float | None = None


@dataclass(frozen=True)
class AccountView:
    """The account at the bar, after the broker saw it."""

    equity: float
    buying_power: float
    gross_exposure: float
    open_position_symbols: frozenset[str]
    pending_order_symbols: frozenset[str]
    start_of_day_equity: float | None = None
    last_exit_ts: Mapping[str, datetime] = field(default_factory=dict)

    @property
    def open_positions(self) -> int:
        return len(self.open_position_symbols)

    @property
    def day_pnl(self) -> float:
        return self.equity - self.start_of_day_equity if self.start_of_day_equity is not None else 0.0


@dataclass(frozen=True)
class BarInputs:
    ts: datetime
    interval: str
    market_open: bool
    signals: Sequence[Signal] | dm.SignalBatch
    prices: Mapping[str, float]  # the bar's close per symbol (stop management)
    health: HealthView
    model: ModelView
    account: AccountView
    open_brackets: Sequence[OpenBracket] = ()
    tp1_filled: Collection[str] = frozenset()  # decision ids whose TP1 bracket took profit


@dataclass(frozen=True)
class EngineConfig:
    """The settings the engine reads (one broker and strategy)."""

    strategy: str
    broker: str
    trade_filter: FilterSettings
    sizing: SizingSettings
    exits: ExitSettings
    allow_short: bool = True
    use_calibration: bool = True
    tick: float = DEFAULT_TICK
    tp_weights: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    time_in_force: str = "day"
    health_floor: float | None = None  # the kill-switch floor under every learned health gate

    @classmethod
    def from_settings(cls, settings: Settings, broker: str) -> EngineConfig:
        return cls(
            strategy=settings.orders.strategy,
            broker=broker,
            trade_filter=settings.trade_filter,
            sizing=settings.sizing,
            exits=settings.exits,
            allow_short=settings.decision.allow_short,
            use_calibration=settings.decision.calibrated_confidence,
            tick=settings.orders.tick,
            tp_weights=tuple(settings.orders.tp_weights),
            time_in_force=settings.orders.time_in_force,
            health_floor=settings.health.kill_floor,
        )


@dataclass(frozen=True)
class Decision:
    """One candidate at one bar: its inputs, the verdict and the brackets it led to (a ``decisions`` row
    without the run's id and time)."""

    decision_id: str
    ts: datetime
    interval: str
    symbol: str
    strategy: str
    broker: str
    side: str | None
    direction: int
    consensus: str
    voters: int
    agree: int
    contributors: str | None
    module_p_up: str
    source_module: str
    model_version: int | None
    calibration: str | None
    confidence_raw: float | None
    confidence_seed: float | None
    confidence_calibrated: float | None
    overall_health: float | None
    module_health: float | None
    health_ts: datetime | None
    accuracy: float | None
    performance_score: float | None
    size_multiplier: float | None
    size_reason: str | None
    capped_by: str | None
    atr: float | None
    vol_state: str | None
    tp1_rate: float | None
    tp2_rate: float | None
    tp3_rate: float | None
    learned_stop_atr: float | None
    exit_profile: str | None
    entry_ref: float | None
    stop_price: float | None
    tp1_price: float | None
    tp2_price: float | None
    tp3_price: float | None
    qty: int
    accepted: bool
    submitted: bool
    reason_code: str
    failed: str | None
    details: str | None
    health_drivers: str | None = None
    client_order_ids: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["client_order_ids"] = ",".join(self.client_order_ids) if self.client_order_ids else None
        return out


class DecisionTable(Sequence[Decision]):
    """A bar's decisions as columns (``models.decision.DECISION_FIELDS``, one list each): the engine makes
    them so, and a ``Decision`` object is built only when one is read. Changes make a new table that shares
    the columns it did not change."""

    __slots__ = ("columns", "_n")

    def __init__(self, columns: Mapping[str, list[Any]]) -> None:
        self.columns = {k: columns[k] for k in dm.DECISION_FIELDS}
        self._n = len(self.columns["decision_id"])

    @classmethod
    def of(cls, decisions: Iterable[Decision]) -> DecisionTable:
        ds = list(decisions)
        return cls({k: [getattr(d, k) for d in ds] for k in dm.DECISION_FIELDS})

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(self._n)))
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return Decision(**{k: c[i] for k, c in self.columns.items()})

    def __iter__(self) -> Iterator[Decision]:
        return (self[i] for i in range(self._n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DecisionTable):
            return self.columns == other.columns
        if isinstance(other, Sequence):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"DecisionTable({self._n} decisions)"

    def where(self, rows: Iterable[int], **values: Any) -> DecisionTable:
        """The table with ``values`` set on ``rows``."""
        rows = list(rows)
        if not rows:
            return self
        cols = dict(self.columns)
        for k, v in values.items():
            col = cols[k] = list(cols[k])
            for i in rows:
                col[i] = v
        return DecisionTable(cols)

    def row_columns(self) -> dict[str, list[Any]]:
        """The ``decisions`` table's columns (``Decision.row`` for every decision)."""
        cols = dict(self.columns)
        cols["client_order_ids"] = [",".join(c) if c else None for c in cols["client_order_ids"]]
        return cols


@dataclass(frozen=True)
class BarResult:
    """What the engine decided at one bar (``decisions``: a ``DecisionTable``; a sequence of ``Decision``
    given here is made one)."""

    decisions: DecisionTable
    brackets: tuple[PlannedBracket, ...]
    stop_moves: tuple[StopMove, ...]
    context: dm.DecisionContext

    def __post_init__(self) -> None:
        if not isinstance(self.decisions, DecisionTable):
            object.__setattr__(self, "decisions", DecisionTable.of(self.decisions))

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for code in self.decisions.columns["reason_code"]:
            out[code] = out.get(code, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def accepted(self) -> list[Decision]:
        return [self.decisions[i] for i, ok in enumerate(self.decisions.columns["accepted"]) if ok]

    def with_decisions(
        self, decisions: DecisionTable | Sequence[Decision], brackets: Sequence[PlannedBracket]
    ) -> BarResult:
        return dataclasses.replace(self, decisions=decisions, brackets=tuple(brackets))

    def batch(self) -> DecisionBatch:
        """The order gate's view (models.decision.order_batch_frame reads the brackets' decisions' rows as
        mappings)."""
        ids = {p.decision_id for p in self.brackets}
        cols = self.decisions.columns
        rows = [{k: c[i] for k, c in cols.items()} for i, d in enumerate(cols["decision_id"]) if d in ids]
        return DecisionBatch(rows, list(self.brackets))

    def frame(self) -> pd.DataFrame:
        if not len(self.decisions):
            return pd.DataFrame([])
        return pd.DataFrame(self.decisions.row_columns())


def context(inputs: BarInputs, cfg: EngineConfig) -> dm.DecisionContext:
    a, m, h = inputs.account, inputs.model, inputs.health
    return dm.DecisionContext(
        ts=inputs.ts,
        interval=inputs.interval,
        strategy=cfg.strategy,
        broker=cfg.broker,
        source_module=m.source_module,
        market_open=inputs.market_open,
        overall_health=h.overall,
        module_health=h.modules,
        health_ts=None if h.ts is None else pd.Timestamp(h.ts).to_pydatetime(),
        model_version=m.model_version,
        calibration=m.calibration,
        accuracy=m.accuracy,
        performance_score=m.performance_score,
        hit_rates=m.hit_rates,
        learned_stop_atr=m.learned_stop_atr,
        equity=a.equity,
        buying_power=a.buying_power,
        gross_exposure=a.gross_exposure,
        open_position_symbols=a.open_position_symbols,
        pending_order_symbols=a.pending_order_symbols,
        open_positions=a.open_positions,
        start_of_day_equity=a.start_of_day_equity,
        day_pnl=a.day_pnl,
        last_exit_ts=a.last_exit_ts,
        allow_short=cfg.allow_short,
        tick=cfg.tick,
        tp_weights=cfg.tp_weights,
        time_in_force=cfg.time_in_force,
        use_calibration=cfg.use_calibration,
        health_baselines=h.baselines,
        health_floor=cfg.health_floor,
        health_drivers=h.drivers,
    )


def exit_gates(health: HealthView, cfg: EngineConfig) -> dict[str, float]:
    """The exit planner's health gates (seed 1.2's overall and ensemble values) against the learned
    baselines (models.health.gate_value), under the kill-switch floor."""
    x, learned = cfg.exits, cfg.trade_filter.learned_gates
    floor = cfg.health_floor if cfg.health_floor is not None else 0.0
    return {
        "overall_gate": gate_value(
            x.min_overall_health, health.baselines.get("overall"), floor, learned=learned
        ).value,
        "ensemble_gate": gate_value(
            x.ensemble_degraded_health, health.baselines.get(x.ensemble_module), floor, learned=learned
        ).value,
    }


def decide(inputs: BarInputs, cfg: EngineConfig) -> BarResult:
    """Stop moves for the open brackets and a decision for every candidate (module docstring)."""
    moves = dm.plan_stop_moves(
        inputs.open_brackets,
        tp1_filled=inputs.tp1_filled,
        current=inputs.prices,
        overall_health=inputs.health.overall,
        ensemble_health=inputs.health.modules.get(cfg.exits.ensemble_module),
        alerts=inputs.health.alerts,
        cfg=cfg.exits,
        tick=cfg.tick,
        **exit_gates(inputs.health, cfg),
    )
    ctx = context(inputs, cfg)
    cols, brackets = dm.assemble_columns(inputs.signals, ctx, cfg.trade_filter, cfg.sizing, cfg.exits)
    return BarResult(DecisionTable(cols), tuple(brackets), tuple(moves), ctx)


def block(result: BarResult, code: str, failed: str) -> BarResult:
    """Every accepted decision of the bar refused with ``code`` (a failing order gate): nothing is sent."""
    t = result.decisions
    rows = [i for i, ok in enumerate(t.columns["accepted"]) if ok]
    out = t.where(rows, accepted=False, reason_code=code, failed=failed, client_order_ids=())
    return result.with_decisions(out, ())


def refuse(result: BarResult, decision_id: str, code: str, failed: str) -> BarResult:
    """One decision refused after the fact (the broker rejected its bracket): its brackets are dropped."""
    t = result.decisions
    rows = [i for i, d in enumerate(t.columns["decision_id"]) if d == decision_id]
    out = t.where(rows, accepted=False, reason_code=code, failed=failed)
    return result.with_decisions(out, [p for p in result.brackets if p.decision_id != decision_id])


def mark_submitted(result: BarResult, decision_ids: Collection[str]) -> BarResult:
    t = result.decisions
    rows = [i for i, d in enumerate(t.columns["decision_id"]) if d in decision_ids]
    return result.with_decisions(t.where(rows, submitted=True), result.brackets)
