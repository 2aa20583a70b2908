"""Bracket orders as domain objects: an entry with one take-profit and one stop, valid for its side.

A broker bracket has exactly one take-profit, so a three-level exit plan is sent as up to three brackets
that split the quantity (``split_quantity``), each with its own take-profit and the same stop. Every
bracket carries a deterministic client order id (``client_order_id``): re-running the same bar builds
the same ids, and the broker refuses an id it has already seen, so nothing is submitted twice.

Prices here are floats from the exit planner. ``round_to_tick`` is applied only at the broker edge
(brokers/local.py, brokers/alpaca.py), rounding each exit *away* from the entry so a valid bracket stays
valid after rounding.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import NamedTuple

from qtrader.settings import OrderSettings

MAX_CLIENT_ORDER_ID = 128  # Alpaca's limit
DEFAULT_TICK = OrderSettings().tick  # the venue tick's only home is qtrader/settings.py
SUB_DOLLAR_TICK = 0.0001  # Alpaca accepts 4 decimals below $1
_PRICE_EPS = 1e-9  # float noise tolerated when comparing prices to tick gaps
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Side(StrEnum):
    buy = "buy"
    sell = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.buy else -1

    @property
    def opposite(self) -> Side:
        return Side.sell if self is Side.buy else Side.buy


class EntryType(StrEnum):
    market = "market"
    limit = "limit"


class InvalidBracket(ValueError):
    """A bracket whose quantity or prices are impossible for its side; raised before anything is sent."""


@dataclass(frozen=True)
class Bracket:
    """One entry with one take-profit and one stop-loss.

    ``entry_ref`` is the price the levels were planned from (the decision bar's close, or the limit of a
    limit entry). For a buy: ``stop <= entry_ref - tick`` and ``take_profit >= entry_ref + tick``; a
    sell mirrors it. Quantity is whole shares > 0.
    """

    symbol: str
    side: Side
    qty: int
    entry_ref: float
    take_profit: float
    stop: float
    client_order_id: str
    entry_type: EntryType = EntryType.market
    entry_limit: float | None = None
    time_in_force: str = "day"
    tick: float = DEFAULT_TICK

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "entry_type", EntryType(self.entry_type))
        if not self.symbol:
            raise InvalidBracket("bracket needs a symbol")
        if isinstance(self.qty, bool) or not isinstance(self.qty, int) or self.qty <= 0:
            raise InvalidBracket(f"{self.symbol}: quantity must be whole shares > 0, got {self.qty!r}")
        if not self.client_order_id or len(self.client_order_id) > MAX_CLIENT_ORDER_ID:
            raise InvalidBracket(
                f"{self.symbol}: client_order_id must be 1..{MAX_CLIENT_ORDER_ID} characters"
            )
        if self.time_in_force not in ("day", "gtc"):
            raise InvalidBracket(f"{self.symbol}: bracket time_in_force must be day or gtc")
        prices = {"entry_ref": self.entry_ref, "take_profit": self.take_profit, "stop": self.stop}
        if self.entry_type is EntryType.limit:
            if self.entry_limit is None:
                raise InvalidBracket(f"{self.symbol}: a limit entry needs entry_limit")
            prices["entry_limit"] = self.entry_limit
        for name, value in prices.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InvalidBracket(f"{self.symbol}: {name} must be a finite price > 0, got {value!r}")
        if not (self.tick > 0):
            raise InvalidBracket(f"{self.symbol}: tick must be > 0")
        gap = self.tick - _PRICE_EPS
        s = self.side.sign
        if s * (self.take_profit - self.entry_ref) < gap:
            rel = ">=" if s > 0 else "<="
            raise InvalidBracket(
                f"{self.symbol} {self.side}: take_profit {self.take_profit:g} must be {rel} entry "
                f"{self.entry_ref:g} {'+' if s > 0 else '-'} {self.tick:g}"
            )
        if s * (self.entry_ref - self.stop) < gap:
            rel = "<=" if s > 0 else ">="
            raise InvalidBracket(
                f"{self.symbol} {self.side}: stop {self.stop:g} must be {rel} entry "
                f"{self.entry_ref:g} {'-' if s > 0 else '+'} {self.tick:g}"
            )

    @property
    def exit_side(self) -> Side:
        return self.side.opposite

    @property
    def child_client_order_ids(self) -> dict[str, str]:
        """Client ids of the exit legs, derived from the parent's (brokers that let us name them)."""
        return {
            "take_profit": child_client_order_id(self.client_order_id, "tp"),
            "stop_loss": child_client_order_id(self.client_order_id, "sl"),
        }

    def edge_prices(self) -> tuple[Decimal, Decimal]:
        """(take_profit, stop) rounded to the venue tick, each away from the entry (the broker edge)."""
        return round_exit(self.take_profit, self.side, "take_profit", self.tick), round_exit(
            self.stop, self.side, "stop_loss", self.tick
        )


