"""The local paper broker: the simulated broker (brokers/simulated.py) plus a repository that persists it.

The account lives in memory while a process works with it; a ``PaperStore`` loads it once and saves
what changed, and a ``BarFeed`` supplies the stored bars it has not seen yet (``advance_to``). Both are
small protocols implemented over the warehouse in ``warehouse/paper.py`` (this package never imports the
warehouse). Fill rules and order checks are the simulated broker's.

- ``autocommit=True`` (the default for direct use: tests, the CLI): every operation is saved at once, in
  one transaction.
- ``autocommit=False`` (the decision flow): the caller saves once per bar with ``commit(con)`` inside the
  bar's own transaction, so the books, the decisions and the orders of a bar land together or not at all.
- Starting cash is deposited once, when the account is first opened; an existing account keeps its own.
- A warehouse locked past its policy's deadline raises ``BrokerUnavailable`` (safe to retry).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import pandas as pd

from brokers.base import AdvanceReport, BrokerUnavailable, Order
from brokers.simulated import BarFeed, PaperChanges, PaperState, SimulatedBroker
from models.brackets import Bracket
from models.fills import FillCosts, money

log = logging.getLogger(__name__)


class PaperStore(Protocol):
    def load(self, account_id: str) -> PaperState | None: ...

    def save(self, changes: PaperChanges, con: Any = None) -> None: ...


def _unavailable(exc: Exception) -> bool:
    return type(exc).__name__ == "WarehouseBusy"


class LocalPaperBroker(SimulatedBroker):
    name = "local"

    def __init__(
        self,
        store: PaperStore,
        feed: BarFeed,
        starting_cash: Decimal | float | str = Decimal("100000"),
        costs: FillCosts = FillCosts(),
        *,
        interval: str = "5m",
        tick: float = 0.01,
        clock: Callable[[], datetime] | None = None,
        account_id: str = "paper",
        autocommit: bool = True,
    ) -> None:
        clock = clock or (lambda: datetime.now(UTC))
        self.store, self.autocommit = store, autocommit
        state = self._guard(lambda: store.load(account_id))
        fresh = state is None
        if fresh:
            state = PaperState.opened(account_id, Decimal(str(starting_cash)), interval, clock())
        elif state.starting_cash != money(Decimal(str(starting_cash))):
            log.info("paper account exists with starting cash %s; keeping it", state.starting_cash)
        super().__init__(state, costs, tick=tick, clock=clock, feed=feed)
        if fresh:
            self._saved_ledger = 0  # the deposit is new
            if autocommit:
                self.commit()

    def __repr__(self) -> str:
        return f"LocalPaperBroker(interval={self.interval!r}, store={self.store!r})"

    def _feed_bars(self, after, until) -> pd.DataFrame:
        return self._guard(lambda: self.feed.bars(None, after, until))

    @staticmethod
    def _guard(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            if _unavailable(exc):
                raise BrokerUnavailable(str(exc)) from exc
            raise

    def reload(self) -> None:
        """Drop what is in memory and not saved: the account as the store holds it."""
        state = self._guard(lambda: self.store.load(self.state.account_id))
        if state is None:
            state = PaperState.opened(
                self.state.account_id, self.state.starting_cash, self.interval, self.clock()
            )
        SimulatedBroker.__init__(self, state, self.costs, tick=self.tick, clock=self.clock, feed=self.feed)

    def commit(self, con: Any = None) -> PaperChanges:
        """Save what changed since the last save (inside ``con``'s transaction when given)."""
        changes = self.changes()
        if not changes.empty or con is not None:
            self._guard(lambda: self.store.save(changes, con))
        self.mark_saved()
        return changes

    @contextmanager
    def _operation(self) -> Iterator[None]:
        """Under autocommit an operation lands whole or not at all: saved at once, or forgotten in memory."""
        if not self.autocommit:
            yield
            return
        before = copy.deepcopy(self.state)
        try:
            yield
            self.commit()
        except BaseException:
            SimulatedBroker.__init__(
                self, before, self.costs, tick=self.tick, clock=self.clock, feed=self.feed
            )
            raise

    def submit_brackets(self, brackets: Sequence[Bracket]) -> list[Order]:
        with self._operation():
            return super().submit_brackets(brackets)

    def replace_stop(self, order_id: str, new_stop) -> Order:
        with self._operation():
            return super().replace_stop(order_id, new_stop)

    def cancel(self, order_id: str) -> None:
        with self._operation():
            super().cancel(order_id)

    def on_bars(self, bars: pd.DataFrame, until=None) -> AdvanceReport:
        with self._operation():
            return super().on_bars(bars, until)
