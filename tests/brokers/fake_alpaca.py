"""A fake Alpaca paper trading API on 127.0.0.1: alpaca-py's ``TradingClient`` runs unmodified against it
(``url_override``), the way alpaca-py's own tests answer its requests with recorded JSON.

It keeps Alpaca's order rules (docs/trading.md section 7 says which are verified against Alpaca's
documentation and which only against users' reports):

- ``POST /v2/orders``: simple, bracket and OCO orders.
  - A used ``client_order_id`` (also after a cancel) -> 422 ``client_order_id must be unique``; more than
    128 characters -> 422. On a bracket or an OCO it names the parent only: legs get Alpaca's own ids.
  - **Wash trades**: an order opposite in side to any open order in the same symbol (a bracket's held
    legs included) -> 422 42210000 ``potential wash trade detected. use complex orders``.
  - **Brackets are entry orders**: on a symbol already held, or with an entry that is not market/limit ->
    422 42210000 ``bracket orders must be entry orders``. Whole shares, day/gtc, and for a buy
    ``take_profit.limit_price >= base + 0.01`` and ``stop_loss.stop_price <= base - 0.01`` with base the
    symbol's price (``set_price``), mirrored for a sell. The parent starts ``accepted``, its legs ``held``;
    when the entry fills the take-profit goes ``new`` and the stop stays ``held`` until it triggers.
  - **OCO** (``order_class=oco``, type limit, ``take_profit.limit_price`` + ``stop_loss.stop_price``): an
    exit. Its quantity must be held and not promised to another open exit, else 403 ``insufficient qty
    available for order (requested: N, available: M)``. The parent is the take-profit limit (``new``),
    its one leg the stop (``held``).
  - Buying power: an order that opens or adds to a position holds ``qty x price``; above the buying power
    -> 403 ``insufficient buying power``.
  - **Pattern day trader protection** (paper simulates it): with equity under $25,000 and three day trades
    in the last five business days, an order that could make a fourth (a bracket, whose entry and exit may
    both fill today; or one that closes a position opened today) -> 403 40310100 ``trade denied due to
    pattern day trading protection``. A day trade is an opening fill closed later the same day.
- ``PATCH /v2/orders/{id}`` (replace): refused while the order is ``accepted`` or ``pending_*`` (or done)
  -> 422 ``cannot replace order in <status> status``; otherwise a new order that ``replaces`` the old one,
  which becomes ``replaced``.
- ``DELETE /v2/orders/{id}``: an entry takes its legs with it; an OCO member (or a bracket leg) its whole
  group.
- ``GET /v2/orders`` (``status`` open|closed|all, ``nested``, ``symbols``, ``limit`` <= 500),
  ``GET /v2/orders/{id}``, ``GET /v2/orders:by_client_order_id``, ``GET /v2/positions``,
  ``GET /v2/account`` (with ``daytrade_count``), ``GET /v2/clock``.
- **Rate limit**: ``rate_limit`` requests (200) per ``rate_window_s`` (60 s) per account, then 429
  ``rate limit exceeded``; every answer carries ``X-Ratelimit-Limit``, ``X-Ratelimit-Remaining`` and
  ``X-Ratelimit-Reset`` (epoch seconds). Tests set a small limit to reach it cheaply.

Test controls (Python, not HTTP): ``set_price``; ``fill_market_orders=True`` (a simple market order fills
as it arrives, at the symbol's price, as in a market in session); ``fill(order_id, price)`` (an entry releases its legs; a
leg or an OCO member cancels the rest of its group; cash, positions and day trades follow);
``set_status(order_id, status)`` (e.g. ``pending_replace``); ``day_trades`` (dates); and
``fail_next(kind)`` with kind ``reject`` (422), ``duplicate`` (422 duplicate client id), ``500``, ``hang``
(no answer until the client gave up) or ``hang_after`` (the request takes effect, then no answer).
Every request is logged in ``requests`` (method, path, body).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

OPEN = {"new", "accepted", "pending_new", "held", "partially_filled", "pending_cancel", "pending_replace"}
NOT_REPLACEABLE = {"accepted", "pending_new", "pending_cancel", "pending_replace"}
TICK = Decimal("0.01")
MAX_CLIENT_ORDER_ID = 128
PDT_EQUITY = Decimal("25000")
PDT_MAX_DAY_TRADES = 3  # the fourth in five business days makes a pattern day trader
WASH_TRADE = "potential wash trade detected. use complex orders"
NOT_ENTRY = "bracket orders must be entry orders"
PDT_DENIED = "trade denied due to pattern day trading protection"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ticking_clock(start: datetime) -> Callable[[], datetime]:
    """Deterministic time: one second later on every reading."""
    n = itertools.count()
    return lambda: start + timedelta(seconds=next(n))


def _err(status: int, code: int, message: str) -> tuple[int, dict]:
    return status, {"code": code, "message": message}


def business_days_back(day: date, n: int) -> date:
    """The first of the ``n`` business days (Monday to Friday) ending on ``day``."""
    d, left = day, n
    while True:
        if d.weekday() < 5:
            left -= 1
            if left == 0:
                return d
        d -= timedelta(days=1)


class FakeAlpaca:
    def __init__(
        self,
        api_key: str = "fake-key-id",
        secret_key: str = "fake-secret",
        cash: Decimal | str = Decimal("100000"),
        clock: Callable[[], datetime] | None = None,
        hang_s: float = 5.0,
        *,
        rate_limit: int = 200,
        rate_window_s: float = 60.0,
        fill_market_orders: bool = False,
    ) -> None:
        self.api_key, self.secret_key = api_key, secret_key
        self.cash = Decimal(str(cash))
        self.clock = clock or _ticking_clock(datetime(2024, 1, 2, 15, 0, tzinfo=UTC))
        self.hang_s = hang_s
        self.fill_market_orders = fill_market_orders  # as a market in session would: at once, at the price
        self.prices: dict[str, Decimal] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # id -> Alpaca order JSON (legs kept as ids)
        self.leg_ids: dict[str, list[str]] = {}  # parent id -> current leg ids
        self.parent_of: dict[str, str] = {}
        self.reserve: dict[str, Decimal] = {}  # open opening order id -> notional held from buying power
        self.positions: dict[str, tuple[int, Decimal]] = {}
        self.opened_on: dict[str, date] = {}  # symbol -> day of an opening fill not yet closed
        self.day_trades: list[date] = []
        self.rate_limit, self.rate_window_s = rate_limit, rate_window_s
        self._window: tuple[float, float, int] | None = None  # (monotonic start, wall start, requests)
        self.requests: list[tuple[str, str, Any]] = []
        self.faults: list[tuple[str, str | None]] = []
        self._n = 0
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAlpaca:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, payload, headers = fake.handle(method, self.path, dict(self.headers), body)
                if status == 0:  # hung: the client has gone
                    self.close_connection = True
                    return
                data = b"" if payload is None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def do_PATCH(self) -> None:  # noqa: N802
                self._serve("PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                self._serve("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-alpaca", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- controls ----------------------------------------------------------------------------------------------

    def set_price(self, symbol: str, price) -> None:
        with self._lock:
            self.prices[symbol] = Decimal(str(price))

    def set_status(self, order_id: str, status: str) -> None:
        with self._lock:
            self.orders[order_id].update(status=status, updated_at=_iso(self.clock()))

    def fail_next(self, kind: str, method: str | None = None, times: int = 1) -> None:
        """Make the next ``times`` requests (of ``method``, if given) fail as ``kind``."""
        if kind not in ("reject", "duplicate", "500", "hang", "hang_after"):
            raise ValueError(kind)
        with self._lock:
            self.faults.extend([(kind, method)] * times)

    def posted_orders(self) -> list[dict]:
        return [body for method, path, body in self.requests if method == "POST" and path == "/v2/orders"]

    def by_client_id(self, client_order_id: str) -> dict | None:
        return next((o for o in self.orders.values() if o["client_order_id"] == client_order_id), None)

    def fill(self, order_id: str, price) -> dict:
        """Fill an open order completely at ``price``: an entry's legs go live (the take-profit ``new``, the
        stop stays ``held``); a bracket leg or an OCO member cancels the rest of its group."""
        price = Decimal(str(price))
        with self._lock:
            o = self.orders[order_id]
            assert o["status"] in OPEN, f"order {order_id} is {o['status']}"
            parent = self.parent_of.get(order_id)
            if parent is not None and self.orders[parent]["order_class"] == "bracket":
                assert self.orders[parent]["status"] == "filled", "a bracket's legs wait for its entry"
            now = self.clock()
            stamp = _iso(now)
            qty = int(o["qty"])
            o.update(status="filled", filled_qty=str(qty), filled_avg_price=str(price), filled_at=stamp,
                     updated_at=stamp)  # fmt: skip
            self._settle(o["symbol"], 1 if o["side"] == "buy" else -1, qty, price, now.date())
            self.reserve.pop(order_id, None)
            cls = o["order_class"]
            if cls == "bracket" and parent is None:
                for leg in self.leg_ids.get(order_id, []):
                    if self.orders[leg]["status"] == "held" and self.orders[leg]["type"] == "limit":
                        self.orders[leg].update(status="new", updated_at=stamp)
            elif cls in ("bracket", "oco"):
                for i in self._group(order_id):
                    if i != order_id and self.orders[i]["status"] in OPEN:
                        self.orders[i].update(status="canceled", canceled_at=stamp, updated_at=stamp)
            return self._view(order_id, nested=True)

    def _settle(self, symbol: str, sign: int, qty: int, price: Decimal, day: date) -> None:
        self.cash -= sign * qty * price
        held, avg = self.positions.get(symbol, (0, Decimal(0)))
        new = held + sign * qty
        opening = held == 0 or (held > 0) == (sign > 0)
        if opening:
            self.opened_on[symbol] = day
        elif self.opened_on.get(symbol) == day:  # closes (part of) a position opened today: a day trade
            self.day_trades.append(day)
            self.opened_on.pop(symbol)
        if new == 0:
            self.positions.pop(symbol, None)
        elif opening:
            self.positions[symbol] = (new, (avg * abs(held) + price * qty) / abs(new))
        else:
            self.positions[symbol] = (new, avg if (held > 0) == (new > 0) else price)
        self.prices[symbol] = price

    # -- HTTP --------------------------------------------------------------------------------------------------

    def _count(self) -> tuple[bool, dict[str, str]]:
        """One more request in the rate window: (allowed, the X-Ratelimit-* headers)."""
        now, wall = time.monotonic(), time.time()
        start, wall_start, used = self._window or (now, wall, 0)
        if now - start >= self.rate_window_s:
            start, wall_start, used = now, wall, 0
        allowed = used < self.rate_limit
        used += allowed
        self._window = (start, wall_start, used)
        headers = {
            "X-Ratelimit-Limit": str(self.rate_limit),
            "X-Ratelimit-Remaining": str(max(0, self.rate_limit - used)),
            "X-Ratelimit-Reset": str(int(wall_start + self.rate_window_s)),
        }
        return allowed, headers

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((method, path, body))
            fault = next((f for f in self.faults if f[1] in (None, method)), None)
            if fault:
                self.faults.remove(fault)
        kind = fault[0] if fault else None
        if kind == "hang":
            self._release.wait(self.hang_s)
            return 0, None, {}
        if kind == "500":
            return (*_err(500, 50010000, "internal server error"), {})
        if kind == "reject":
            return (*_err(422, 42210000, "order rejected by the fake: test"), {})
        if kind == "duplicate":
            return (*_err(422, 40010001, "client_order_id must be unique"), {})
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("apca-api-key-id") != self.api_key or h.get("apca-api-secret-key") != self.secret_key:
            return (*_err(401, 40110000, "request is not authorized"), {})
        with self._lock:
            allowed, limits = self._count()
            if not allowed:
                return (*_err(429, 42910000, "rate limit exceeded"), limits)
            status, payload = self._route(method, path, query, body)
        if kind == "hang_after":
            self._release.wait(self.hang_s)
            return 0, None, {}
        return status, payload, limits

    def _route(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        nested = q.get("nested", "false").lower() == "true"
        if path == "/v2/orders" and method == "POST":
            return self._submit(body or {})
        if path == "/v2/orders" and method == "GET":
            symbols = set(q["symbols"].split(",")) if q.get("symbols") else None
            limit = min(int(q.get("limit", 50)), 500)
            return 200, self._list(q.get("status", "open"), nested, limit, symbols)
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            o = self.by_client_id(q.get("client_order_id", ""))
            return (200, self._view(o["id"], nested=True)) if o else _err(404, 40410000, "order not found")
        if path.startswith("/v2/orders/"):
            oid = path.rsplit("/", 1)[1]
            if oid not in self.orders:
                return _err(404, 40410000, "order not found")
            if method == "GET":
                return 200, self._view(oid, nested=nested)
            if method == "PATCH":
                return self._replace(oid, body or {})
            if method == "DELETE":
                return self._cancel(oid)
        if path == "/v2/positions" and method == "GET":
            return 200, [self._position(s) for s in sorted(self.positions)]
        if path == "/v2/account" and method == "GET":
            return 200, self._account()
        if path == "/v2/clock" and method == "GET":
            now = _iso(self.clock())
            return 200, {"timestamp": now, "is_open": True, "next_open": now, "next_close": now}
        return _err(404, 40410000, f"endpoint not found: {method} {path}")

    # -- state -------------------------------------------------------------------------------------------------

    def _new_id(self) -> str:
        self._n += 1
        return str(uuid.UUID(int=self._n))

    def _order(
        self, symbol, qty, side, typ, status, coid, order_class, limit=None, stop=None, tif="day"
    ) -> dict:
        oid, now = self._new_id(), _iso(self.clock())
        self.orders[oid] = {
            "id": oid,
            "client_order_id": coid or str(uuid.uuid5(uuid.NAMESPACE_OID, oid)),  # legs: Alpaca's own id
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "symbol": symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": str(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": order_class,
            "order_type": typ,
            "type": typ,
            "side": side,
            "time_in_force": tif,
            "limit_price": None if limit is None else str(limit),
            "stop_price": None if stop is None else str(stop),
            "status": status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }
        return self.orders[oid]

    def _group(self, oid: str) -> list[str]:
        """An order with the other members of its group: a bracket's legs, or an OCO's parent and leg."""
        parent = self.parent_of.get(oid, oid)
        if self.orders[parent]["order_class"] == "bracket" and parent != oid:
            return list(self.leg_ids[parent])  # a bracket leg: its sibling, not the (filled) entry
        return [parent, *self.leg_ids.get(parent, [])]

    def _open_in(self, symbol: str) -> list[dict]:
        return [o for o in self.orders.values() if o["symbol"] == symbol and o["status"] in OPEN]

    def _exit_qty_available(self, symbol: str, side: str) -> int:
        """Shares an exit on ``side`` may still close: the position less the open exits already promised."""
        held = self.positions.get(symbol, (0, Decimal(0)))[0]
        if held == 0 or (held > 0) == (side == "buy"):
            return 0
        promised = 0
        for o in self._open_in(symbol):
            if o["side"] != side or o["id"] in self.parent_of:
                continue  # legs share their parent's quantity
            if o["order_class"] == "bracket":  # an exit only through its legs, once the entry filled
                continue
            promised += int(o["qty"])
        for pid, legs in self.leg_ids.items():
            p = self.orders[pid]
            if p["symbol"] == symbol and p["order_class"] == "bracket" and p["status"] == "filled":
                live = [self.orders[i] for i in legs if self.orders[i]["status"] in OPEN]
                promised += int(live[0]["qty"]) if live else 0
        return max(0, abs(held) - promised)

    def _equity(self) -> Decimal:
        value, _ = self._marks()
        return self.cash + value

    def day_trade_count(self, today: date | None = None) -> int:
        today = today or self.clock().date()
        first = business_days_back(today, 5)
        return sum(first <= d <= today and d.weekday() < 5 for d in self.day_trades)

    def _pdt_denies(self, symbol: str, side: str, order_class: str) -> bool:
        if self._equity() >= PDT_EQUITY or self.day_trade_count() < PDT_MAX_DAY_TRADES:
            return False
        if order_class == "bracket":  # a buy and a sell that may both fill today
            return True
        held = self.positions.get(symbol, (0, Decimal(0)))[0]
        closing = held != 0 and (held > 0) != (side == "buy")
        return closing and self.opened_on.get(symbol) == self.clock().date()

    def _submit(self, b: dict) -> tuple[int, Any]:
        symbol, side, coid = b.get("symbol"), b.get("side"), b.get("client_order_id")
        if coid and len(coid) > MAX_CLIENT_ORDER_ID:
            return _err(
                422, 40010001, f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters"
            )
        if coid and self.by_client_id(coid) is not None:
            return _err(422, 40010001, "client_order_id must be unique")
        if symbol not in self.prices:
            return _err(422, 40010001, f'asset "{symbol}" not found')
        qty = Decimal(str(b.get("qty", "0")))
        base = self.prices[symbol]
        order_class = b.get("order_class") or "simple"
        typ = b.get("type", "market")
        tif = b.get("time_in_force", "day")
        held = self.positions.get(symbol, (0, Decimal(0)))[0]
        if order_class == "bracket" and (held != 0 or typ not in ("market", "limit")):
            return _err(422, 42210000, NOT_ENTRY)
        if any(o["side"] != side for o in self._open_in(symbol)):
            return _err(422, 42210000, WASH_TRADE)
        if order_class in ("bracket", "oco"):
            if qty != int(qty) or qty <= 0:
                return _err(422, 40010001, f"qty must be a whole number for {order_class} orders")
            if tif not in ("day", "gtc"):
                return _err(422, 40010001, f"{order_class} orders must be day or gtc")
            if not (b.get("take_profit") or {}).get("limit_price") or not (b.get("stop_loss") or {}).get(
                "stop_price"
            ):
                return _err(422, 40010001, f"{order_class} orders require take_profit and stop_loss")
        if order_class == "bracket":
            tp = Decimal(str(b["take_profit"]["limit_price"]))
            sl = Decimal(str(b["stop_loss"]["stop_price"]))
            if side == "buy" and tp < base + TICK:
                return _err(422, 42210000, f"take_profit.limit_price must be >= base_price + {TICK}")
            if side == "buy" and sl > base - TICK:
                return _err(422, 42210000, f"stop_loss.stop_price must be <= base_price - {TICK}")
            if side == "sell" and tp > base - TICK:
                return _err(422, 42210000, f"take_profit.limit_price must be <= base_price - {TICK}")
            if side == "sell" and sl < base + TICK:
                return _err(422, 42210000, f"stop_loss.stop_price must be >= base_price + {TICK}")
        if order_class == "oco":
            if typ != "limit":
                return _err(422, 40010001, "oco orders must be limit orders")
            available = self._exit_qty_available(symbol, side)
            if qty > available:
                asked = int(qty) if qty == int(qty) else qty
                return _err(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {asked}, available: {available})",
                )
        if self._pdt_denies(symbol, side, order_class):
            return _err(403, 40310100, PDT_DENIED)
        opening = order_class != "oco" and (held == 0 or (held > 0) == (side == "buy"))
        if opening and qty * base > self._buying_power():
            return _err(403, 40310000, "insufficient buying power")
        if order_class == "oco":
            parent = self._order(symbol, int(qty), side, "limit", "new", coid, "oco",
                                 limit=b["take_profit"]["limit_price"], tif=tif)  # fmt: skip
            stop = self._order(symbol, int(qty), side, "stop", "held", None, "oco",
                               stop=b["stop_loss"]["stop_price"], tif=tif)  # fmt: skip
            self.leg_ids[parent["id"]] = [stop["id"]]
            self.parent_of[stop["id"]] = parent["id"]
            return 200, self._view(parent["id"], nested=True)
        parent = self._order(symbol, int(qty), side, typ, "accepted", coid, order_class, b.get("limit_price"),
                             tif=tif)  # fmt: skip
        if opening:
            self.reserve[parent["id"]] = qty * base
        if self.fill_market_orders and typ == "market" and order_class == "simple":
            self.fill(parent["id"], base)
        if order_class == "bracket":
            exit_side = "sell" if side == "buy" else "buy"
            tp_leg = self._order(symbol, int(qty), exit_side, "limit", "held", None, "bracket",
                                 limit=b["take_profit"]["limit_price"], tif=tif)  # fmt: skip
            sl_leg = self._order(symbol, int(qty), exit_side, "stop", "held", None, "bracket",
                                 stop=b["stop_loss"]["stop_price"], tif=tif)  # fmt: skip
            self.leg_ids[parent["id"]] = [tp_leg["id"], sl_leg["id"]]
            self.parent_of[tp_leg["id"]] = self.parent_of[sl_leg["id"]] = parent["id"]
        return 200, self._view(parent["id"], nested=True)

    def _replace(self, oid: str, b: dict) -> tuple[int, Any]:
        old = self.orders[oid]
        if old["status"] in NOT_REPLACEABLE or old["status"] not in OPEN:
            return _err(422, 42210000, f"cannot replace order in {old['status']} status")
        new = self._order(
            old["symbol"], int(b.get("qty") or old["qty"]), old["side"], old["type"], old["status"],
            b.get("client_order_id"), old["order_class"], b.get("limit_price", old["limit_price"]),
            b.get("stop_price", old["stop_price"]), b.get("time_in_force") or old["time_in_force"],
        )  # fmt: skip
        new["replaces"] = oid
        now = _iso(self.clock())
        old.update(status="replaced", replaced_by=new["id"], replaced_at=now, updated_at=now)
        parent = self.parent_of.get(oid)
        if parent:
            self.parent_of[new["id"]] = parent
            self.leg_ids[parent] = [new["id"] if i == oid else i for i in self.leg_ids[parent]]
        if oid in self.leg_ids:  # a replaced OCO parent hands its leg on
            self.leg_ids[new["id"]] = self.leg_ids.pop(oid)
            for leg in self.leg_ids[new["id"]]:
                self.parent_of[leg] = new["id"]
        if oid in self.reserve:
            self.reserve[new["id"]] = self.reserve.pop(oid)
        return 200, self._view(new["id"], nested=True)

    def _cancel(self, oid: str) -> tuple[int, Any]:
        o = self.orders[oid]
        if o["status"] not in OPEN:
            return _err(422, 42210000, f"order is not cancelable (status {o['status']})")
        now = _iso(self.clock())
        for i in self._group(oid):
            if self.orders[i]["status"] in OPEN:
                self.orders[i].update(status="canceled", canceled_at=now, updated_at=now)
                self.reserve.pop(i, None)
        return 204, None

    def _view(self, oid: str, nested: bool) -> dict:
        o = dict(self.orders[oid])
        if nested and oid in self.leg_ids:
            o["legs"] = [dict(self.orders[i]) for i in self.leg_ids[oid]]
        return o

    def _bracket_open(self, oid: str) -> bool:
        return self.orders[oid]["status"] in OPEN or any(
            self.orders[i]["status"] in OPEN for i in self.leg_ids.get(oid, [])
        )

    def _list(self, status: str, nested: bool, limit: int, symbols: set[str] | None = None) -> list[dict]:
        if nested:
            ids = [i for i in self.orders if i not in self.parent_of]
            is_open = self._bracket_open
        else:
            ids = list(self.orders)
            is_open = lambda i: self.orders[i]["status"] in OPEN  # noqa: E731
        if symbols is not None:
            ids = [i for i in ids if self.orders[i]["symbol"] in symbols]
        if status == "open":
            ids = [i for i in ids if is_open(i)]
        elif status == "closed":
            ids = [i for i in ids if not is_open(i)]
        ids = sorted(ids, key=lambda i: (self.orders[i]["submitted_at"], int(uuid.UUID(i))), reverse=True)
        return [self._view(i, nested) for i in ids[:limit]]

    def _marks(self) -> tuple[Decimal, Decimal]:
        long_short, gross = Decimal(0), Decimal(0)
        for sym, (qty, avg) in self.positions.items():
            px = self.prices.get(sym, avg)
            long_short += qty * px
            gross += abs(qty) * px
        return long_short, gross

    def _buying_power(self) -> Decimal:
        value, gross = self._marks()
        return max(Decimal(0), self.cash + value - gross - sum(self.reserve.values(), Decimal(0)))

    def _position(self, sym: str) -> dict:
        qty, avg = self.positions[sym]
        px = self.prices.get(sym, avg)
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, sym)),
            "symbol": sym,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "avg_entry_price": str(avg),
            "qty": str(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": str(qty * px),
            "cost_basis": str(abs(qty) * avg),
            "unrealized_pl": str(qty * (px - avg)),
            "current_price": str(px),
            "qty_available": str(qty),
        }

    def _account(self) -> dict:
        equity = self._equity()
        return {
            "id": "11111111-2222-3333-4444-555555555555",
            "account_number": "PA0FAKE",
            "status": "ACTIVE",
            "currency": "USD",
            "cash": str(self.cash),
            "equity": str(equity),
            "last_equity": str(equity),
            "portfolio_value": str(equity),
            "buying_power": str(self._buying_power()),
            "pattern_day_trader": False,
            "daytrade_count": self.day_trade_count(),
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": _iso(self.clock()),
            "multiplier": "1",
            "shorting_enabled": True,
        }
