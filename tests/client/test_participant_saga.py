"""Saga participant middleware, driven over loopback HTTP like the coordinator does."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.client.participant import (
    BODY_BYTES_MAX,
    KEY_CHARS_MAX,
    NULL_COMPENSATION_BODY,
    IdempotencyStore,
    MemoryStore,
    SQLiteStore,
    participant_route,
    saga_participant,
)

WAIT_S = 5.0


class OrdersService:
    """A participant with one action, its compensation, and knobs for failures."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        # Statuses the next calls of create_order answer before succeeding.
        self.failures: list[int] = []
        self.body_bytes = 0

    def app(self, store: IdempotencyStore, **options) -> web.Application:
        app = web.Application(middlewares=[saga_participant(store, **options)])
        app.router.add_post("/orders", self.create_order)
        app.router.add_post("/orders/cancel", self.cancel_order)
        app.router.add_post("/refunds", self.refund)
        app.router.add_get("/healthz", self.healthz)
        return app

    @participant_route
    async def create_order(self, request: web.Request) -> web.Response:
        self.calls["create"] += 1
        body = await request.json()
        if self.failures:
            status = self.failures.pop(0)
            if status == 409:
                raise web.HTTPConflict(text="sold out")
            return web.json_response({"error": {"code": "x"}}, status=status)
        payload = {"order_id": f"o-{self.calls['create']}", "sku": body["sku"]}
        if self.body_bytes:
            payload["padding"] = "x" * self.body_bytes
        return web.json_response(payload, status=201)

    @participant_route
    async def cancel_order(self, request: web.Request) -> web.Response:
        self.calls["cancel"] += 1
        return web.json_response({"cancelled": True})

    async def refund(self, request: web.Request) -> web.Response:
        self.calls["refund"] += 1
        return web.json_response({"refund": self.calls["refund"]})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def headers(key: str, fence: str | None = "1:1") -> dict[str, str]:
    result = {"Idempotency-Key": key}
    if fence is not None:
        result["Coordinator-Fence"] = fence
    return result


async def post(client: TestClient, path: str, key: str, fence: str | None = "1:1", body=None):
    response = await client.post(path, json=body or {"sku": "W-1"}, headers=headers(key, fence))
    return response.status, await response.json(), response.headers


async def test_retried_action_runs_once_and_replays_the_same_body() -> None:
    service = OrdersService()
    async with serve(service.app(MemoryStore())) as client:
        first = await post(client, "/orders", "saga-1/create/action")
        second = await post(client, "/orders", "saga-1/create/action", fence="2:40")
    assert first[0] == second[0] == 201
    assert first[1] == second[1] == {"order_id": "o-1", "sku": "W-1"}
    assert "Idempotent-Replayed" not in first[2]
    assert second[2]["Idempotent-Replayed"] == "true"
    assert second[2]["Content-Type"].startswith("application/json")
    assert service.calls["create"] == 1


async def test_unknown_outcomes_are_not_stored_and_rerun() -> None:
    service = OrdersService()
    service.failures = [503, 500, 408, 429]
    async with serve(service.app(MemoryStore())) as client:
        statuses = [(await post(client, "/orders", "saga-1/create/action"))[0] for _ in range(6)]
    assert statuses == [503, 500, 408, 429, 201, 201]
    assert service.calls["create"] == 5


async def test_definite_failures_are_stored_and_replayed() -> None:
    service = OrdersService()
    service.failures = [422, 409]
    async with serve(service.app(MemoryStore())) as client:
        first = await post(client, "/orders", "saga-1/create/action")
        again = await post(client, "/orders", "saga-1/create/action")
        raised = await client.post("/orders", json={"sku": "W-1"}, headers=headers("saga-2/create/action"))
        raised_again = await client.post("/orders", json={"sku": "W-1"}, headers=headers("saga-2/create/action"))
        assert (raised.status, await raised.text()) == (409, "sold out")
        assert (raised_again.status, await raised_again.text()) == (409, "sold out")
    assert first[:2] == again[:2] == (422, {"error": {"code": "x"}})
    assert service.calls["create"] == 2


