"""The client over HTTP and over gRPC on a real three-node cluster: every
method, the same results (checked against what the HTTP API answers), the
same errors; a follower alone or a dead endpoint first is enough; gRPC
tokens, not-leader answers and byte-for-byte objects."""

import asyncio
import contextlib
import itertools
import json
import socket

import grpc
import pytest

from coordinator.chaos.orders import order_saga, participants
from coordinator.chaos.participants import Script, Vote
from coordinator.client import (
    Conflict,
    Coordinator,
    InvalidRequest,
    NotFound,
    Saga,
    Service,
    SyncCoordinator,
    Timeout,
    Transaction,
    Unauthorized,
)
from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.client.grpc_gen import coordinator_pb2_grpc
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration

TRANSPORTS = ("http", "grpc")


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


def endpoint(cluster, node_id, transport):
    return cluster.url(node_id) if transport == "http" else cluster.config.node(node_id).grpc


def client_for(cluster, transport, node_ids=None, **options):
    ids = node_ids or cluster.ids
    return Coordinator([endpoint(cluster, i, transport) for i in ids], transport=transport, **options)


async def http_json(cluster, path):
    """What the HTTP API answers for ``path`` (following the leader)."""
    response = await cluster.request("GET", cluster.ids[0], path, follow=True)
    assert response.status == 200, response
    return response.json


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transaction(tx_id, prepare_path="/prepare"):
    return {
        "id": tx_id,
        "participants": [
            {
                "service": "orders",
                "prepare": {"path": "/prepare", "body": {"qty": 1}},
                "commit": {"path": "/commit"},
                "abort": {"path": "/abort"},
            },
            {
                "service": "payments",
                "prepare": {"path": prepare_path, "body": {"amount": 5}},
                "commit": {"path": "/commit"},
                "abort": {"path": "/abort"},
            },
        ],
        "timeout_s": 10,
    }


def approval_saga(saga_id):
    definition = order_saga(saga_id)
    definition["steps"].insert(1, {"name": "approval", "await": "approved", "timeout_s": 30})
    return definition


async def test_services_and_cluster(cluster, transport):
    leader = await cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    async with client_for(cluster, transport) as c:
        orders = await c.put_service("orders", "http://127.0.0.1:9001")
        warehouse = await c.put_service("warehouse", grpc="127.0.0.1:9002")
        assert (orders.name, orders.url, orders.grpc) == ("orders", "http://127.0.0.1:9001", None)
        assert (warehouse.url, warehouse.grpc) == (None, "127.0.0.1:9002")
        assert (
            await c.get_service("orders")
            == orders
            == Service.from_json(await http_json(cluster, "/v1/services/orders"))
        )
        listed = await c.list_services()
        assert [s.name for s in listed] == ["orders", "warehouse"]
        assert listed == [Service.from_json(s) for s in (await http_json(cluster, "/v1/services"))["services"]]
        assert (await c.service_outcomes("orders")) == await http_json(cluster, "/v1/services/orders/outcomes?after=0")

        deleted = await c.delete_service("warehouse")
        assert (deleted.name, deleted.url, deleted.grpc) == ("warehouse", None, "127.0.0.1:9002")
        with pytest.raises(NotFound) as missing:
            await c.get_service("warehouse")
        assert missing.value.code == "not_found"
        with pytest.raises(InvalidRequest) as invalid:
            await c.put_service("Not_A_Name", "http://127.0.0.1:9001")
        assert invalid.value.field == "name"
        with pytest.raises(InvalidRequest):
            await c.put_service("orders", "ftp://nowhere")

        info = await c.cluster()
        assert info.role == "leader" and info.node == leader
        assert {n.id for n in info.nodes} == set(cluster.ids)
        assert info.leader["grpc"] == cluster.config.node(leader).grpc
        assert (await c.cluster(endpoint(cluster, follower, transport))).role == "follower"


