"""The four services of `coordinator demo`: orders, inventory, payments and
shipping, each a small aiohttp app on the participant kit with its domain in
memory, and the saga and transaction definitions the demo submits.

    orders     POST /orders {"sku","qty","customer"?}   -> 201 {"order_id"}
               POST /orders/cancel {"order"}            -> {"cancelled"}
    inventory  POST /reservations {"sku","qty"}         -> 201 {"reservation_id"}
                    | 409 out_of_stock | 422 unknown_sku
               POST /reservations/release {"reservation"} -> {"released"}
    payments   POST /charges {"amount","card"}          -> 201 {"charge_id"}
                    | 402 declined (card "declined" or amount > 1000)
               POST /charges/refund {"charge"}          -> {"refunded"}
    shipping   POST /shipments {"order","address"}      -> 201 {"shipment_id"}
               POST /shipments/cancel {"shipment"}      -> {"cancelled"}

Every route is a participant route (`saga_participant(MemoryStore())`): one
answer per `Idempotency-Key`, stale fences refused, a compensation whose
action never arrived answered by the kit alone. A compensation whose body
does not name the object (the coordinator cannot know the output of an
`unknown` step) undoes what its branch's action created, if anything;
nothing to undo is a 200. Inventory, payments and shipping also take part
in 2PC under `POST /tx/prepare|commit|abort` (`add_twopc_routes`):
inventory holds stock, payments authorises, shipping holds a slot; each
votes no when its action would fail.

Each action, compensation and 2PC phase calls `on_event(service, text)`,
e.g. ("orders", "orders: created order ord-1 (W-1 x3)"), so the demo can
print each step as it happens; an `on_event` that raises is logged only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from coordinator.client.participant import (
    CallbackHandler,
    MemoryStore,
    add_twopc_routes,
    participant_route,
    saga_participant,
)
from coordinator.cluster.launcher.local import serve_on_loopback

__all__ = ["INITIAL_STOCK", "DemoService", "demo_saga", "demo_transaction", "start_demo_services"]

log = logging.getLogger(__name__)

EventSink = Callable[[str, str], None]
INITIAL_STOCK = {"W-1": 10, "W-2": 5}
UNIT_PRICE = 25
CHARGE_AMOUNT_MAX = 1000  # payments declines anything above
DECLINED_CARD = "declined"
QTY_MAX = 1000
TEXT_CHARS_MAX = 200  # sku, customer, card, address, ids
OBJECTS_MAX = 10_000  # orders, reservations, charges, shipments, holds per service
STEP_TIMEOUT_S = 5
STEP_RETRY = {"max_attempts": 5, "backoff_s": 0.1, "max_backoff_s": 2}
SAGA_TIMEOUT_S = 60
TX_TIMEOUT_S = 10
CLOSE_TIMEOUT_S = 2.0
ACTION_DELAY_S_MAX = 60.0
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


_REFUSALS: dict[int, type[web.HTTPClientError]] = {
    400: web.HTTPBadRequest,
    402: web.HTTPPaymentRequired,
    409: web.HTTPConflict,
    422: web.HTTPUnprocessableEntity,
}


def _refuse(status: int, code: str, message: str) -> web.HTTPClientError:
    """A definite failure to raise; the kit stores and replays it."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return _REFUSALS[status](text=body, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise _refuse(400, "invalid", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _refuse(400, "invalid", "body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= TEXT_CHARS_MAX:
        raise _refuse(400, "invalid", f"{name} must be a string of 1..{TEXT_CHARS_MAX} characters")
    return value


