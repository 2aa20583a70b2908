"""Alpaca paper trading through alpaca-py's ``TradingClient(paper=True)``.

**The exit plan at Alpaca.** A decision sends up to three ``Bracket``s (one take-profit each, the same
stop). Alpaca refuses that as brackets: the second bracket's buy meets the first one's open sell legs
(422 42210000 "potential wash trade detected. use complex orders"), and a bracket must be an entry order.
So at this edge each bracket (a *slice*) becomes:

1. an **entry**: a plain market (or limit) order for the slice's quantity. Its client order id is the
   bracket's followed by the plan, ``<bracket id>.tp<take-profit>.sl<stop>``: everything needed to place
   the exits is kept at Alpaca, so a new process (every scheduled run is one) recovers it;
2. once every entry of the symbol is done (an exit placed while another entry works would be a wash
   trade), an **OCO exit** for the filled quantity: the take-profit limit with the stop as its leg,
   client order id ``<entry id>.x``. ``advance_to`` places them (``_arm``); it is the call with which a
   broker "sees the market" at each bar.

Each slice is shown to the rest of the system as its bracket's ``Order``: the bracket's client order id,
the entry, and the OCO's two orders as its take-profit and stop legs (before the OCO exists, the planned
legs, ``held``, with ids ``<entry id>.tp`` / ``.sl`` that cannot be replaced or cancelled). So
reconciliation, ``replace_stop`` (a PATCH of the OCO's stop), fills and ``v_trades`` work as with the
local broker. Orders without a plan in their id (brackets from before, orders placed by hand) are shown
as Alpaca lists them.

- Requests are built only here; prices rounded to the tick here, each exit away from the entry
  (``models.brackets.round_exit``).
- Errors: 422 "client_order_id must be unique" -> ``DuplicateOrder`` (with the existing order); other
  400/403/422 -> ``OrderRejected`` with Alpaca's message and code; 404 -> ``OrderNotFound``; 5xx,
  429 after the retries (``rate_limit_retries`` x ``rate_limit_wait_s``), timeouts and connection errors
  -> ``BrokerUnavailable``; 401 -> ``BrokerError``.
- Pattern day trader protection: with fewer than $25,000 and three day trades in five business days,
  Alpaca would refuse the exits of an entry made today; the adapter refuses the slice before sending it.
- alpaca-py sets no HTTP timeout, so a hung API would block a flow forever: every request here gets
  ``timeout_s`` through a transport adapter mounted on the client's ``requests`` session.
- Keys are passed in (``alpaca_keys_from_env_or_block`` reads them from ``APCA_API_KEY_ID`` /
  ``APCA_API_SECRET_KEY``, ``QTRADER_ALPACA_*`` or Prefect Secret blocks). They are held only by the
  client, never logged, and never appear in ``repr``.
- ``fills`` are read from orders (filled quantity, average price, fill time): alpaca-py 0.44's
  ``TradingClient`` has no account-activities call. Alpaca paper charges no commission.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)
from requests.adapters import HTTPAdapter

from brokers.base import (
    OPEN_STATUSES,
    Account,
    AdvanceReport,
    BrokerError,
    BrokerUnavailable,
    DuplicateOrder,
    Fill,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRole,
    OrderStatus,
    OrderType,
    Position,
)
from models.brackets import (
    MAX_CLIENT_ORDER_ID,
    Bracket,
    EntryType,
    Side,
    child_client_order_id,
    round_exit,
    round_to_tick,
)

log = logging.getLogger(__name__)

ENV_KEY = "APCA_API_KEY_ID"
ENV_SECRET = "APCA_API_SECRET_KEY"

# A slice's entry carries its exit plan in its client order id: <bracket id>.tp<price>.sl<price>.
PLAN = re.compile(r"^(?P<base>.+)\.tp(?P<tp>\d+(?:\.\d+)?)\.sl(?P<sl>\d+(?:\.\d+)?)$")
EXIT_SUFFIX = ".x"  # the OCO exit's client order id: <entry's client order id>.x
MAX_ENTRY_CLIENT_ORDER_ID = MAX_CLIENT_ORDER_ID - len(EXIT_SUFFIX)
PLANNED = {".tp": "take_profit", ".sl": "stop_loss"}  # ids of planned legs: <entry id>.tp / .sl
CODE_DUPLICATE = 40010001
CODE_PATTERN_DAY_TRADER = 40310100
PDT_EQUITY = Decimal(25000)
PDT_DAY_TRADES = 3  # a fourth in five business days makes a pattern day trader


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout unless the caller set one."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(max_retries=0)
        self.timeout_s = timeout_s

    def send(self, request, **kwargs):  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().send(request, **kwargs)


@dataclass(frozen=True)
class AlpacaKeys:
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    source: str = "arguments"


def alpaca_keys_from_env_or_block(
    key_block: str = "alpaca-api-key-id",
    secret_block: str = "alpaca-api-secret-key",
    *,
    env: Mapping[str, str] | None = None,
    settings=None,
    load_secret: Callable[[str], str] | None = None,
) -> AlpacaKeys:
    """Alpaca keys from, in order: ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY``, the settings'
    ``alpaca_api_key``/``alpaca_secret_key`` (``QTRADER_ALPACA_*``), Prefect Secret blocks."""
    env = os.environ if env is None else env
    if env.get(ENV_KEY) and env.get(ENV_SECRET):
        return AlpacaKeys(env[ENV_KEY], env[ENV_SECRET], "environment")
    if settings is not None and settings.alpaca_api_key and settings.alpaca_secret_key:
        return AlpacaKeys(
            settings.alpaca_api_key.get_secret_value(),
            settings.alpaca_secret_key.get_secret_value(),
            "settings",
        )
    if load_secret is None:

        def load_secret(name: str) -> str:
            from prefect.blocks.system import Secret

            return str(Secret.load(name).get())

    try:
        key, secret = load_secret(key_block), load_secret(secret_block)
    except Exception as exc:  # a missing block, no Prefect server: say what to set, not the exception's text
        raise BrokerError(
            f"no Alpaca keys: set {ENV_KEY} and {ENV_SECRET}, or Prefect Secret blocks "
            f"{key_block!r} and {secret_block!r} ({type(exc).__name__})"
        ) from None
    if not key or not secret:
        raise BrokerError(f"Prefect Secret blocks {key_block!r} / {secret_block!r} are empty")
    return AlpacaKeys(key, secret, "prefect-secret-block")


def _dec(x: Any) -> Decimal | None:
    return None if x is None else Decimal(str(x))


def _int(x: Any) -> int:
    return int(Decimal(str(x))) if x is not None else 0


def _val(x: Any) -> str:
    return str(getattr(x, "value", x))


class Plan(NamedTuple):
    """A slice's exits, as its entry's client order id keeps them."""

    bracket_id: str
    take_profit: Decimal
    stop: Decimal


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f")


def entry_client_order_id(bracket_id: str, take_profit: Decimal, stop: Decimal) -> str:
    return f"{bracket_id}.tp{_plain(take_profit)}.sl{_plain(stop)}"


def plan_of(client_order_id: str | None) -> Plan | None:
    m = PLAN.match(client_order_id or "")
    return None if m is None else Plan(m["base"], Decimal(m["tp"]), Decimal(m["sl"]))


def _role(o: Any, is_leg: bool | None) -> OrderRole:
    typ = str(getattr(o.type, "value", o.type) or getattr(o.order_type, "value", o.order_type))
    if is_leg is False or o.legs:
        return OrderRole.entry
    if typ in ("stop", "stop_limit"):
        return OrderRole.stop_loss
    if is_leg or (typ == "limit" and str(getattr(o.order_class, "value", o.order_class)) != "simple"):
        return OrderRole.take_profit
    return OrderRole.entry


def _to_order(o: Any, parent_id: str | None = None, is_leg: bool | None = None) -> Order:
    """An order as Alpaca nests it (a bracket's legs under its entry)."""
    legs = tuple(
        _to_order(leg, str(o.id), True) for leg in (o.legs or []) if str(leg.status.value) != "replaced"
    )
    return replace(
        _single(o, _role(o, is_leg), parent_id),
        legs=tuple(sorted(legs, key=lambda x: x.role != OrderRole.take_profit)),
    )


def _single(o: Any, role: OrderRole, parent_id: str | None, client_order_id: str | None = None) -> Order:
    """One Alpaca order, without legs."""
    typ = str(getattr(o.type, "value", o.type) or getattr(o.order_type, "value", o.order_type))
    return Order(
        id=str(o.id),
        client_order_id=client_order_id or o.client_order_id,
        symbol=o.symbol,
        side=Side(o.side.value),
        qty=_int(o.qty),
        type=OrderType(typ),
        role=role,
        status=OrderStatus(o.status.value),
        limit_price=_dec(o.limit_price),
        stop_price=_dec(o.stop_price),
        filled_qty=_int(o.filled_qty),
        filled_avg_price=_dec(o.filled_avg_price),
        parent_id=parent_id,
        submitted_at=o.submitted_at,
        filled_at=o.filled_at,
        replaces=None if o.replaces is None else str(o.replaces),
        replaced_by=None if o.replaced_by is None else str(o.replaced_by),
    )


def _planned_legs(entry: Order, plan: Plan) -> tuple[Order, Order]:
    """The exits of a slice not placed yet: ``held``, or ``canceled`` once the entry ended unfilled."""
    done = not entry.is_open
    status = OrderStatus.canceled if done and entry.filled_qty == 0 else OrderStatus.held
    qty = entry.filled_qty if done and entry.filled_qty else entry.qty
    side = entry.side.opposite
    common = dict(symbol=entry.symbol, side=side, qty=qty, status=status, parent_id=entry.id,
                  submitted_at=entry.submitted_at)  # fmt: skip
    return (
        Order(f"{entry.id}.tp", child_client_order_id(plan.bracket_id, "tp"), type=OrderType.limit,
              role=OrderRole.take_profit, limit_price=plan.take_profit, **common),
        Order(f"{entry.id}.sl", child_client_order_id(plan.bracket_id, "sl"), type=OrderType.stop,
              role=OrderRole.stop_loss, stop_price=plan.stop, **common),
    )  # fmt: skip


def _slice(entry_order: Any, plan: Plan, exit_order: Any | None) -> Order:
    """A slice as its bracket's ``Order``: the entry, with the OCO's take-profit and stop as its legs."""
    entry = _single(entry_order, OrderRole.entry, None, plan.bracket_id)
    if exit_order is None:
        return replace(entry, legs=_planned_legs(entry, plan))
    stops = [leg for leg in (exit_order.legs or []) if _val(leg.status) != "replaced"]
    legs = (_single(exit_order, OrderRole.take_profit, entry.id),
            *(_single(leg, OrderRole.stop_loss, entry.id) for leg in stops[:1]))  # fmt: skip
    return replace(entry, legs=legs)


def _views(raw: Iterable[Any]) -> list[Order]:
    """Alpaca's orders (nested) as the system sees them: slices with their legs, others as listed."""
    raw = list(raw)
    by_coid = {o.client_order_id: o for o in raw}
    out = []
    for o in raw:
        coid = o.client_order_id or ""
        plan = plan_of(coid)
        if plan is not None and not o.legs:
            out.append(_slice(o, plan, by_coid.get(coid + EXIT_SUFFIX)))
        elif (
            coid.endswith(EXIT_SUFFIX)
            and plan_of(coid[: -len(EXIT_SUFFIX)])
            and coid[: -len(EXIT_SUFFIX)] in by_coid
        ):
            continue  # a slice's exit: shown as that slice's legs
        else:
            out.append(_to_order(o))
    return out


def _fills_of(orders: Iterable[Order], since: datetime | None) -> list[Fill]:
    out = []
    for p in orders:
        for o in (p, *p.legs):
            if o.filled_qty > 0 and o.filled_at is not None and (since is None or o.filled_at >= since):
                out.append(
                    Fill(o.id, o.client_order_id, o.symbol, o.side, o.filled_qty, o.filled_avg_price or Decimal(0),
                         Decimal(0), o.filled_at, o.role)
                )  # fmt: skip
    return sorted(out, key=lambda f: (f.ts, f.order_id))


def _api_message(exc: APIError) -> tuple[str, Any]:
    try:
        return str(exc.message), exc.code
    except Exception:  # the body was not Alpaca's JSON
        return str(exc)[:300], None


class AlpacaPaperBroker:
    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        url_override: str | None = None,
        *,
        timeout_s: float = 10.0,
        tick: float = 0.01,
        rate_limit_retries: int = 3,
        rate_limit_wait_s: float = 3.0,
    ) -> None:
        if not api_key or not secret_key:
            raise BrokerError(f"Alpaca keys missing: set {ENV_KEY} and {ENV_SECRET}")
        self._client = TradingClient(api_key, secret_key, paper=True, url_override=url_override)
        adapter = _TimeoutAdapter(timeout_s)
        self._client._session.mount("http://", adapter)
        self._client._session.mount("https://", adapter)
        # A 429 is retried by alpaca-py itself. TradingClient takes no retry arguments; its RESTClient keeps
        # them in these two attributes (alpaca/common/rest.py in 0.44: 3 retries, 3 s apart by default).
        self._client._retry = int(rate_limit_retries)
        self._client._retry_wait = float(rate_limit_wait_s)
        self._url = url_override or "alpaca paper"
        self.tick = tick
        self._seen_fills: datetime | None = None  # advance_to reports the fills from this time on
        self._seen_keys: set[tuple[str, datetime]] = set()  # ... except these, reported already

    @classmethod
    def from_settings(cls, settings, keys: AlpacaKeys | None = None) -> AlpacaPaperBroker:
        a = settings.alpaca
        keys = keys or alpaca_keys_from_env_or_block(a.key_block, a.secret_block, settings=settings)
        return cls(
            keys.api_key, keys.secret_key, a.url_override, timeout_s=a.timeout_s, tick=settings.orders.tick,
            rate_limit_retries=a.rate_limit_retries, rate_limit_wait_s=a.rate_limit_wait_s,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"AlpacaPaperBroker(paper=True, url={self._url!r})"

    def _rate_limited(self, exc: APIError) -> str:
        headers = getattr(exc.response, "headers", None) or {}
        reset, limit = headers.get("X-Ratelimit-Reset"), headers.get("X-Ratelimit-Limit")
        text = f"alpaca rate limit reached (429 after {self._client._retry} retries"
        text += f", {limit} requests/min)" if limit else ")"
        if reset and str(reset).isdigit():
            text += f"; resets at {datetime.fromtimestamp(int(reset), UTC):%H:%M:%S} UTC"
        return text

    def _call(self, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except APIError as exc:
            status = exc.status_code
            msg, code = _api_message(exc)
            if status == 429:
                raise BrokerUnavailable(self._rate_limited(exc)) from None
            if status is None or status >= 500:
                raise BrokerUnavailable(f"alpaca answered {status}: {msg}") from None
            if status == 404:
                raise OrderNotFound(msg) from None
            if status == 401:
                raise BrokerError("alpaca refused the credentials (401)") from None
            if status == 422 and "client_order_id" in msg and "unique" in msg:
                raise DuplicateOrder(msg, code=code) from None
            if status in (400, 403, 422):
                raise OrderRejected(msg, code) from None
            raise BrokerError(f"alpaca answered {status}: {msg}") from None
        except requests.Timeout:
            raise BrokerUnavailable("alpaca did not answer in time") from None
        except requests.ConnectionError:
            raise BrokerUnavailable("could not connect to alpaca") from None
        except requests.RequestException as exc:
            raise BrokerUnavailable(f"alpaca request failed ({type(exc).__name__})") from None

    def _book(self, symbol: str | None = None) -> list[Any]:
        """Alpaca's orders, newest first, nested (up to 500: Alpaca's page)."""
        req = GetOrdersRequest(
            status=QueryOrderStatus.ALL, nested=True, limit=500, symbols=[symbol] if symbol else None
        )
        return list(self._call(self._client.get_orders, req))

    # -- orders ------------------------------------------------------------------------------------------------

    def submit_bracket(self, bracket: Bracket) -> Order:
        """The bracket's entry, its exits kept in its client order id until ``advance_to`` places them."""
        b = bracket
        tp, sl = b.edge_prices()
        coid = entry_client_order_id(b.client_order_id, tp, sl)
        if len(coid) > MAX_ENTRY_CLIENT_ORDER_ID:
            raise OrderRejected(
                f"{b.symbol}: client_order_id {b.client_order_id[:40]!r}... ({len(b.client_order_id)} characters) "
                f"leaves no room for the exit plan kept in Alpaca's client order id (at most "
                f"{MAX_ENTRY_CLIENT_ORDER_ID} with it); use a shorter orders.strategy"
            )
        existing = self._find(b.client_order_id, b.symbol)
        if existing is not None:
            raise DuplicateOrder("client_order_id must be unique", existing=existing, code=CODE_DUPLICATE)
        self._check_day_trades(b)
        common = dict(
            symbol=b.symbol, qty=b.qty, side=OrderSide(b.side.value), time_in_force=TimeInForce(b.time_in_force),
            client_order_id=coid,
        )  # fmt: skip
        if b.entry_type is EntryType.limit:
            req = LimitOrderRequest(limit_price=float(round_to_tick(b.entry_limit, self.tick)), **common)
        else:
            req = MarketOrderRequest(**common)
        log.info("alpaca: submit entry %s %s %s x%d (exits tp=%s sl=%s)", b.client_order_id, b.side, b.symbol,
                 b.qty, tp, sl)  # fmt: skip
        try:
            o = self._call(self._client.submit_order, req)
        except DuplicateOrder as exc:  # another run got there first
            raise DuplicateOrder(
                exc.message, existing=self._find(b.client_order_id, b.symbol), code=exc.code
            ) from None
        return _slice(o, Plan(b.client_order_id, tp, sl), None)

    def _find(self, bracket_id: str, symbol: str | None = None) -> Order | None:
        return next((o for o in _views(self._book(symbol)) if o.client_order_id == bracket_id), None)

    def _check_day_trades(self, b: Bracket) -> None:
        """Paper's pattern day trader protection would refuse the exits of an entry made today: refuse the
        slice now rather than leave a position without exits (Alpaca refuses a bracket the same way)."""
        a = self._call(self._client.get_account)
        count, equity = a.daytrade_count, _dec(a.equity)
        if count is None or equity is None:  # no such fields: the rule is not applied to this account
            return
        if count >= PDT_DAY_TRADES and equity < PDT_EQUITY:
            raise OrderRejected(
                f"{b.symbol}: trade denied due to pattern day trading protection ({count} day trades in 5 "
                f"business days, equity {equity} < {PDT_EQUITY}): Alpaca would refuse the exits of an entry "
                "made today",
                CODE_PATTERN_DAY_TRADER,
            )

    def _arm(self, raw: list[Any]) -> int:
        """Place the OCO exit of every slice whose entry is done and filled, once no entry of the symbol
        works any more (an exit opposite to a working entry would be refused as a wash trade)."""
        by_coid = {o.client_order_id: o for o in raw}
        working: dict[str, set[str]] = {}  # symbol -> sides of its working orders
        for o in raw:
            for x in (o, *(o.legs or [])):
                if OrderStatus(_val(x.status)) in OPEN_STATUSES:
                    working.setdefault(x.symbol, set()).add(_val(x.side))
        placed = 0
        for o in reversed(raw):  # oldest first
            plan, coid = plan_of(o.client_order_id), o.client_order_id
            if plan is None or o.legs or coid + EXIT_SUFFIX in by_coid:
                continue
            filled = _int(o.filled_qty)
            if OrderStatus(_val(o.status)) in OPEN_STATUSES or filled == 0:
                continue
            side = Side(_val(o.side))
            if side.value in working.get(o.symbol, set()):
                continue  # another entry of the symbol still works
            req = LimitOrderRequest(
                symbol=o.symbol, qty=filled, side=OrderSide(side.opposite.value),
                time_in_force=TimeInForce(_val(o.time_in_force)), order_class=OrderClass.OCO,
                client_order_id=coid + EXIT_SUFFIX, take_profit=TakeProfitRequest(limit_price=float(plan.take_profit)),
                stop_loss=StopLossRequest(stop_price=float(plan.stop)),
            )  # fmt: skip
            try:
                self._call(self._client.submit_order, req)
            except DuplicateOrder:
                continue  # placed by another run
            except OrderRejected as exc:
                log.error("alpaca: exits of %s not placed: %s (%s); %s %s is unprotected until a later bar "
                          "places them", plan.bracket_id, exc.message, exc.code, o.symbol, filled)  # fmt: skip
                continue
            log.info("alpaca: exits of %s placed: %s x%d tp=%s sl=%s", plan.bracket_id, o.symbol, filled,
                     plan.take_profit, plan.stop)  # fmt: skip
            working.setdefault(o.symbol, set()).add(side.opposite.value)
            placed += 1
        return placed

    def replace_stop(self, order_id: str, new_stop: float | Decimal) -> Order:
        old = self.get_order(order_id)
        if old.role is not OrderRole.stop_loss:
            raise OrderRejected(f"order {order_id} is not a stop-loss leg")
        if order_id.endswith(tuple(PLANNED)):
            raise OrderRejected(f"the exits of order {old.parent_id} are not placed yet: no stop to replace")
        price = round_exit(new_stop, old.side.opposite, "stop_loss", self.tick)
        log.info("alpaca: replace stop %s -> %s", order_id, price)
        o = self._call(
            self._client.replace_order_by_id, order_id, ReplaceOrderRequest(stop_price=float(price))
        )
        return _single(o, OrderRole.stop_loss, old.parent_id)

    def cancel(self, order_id: str) -> None:
        if order_id.endswith(tuple(PLANNED)):
            raise OrderRejected(f"order {order_id} is a planned exit, not placed: cancel its entry instead")
        log.info("alpaca: cancel %s", order_id)
        self._call(self._client.cancel_order_by_id, order_id)

    def get_orders(self, status: str = "open") -> list[Order]:
        if status not in ("open", "closed", "all"):
            raise ValueError(f"status must be open, closed or all, got {status!r}")
        orders = _views(self._book())
        if status == "open":
            orders = [o for o in orders if o.bracket_open]
        elif status == "closed":
            orders = [o for o in orders if not o.bracket_open]
        return sorted(orders, key=lambda o: (o.submitted_at or datetime.min, o.client_order_id))

    def get_order(self, order_id: str) -> Order:
        for o in _views(self._book()):
            for x in (o, *o.legs):
                if x.id == order_id:
                    return x
        if order_id.endswith(tuple(PLANNED)):
            raise OrderNotFound(f"order {order_id} not found")
        return self._alone(
            self._call(self._client.get_order_by_id, order_id, GetOrderByIdRequest(nested=True))
        )

    def _alone(self, o: Any) -> Order:
        """An order older than the listing: a slice's entry finds its exit by client order id."""
        plan = plan_of(o.client_order_id)
        if plan is None or o.legs:
            return _to_order(o)
        try:
            exit_order = self._call(self._client.get_order_by_client_id, o.client_order_id + EXIT_SUFFIX)
        except OrderNotFound:
            exit_order = None
        return _slice(o, plan, exit_order)

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        found = self._find(client_order_id)
        if found is not None:
            return found
        try:
            return self._alone(self._call(self._client.get_order_by_client_id, client_order_id))
        except OrderNotFound:
            return None

    # -- account -----------------------------------------------------------------------------------------------

    def positions(self) -> list[Position]:
        out = []
        for p in self._call(self._client.get_all_positions):
            qty = _int(p.qty)
            if str(p.side.value) == "short" and qty > 0:
                qty = -qty
            out.append(
                Position(p.symbol, qty, _dec(p.avg_entry_price), _dec(p.market_value), _dec(p.current_price))
            )
        return sorted(out, key=lambda p: p.symbol)

    def account(self) -> Account:
        a = self._call(self._client.get_account)
        return Account(
            cash=_dec(a.cash) or Decimal(0),
            equity=_dec(a.equity) or Decimal(0),
            buying_power=_dec(a.buying_power) or Decimal(0),
            currency=a.currency or "USD",
            status=str(getattr(a.status, "value", a.status)),
        )

    def commit(self, con=None) -> None:
        """Alpaca keeps the books: nothing to save here."""

    def reload(self) -> None:
        """Nothing held in this process to forget."""

    def advance_to(self, ts) -> AdvanceReport:
        """The market moved by itself: place the exits of the entries that filled, and report the fills
        Alpaca made since the previous call (all on the first)."""
        raw = self._book()
        self._arm(raw)
        new = _fills_of(_views(raw), self._seen_fills)
        fills = [f for f in new if (f.order_id, f.ts) not in self._seen_keys]
        if fills:
            self._seen_fills = max(f.ts for f in fills)
            self._seen_keys = {(f.order_id, f.ts) for f in fills if f.ts == self._seen_fills}
        return AdvanceReport(0, fills, None)

    def fills(self, since: datetime | None = None) -> list[Fill]:
        return _fills_of(_views(self._book()), since)
