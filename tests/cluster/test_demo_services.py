"""The demo services, called over loopback HTTP like the coordinator does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from coordinator import saga
from coordinator.cluster.demo.services import (
    INITIAL_STOCK,
    DemoService,
    demo_saga,
    demo_transaction,
    start_demo_services,
)
from coordinator.twopc import definition as twopc_definition

TIMEOUT = aiohttp.ClientTimeout(total=5)
SERVICES = ("orders", "inventory", "payments", "shipping")


class Demo:
    """The four running services, a client session and the events they told."""

    def __init__(self, services: dict[str, DemoService], session: aiohttp.ClientSession) -> None:
        self.services = services
        self.session = session
        self.events: list[tuple[str, str]] = []

    async def call(self, service: str, path: str, key: str, body: object = None) -> tuple[int, dict]:
        url = self.services[service].url + path
        headers = {"Idempotency-Key": key, "Coordinator-Fence": "1:1"}
        async with self.session.post(url, json=body, headers=headers) as response:
            return response.status, await response.json()

    def texts(self, service: str) -> list[str]:
        return [text for name, text in self.events if name == service]


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    events: list[tuple[str, str]] = []
    services = await start_demo_services(lambda service, text: events.append((service, text)))
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            running = Demo(services, session)
            running.events = events
            yield running
    finally:
        for service in services.values():
            await service.close()


async def test_start_serves_the_four_services_on_loopback(demo: Demo) -> None:
    assert tuple(demo.services) == SERVICES
    for name, service in demo.services.items():
        assert service.name == name and service.url.startswith("http://127.0.0.1:")
    assert len({service.url for service in demo.services.values()}) == 4


async def test_orders_create_and_cancel(demo: Demo) -> None:
    created = await demo.call(
        "orders", "/orders", "s-1/create-order/action", {"sku": "W-1", "qty": 3, "customer": "ann"}
    )
    again = await demo.call("orders", "/orders", "s-1/create-order/action", {"sku": "W-1", "qty": 3, "customer": "ann"})
    cancelled = await demo.call("orders", "/orders/cancel", "s-1/create-order/compensation", {"order": "ord-1"})

    assert created == (201, {"order_id": "ord-1"}) == again  # the retry is replayed
    assert cancelled == (200, {"cancelled": "ord-1"})
    assert demo.texts("orders") == ["orders: created order ord-1 (W-1 x3)", "orders: cancelled order ord-1"]
    assert demo.services["orders"].domain.objects["ord-1"]["undone"] is True


async def test_inventory_reserves_and_releases_stock(demo: Demo) -> None:
    inventory = demo.services["inventory"].domain
    reserved = await demo.call("inventory", "/reservations", "s-2/reserve/action", {"sku": "W-1", "qty": 4})
    assert reserved == (201, {"reservation_id": "res-1"})
    assert inventory.stock["W-1"] == INITIAL_STOCK["W-1"] - 4

    released = await demo.call(
        "inventory", "/reservations/release", "s-2/reserve/compensation", {"reservation": "res-1"}
    )

    assert released == (200, {"released": "res-1"})
    assert inventory.stock == INITIAL_STOCK
    assert demo.texts("inventory") == [
        "inventory: reserved res-1 (W-1 x4, 6 left)",
        "inventory: released res-1 (W-1 x4, 10 left)",
    ]


async def test_inventory_out_of_stock_is_a_definite_failure(demo: Demo) -> None:
    status, body = await demo.call("inventory", "/reservations", "s-3/reserve/action", {"sku": "W-2", "qty": 6})
    unknown = await demo.call("inventory", "/reservations", "s-4/reserve/action", {"sku": "X", "qty": 1})

    assert (status, body["error"]["code"]) == (409, "out_of_stock")
    assert (unknown[0], unknown[1]["error"]["code"]) == (422, "unknown_sku")
    assert demo.services["inventory"].domain.stock == INITIAL_STOCK


async def test_payments_charge_refund_and_declines(demo: Demo) -> None:
    def charge(saga: str, amount: float, card: str):
        body = {"amount": amount, "card": card}
        return demo.call("payments", "/charges", f"{saga}/charge/action", body)

    charged = await charge("s-5", 75, "4242")
    refunded = await demo.call("payments", "/charges/refund", "s-5/charge/compensation", {"charge": "ch-1"})
    by_card = await charge("s-6", 75, "declined")
    by_amount = await charge("s-7", 1001, "4242")

    assert charged == (201, {"charge_id": "ch-1"})
    assert refunded == (200, {"refunded": "ch-1"})
    for status, body in (by_card, by_amount):
        assert (status, body["error"]["code"]) == (402, "declined")
    assert demo.texts("payments")[:2] == [
        "payments: charged ch-1 (75.00 on card 4242)",
        "payments: refunded ch-1 (75.00)",
    ]


async def test_shipping_schedule_and_cancel(demo: Demo) -> None:
    scheduled = await demo.call("shipping", "/shipments", "s-8/ship/action", {"order": "ord-7", "address": "1 Main St"})
    cancelled = await demo.call("shipping", "/shipments/cancel", "s-8/ship/compensation", {"shipment": "shp-1"})

    assert scheduled == (201, {"shipment_id": "shp-1"})
    assert cancelled == (200, {"cancelled": "shp-1"})
    assert demo.texts("shipping") == ["shipping: scheduled shp-1 for ord-7 to 1 Main St", "shipping: cancelled shp-1"]


async def test_a_compensation_for_an_action_never_seen_is_a_no_op(demo: Demo) -> None:
    for service, path, field in (
        ("orders", "/orders/cancel", "order"),
        ("inventory", "/reservations/release", "reservation"),
    ):
        answer = await demo.call(service, path, f"s-9/{service}/compensation", {field: "x-1"})
        assert answer == (200, {"compensated": False, "reason": "action never seen"})
    assert demo.events == []
    assert demo.services["inventory"].domain.stock == INITIAL_STOCK


async def test_a_compensation_without_the_id_undoes_what_its_action_created(demo: Demo) -> None:
    await demo.call("inventory", "/reservations", "s-10/reserve/action", {"sku": "W-2", "qty": 2})

    released = await demo.call("inventory", "/reservations/release", "s-10/reserve/compensation", {})

    assert released == (200, {"released": "res-1"})
    assert demo.services["inventory"].domain.stock == INITIAL_STOCK


async def test_a_bad_body_is_a_definite_failure(demo: Demo) -> None:
    status, body = await demo.call("orders", "/orders", "s-11/create-order/action", {"sku": "W-1", "qty": 0})
    assert (status, body["error"]["code"]) == (400, "invalid")
    assert "qty" in body["error"]["message"]


async def test_two_phase_commit_holds_then_commits_or_aborts(demo: Demo) -> None:
    definition = demo_transaction("tx-1")
    for participant in definition["participants"]:
        service = participant["service"]
        status, body = await demo.call(
            service, "/tx/prepare", f"tx-1/{service}/prepare", participant["prepare"]["body"]
        )
        assert (status, body) == (200, {"vote": "yes"}), service
    assert demo.services["inventory"].domain.stock["W-2"] == INITIAL_STOCK["W-2"] - 1

    assert (await demo.call("inventory", "/tx/abort", "tx-1/inventory/abort"))[0] == 200
    assert demo.services["inventory"].domain.stock == INITIAL_STOCK
    assert (await demo.call("payments", "/tx/commit", "tx-1/payments/commit"))[0] == 200

    declined = demo_transaction("tx-2", card="declined")["participants"][1]
    answer = await demo.call("payments", "/tx/prepare", "tx-2/payments/prepare", declined["prepare"]["body"])
    assert answer == (200, {"vote": "no"})


def test_demo_saga_is_a_valid_contract_definition() -> None:
    raw = demo_saga("order-42")
    definition = saga.parse_definition(raw, frozenset(SERVICES))

    assert definition.id == "order-42"
    assert [step.name for step in definition.steps] == [
        "create-order",
        "reserve-inventory",
        "charge-payment",
        "schedule-shipping",
    ]
    for step in raw["steps"]:
        assert set(step) == {"name", "service", "action", "compensation", "timeout_s", "retry"}
        assert set(step["action"]) == set(step["compensation"]) == {"method", "path", "body"}
        assert set(step["retry"]) == {"max_attempts", "backoff_s", "max_backoff_s"}
    order_id = "${steps.create-order.output.order_id}"
    assert raw["steps"][0]["compensation"]["body"] == {"order": order_id}
    declined = demo_saga("order-43", card="declined")
    assert declined["steps"][2]["action"]["body"]["card"] == "declined"


def test_demo_transaction_is_a_valid_contract_definition() -> None:
    definition = twopc_definition.parse_definition(demo_transaction("tx-9"), frozenset(SERVICES))
    assert [p.service for p in definition.participants] == ["inventory", "payments", "shipping"]


def test_bad_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        demo_saga("not an id")


async def test_a_delayed_action_retried_after_a_timeout_runs_once() -> None:
    events: list[tuple[str, str]] = []
    services = await start_demo_services(lambda service, text: events.append((service, text)), action_delay_s=0.3)
    headers = {"Idempotency-Key": "s-12/create-order/action"}
    url, body = services["orders"].url + "/orders", {"sku": "W-1", "qty": 1}
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TimeoutError):
                short = aiohttp.ClientTimeout(total=0.05)
                await session.post(url, json=body, headers=headers, timeout=short)
            async with session.post(url, json=body, headers=headers) as response:
                # Whichever of the two requests ran the action, the other one
                # got the same stored answer: the order exists once.
                assert (response.status, await response.json()) == (201, {"order_id": "ord-1"})
    finally:
        for service in services.values():
            await service.close()
    assert events == [("orders", "orders: created order ord-1 (W-1 x1)")]


async def test_an_on_event_that_raises_does_not_fail_the_action() -> None:
    def broken(service: str, text: str) -> None:
        raise RuntimeError("printer on fire")

    services = await start_demo_services(broken)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(
                services["shipping"].url + "/shipments",
                json={"order": "ord-1", "address": "here"},
                headers={"Idempotency-Key": "s-13/ship/action"},
            ) as response:
                assert response.status == 201
    finally:
        for service in services.values():
            await service.close()