def _count(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= QTY_MAX:
        raise _refuse(400, "invalid", f"{name} must be an integer 1..{QTY_MAX}")
    return value


def _amount(body: dict[str, Any]) -> float:
    value = body.get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _refuse(400, "invalid", "amount must be a positive number")
    return value


def _action_key(request: web.Request) -> str:
    """The action key of this compensation's saga branch."""
    return request.headers["Idempotency-Key"].rpartition("/")[0] + "/action"


class _Service:
    """What the four services share: events, objects, compensations, 2PC holds."""

    name = ""
    id_prefix = ""

    def __init__(self, on_event: EventSink, action_delay_s: float = 0.0) -> None:
        if not 0 <= action_delay_s <= ACTION_DELAY_S_MAX:
            raise ValueError(f"action_delay_s must be 0..{ACTION_DELAY_S_MAX}")
        self._on_event = on_event
        self._action_delay_s = action_delay_s
        self.store = MemoryStore()
        # The keys participant calls must be signed with (None: not checked).
        self.keys: Mapping[str, bytes] | None = None
        # What the actions created (id -> fields, with "undone") and what
        # prepared transactions hold (tx_id -> value).
        self.objects: dict[str, dict[str, Any]] = {}
        self.holds: dict[str, Any] = {}
        # The object each action key created: how a compensation whose body
        # does not name it finds what to undo.
        self._created_by_action_key: dict[str, str] = {}

    def emit(self, text: str) -> None:
        try:
            self._on_event(self.name, f"{self.name}: {text}")
        except Exception:
            log.exception("on_event failed for %s", self.name)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[saga_participant(self.store, keys=self.keys)])
        self.add_routes(app)
        return app

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def add_twopc_routes(self, app: web.Application) -> None:
        handler = CallbackHandler(prepare=self.prepare, commit=self.commit, abort=self.abort)
        add_twopc_routes(app, "/tx", handler, self.store, keys=self.keys)

    async def begin_action(self) -> None:
        """Before an action changes anything: wait `action_delay_s` (so the
        demo can kill a leader mid-call), then 503 (retried) when full."""
        await asyncio.sleep(self._action_delay_s)
        if len(self.objects) >= OBJECTS_MAX:
            raise web.HTTPServiceUnavailable(text=f"{self.name} holds OBJECTS_MAX objects")

    def record(self, request: web.Request, fields: dict[str, Any]) -> str:
        """Keep a new object created by this request's action; its id."""
        object_id = f"{self.id_prefix}-{len(self.objects) + 1}"
        self.objects[object_id] = {**fields, "undone": False}
        self._created_by_action_key[request.headers["Idempotency-Key"]] = object_id
        return object_id

    async def compensate(
        self, request: web.Request, field: str, answer: str, undo: Callable[[str, dict], str]
    ) -> web.Response:
        """Undo (once) the object the body's `field` names, else the one this
        branch's action created; nothing to undo is a 200 too."""
        body = await _body(request)
        object_id = body.get(field)
        if not isinstance(object_id, str):
            object_id = self._created_by_action_key.get(_action_key(request))
        found = self.objects.get(object_id) if object_id else None
        if found is None:
            self.emit(f"nothing to undo (no {field} {object_id})")
            return web.json_response({answer: None})
        if not found["undone"]:
            found["undone"] = True
            self.emit(undo(object_id, found))
        return web.json_response({answer: object_id})

    def prepare(self, tx_id: str, body: Any) -> bool:
        if tx_id in self.holds:
            return True  # prepare may be repeated
        full = len(self.holds) >= OBJECTS_MAX
        held = None if full else self.hold(body if isinstance(body, dict) else {})
        if held is None:
            self.emit(f"votes no on {tx_id}")
            return False
        self.holds[tx_id], text = held
        self.emit(f"prepared {tx_id}: {text}, votes yes")
        return True

    def commit(self, tx_id: str) -> None:
        self.holds.pop(tx_id, None)
        self.emit(f"committed {tx_id}")

    def abort(self, tx_id: str) -> None:
        held = self.holds.pop(tx_id, None)
        if held is not None:
            self.unhold(held)
        self.emit(f"aborted {tx_id}")

    def hold(self, body: dict[str, Any]) -> tuple[Any, str] | None:
        """What a prepare holds and how to say it, or None to vote no."""
        return None

    def unhold(self, held: Any) -> None:
        """Give back what an aborted prepare held."""


class Orders(_Service):
    name, id_prefix = "orders", "ord"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/orders", self.create)
        app.router.add_post("/orders/cancel", self.cancel)

    @participant_route
    async def create(self, request: web.Request) -> web.Response:
        body = await _body(request)
        await self.begin_action()
        sku, qty = _text(body, "sku"), _count(body, "qty")
        customer = _text(body, "customer", required=False)
        order_id = self.record(request, {"sku": sku, "qty": qty, "customer": customer})
        self.emit(f"created order {order_id} ({sku} x{qty})")
        return web.json_response({"order_id": order_id}, status=201)

    @participant_route
    async def cancel(self, request: web.Request) -> web.Response:
        return await self.compensate(request, "order", "cancelled", lambda order_id, _: f"cancelled order {order_id}")