async def test_sagas_submit_get_list_wait_watch_signal_redrive(cluster, transport):
    async with participants(cluster), client_for(cluster, transport) as c:
        saga = await c.submit_saga(order_saga("order-1"))
        assert saga.id == "order-1" and saga.state in ("started", "running", "completed")
        done = await c.wait_saga("order-1", timeout=20)
        assert done.state == "completed" and [s["state"] for s in done.steps] == ["succeeded"] * 4
        assert (await c.get_saga("order-1")).raw == done.raw == await http_json(cluster, "/v1/sagas/order-1")
        again = await c.submit_saga(order_saga("order-1"))  # the same definition: the same saga
        assert again.raw == done.raw
        with pytest.raises(Conflict):
            await c.submit_saga({**order_saga("order-1"), "timeout_s": 99})
        with pytest.raises(Conflict) as not_stuck:  # HTTP 409
            await c.redrive_saga("order-1")
        assert not_stuck.value.code == "conflict"
        with pytest.raises(NotFound):
            await c.get_saga("no-such-saga")
        with pytest.raises(InvalidRequest) as invalid:
            await c.submit_saga({"id": "bad", "steps": []})
        assert invalid.value.field == "steps"

        # watch: every state in order, ending with the terminal one
        await c.submit_saga(approval_saga("approval-1"))
        with pytest.raises(Timeout) as waiting:  # it awaits its signal
            await c.wait_saga("approval-1", timeout=1)
        assert waiting.value.details["workflow"]["state"] == "running"
        with pytest.raises(NotFound):
            await c.wait_saga("no-such-saga", timeout=5)
        watched: list[Saga] = []
        signalled = None
        async with contextlib.aclosing(c.watch_saga("approval-1", timeout=30)) as states:
            async for state in states:
                watched.append(state)
                if signalled is None and state.step("approval")["state"] == "running":
                    signalled = await c.signal_saga("approval-1", "approved", {"by": "ops"})
        assert signalled == {"id": "approval-1", "signal": "approved", "state": "running", "changed": True}
        assert watched[-1].state == "completed" and watched[-1].step("approval")["output"] == {"by": "ops"}
        assert len(watched) >= 3 and not any(s.terminal for s in watched[:-1])
        assert all(a.raw != b.raw for a, b in itertools.pairwise(watched))
        assert all(a.updated_at <= b.updated_at for a, b in itertools.pairwise(watched))
        # a watch of a terminal saga: its state, once
        assert [s.raw async for s in c.watch_saga("approval-1")] == [watched[-1].raw]

        listed = await c.list_sagas()
        assert [s.id for s in listed] == ["order-1", "approval-1"]
        assert [s.raw for s in listed] == (await http_json(cluster, "/v1/sagas"))["sagas"]
        assert [s.id for s in await c.list_sagas(state="completed", limit=1)] == ["order-1"]
        assert await c.list_sagas(state="stuck") == []
        with pytest.raises(InvalidRequest):
            await c.list_sagas(state="sleeping")


async def test_transactions_submit_get_list_wait(cluster, transport):
    scripts = {"payments": Script().with_path("/prepare-no", Vote("no"))}
    async with participants(cluster, scripts), client_for(cluster, transport) as c:
        tx = await c.submit_transaction(transaction("tx-1"))
        assert tx.id == "tx-1" and tx.state in ("preparing", "committing", "committed")
        committed = await c.wait_transaction("tx-1", timeout=20)
        assert (committed.state, committed.decision) == ("committed", "commit")
        assert (
            (await c.get_transaction("tx-1")).raw == committed.raw == await http_json(cluster, "/v1/transactions/tx-1")
        )

        await c.submit_transaction(transaction("tx-2", prepare_path="/prepare-no"))
        states = [t async for t in c.watch_transaction("tx-2", timeout=20)]
        assert (states[-1].state, states[-1].decision) == ("aborted", "abort")
        assert states[-1].participant("payments")["vote"] == "no"
        assert (await c.wait_transaction("tx-2", timeout=5)).raw == states[-1].raw

        with pytest.raises(Conflict):
            await c.submit_transaction({**transaction("tx-1"), "timeout_s": 3})
        with pytest.raises(NotFound):
            await c.get_transaction("tx-404")
        listed = await c.list_transactions()
        assert [t.id for t in listed] == ["tx-1", "tx-2"]
        assert [t.raw for t in listed] == (await http_json(cluster, "/v1/transactions"))["transactions"]
        assert [t.id for t in await c.list_transactions(state="aborted")] == ["tx-2"]
        assert isinstance(listed[0], Transaction)


