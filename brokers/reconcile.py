"""Reconciliation at the start of every decision run: the broker's state is the truth.

``reconcile(broker_orders, local_records)`` compares the brackets the broker reports (``get_orders("all")``)
with the warehouse's ``order_records`` and returns the actions that make the warehouse agree:

- **adopt**: the broker has a bracket whose client order id the warehouse never recorded (for example a
  run that crashed between submitting and recording): insert it, ``origin = adopted``;
- **mark_missing**: the warehouse has an unfinished record the broker does not know (a submit that never
  arrived): status ``missing_at_broker``; finished records are left alone (the broker may have aged
  them out of its listing);
- **update**: both know it but the state differs: take the broker's.

Positions and the account come along in the plan and are stored as snapshots. Because client order ids
are deterministic per (strategy, symbol, bar, leg), a re-run after a crash rebuilds the same ids, finds
them adopted, and submits nothing twice (and a broker refuses a used id anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from brokers.base import OPEN_STATUSES, Account, Order, OrderRole, OrderStatus, Position

MISSING = "missing_at_broker"
OPEN_STATES = {"position_open"} | {s.value for s in OPEN_STATUSES}


def bracket_state(order: Order) -> str:
    """One word for where a bracket is: the entry's status until it fills, then position_open, then
    closed_take_profit / closed_stop_loss (or the entry's terminal status)."""
    if order.status is not OrderStatus.filled:
        return order.status.value
    filled = next((leg for leg in order.legs if leg.status is OrderStatus.filled), None)
    if filled is not None:
        return f"closed_{filled.role.value}"
    if any(leg.is_open for leg in order.legs):
        return "position_open"
    return "closed" if order.legs else "position_open"


def is_finished(state: str) -> bool:
    return state not in OPEN_STATES


@dataclass(frozen=True)
class OrderRecord:
    """A row of ``order_records``: one bracket as the warehouse knows it."""

    client_order_id: str
    symbol: str
    status: str
    broker_order_id: str | None = None
    origin: str = "submitted"


class ActionKind(StrEnum):
    adopt = "adopt"
    mark_missing = "mark_missing"
    update = "update"


@dataclass(frozen=True)
class ReconcileAction:
    kind: ActionKind
    client_order_id: str
    status: str
    broker_order: Order | None = None
    detail: str = ""


@dataclass(frozen=True)
class ReconcilePlan:
    actions: tuple[ReconcileAction, ...]
    positions: tuple[Position, ...] = ()
    account: Account | None = None

    def of(self, kind: ActionKind | str) -> list[ReconcileAction]:
        return [a for a in self.actions if a.kind == ActionKind(kind)]


def reconcile(
    broker_orders: Sequence[Order],
    local_records: Iterable[OrderRecord],
    positions: Sequence[Position] = (),
    account: Account | None = None,
) -> ReconcilePlan:
    records = {r.client_order_id: r for r in local_records}
    entries = {o.client_order_id: o for o in broker_orders if o.role is OrderRole.entry}
    actions: list[ReconcileAction] = []
    for coid, order in sorted(entries.items()):
        state = bracket_state(order)
        rec = records.get(coid)
        if rec is None:
            actions.append(
                ReconcileAction(
                    ActionKind.adopt, coid, state, order, "the broker has it, the warehouse did not"
                )
            )
        elif rec.status != state or rec.broker_order_id != order.id:
            actions.append(ReconcileAction(ActionKind.update, coid, state, order, f"{rec.status} -> {state}"))
    for coid, rec in sorted(records.items()):
        if coid not in entries and not is_finished(rec.status):
            actions.append(
                ReconcileAction(
                    ActionKind.mark_missing, coid, MISSING, None, f"was {rec.status}; unknown to the broker"
                )
            )
    return ReconcilePlan(tuple(actions), tuple(positions), account)
