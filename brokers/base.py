"""The ``Broker`` protocol and its broker-neutral records.

Two implementations: ``brokers/local.py`` (a paper account in the warehouse, filled against its bars) and
``brokers/alpaca.py`` (Alpaca paper through alpaca-py). ``tests/brokers/test_contract.py`` runs one suite
against both.

Conventions both follow (docs/trading.md):

- ``submit_bracket`` sends one ``Bracket``: an entry with a take-profit leg and a stop-loss leg. Exit legs
  are ``held`` until the entry fills, then ``new``.
- A client order id the broker has seen before raises ``DuplicateOrder`` carrying the ``existing`` order
  (Alpaca answers 422 "client_order_id must be unique"; the local broker does the same). Callers that
  want "submit unless already there" use ``submit_idempotent``.
- ``replace_stop`` returns the *new* stop order (a new id, ``replaces`` = the old one); the old one is
  ``replaced``. Cancelling an entry cancels its legs; cancelling a leg cancels its OCO sibling.
- ``advance_to(ts)`` brings the broker to the bar (see the protocol).
- ``get_orders`` lists bracket entries with their current legs nested; ``open`` means some part of the
  bracket is still working.
- Prices on orders and money on accounts, positions and fills are ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from models.brackets import Bracket, Side


class OrderStatus(StrEnum):
    """Alpaca's order statuses (the local broker uses new, held, filled, canceled, replaced)."""

    new = "new"
    partially_filled = "partially_filled"
    filled = "filled"
    done_for_day = "done_for_day"
    canceled = "canceled"
    expired = "expired"
    replaced = "replaced"
    pending_cancel = "pending_cancel"
    pending_replace = "pending_replace"
    pending_review = "pending_review"
    accepted = "accepted"
    pending_new = "pending_new"
    accepted_for_bidding = "accepted_for_bidding"
    stopped = "stopped"
    rejected = "rejected"
    suspended = "suspended"
    calculated = "calculated"
    held = "held"


OPEN_STATUSES = frozenset(
    {
        OrderStatus.new,
        OrderStatus.partially_filled,
        OrderStatus.accepted,
        OrderStatus.pending_new,
        OrderStatus.held,
        OrderStatus.pending_cancel,
        OrderStatus.pending_replace,
        OrderStatus.pending_review,
        OrderStatus.accepted_for_bidding,
        OrderStatus.calculated,
    }
)


class OrderRole(StrEnum):
    entry = "entry"
    take_profit = "take_profit"
    stop_loss = "stop_loss"


class OrderType(StrEnum):
    market = "market"
    limit = "limit"
    stop = "stop"
    stop_limit = "stop_limit"


@dataclass(frozen=True)
class Order:
    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: int
    type: OrderType
    role: OrderRole
    status: OrderStatus
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    filled_qty: int = 0
    filled_avg_price: Decimal | None = None
    parent_id: str | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    legs: tuple[Order, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def bracket_open(self) -> bool:
        """Some part of the bracket (entry or a current leg) is still working."""
        return self.is_open or any(leg.is_open for leg in self.legs)

    def leg(self, role: OrderRole | str) -> Order | None:
        role = OrderRole(role)
        return next((leg for leg in self.legs if leg.role == role), None)

    @property
    def take_profit(self) -> Order | None:
        return self.leg(OrderRole.take_profit)

    @property
    def stop_loss(self) -> Order | None:
        return self.leg(OrderRole.stop_loss)


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: int  # signed: < 0 short
    avg_entry_price: Decimal
    market_value: Decimal | None = None
    current_price: Decimal | None = None

    @property
    def side(self) -> str:
        return "long" if self.qty > 0 else "short"

    @property
    def cost_basis(self) -> Decimal:
        return abs(self.qty) * self.avg_entry_price


@dataclass(frozen=True)
class Account:
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    currency: str = "USD"
    status: str = "ACTIVE"


@dataclass(frozen=True)
class Fill:
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: int
    price: Decimal
    commission: Decimal
    ts: datetime
    role: OrderRole | None = None


@dataclass(frozen=True)
class AdvanceReport:
    """What ``advance_to`` saw: bar times stepped (a simulated broker) and the fills since the last call."""

    bars: int
    fills: list[Fill]
    market_ts: datetime | None


class BrokerError(Exception):
    """Anything a broker refused or could not do. Messages never contain credentials."""


class OrderRejected(BrokerError):
    def __init__(self, message: str, code: int | str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code


class DuplicateOrder(OrderRejected):
    """The client order id was used before; ``existing`` is that order when the broker returned it."""

    def __init__(self, message: str, existing: Order | None = None, code: int | str | None = None):
        super().__init__(message, code)
        self.existing = existing


class OrderNotFound(BrokerError):
    pass


class BrokerUnavailable(BrokerError):
    """Transient: a 5xx answer, a timeout, a refused connection, a locked warehouse. Safe to retry after
    checking ``get_order_by_client_id`` (a submit that timed out may have been accepted)."""


@runtime_checkable
class Broker(Protocol):
    name: str

    def submit_bracket(self, bracket: Bracket) -> Order: ...

    def replace_stop(self, order_id: str, new_stop: float | Decimal) -> Order: ...

    def cancel(self, order_id: str) -> None: ...

    def get_orders(self, status: str = "open") -> list[Order]: ...

    def get_order(self, order_id: str) -> Order: ...

    def get_order_by_client_id(self, client_order_id: str) -> Order | None: ...

    def positions(self) -> list[Position]: ...

    def account(self) -> Account: ...

    def fills(self, since: datetime | None = None) -> list[Fill]: ...

    def advance_to(self, ts) -> AdvanceReport:
        """The market up to ``ts``: a simulated broker fills its working orders on the bars until then; a
        real one has moved by itself. Either way the report lists the fills since the previous call."""
        ...

    def commit(self, con: Any = None) -> Any:
        """Save what the broker keeps in this process (the local paper account: inside ``con``'s
        transaction when given). A broker whose books live elsewhere (Alpaca) has nothing to save."""
        ...

    def reload(self) -> None:
        """Forget what was not saved (a bar that did not land). Nothing to forget for a remote broker."""
        ...


class Submitted(NamedTuple):
    order: Order
    created: bool  # False: the broker already had this client order id


def submit_idempotent(broker: Broker, bracket: Bracket) -> Submitted:
    """Submit unless the broker already knows the client order id; never sends a second order."""
    try:
        return Submitted(broker.submit_bracket(bracket), True)
    except DuplicateOrder as exc:
        existing = exc.existing or broker.get_order_by_client_id(bracket.client_order_id)
        if existing is None:
            raise
        return Submitted(existing, False)


def flatten(orders: Sequence[Order]) -> list[Order]:
    """Entries followed by their legs, as one list."""
    out: list[Order] = []
    for o in orders:
        out.append(o)
        out.extend(o.legs)
    return out