class Inventory(_Service):
    name, id_prefix = "inventory", "res"

    def __init__(self, on_event: EventSink, action_delay_s: float = 0.0) -> None:
        super().__init__(on_event, action_delay_s)
        self.stock = dict(INITIAL_STOCK)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/reservations", self.reserve)
        app.router.add_post("/reservations/release", self.release)
        self.add_twopc_routes(app)

    @participant_route
    async def reserve(self, request: web.Request) -> web.Response:
        body = await _body(request)
        await self.begin_action()
        sku, qty = _text(body, "sku"), _count(body, "qty")
        if sku not in self.stock:
            self.emit(f"unknown sku {sku}")
            raise _refuse(422, "unknown_sku", f"no such sku {sku}")
        if self.stock[sku] < qty:
            self.emit(f"out of stock: {sku} x{qty} wanted, {self.stock[sku]} left")
            raise _refuse(409, "out_of_stock", f"{sku}: {qty} wanted, {self.stock[sku]} left")
        self.stock[sku] -= qty
        reservation_id = self.record(request, {"sku": sku, "qty": qty})
        self.emit(f"reserved {reservation_id} ({sku} x{qty}, {self.stock[sku]} left)")
        return web.json_response({"reservation_id": reservation_id}, status=201)

    @participant_route
    async def release(self, request: web.Request) -> web.Response:
        def undo(reservation_id: str, reservation: dict[str, Any]) -> str:
            sku, qty = reservation["sku"], reservation["qty"]
            self.stock[sku] += qty
            return f"released {reservation_id} ({sku} x{qty}, {self.stock[sku]} left)"

        return await self.compensate(request, "reservation", "released", undo)

    def hold(self, body: dict[str, Any]) -> tuple[Any, str] | None:
        sku, qty = body.get("sku"), body.get("qty")
        if not isinstance(sku, str) or sku not in self.stock or type(qty) is not int:
            return None
        if not 1 <= qty <= self.stock[sku]:
            return None
        self.stock[sku] -= qty
        return (sku, qty), f"holds {sku} x{qty} ({self.stock[sku]} left)"

    def unhold(self, held: Any) -> None:
        sku, qty = held
        self.stock[sku] += qty


class Payments(_Service):
    name, id_prefix = "payments", "ch"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/charges", self.charge)
        app.router.add_post("/charges/refund", self.refund)
        self.add_twopc_routes(app)

    @staticmethod
    def declines(amount: float, card: str) -> bool:
        return card == DECLINED_CARD or amount > CHARGE_AMOUNT_MAX

    @participant_route
    async def charge(self, request: web.Request) -> web.Response:
        body = await _body(request)
        await self.begin_action()
        amount, card = _amount(body), _text(body, "card")
        assert card is not None
        if self.declines(amount, card):
            self.emit(f"declined {amount:.2f} on card {card}")
            raise _refuse(402, "declined", f"card {card} declined for {amount:.2f}")
        charge_id = self.record(request, {"amount": amount, "card": card})
        self.emit(f"charged {charge_id} ({amount:.2f} on card {card})")
        return web.json_response({"charge_id": charge_id}, status=201)

    @participant_route
    async def refund(self, request: web.Request) -> web.Response:
        def undo(charge_id: str, charge: dict[str, Any]) -> str:
            return f"refunded {charge_id} ({charge['amount']:.2f})"

        return await self.compensate(request, "charge", "refunded", undo)

    def hold(self, body: dict[str, Any]) -> tuple[Any, str] | None:
        amount, card = body.get("amount"), body.get("card")
        if type(amount) not in (int, float) or not amount > 0 or not isinstance(card, str):
            return None
        if self.declines(amount, card):
            return None
        return amount, f"authorised {amount:.2f} on card {card}"


class Shipping(_Service):
    name, id_prefix = "shipping", "shp"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/shipments", self.schedule)
        app.router.add_post("/shipments/cancel", self.cancel)
        self.add_twopc_routes(app)

    @participant_route
    async def schedule(self, request: web.Request) -> web.Response:
        body = await _body(request)
        await self.begin_action()
        order, address = _text(body, "order"), _text(body, "address")
        shipment_id = self.record(request, {"order": order, "address": address})
        self.emit(f"scheduled {shipment_id} for {order} to {address}")
        return web.json_response({"shipment_id": shipment_id}, status=201)

    @participant_route
    async def cancel(self, request: web.Request) -> web.Response:
        return await self.compensate(
            request, "shipment", "cancelled", lambda shipment_id, _: f"cancelled {shipment_id}"
        )

    def hold(self, body: dict[str, Any]) -> tuple[Any, str] | None:
        address = body.get("address")
        if not isinstance(address, str) or not 1 <= len(address) <= TEXT_CHARS_MAX:
            return None
        return address, f"slot held for {address}"


