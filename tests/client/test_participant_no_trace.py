"""An action whose handler answered a non-definite status (5xx, 408, 429) or
raised an exception leaves no trace: its compensation is a null compensation
and the compensation handler is never called. A handler cancelled mid-way
(CancelledError, how a crash shows in a test) keeps its trace: it may have
had effects, so its compensation handler is called.

The same scenarios run over HTTP (the saga middleware) and gRPC (the
servicer), on MemoryStore and SQLiteStore.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant import (
    NULL_COMPENSATION_BODY,
    NULL_COMPENSATION_REFUSED_BODY,
    IdempotencyStore,
    MemoryStore,
    SQLiteStore,
    participant_route,
    saga_participant,
)
from coordinator.client.participant.grpc_servicer import ParticipantServicer, serve_participant

WAIT_S = 5.0
ACTION_KEY = "saga-1/charge/action"
COMPENSATION_KEY = "saga-1/charge/compensation"

StoreFactory = Callable[[], IdempotencyStore]


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[IdempotencyStore] = []

    def create() -> IdempotencyStore:
        store: IdempotencyStore = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "kit.db")
        opened.append(store)
        return store

    yield create
    for store in opened:
        store.close()


# -- HTTP: the saga middleware -------------------------------------------------------------------


class Payments:
    """Charges on the action, refunds on the compensation; `outcomes` scripts
    what the next charges do before one succeeds: a status or "raise"."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.outcomes: list[int | str] = []
        self.charged = 0

    def app(self, store: IdempotencyStore) -> web.Application:
        app = web.Application(middlewares=[saga_participant(store)])
        app.router.add_post("/charge", self.charge)
        app.router.add_post("/refund", self.refund)
        return app

    @participant_route
    async def charge(self, request: web.Request) -> web.Response:
        self.calls["charge"] += 1
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome == "raise":
                raise RuntimeError("payment gateway unreachable")
            if outcome == "raise_http":
                raise web.HTTPServiceUnavailable(text="busy")
            return web.json_response({"error": {"code": "busy"}}, status=outcome)
        self.charged += 10
        return web.json_response({"charged": 10}, status=201)

    @participant_route
    async def refund(self, request: web.Request) -> web.Response:
        self.calls["refund"] += 1
        self.charged -= 10
        return web.json_response({"refunded": 10})


@contextlib.asynccontextmanager
async def serve_http(app: web.Application) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def post(client: TestClient, path: str, key: str) -> tuple[int, Any]:
    response = await client.post(
        path, json={"amount": 10}, headers={"Idempotency-Key": key, "Coordinator-Fence": "1:1"}
    )
    text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:  # aiohttp's own 500 page after an exception
        return response.status, text


@pytest.mark.parametrize("outcome", [503, 500, 408, 429, "raise", "raise_http"])
async def test_http_action_without_a_definite_answer_gets_a_null_compensation(
    new_store: StoreFactory, outcome: int | str
) -> None:
    payments = Payments()
    payments.outcomes = [outcome]
    store = new_store()
    async with serve_http(payments.app(store)) as client:
        failed = await post(client, "/charge", ACTION_KEY)
        expected = {"raise": 500, "raise_http": 503}.get(str(outcome), outcome)
        assert failed[0] == expected
        assert not store.was_attempted(ACTION_KEY)
        compensation = await post(client, "/refund", COMPENSATION_KEY)
        # The coordinator's late retry of the action is a hanging action.
        late = await post(client, "/charge", ACTION_KEY)
    assert compensation == (200, NULL_COMPENSATION_BODY)
    assert late[0] == 409 and late[1]["error"]["code"] == "compensated"
    assert payments.calls == Counter({"charge": 1})
    assert payments.charged == 0


@pytest.mark.parametrize("status", [402, 409, 422])
async def test_http_action_refused_definitely_gets_a_null_compensation(new_store: StoreFactory, status: int) -> None:
    """A stored 4xx is an action that did nothing. The coordinator still sends
    its compensation when that answer was lost and the step ended unknown
    (found by the simulation, seed 542); the compensation handler must not
    run (it would refund a charge never made)."""
    payments = Payments()
    payments.outcomes = [status]
    store = new_store()
    async with serve_http(payments.app(store)) as client:
        refused = await post(client, "/charge", ACTION_KEY)
        compensation = await post(client, "/refund", COMPENSATION_KEY)
    assert refused[0] == status
    assert compensation == (200, NULL_COMPENSATION_REFUSED_BODY)
    assert payments.calls == Counter({"charge": 1})
    assert payments.charged == 0


async def test_http_action_that_failed_then_succeeded_is_compensated(new_store: StoreFactory) -> None:
    payments = Payments()
    payments.outcomes = [503, "raise"]
    store = new_store()
    async with serve_http(payments.app(store)) as client:
        statuses = [(await post(client, "/charge", ACTION_KEY))[0] for _ in range(3)]
        compensation = await post(client, "/refund", COMPENSATION_KEY)
    assert statuses == [503, 500, 201]
    assert compensation == (200, {"refunded": 10})
    assert payments.calls == Counter({"charge": 3, "refund": 1})
    assert payments.charged == 0


def _mocked(path: str, key: str) -> web.Request:
    return make_mocked_request("POST", path, headers={"Idempotency-Key": key})