async def test_fence_terms_lower_refused_equal_and_higher_accepted() -> None:
    service = OrdersService()
    store = MemoryStore()
    async with serve(service.app(store)) as client:
        assert (await post(client, "/orders", "s/a/action", fence="5:10"))[0] == 201
        # Same term, lower index: one leader's calls may arrive out of order.
        assert (await post(client, "/orders", "s/b/action", fence="5:3"))[0] == 201
        status, body, _ = await post(client, "/orders", "s/c/action", fence="4:99")
        assert status == 409
        assert body["error"]["code"] == "stale_fence"
        assert body["error"]["highest_term"] == 5
        # The refusal was not stored: a newer leader retrying the key gets through.
        assert (await post(client, "/orders", "s/c/action", fence="6:1"))[0] == 201
        assert (await post(client, "/orders", "s/d/action", fence="5:11"))[0] == 409
    assert store.highest_fence_term() == 6
    assert service.calls["create"] == 3


async def test_malformed_headers_are_refused_with_400() -> None:
    service = OrdersService()
    async with serve(service.app(MemoryStore())) as client:
        for fence in ("5", "a:1", "-1:2", "1:2:3", "1:", "1 :2", "99999999999999999999:1"):
            status, body, _ = await post(client, "/orders", "s/a/action", fence=fence)
            assert (status, body["error"]["code"]) == (400, "invalid"), fence
        long_key = "k" * (KEY_CHARS_MAX + 1)
        status, body, _ = await post(client, "/orders", long_key)
        assert status == 400 and "KEY_CHARS_MAX" in body["error"]["message"]
        missing = await client.post("/orders", json={"sku": "W-1"})
        assert missing.status == 400
        assert "Idempotency-Key" in (await missing.json())["error"]["message"]
    assert service.calls["create"] == 0


async def test_route_marking_by_decorator_and_by_prefix() -> None:
    service = OrdersService()
    store = MemoryStore()
    async with serve(service.app(store, path_prefixes=["/refunds/"])) as client:
        # Unmarked route, no key: untouched.
        health = await client.get("/healthz")
        assert health.status == 200 and "Idempotent-Replayed" not in health.headers
        # Marked by prefix: the key is required.
        assert (await client.post("/refunds", json={})).status == 400
        assert service.calls["refund"] == 0
        first = await post(client, "/refunds", "s/refund/action")
        second = await post(client, "/refunds", "s/refund/action")
        assert first[1] == second[1] == {"refund": 1}
        # No such route: nothing is attempted or stored for the key.
        no_route = await client.post("/nope", json={}, headers=headers("s/nope/action"))
        assert no_route.status == 404
        assert store.get("s/nope/action") is None and not store.was_attempted("s/nope/action")
    async with serve(service.app(MemoryStore())) as client:
        # Not marked: passes without a key, and a keyed request is still idempotent.
        assert (await client.post("/refunds", json={})).status == 200
        keyed = [(await post(client, "/refunds", "s/r/action"))[1] for _ in range(2)]
        assert keyed == [{"refund": 3}, {"refund": 3}]
    assert service.calls["refund"] == 3


async def test_null_compensation_answers_200_without_calling_the_handler() -> None:
    service = OrdersService()
    async with serve(service.app(MemoryStore())) as client:
        first = await post(client, "/orders/cancel", "saga-1/create/compensation")
        again = await post(client, "/orders/cancel", "saga-1/create/compensation")
        # The action arriving after its compensation is a hanging action.
        hanging = await post(client, "/orders", "saga-1/create/action")
        hanging_again = await post(client, "/orders", "saga-1/create/action")
    assert first[:2] == (200, NULL_COMPENSATION_BODY)
    assert again[:2] == (200, {"compensated": False, "reason": "action never seen"})
    assert hanging[0] == hanging_again[0] == 409
    assert hanging[1]["error"]["code"] == hanging_again[1]["error"]["code"] == "compensated"
    assert service.calls == Counter()


async def test_hanging_action_refused_after_the_compensation_of_a_503() -> None:
    service = OrdersService()
    service.failures = [503]
    async with serve(service.app(MemoryStore())) as client:
        # The action reached the handler, which answered 503: no effect ...
        assert (await post(client, "/orders", "saga-1/create/action"))[0] == 503
        # ... so its compensation is a null compensation (handler not called),
        assert (await post(client, "/orders/cancel", "saga-1/create/compensation"))[:2] == (200, NULL_COMPENSATION_BODY)
        # and the coordinator's late retry of the action must not run.
        status, body, _ = await post(client, "/orders", "saga-1/create/action")
    assert (status, body["error"]["code"]) == (409, "compensated")
    assert service.calls == Counter({"create": 1})