def _utc_iso(ts) -> str:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    if not isinstance(ts, datetime):
        raise TypeError(f"bar time must be a datetime, got {type(ts).__name__}")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def stable_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def client_order_id(strategy: str, symbol: str, bar_ts, leg: str | int) -> str:
    """A deterministic id from (strategy, symbol, bar time, leg), <= 128 characters.

    Readable prefix plus a hash of the full key, e.g. ``qtrader-AAPL-20240102T143000Z-tp1-3f9c0a1b2c4d``.
    Bar times are normalised to UTC, so the same bar gives the same id whatever zone it arrives in.
    """
    leg_s = f"tp{leg}" if isinstance(leg, int) else str(leg)
    ts_s = _utc_iso(bar_ts)
    digest = stable_hash(f"{strategy}|{symbol}|{ts_s}|{leg_s}")
    parts = [_SAFE.sub("_", p) for p in (strategy, symbol, ts_s, leg_s)]
    readable = "-".join(parts)
    budget = MAX_CLIENT_ORDER_ID - len(digest) - 1
    return f"{readable[:budget]}-{digest}"


def child_client_order_id(parent: str, suffix: str) -> str:
    """``parent.suffix``, or a hashed form when that would pass 128 characters."""
    cid = f"{parent}.{suffix}"
    if len(cid) <= MAX_CLIENT_ORDER_ID:
        return cid
    digest = stable_hash(cid)
    keep = MAX_CLIENT_ORDER_ID - len(digest) - len(suffix) - 2
    return f"{parent[:keep]}.{digest}.{suffix}"


class LegQty(NamedTuple):
    leg: int  # 1-based take-profit level
    qty: int


def split_quantity(qty: int, weights: Sequence[float]) -> list[LegQty]:
    """Whole shares per take-profit leg (largest remainder; ties to the earlier leg), zero legs dropped.

    The result sums to ``qty``. With fewer shares than legs, the earlier legs get them.
    """
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        raise ValueError(f"quantity must be whole shares > 0, got {qty!r}")
    if not 1 <= len(weights) <= 3:
        raise ValueError(f"between 1 and 3 take-profit legs, got {len(weights)}")
    w = [float(x) for x in weights]
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {list(weights)}")
    total = sum(w)
    exact = [qty * x / total for x in w]
    base = [math.floor(e + 1e-9) for e in exact]
    left = qty - sum(base)
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return [LegQty(i + 1, q) for i, q in enumerate(base) if q > 0]


def tick_for(price: float, tick: float = DEFAULT_TICK) -> float:
    """The venue tick at this price: ``tick`` at or above $1, 0.0001 below."""
    return tick if price >= 1.0 else min(tick, SUB_DOLLAR_TICK)


def round_to_tick(price: float | Decimal, tick: float = DEFAULT_TICK, mode: str = "nearest") -> Decimal:
    """``price`` on the tick grid as an exact Decimal. ``mode``: nearest (half-even), up or down."""
    p = Decimal(str(price))
    t = Decimal(str(tick_for(float(price), tick)))
    rounding = {"nearest": ROUND_HALF_EVEN, "up": ROUND_CEILING, "down": ROUND_FLOOR}[mode]
    return ((p / t).to_integral_value(rounding=rounding) * t).quantize(t)


def round_exit(
    price: float | Decimal, entry_side: Side | str, role: str, tick: float = DEFAULT_TICK
) -> Decimal:
    """An exit price rounded away from the entry: a buy's take-profit up and stop down; a sell mirrors."""
    side = Side(entry_side)
    away_up = (role == "take_profit") == (side is Side.buy)
    return round_to_tick(price, tick, "up" if away_up else "down")