async def test_http_handler_cancelled_mid_way_keeps_its_trace(new_store: StoreFactory) -> None:
    store = new_store()
    middleware = saga_participant(store)
    entered = asyncio.Event()
    calls: Counter[str] = Counter()

    async def charge(request: web.Request) -> web.Response:
        calls["charge"] += 1
        entered.set()
        await asyncio.Event().wait()  # cancelled here, effects unknown
        raise AssertionError("not reached")

    async def refund(request: web.Request) -> web.Response:
        calls["refund"] += 1
        return web.json_response({"refunded": 10})

    task = asyncio.ensure_future(middleware(_mocked("/charge", ACTION_KEY), charge))
    await asyncio.wait_for(entered.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    assert store.was_attempted(ACTION_KEY)
    response = await middleware(_mocked("/refund", COMPENSATION_KEY), refund)
    assert (response.status, json.loads(response.body)) == (200, {"refunded": 10})
    assert calls == Counter({"charge": 1, "refund": 1})


async def test_http_retry_failing_after_a_cancelled_attempt_keeps_its_trace(new_store: StoreFactory) -> None:
    """The mark of an attempt that may have had effects survives a later
    attempt that answered 503: only the attempt that made the mark clears it."""
    store = new_store()
    middleware = saga_participant(store)
    entered = asyncio.Event()
    calls: Counter[str] = Counter()

    async def charge_hangs(request: web.Request) -> web.Response:
        calls["charge"] += 1
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    async def charge_busy(request: web.Request) -> web.Response:
        calls["charge"] += 1
        return web.json_response({"error": {"code": "busy"}}, status=503)

    async def refund(request: web.Request) -> web.Response:
        calls["refund"] += 1
        return web.json_response({"refunded": 10})

    task = asyncio.ensure_future(middleware(_mocked("/charge", ACTION_KEY), charge_hangs))
    await asyncio.wait_for(entered.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    assert (await middleware(_mocked("/charge", ACTION_KEY), charge_busy)).status == 503
    assert store.was_attempted(ACTION_KEY)
    response = await middleware(_mocked("/refund", COMPENSATION_KEY), refund)
    assert (response.status, json.loads(response.body)) == (200, {"refunded": 10})
    assert calls == Counter({"charge": 2, "refund": 1})


# -- gRPC: the servicer ----------------------------------------------------------------------------


class GrpcPayments(ParticipantServicer):
    def __init__(self, store: IdempotencyStore) -> None:
        super().__init__(store)
        self.calls: Counter[str] = Counter()
        self.outcomes: list[str] = []
        self.charged = 0
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def execute(self, path: str, body: Any) -> Any:
        self.calls["execute"] += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome == "raise":
            raise RuntimeError("payment gateway unreachable")
        if outcome == "hang":
            self.entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        self.charged += 10
        return {"charged": 10}

    async def compensate(self, path: str, body: Any) -> Any:
        self.calls["compensate"] += 1
        self.charged -= 10
        return {"refunded": 10}


@contextlib.asynccontextmanager
async def serve_grpc(servicer: ParticipantServicer) -> AsyncIterator[coordinator_pb2_grpc.ParticipantStub]:
    server, port = await serve_participant(servicer)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield coordinator_pb2_grpc.ParticipantStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


def _call(key: str) -> Any:
    return coordinator_pb2.ParticipantCall(idempotency_key=key, fence="1:1", path="/charge", body_json='{"amount": 10}')


async def _rpc(stub: Any, rpc: str, key: str) -> tuple[grpc.StatusCode, Any]:
    try:
        response = await getattr(stub, rpc)(_call(key), timeout=WAIT_S)
    except grpc.aio.AioRpcError as error:
        return error.code(), None
    return grpc.StatusCode.OK, json.loads(response.output_json)


async def test_grpc_action_that_raised_gets_a_null_compensation(new_store: StoreFactory) -> None:
    payments = GrpcPayments(new_store())
    payments.outcomes = ["raise"]
    async with serve_grpc(payments) as stub:
        failed = await _rpc(stub, "Execute", ACTION_KEY)
        assert not payments.store.was_attempted(ACTION_KEY)
        compensation = await _rpc(stub, "Compensate", COMPENSATION_KEY)
        late = await _rpc(stub, "Execute", ACTION_KEY)
    assert failed[0] is grpc.StatusCode.UNKNOWN
    assert compensation == (grpc.StatusCode.OK, NULL_COMPENSATION_BODY)
    assert late[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert payments.calls == Counter({"execute": 1})
    assert payments.charged == 0


async def test_grpc_action_that_raised_then_succeeded_is_compensated(new_store: StoreFactory) -> None:
    payments = GrpcPayments(new_store())
    payments.outcomes = ["raise"]
    async with serve_grpc(payments) as stub:
        codes = [(await _rpc(stub, "Execute", ACTION_KEY))[0] for _ in range(2)]
        compensation = await _rpc(stub, "Compensate", COMPENSATION_KEY)
    assert codes == [grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK]
    assert compensation == (grpc.StatusCode.OK, {"refunded": 10})
    assert payments.calls == Counter({"execute": 2, "compensate": 1})
    assert payments.charged == 0


async def test_grpc_action_cancelled_mid_way_keeps_its_trace(new_store: StoreFactory) -> None:
    payments = GrpcPayments(new_store())
    payments.outcomes = ["hang"]
    async with serve_grpc(payments) as stub:
        call = stub.Execute(_call(ACTION_KEY), timeout=WAIT_S)
        await asyncio.wait_for(payments.entered.wait(), WAIT_S)
        call.cancel()
        await asyncio.wait_for(payments.cancelled.wait(), WAIT_S)
        assert payments.store.was_attempted(ACTION_KEY)
        compensation = await _rpc(stub, "Compensate", COMPENSATION_KEY)
    assert compensation == (grpc.StatusCode.OK, {"refunded": 10})
    assert payments.calls == Counter({"execute": 1, "compensate": 1})