async def test_compensation_after_a_successful_action_runs_once() -> None:
    service = OrdersService()
    async with serve(service.app(MemoryStore())) as client:
        assert (await post(client, "/orders", "saga-1/create/action"))[0] == 201
        results = [await post(client, "/orders/cancel", "saga-1/create/compensation") for _ in range(3)]
        # The action's own answer is still replayed.
        assert (await post(client, "/orders", "saga-1/create/action"))[0] == 201
    assert [r[:2] for r in results] == [(200, {"cancelled": True})] * 3
    assert service.calls == Counter({"create": 1, "cancel": 1})


async def test_concurrent_duplicates_run_the_handler_once() -> None:
    service = OrdersService()
    duplicates = 10
    arrived = 0
    all_arrived = asyncio.Event()

    @web.middleware
    async def count_arrivals(request: web.Request, handler):
        nonlocal arrived
        arrived += 1
        if arrived == duplicates:
            all_arrived.set()
        return await handler(request)

    @participant_route
    async def slow_create(request: web.Request) -> web.Response:
        # Hold the key until every duplicate is inside the server.
        await asyncio.wait_for(all_arrived.wait(), WAIT_S)
        return await service.create_order(request)

    app = web.Application(middlewares=[count_arrivals, saga_participant(MemoryStore())])
    app.router.add_post("/orders", slow_create)
    async with serve(app) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(post(client, "/orders", "saga-9/create/action") for _ in range(duplicates))), WAIT_S
        )
    assert service.calls["create"] == 1
    assert {r[0] for r in results} == {201}
    assert all(r[1] == {"order_id": "o-1", "sku": "W-1"} for r in results)
    assert sum(r[2].get("Idempotent-Replayed") == "true" for r in results) == duplicates - 1


async def test_lock_map_is_bounded() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    @participant_route
    async def blocking(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.wait_for(release.wait(), WAIT_S)
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[saga_participant(MemoryStore(), locks_max=1)])
    app.router.add_post("/slow", blocking)
    async with serve(app) as client:
        first = asyncio.create_task(post(client, "/slow", "s/a/action"))
        await asyncio.wait_for(entered.wait(), WAIT_S)
        status, body, _ = await post(client, "/slow", "s/b/action")
        release.set()
        assert (await asyncio.wait_for(first, WAIT_S))[0] == 200
        assert (await post(client, "/slow", "s/b/action"))[0] == 200
    assert (status, body["error"]["code"]) == (503, "overloaded")


async def test_oversized_answer_is_replaced_by_a_stored_500() -> None:
    service = OrdersService()
    service.body_bytes = BODY_BYTES_MAX
    async with serve(service.app(MemoryStore())) as client:
        first = await post(client, "/orders", "saga-1/create/action")
        again = await post(client, "/orders", "saga-1/create/action")
    assert first[:2] == again[:2]
    assert first[0] == 500 and first[1]["error"]["code"] == "not_replayable"
    assert "BODY_BYTES_MAX" in first[1]["error"]["message"]
    assert service.calls["create"] == 1


async def test_answers_and_fence_survive_a_restart_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    service = OrdersService()
    store = SQLiteStore(path)
    async with serve(service.app(store)) as client:
        before = await post(client, "/orders", "saga-1/create/action", fence="3:7")
        assert (await post(client, "/orders/cancel", "saga-2/x/compensation", "3:8"))[0] == 200
    store.close()

    restarted = SQLiteStore(path)
    try:
        async with serve(service.app(restarted)) as client:
            after = await post(client, "/orders", "saga-1/create/action", fence="3:9")
            stale = await post(client, "/orders", "saga-3/create/action", fence="2:1")
            hanging = await post(client, "/orders", "saga-2/x/action", fence="3:10")
    finally:
        restarted.close()
    assert before[:2] == after[:2] == (201, {"order_id": "o-1", "sku": "W-1"})
    assert stale[0] == 409 and stale[1]["error"]["code"] == "stale_fence"
    assert hanging[0] == 409 and hanging[1]["error"]["code"] == "compensated"
    assert service.calls == Counter({"create": 1})