async def test_submit_and_wait_in_one_request(cluster, transport):
    """``wait`` on a submission (HTTP ``POST ...?wait=S``, gRPC ``wait_s``):
    the answer is the terminal workflow, or the workflow as it stands when
    the wait runs out; ``run_*`` waits on until terminal."""
    scripts = {"payments": Script().with_path("/prepare-no", Vote("no"))}
    async with participants(cluster, scripts), client_for(cluster, transport) as c:
        done = await c.run_saga(order_saga("run-1"), timeout=20)
        assert done.state == "completed" and done.raw == await http_json(cluster, "/v1/sagas/run-1")
        assert (await c.submit_saga(order_saga("run-1"), wait=5)).raw == done.raw  # terminal: at once

        started = asyncio.get_running_loop().time()
        waiting = await c.submit_saga(approval_saga("run-2"), wait=1.0)  # awaits its signal
        assert waiting.state == "running" and asyncio.get_running_loop().time() - started >= 0.9
        again = await c.submit_saga(approval_saga("run-2"), wait=0.3)  # the same saga, still running
        assert again.id == "run-2" and again.state == "running"
        with pytest.raises(Timeout):
            await c.run_saga(approval_saga("run-2"), timeout=0.5)
        await c.signal_saga("run-2", "approved", {"by": "ops"})
        assert (await c.run_saga(approval_saga("run-2"), timeout=20)).state == "completed"

        committed = await c.run_transaction(transaction("run-tx-1"), timeout=20)
        assert (committed.state, committed.decision) == ("committed", "commit")
        assert committed.raw == await http_json(cluster, "/v1/transactions/run-tx-1")
        aborted = await c.submit_transaction(transaction("run-tx-2", prepare_path="/prepare-no"), wait=20)
        assert (aborted.state, aborted.decision) == ("aborted", "abort")
        with pytest.raises(ValueError):
            await c.submit_saga(order_saga("run-3"), wait=61)
        with pytest.raises(Conflict):  # refused before any wait
            await c.submit_saga({**order_saga("run-1"), "timeout_s": 99}, wait=5)


async def test_a_follower_alone_is_enough(cluster, transport):
    leader = await cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    async with participants(cluster), client_for(cluster, transport, [follower]) as c:
        assert (await c.put_service("extra", "http://127.0.0.1:9003")).name == "extra"
        assert (await c.get_service("extra")).url == "http://127.0.0.1:9003"
        await c.submit_saga(order_saga("via-follower"))
        assert (await c.wait_saga("via-follower", timeout=20)).state == "completed"
        assert c._transport.order()[0] == endpoint(cluster, leader, transport)  # remembered


async def test_a_dead_endpoint_first_is_skipped(cluster, transport):
    dead = f"http://127.0.0.1:{free_port()}" if transport == "http" else f"127.0.0.1:{free_port()}"
    endpoints = [dead] + [endpoint(cluster, i, transport) for i in cluster.ids]
    async with Coordinator(endpoints, transport=transport) as c:
        assert (await c.put_service("orders", "http://127.0.0.1:9001")).name == "orders"
        assert [s.name for s in await c.list_services()] == ["orders"]
        assert (await c.cluster()).role == "leader"


async def test_the_sync_client_speaks_both_transports(cluster, transport):
    endpoints = [endpoint(cluster, i, transport) for i in cluster.ids]

    def blocking():
        with SyncCoordinator(endpoints, transport=transport) as c:
            c.put_service("orders", "http://127.0.0.1:9001")
            return [s.name for s in c.list_services()], c.cluster().role

    assert await asyncio.to_thread(blocking) == (["orders"], "leader")


