"""Signed participant calls: the saga middleware, the 2PC routes and the
gRPC servicer refuse calls not signed by a configured key before storing
or answering anything, and bind stored answers to their request."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant import (
    MemoryStore,
    ParticipantServicer,
    add_twopc_routes,
    participant_route,
    saga_participant,
    serve_participant,
)
from coordinator.client.participant.signing import SIGNATURE_HEADER, SIGNATURE_METADATA, sign

OLD = b"o" * 32
NEW = b"n" * 32
NOW = 1_800_000_000.0
WAIT_S = 5.0


def clock() -> float:
    return NOW


class Orders:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    @participant_route
    async def create(self, request: web.Request) -> web.Response:
        self.calls["create"] += 1
        body = await request.json()
        return web.json_response({"order": self.calls["create"], "sku": body["sku"]}, status=201)


def http_app(store: MemoryStore, orders: Orders, **options: Any) -> web.Application:
    app = web.Application(middlewares=[saga_participant(store, clock=clock, **options)])
    app.router.add_post("/orders", orders.create)
    app.router.add_post("/orders/other", orders.create)
    return app


async def post(
    client: TestClient,
    *,
    path: str = "/orders",
    key: str = "s1/create/action",
    fence: str | None = "2:1",
    body: bytes = b'{"sku": "W-1"}',
    secret: bytes | None = OLD,
    key_id: str = "old",
    signed_fence: str | None = None,
    at: float = NOW,
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    if fence is not None:
        headers["Coordinator-Fence"] = fence
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(
            secret,
            key_id,
            method="POST",
            path=path,
            idempotency_key=key,
            fence=fence or "" if signed_fence is None else signed_fence,
            body=body,
            timestamp=int(at),
        )
    response = await client.post(path, data=body, headers=headers)
    return response.status, await response.json()


async def test_unsigned_forged_or_expired_calls_are_refused_before_anything_is_stored() -> None:
    store, orders = MemoryStore(), Orders()
    async with TestClient(TestServer(http_app(store, orders, keys={"old": OLD}))) as client:
        refused = [
            await post(client, secret=None),
            await post(client, secret=NEW),  # a key the participant does not have
            await post(client, fence="9:1", signed_fence="2:1"),  # a forged fence
            await post(client, at=NOW - 301),
            await post(client, at=NOW + 301),
        ]
        for status, body in refused:
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert orders.calls == Counter()
        assert store.highest_fence_term() == 0  # the forged term 9 was not recorded
        assert not store.was_attempted("s1/create/action") and store.get("s1/create/action") is None
        assert (await post(client, at=NOW - 300))[0] == 201


async def test_keys_rotate_old_and_new_are_both_accepted() -> None:
    store, orders = MemoryStore(), Orders()
    app = http_app(store, orders, keys={"old": OLD, "new": NEW})
    async with TestClient(TestServer(app)) as client:
        assert (await post(client, key="s1/a/action"))[0] == 201
        assert (await post(client, key="s1/b/action", secret=NEW, key_id="new"))[0] == 201
    assert orders.calls["create"] == 2


async def test_a_replay_with_another_path_or_body_does_not_get_the_stored_answer() -> None:
    store, orders = MemoryStore(), Orders()
    async with TestClient(TestServer(http_app(store, orders, keys={"old": OLD}))) as client:
        first = await post(client)
        again = await post(client, at=NOW + 10)  # a retry: new time, same request
        other_body = await post(client, body=b'{"sku": "W-2"}')
        other_path = await post(client, path="/orders/other")
    assert first == again == (201, {"order": 1, "sku": "W-1"})
    for status, body in (other_body, other_path):
        assert (status, body["error"]["code"]) == (422, "key_reused")
    assert orders.calls["create"] == 1


async def test_the_signed_path_is_the_request_target_with_its_query() -> None:
    store, orders = MemoryStore(), Orders()
    async with TestClient(TestServer(http_app(store, orders, keys={"old": OLD}))) as client:
        assert (await post(client, path="/orders?source=a%20b"))[0] == 201
        key, body = "s1/b/action", b'{"sku": "W-1"}'
        signature = sign(
            OLD, "old", method="POST", path="/orders", idempotency_key=key, fence="", body=body, timestamp=int(NOW)
        )
        response = await client.post(
            "/orders?source=other", data=body, headers={"Idempotency-Key": key, SIGNATURE_HEADER: signature}
        )
        assert response.status == 401
    assert orders.calls["create"] == 1


async def test_require_fence_refuses_a_call_without_one() -> None:
    store, orders = MemoryStore(), Orders()
    app = http_app(store, orders, keys={"old": OLD}, require_fence=True)
    async with TestClient(TestServer(app)) as client:
        status, body = await post(client, fence=None)
        assert (status, body["error"]["code"]) == (400, "invalid")
        assert "Coordinator-Fence" in body["error"]["message"]
        assert (await post(client))[0] == 201
    assert orders.calls["create"] == 1


def test_bad_key_configuration_is_refused_at_startup() -> None:
    for keys in ({}, {"k": b"short"}):
        with pytest.raises(ValueError):
            saga_participant(MemoryStore(), keys=keys)
    with pytest.raises(ValueError):
        saga_participant(MemoryStore(), keys={"k": OLD}, signature_window_s=0)


async def test_twopc_routes_refuse_unsigned_calls() -> None:
    prepared: list[str] = []

    class Ledger:
        def prepare(self, tx_id: str, body: Any) -> bool:
            prepared.append(tx_id)
            return True

        def commit(self, tx_id: str) -> None: ...

        def abort(self, tx_id: str) -> None: ...

    store = MemoryStore()
    app = web.Application()
    add_twopc_routes(app, "/ledger", Ledger(), store, keys={"old": OLD}, clock=clock)
    key, body = "tx-1/ledger/prepare", b'{"amount": 5}'
    async with TestClient(TestServer(app)) as client:
        unsigned = await client.post("/ledger/prepare", data=body, headers={"Idempotency-Key": key})
        assert unsigned.status == 401
        assert prepared == [] and store.get_transaction("tx-1") is None
        signature = sign(
            OLD,
            "old",
            method="POST",
            path="/ledger/prepare",
            idempotency_key=key,
            fence="",
            body=body,
            timestamp=int(NOW),
        )
        signed = await client.post(
            "/ledger/prepare", data=body, headers={"Idempotency-Key": key, SIGNATURE_HEADER: signature}
        )
        assert (signed.status, await signed.json()) == (200, {"vote": "yes"})
    assert prepared == ["tx-1"]


class GrpcOrders(ParticipantServicer):
    def __init__(self, store: MemoryStore, **options: Any) -> None:
        super().__init__(store, clock=clock, **options)
        self.calls: Counter[str] = Counter()

    def execute(self, path: str, body: Any) -> Any:
        self.calls["execute"] += 1
        return {"order": self.calls["execute"]}

    def prepare(self, tx_id: str, body: Any) -> bool:
        self.calls["prepare"] += 1
        return True

    def commit(self, tx_id: str) -> None: ...

    def abort(self, tx_id: str) -> None: ...


async def grpc_call(
    stub: Any,
    rpc: str,
    key: str,
    body_json: str,
    *,
    fence: str = "2:1",
    path: str = "/orders",
    secret: bytes | None = OLD,
) -> tuple[grpc.StatusCode, str]:
    metadata = ()
    if secret is not None:
        metadata = (
            (
                SIGNATURE_METADATA,
                sign(
                    secret,
                    "old",
                    method=rpc,
                    path=path,
                    idempotency_key=key,
                    fence=fence,
                    body=body_json.encode(),
                    timestamp=int(NOW),
                ),
            ),
        )
    request = coordinator_pb2.ParticipantCall(idempotency_key=key, fence=fence, path=path, body_json=body_json)
    try:
        response = await getattr(stub, rpc)(request, timeout=WAIT_S, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, response.output_json if rpc != "Prepare" else str(response.yes)


async def test_grpc_servicer_refuses_unsigned_calls_and_binds_answers() -> None:
    store = MemoryStore()
    orders = GrpcOrders(store, keys={"old": OLD}, require_fence=True)
    server, port = await serve_participant(orders)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = coordinator_pb2_grpc.ParticipantStub(channel)
        unsigned = await grpc_call(stub, "Execute", "s1/a/action", "{}", secret=None)
        forged = await grpc_call(stub, "Execute", "s1/a/action", "{}", secret=NEW)
        unsigned_prepare = await grpc_call(stub, "Prepare", "tx-1/orders/prepare", "{}", secret=None)
        for code, details in (unsigned, forged, unsigned_prepare):
            assert code is grpc.StatusCode.UNAUTHENTICATED and details.startswith("unauthorized:")
        assert orders.calls == Counter() and store.highest_fence_term() == 0
        assert store.get_transaction("tx-1") is None

        no_fence = await grpc_call(stub, "Execute", "s1/a/action", "{}", fence="")
        assert no_fence[0] is grpc.StatusCode.INVALID_ARGUMENT
        done = await grpc_call(stub, "Execute", "s1/a/action", '{"n": 1}')
        replay = await grpc_call(stub, "Execute", "s1/a/action", '{"n": 1}')
        reused = await grpc_call(stub, "Execute", "s1/a/action", '{"n": 2}')
        assert done == replay == (grpc.StatusCode.OK, json.dumps({"order": 1}, separators=(",", ":")))
        assert reused[0] is grpc.StatusCode.INVALID_ARGUMENT and reused[1].startswith("key_reused:")
        assert await grpc_call(stub, "Prepare", "tx-1/orders/prepare", "{}") == (grpc.StatusCode.OK, "True")
        assert orders.calls == Counter({"execute": 1, "prepare": 1})
    finally:
        await channel.close()
        await server.stop(None)
