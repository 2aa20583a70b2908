"""Alpaca paper trading through alpaca-py's ``TradingClient(paper=True)``.

- Bracket requests are built only here: ``MarketOrderRequest`` (or ``LimitOrderRequest``) with
  ``order_class=BRACKET``, ``TakeProfitRequest`` and ``StopLossRequest``; prices rounded to the tick here,
  each exit away from the entry (``models.brackets.round_exit``).
- Errors: 422 "client_order_id must be unique" -> ``DuplicateOrder`` (with the existing order fetched by
  client id); other 400/403/422 -> ``OrderRejected`` with Alpaca's message and code; 404 ->
  ``OrderNotFound``; 5xx, 429 after alpaca-py's own retries, timeouts and connection errors ->
  ``BrokerUnavailable``; 401 -> ``BrokerError``.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

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
from models.brackets import Bracket, EntryType, Side, round_exit, round_to_tick

log = logging.getLogger(__name__)

ENV_KEY = "APCA_API_KEY_ID"
ENV_SECRET = "APCA_API_SECRET_KEY"


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
    role = _role(o, is_leg)
    legs = tuple(
        _to_order(leg, str(o.id), True) for leg in (o.legs or []) if str(leg.status.value) != "replaced"
    )
    typ = str(getattr(o.type, "value", o.type) or getattr(o.order_type, "value", o.order_type))
    return Order(
        id=str(o.id),
        client_order_id=o.client_order_id,
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
        legs=tuple(sorted(legs, key=lambda x: x.role != OrderRole.take_profit)),
    )


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
    ) -> None:
        if not api_key or not secret_key:
            raise BrokerError(f"Alpaca keys missing: set {ENV_KEY} and {ENV_SECRET}")
        self._client = TradingClient(api_key, secret_key, paper=True, url_override=url_override)
        adapter = _TimeoutAdapter(timeout_s)
        self._client._session.mount("http://", adapter)
        self._client._session.mount("https://", adapter)
        self._url = url_override or "alpaca paper"
        self.tick = tick
        self._seen_fills: datetime | None = None  # advance_to reports the fills from this time on
        self._seen_keys: set[tuple[str, datetime]] = set()  # ... except these, reported already

    @classmethod
    def from_settings(cls, settings, keys: AlpacaKeys | None = None) -> AlpacaPaperBroker:
        a = settings.alpaca
        keys = keys or alpaca_keys_from_env_or_block(a.key_block, a.secret_block, settings=settings)
        return cls(
            keys.api_key, keys.secret_key, a.url_override, timeout_s=a.timeout_s, tick=settings.orders.tick
        )

    def __repr__(self) -> str:
        return f"AlpacaPaperBroker(paper=True, url={self._url!r})"

    def _call(self, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except APIError as exc:
            status = exc.status_code
            msg, code = _api_message(exc)
            if status is None or status >= 500 or status == 429:
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

    # -- orders ------------------------------------------------------------------------------------------------

    def submit_bracket(self, bracket: Bracket) -> Order:
        b = bracket
        tp, sl = b.edge_prices()
        common = dict(
            symbol=b.symbol,
            qty=b.qty,
            side=OrderSide(b.side.value),
            time_in_force=TimeInForce(b.time_in_force),
            order_class=OrderClass.BRACKET,
            client_order_id=b.client_order_id,
            take_profit=TakeProfitRequest(limit_price=float(tp)),
            stop_loss=StopLossRequest(stop_price=float(sl)),
        )
        if b.entry_type is EntryType.limit:
            req = LimitOrderRequest(limit_price=float(round_to_tick(b.entry_limit, self.tick)), **common)
        else:
            req = MarketOrderRequest(**common)
        log.info(
            "alpaca: submit bracket %s %s %s x%d tp=%s sl=%s",
            b.client_order_id,
            b.side,
            b.symbol,
            b.qty,
            tp,
            sl,
        )
        try:
            o = self._call(self._client.submit_order, req)
        except DuplicateOrder as exc:
            existing = self.get_order_by_client_id(b.client_order_id)
            raise DuplicateOrder(exc.message, existing=existing, code=exc.code) from None
        return _to_order(o, is_leg=False)

    def replace_stop(self, order_id: str, new_stop: float | Decimal) -> Order:
        old = self.get_order(order_id)
        if old.role is not OrderRole.stop_loss:
            raise OrderRejected(f"order {order_id} is not a stop-loss leg")
        price = round_exit(new_stop, old.side.opposite, "stop_loss", self.tick)
        log.info("alpaca: replace stop %s -> %s", order_id, price)
        o = self._call(
            self._client.replace_order_by_id, order_id, ReplaceOrderRequest(stop_price=float(price))
        )
        return _to_order(o, parent_id=old.parent_id, is_leg=True)

    def cancel(self, order_id: str) -> None:
        log.info("alpaca: cancel %s", order_id)
        self._call(self._client.cancel_order_by_id, order_id)

    def get_orders(self, status: str = "open") -> list[Order]:
        if status not in ("open", "closed", "all"):
            raise ValueError(f"status must be open, closed or all, got {status!r}")
        req = GetOrdersRequest(status=QueryOrderStatus(status), nested=True, limit=500)
        orders = [_to_order(o) for o in self._call(self._client.get_orders, req)]
        if status == "open":
            orders = [o for o in orders if o.bracket_open]
        elif status == "closed":
            orders = [o for o in orders if not o.bracket_open]
        return sorted(orders, key=lambda o: (o.submitted_at or datetime.min, o.client_order_id))

    def get_order(self, order_id: str) -> Order:
        return _to_order(self._call(self._client.get_order_by_id, order_id, GetOrderByIdRequest(nested=True)))

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        try:
            return _to_order(self._call(self._client.get_order_by_client_id, client_order_id))
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
        """The market moved by itself: the fills Alpaca made since the previous call (all on the first)."""
        fills = [f for f in self.fills(since=self._seen_fills) if (f.order_id, f.ts) not in self._seen_keys]
        if fills:
            self._seen_fills = max(f.ts for f in fills)
            self._seen_keys = {(f.order_id, f.ts) for f in fills if f.ts == self._seen_fills}
        return AdvanceReport(0, fills, None)

    def fills(self, since: datetime | None = None) -> list[Fill]:
        req = GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True, limit=500)
        out = []
        for parent in self._call(self._client.get_orders, req):
            p = _to_order(parent)
            for o in (p, *p.legs):
                if o.filled_qty > 0 and o.filled_at is not None and (since is None or o.filled_at >= since):
                    out.append(
                        Fill(
                            o.id,
                            o.client_order_id,
                            o.symbol,
                            o.side,
                            o.filled_qty,
                            o.filled_avg_price or Decimal(0),
                            Decimal(0),
                            o.filled_at,
                            o.role,
                        )  # fmt: skip
                    )
        return sorted(out, key=lambda f: (f.ts, f.order_id))
