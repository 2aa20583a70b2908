"""A fake Alpaca paper trading API on 127.0.0.1: alpaca-py's ``TradingClient`` runs unmodified against it
(``url_override``), the way alpaca-py's own tests answer its requests with recorded JSON.

Endpoints (Alpaca's paths and JSON shapes, amounts as strings):

- ``POST /v2/orders``: simple and bracket orders. A bracket is checked like Alpaca does: whole shares;
  for a buy, ``take_profit.limit_price >= base + 0.01`` and ``stop_loss.stop_price <= base - 0.01`` with
  base the symbol's current price (``set_price``), mirrored for a sell; a used ``client_order_id``
  -> 422 ``{"code": 40010001, "message": "client_order_id must be unique"}``; notional above the buying
  power -> 403 ``insufficient buying power``. The parent starts ``accepted``, its legs ``held``.
- ``GET /v2/orders`` (``status`` open|closed|all, ``nested``), ``GET /v2/orders/{id}``,
  ``GET /v2/orders:by_client_order_id``, ``PATCH /v2/orders/{id}`` (replace: a new order that
  ``replaces`` the old one, which becomes ``replaced``), ``DELETE /v2/orders/{id}`` (an entry takes its
  legs with it; a leg its OCO sibling).
- ``GET /v2/positions``, ``GET /v2/account``, ``GET /v2/clock``.

Test controls (Python, not HTTP): ``set_price``, ``fill(order_id, price)`` (an entry releases its legs; a
leg cancels its sibling; cash and positions follow), and ``fail_next(kind)`` with kind ``reject`` (422),
``duplicate`` (422 duplicate client id), ``500``, ``hang`` (no answer until the client gave up) or
``hang_after`` (the request takes effect, then no answer). 429 and 504 are never used: alpaca-py retries
them three times with 3 s sleeps. Every request is logged in ``requests`` (method, path, body).
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

OPEN = {"new", "accepted", "pending_new", "held", "partially_filled", "pending_cancel", "pending_replace"}
TICK = Decimal("0.01")


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ticking_clock(start: datetime) -> Callable[[], datetime]:
    """Deterministic time: one second later on every reading."""
    n = itertools.count()
    return lambda: start + timedelta(seconds=next(n))


def _err(status: int, code: int, message: str) -> tuple[int, dict]:
    return status, {"code": code, "message": message}


class FakeAlpaca:
    def __init__(
        self,
        api_key: str = "fake-key-id",
        secret_key: str = "fake-secret",
        cash: Decimal | str = Decimal("100000"),
        clock: Callable[[], datetime] | None = None,
        hang_s: float = 5.0,
    ) -> None:
        self.api_key, self.secret_key = api_key, secret_key
        self.cash = Decimal(str(cash))
        self.clock = clock or _ticking_clock(datetime(2024, 1, 2, 15, 0, tzinfo=UTC))
        self.hang_s = hang_s
        self.prices: dict[str, Decimal] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # id -> Alpaca order JSON (legs kept as ids)
        self.leg_ids: dict[str, list[str]] = {}  # parent id -> current leg ids
        self.parent_of: dict[str, str] = {}
        self.reserve: dict[str, Decimal] = {}  # open entry id -> notional held from buying power
        self.positions: dict[str, tuple[int, Decimal]] = {}
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
                status, payload = fake.handle(method, self.path, dict(self.headers), body)
                if status == 0:  # hung: the client has gone
                    self.close_connection = True
                    return
                data = b"" if payload is None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
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

    def fail_next(self, kind: str, method: str | None = None, times: int = 1) -> None:
        """Make the next ``times`` requests (of ``method``, if given) fail as ``kind``."""
        if kind not in ("reject", "duplicate", "500", "hang", "hang_after"):
            raise ValueError(kind)
        with self._lock:
            self.faults.extend([(kind, method)] * times)

    def posted_orders(self) -> list[dict]:
        return [body for method, path, body in self.requests if method == "POST" and path == "/v2/orders"]

    def fill(self, order_id: str, price) -> dict:
        """Fill an open order completely at ``price`` (an entry's legs go live; a leg cancels its sibling)."""
        price = Decimal(str(price))
        with self._lock:
            o = self.orders[order_id]
            assert o["status"] in OPEN, f"order {order_id} is {o['status']}"
            now = _iso(self.clock())
            qty = int(o["qty"])
            o.update(
                status="filled",
                filled_qty=str(qty),
                filled_avg_price=str(price),
                filled_at=now,
                updated_at=now,
            )
            sign = 1 if o["side"] == "buy" else -1
            self.cash -= sign * qty * price
            held, avg = self.positions.get(o["symbol"], (0, Decimal(0)))
            new = held + sign * qty
            if new == 0:
                self.positions.pop(o["symbol"], None)
            elif held == 0 or (held > 0) == (sign > 0):
                self.positions[o["symbol"]] = (new, (avg * abs(held) + price * qty) / abs(new))
            else:
                self.positions[o["symbol"]] = (new, avg if (held > 0) == (new > 0) else price)
            self.prices[o["symbol"]] = price
            self.reserve.pop(order_id, None)
            if order_id in self.leg_ids:
                for leg in self.leg_ids[order_id]:
                    if self.orders[leg]["status"] == "held":
                        self.orders[leg].update(status="new", updated_at=now)
            elif order_id in self.parent_of:
                for leg in self.leg_ids[self.parent_of[order_id]]:
                    if leg != order_id and self.orders[leg]["status"] in OPEN:
                        self.orders[leg].update(status="canceled", canceled_at=now, updated_at=now)
            return self._view(order_id, nested=True)

    # -- HTTP --------------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
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
            return 0, None
        if kind == "500":
            return _err(500, 50010000, "internal server error")
        if kind == "reject":
            return _err(422, 42210000, "order rejected by the fake: test")
        if kind == "duplicate":
            return _err(422, 40010001, "client_order_id must be unique")
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("apca-api-key-id") != self.api_key or h.get("apca-api-secret-key") != self.secret_key:
            return _err(401, 40110000, "request is not authorized")
        with self._lock:
            status, payload = self._route(method, path, query, body)
        if kind == "hang_after":
            self._release.wait(self.hang_s)
            return 0, None
        return status, payload

    def _route(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        nested = q.get("nested", "false").lower() == "true"
        if path == "/v2/orders" and method == "POST":
            return self._submit(body or {})
        if path == "/v2/orders" and method == "GET":
            return 200, self._list(q.get("status", "open"), nested, int(q.get("limit", 50)))
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            oid = next(
                (i for i, o in self.orders.items() if o["client_order_id"] == q.get("client_order_id")), None
            )
            return (200, self._view(oid, nested=True)) if oid else _err(404, 40410000, "order not found")
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
            "client_order_id": coid or f"fake-leg-{oid}",
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

    def _submit(self, b: dict) -> tuple[int, Any]:
        symbol, side, coid = b.get("symbol"), b.get("side"), b.get("client_order_id")
        if coid and any(o["client_order_id"] == coid for o in self.orders.values()):
            return _err(422, 40010001, "client_order_id must be unique")
        if symbol not in self.prices:
            return _err(422, 40010001, f'asset "{symbol}" not found')
        qty = Decimal(str(b.get("qty", "0")))
        base = self.prices[symbol]
        order_class = b.get("order_class") or "simple"
        if order_class == "bracket":
            if qty != int(qty) or qty <= 0:
                return _err(422, 40010001, "qty must be a whole number for bracket orders")
            if b.get("time_in_force") not in ("day", "gtc"):
                return _err(422, 40010001, "bracket orders must be day or gtc")
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
        if qty * base > self._buying_power():
            return _err(403, 40310000, "insufficient buying power")
        typ = b.get("type", "market")
        parent = self._order(symbol, int(qty), side, typ, "accepted", coid, order_class, b.get("limit_price"),
                             tif=b.get("time_in_force", "day"))  # fmt: skip
        self.reserve[parent["id"]] = qty * base
        if order_class == "bracket":
            exit_side = "sell" if side == "buy" else "buy"
            tp_leg = self._order(symbol, int(qty), exit_side, "limit", "held", None, "bracket",
                                 limit=b["take_profit"]["limit_price"], tif=b.get("time_in_force", "day"))  # fmt: skip
            sl_leg = self._order(symbol, int(qty), exit_side, "stop", "held", None, "bracket",
                                 stop=b["stop_loss"]["stop_price"], tif=b.get("time_in_force", "day"))  # fmt: skip
            self.leg_ids[parent["id"]] = [tp_leg["id"], sl_leg["id"]]
            self.parent_of[tp_leg["id"]] = self.parent_of[sl_leg["id"]] = parent["id"]
        return 200, self._view(parent["id"], nested=True)

    def _replace(self, oid: str, b: dict) -> tuple[int, Any]:
        old = self.orders[oid]
        if old["status"] not in OPEN:
            return _err(422, 42210000, f"order is not replaceable (status {old['status']})")
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
        return 200, self._view(new["id"], nested=True)

    def _cancel(self, oid: str) -> tuple[int, Any]:
        o = self.orders[oid]
        if o["status"] not in OPEN:
            return _err(422, 42210000, f"order is not cancelable (status {o['status']})")
        now = _iso(self.clock())
        parent = self.parent_of.get(oid)
        ids = [oid, *self.leg_ids.get(oid, [])] if parent is None else self.leg_ids[parent]
        for i in ids:
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

    def _list(self, status: str, nested: bool, limit: int) -> list[dict]:
        if nested:
            ids = [i for i in self.orders if i not in self.parent_of]
            is_open = self._bracket_open
        else:
            ids = list(self.orders)
            is_open = lambda i: self.orders[i]["status"] in OPEN  # noqa: E731
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
        value, _ = self._marks()
        equity = self.cash + value
        return {
            "id": "11111111-2222-3333-4444-555555555555",
            "account_number": "PA0FAKE",
            "status": "ACTIVE",
            "currency": "USD",
            "cash": str(self.cash),
            "equity": str(equity),
            "portfolio_value": str(equity),
            "buying_power": str(self._buying_power()),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": _iso(self.clock()),
            "multiplier": "1",
            "shorting_enabled": True,
        }