# -- gRPC only ------------------------------------------------------------------------
async def test_grpc_answers_the_http_bytes_and_names_the_leader(cluster):
    leader = await cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    async with participants(cluster), client_for(cluster, "grpc") as c:
        await c.submit_saga(order_saga("bytes-1"))
        await c.wait_saga("bytes-1", timeout=20)
        await cluster.wait_applied(follower, (await c.cluster()).applied_index)
    async with grpc.aio.insecure_channel(cluster.config.node(follower).grpc) as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        reply = await stub.GetSaga(pb.GetWorkflowRequest(id="bytes-1", stale=True), timeout=10)
        http = await cluster.request("GET", follower, "/v1/sagas/bytes-1?stale=true")
        assert reply.object_json == http.text
        reply = await stub.ListServices(pb.ListServicesRequest(stale=True), timeout=10)
        assert reply.object_json == (await cluster.request("GET", follower, "/v1/services?stale=true")).text

        with pytest.raises(grpc.aio.AioRpcError) as not_leader:
            await stub.PutService(pb.PutServiceRequest(name="x", definition_json='{"url": "http://h:1"}'), timeout=10)
        assert not_leader.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        trailers = dict(not_leader.value.trailing_metadata())
        assert trailers["coordinator-error-code"] == "not_leader"
        assert trailers["coordinator-leader"] == cluster.config.node(leader).grpc

        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.SubmitSaga(pb.SubmitRequest(definition_json="{not json"), timeout=10)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(invalid.value.trailing_metadata())["coordinator-error-field"] == "body"

        events = [e async for e in stub.Watch(pb.WatchRequest(kind="saga", id="bytes-1", stale=True), timeout=10)]
        assert [e.terminal for e in events] == [True]
        assert json.loads(events[0].object_json)["state"] == "completed"


async def test_grpc_needs_the_token_when_one_is_configured(tmp_path):
    local = LocalCluster(tmp_path / "c", token=True)
    local.start()
    try:
        await local.wait_leader()
        endpoints = [local.config.node(i).grpc for i in local.ids]
        for token in ("", "not-the-token-at-all"):  # "": none, not even COORDINATOR_TOKEN
            with pytest.raises(Unauthorized) as refused:
                async with Coordinator(endpoints, transport="grpc", token=token) as c:
                    await c.list_services()
            assert refused.value.details["grpc_status"] == "UNAUTHENTICATED"
        async with grpc.aio.insecure_channel(endpoints[0]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await coordinator_pb2_grpc.CoordinatorStub(channel).Cluster(pb.ClusterRequest(), timeout=10)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert dict(anonymous.value.trailing_metadata())["coordinator-error-code"] == "unauthorized"
        async with Coordinator(endpoints, transport="grpc", token=local.token) as c:
            assert (await c.put_service("orders", "http://127.0.0.1:9001")).name == "orders"
            assert [s.name for s in await c.list_services()] == ["orders"]
    finally:
        await local.close()


async def test_a_watch_follows_the_workflow_past_the_leaders_death(cluster, transport):
    leader = await cluster.wait_leader()
    async with participants(cluster), client_for(cluster, transport, attempts=20) as c:
        await c.submit_saga(approval_saga("survivor"))
        async with contextlib.aclosing(c.watch_saga("survivor", timeout=60)) as states:
            async for state in states:
                if state.step("approval")["state"] == "running":
                    break
            cluster.supervisor.kill(leader)
            await cluster.wait_leader(among=[i for i in cluster.ids if i != leader])
            await c.signal_saga("survivor", "approved", {"by": "ops"})
            rest = [state async for state in states]
        assert rest and rest[-1].state == "completed", [s.state for s in rest]
        assert rest[-1].step("approval")["output"] == {"by": "ops"}
        assert c._transport.order()[0] != endpoint(cluster, leader, transport)
