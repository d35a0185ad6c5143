"""The seed order saga (orders, inventory, payments, shipping) and recording
participants for it, registered on a LocalCluster: for tests and chaos runs."""

from __future__ import annotations

import contextlib

from .participants import Script, start_recording_service

SERVICES = ("orders", "inventory", "payments", "shipping")


@contextlib.asynccontextmanager
async def participants(cluster, scripts: dict | None = None, *, host: str = "127.0.0.1", caller_of=None):
    """``host``: where the participants listen (a chaos run's bridge address
    when the nodes run in network namespaces); ``caller_of``: who sent each
    call (coordinator.chaos.callers.CallerLookup), kept in its RequestRecord."""
    scripts = scripts or {}
    running = {
        name: await start_recording_service(name, scripts.get(name, Script()), host=host, caller_of=caller_of)
        for name in SERVICES
    }
    try:
        leader = await cluster.wait_leader()
        for name, service in running.items():
            response = await cluster.put_service(leader, name, service.url)
            assert response.status == 200, response
        yield running
    finally:
        for service in running.values():
            await service.close()


def order_saga(saga_id: str | None = None, *, timeout_s: float = 2, attempts: int = 5) -> dict:
    retry = {"max_attempts": attempts, "backoff_s": 0.05, "max_backoff_s": 0.2}

    def step(name, service, path, body, compensation_path, compensation_body):
        return {
            "name": name,
            "service": service,
            "action": {"method": "POST", "path": path, "body": body},
            "compensation": {"method": "POST", "path": compensation_path, "body": compensation_body},
            "timeout_s": timeout_s,
            "retry": retry,
        }

    definition = {
        "steps": [
            step(
                "create-order",
                "orders",
                "/orders",
                {"sku": "W-1", "qty": 3},
                "/orders/cancel",
                {"order": "${steps.create-order.output.id}"},
            ),
            step(
                "reserve",
                "inventory",
                "/reservations",
                {"sku": "W-1", "qty": 3},
                "/reservations/release",
                {"reservation": "${steps.reserve.output.id}"},
            ),
            step(
                "charge",
                "payments",
                "/charges",
                {"amount": 30, "order": "${steps.create-order.output.id}"},
                "/charges/refund",
                {"charge": "${steps.charge.output.id}"},
            ),
            step(
                "ship",
                "shipping",
                "/shipments",
                {"order": "${steps.create-order.output.id}"},
                "/shipments/cancel",
                {"shipment": "${steps.ship.output.id}"},
            ),
        ]
    }
    if saga_id is not None:
        definition["id"] = saga_id
    return definition
