"""What one client may hold open on a node (README.md, "Security"): long polls
and gRPC Watch streams per remote address, a Watch's life, and the idle
time of a keep-alive connection (``[limits]``, cluster/core/limits.py)."""

import asyncio
import socket
import time

import aiohttp
import grpc
import pytest

from coordinator.client import Coordinator
from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.client.grpc_gen import coordinator_pb2_grpc
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration

LIMITS = Limits(long_polls_per_client_max=2, watches_per_client_max=2, watch_life_s=2.0, idle_connection_s=1.0)


@pytest.fixture
async def capped(tmp_path):
    harness = LocalCluster(tmp_path / "c", limits=LIMITS)
    harness.start()
    try:
        leader = await harness.wait_leader()
        for saga_id in ("w1", "w2"):  # each waits for a signal: it stays running
            saga = {"id": saga_id, "steps": [{"name": "wait", "await": "go"}]}
            assert (await harness.request("POST", leader, "/v1/sagas", saga, follow=True)).status == 201
        yield harness
    finally:
        await harness.close()


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    return next((v for k, v in error.trailing_metadata() or () if k == key), None)


async def test_long_polls_per_client_are_capped(capped):
    leader = await capped.wait_leader()
    url = capped.url(leader) + "/v1/sagas/w1?wait=6"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        held = [asyncio.create_task(session.get(url)) for _ in range(LIMITS.long_polls_per_client_max)]
        await asyncio.sleep(1.0)  # both are waiting on the node
        assert not any(t.done() for t in held)
        async with session.get(url) as over:
            body = await over.json()
            assert over.status == 429 and body["error"]["code"] == "overloaded", body
            assert int(over.headers["Retry-After"]) >= 1
        # another client (address) is not held back by this one
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as second:
            async with second.get(capped.url(leader) + "/v1/sagas/w1?wait=0.2") as response:
                assert response.status == 200
        for response in await asyncio.gather(*held):  # they answer when their wait runs out
            assert response.status == 200
            response.release()
        async with session.get(capped.url(leader) + "/v1/sagas/w1?wait=0.2") as again:  # the slots were given back
            assert again.status == 200


async def test_a_submission_that_waits_holds_a_long_poll_slot(capped):
    """``POST /v1/sagas?wait=S`` waits as a long poll does, in the same
    slots: over the cap it is refused before anything is submitted."""
    leader = await capped.wait_leader()
    base = capped.url(leader) + "/v1/sagas"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        held = [
            asyncio.create_task(
                session.post(base + "?wait=4", json={"id": f"s{i}", "steps": [{"name": "a", "await": "go"}]})
            )
            for i in range(LIMITS.long_polls_per_client_max)
        ]
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in held)
        over = {"id": "s-over", "steps": [{"name": "a", "await": "go"}]}
        async with session.post(base + "?wait=4", json=over) as refused:
            body = await refused.json()
            assert refused.status == 429 and body["error"]["code"] == "overloaded", body
        async with session.get(base + "/s-over") as absent:  # nothing was submitted
            assert absent.status == 404
        async with session.post(base + "?wait=soon", json=over) as invalid:
            body = await invalid.json()
            assert invalid.status == 400 and body["error"]["field"] == "wait", body
        for response in await asyncio.gather(*held):  # created, and answered running when the wait ran out
            assert response.status == 201 and (await response.json())["state"] in ("started", "running")
            response.release()
        async with session.get(base + "/s-over") as absent:
            assert absent.status == 404


async def test_watches_per_client_are_capped_and_end_after_their_life(capped):
    leader = await capped.wait_leader()
    async with grpc.aio.insecure_channel(capped.config.node(leader).grpc) as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        calls = []
        opened = time.monotonic()
        for saga_id in ("w1", "w2", "w1"):  # one at a time: the third is the one over the cap
            calls.append(stub.Watch(pb.WatchRequest(kind="saga", id=saga_id), timeout=15))
            if len(calls) <= LIMITS.watches_per_client_max:
                first = await calls[-1].read()
                assert not first.terminal
        with pytest.raises(grpc.aio.AioRpcError) as over:
            await calls[2].read()
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _trailer(over.value, "coordinator-error-code") == "overloaded"
        for call in calls[:2]:
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    await call.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert _trailer(ended.value, "coordinator-error-code") == "watch_expired"
        lived = time.monotonic() - opened
        assert LIMITS.watch_life_s - 0.5 <= lived <= LIMITS.watch_life_s + 3, lived


async def test_the_client_resumes_a_watch_past_its_life(capped):
    leader = await capped.wait_leader()
    endpoints = [capped.config.node(i).grpc for i in capped.ids]
    async with Coordinator(endpoints, transport="grpc") as client:

        async def signal_later():
            await asyncio.sleep(LIMITS.watch_life_s * 2)
            assert (await capped.request("POST", leader, "/v1/sagas/w2/signals/go", follow=True)).status == 202

        signalling = asyncio.create_task(signal_later())
        states = [saga.state async for saga in client.watch_saga("w2", timeout=20)]
        await signalling
    assert states[-1] == "completed", states


def test_an_idle_keep_alive_connection_is_closed(capped):
    port = int(capped.config.nodes[0].http.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        s.settimeout(LIMITS.idle_connection_s + 3)
        started = time.monotonic()
        try:
            closed = s.recv(1) == b""
        except ConnectionError:
            closed = True
        except TimeoutError:
            closed = False
        assert closed, "an idle keep-alive connection stayed open"
        assert time.monotonic() - started <= LIMITS.idle_connection_s + 2