SERVICE_CLASSES: tuple[type[_Service], ...] = (Orders, Inventory, Payments, Shipping)


@dataclass
class DemoService:
    """One demo service listening on loopback; `domain` is its state."""

    name: str
    url: str
    domain: _Service
    _runner: web.AppRunner | None = field(repr=False)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def _serve(domain: _Service) -> DemoService:
    runner, url = await serve_on_loopback(domain.app(), shutdown_timeout_s=CLOSE_TIMEOUT_S)
    return DemoService(domain.name, url, domain, runner)


async def start_demo_services(
    on_event: EventSink, *, action_delay_s: float = 0.0, keys: Mapping[str, bytes] | None = None
) -> dict[str, DemoService]:
    """Start orders, inventory, payments and shipping on 127.0.0.1 (OS-picked
    ports); close each (`await s.close()`) when done. Every action first
    waits `action_delay_s`. With `keys`, every call must carry the
    coordinator's signature under one of them."""
    started: dict[str, DemoService] = {}
    try:
        for cls in SERVICE_CLASSES:
            service = cls(on_event, action_delay_s)
            service.keys = keys
            started[cls.name] = await _serve(service)
    except BaseException:
        for service in started.values():
            await service.close()
        raise
    return started


def _check_id(hint: str) -> str:
    if not isinstance(hint, str) or ID_PATTERN.fullmatch(hint) is None:
        raise ValueError(f"id must match {ID_PATTERN.pattern}: {hint!r}")
    return hint


def _step(name: str, service: str, action: tuple[str, dict], compensation: tuple[str, dict]) -> dict:
    return {
        "name": name,
        "service": service,
        "action": {"method": "POST", "path": action[0], "body": action[1]},
        "compensation": {"method": "POST", "path": compensation[0], "body": compensation[1]},
        "timeout_s": STEP_TIMEOUT_S,
        "retry": dict(STEP_RETRY),
    }


def demo_saga(
    order_id_hint: str, card: str = "4242", *, sku: str = "W-1", qty: int = 3, address: str = "1 Main St, Springfield"
) -> dict:
    """The order saga (create-order -> reserve-inventory -> charge-payment ->
    schedule-shipping) under saga id `order_id_hint`; card "declined" (or
    qty * UNIT_PRICE > 1000) makes the payment fail and the saga compensate."""
    order_id = "${steps.create-order.output.order_id}"
    return {
        "id": _check_id(order_id_hint),
        "steps": [
            _step(
                "create-order",
                "orders",
                ("/orders", {"sku": sku, "qty": qty, "customer": "demo"}),
                ("/orders/cancel", {"order": order_id}),
            ),
            _step(
                "reserve-inventory",
                "inventory",
                ("/reservations", {"sku": sku, "qty": qty}),
                ("/reservations/release", {"reservation": "${steps.reserve-inventory.output.reservation_id}"}),
            ),
            _step(
                "charge-payment",
                "payments",
                ("/charges", {"amount": qty * UNIT_PRICE, "card": card}),
                ("/charges/refund", {"charge": "${steps.charge-payment.output.charge_id}"}),
            ),
            _step(
                "schedule-shipping",
                "shipping",
                ("/shipments", {"order": order_id, "address": address}),
                ("/shipments/cancel", {"shipment": "${steps.schedule-shipping.output.shipment_id}"}),
            ),
        ],
        "timeout_s": SAGA_TIMEOUT_S,
    }


def demo_transaction(
    tx_id_hint: str, card: str = "4242", *, sku: str = "W-2", qty: int = 1, address: str = "1 Main St, Springfield"
) -> dict:
    """A 2PC over inventory, payments and shipping (their /tx routes)."""
    bodies = {
        "inventory": {"sku": sku, "qty": qty},
        "payments": {"amount": qty * UNIT_PRICE, "card": card},
        "shipping": {"address": address},
    }
    return {
        "id": _check_id(tx_id_hint),
        "participants": [
            {
                "service": service,
                "prepare": {"path": "/tx/prepare", "body": body},
                "commit": {"path": "/tx/commit"},
                "abort": {"path": "/tx/abort"},
            }
            for service, body in bodies.items()
        ],
        "timeout_s": TX_TIMEOUT_S,
    }
