"""Batches on the worker stream (cluster/executor/worker_wire.py,
cluster/api/grpc_workers.py): runs of dispatches and of reports share
messages, in order and within their bounds, only with a peer that says it
reads them; everything else, and everything to an older peer, goes alone."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.cluster.api.grpc_workers import serve_worker
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.executor.dispatch import (
    Cancel,
    Dispatch,
    Dispatcher,
    Heartbeat,
    Report,
    Welcome,
    WorkerHello,
    WorkerProblem,
)
from coordinator.cluster.executor.http_caller import CallOutcome, CallSpec
from coordinator.cluster.executor.worker_wire import (
    BATCH_BYTES_MAX,
    BATCH_MAX,
    WireError,
    batched_leader_messages,
    batched_worker_messages,
    read_leader_messages,
    read_worker_messages,
    worker_message,
)

SERVICE = {"name": "orders", "url": "http://127.0.0.1:9001"}
SPEC = CallSpec("orders", SERVICE["url"], "POST", "/orders", {"n": 1}, "k", "3:7", 5.0, 3, 0.1, 1.0)


def dispatch(n: int, body=None) -> Dispatch:
    spec = dataclasses.replace(SPEC, idempotency_key=f"k{n}", body=body if body is not None else {"n": n})
    return Dispatch(f"3-7-{n}", "execute", {"url": SERVICE["url"]}, spec)


def report(n: int, output=None) -> Report:
    return Report(f"3-7-{n}", "3:7", "ok", output if output is not None else {"n": n}, "", 1)


def travel(raws: list) -> list:
    """Each message serialized and parsed as the peer would, then read."""
    read = read_leader_messages if isinstance(raws[0], pb.LeaderMessage) else read_worker_messages
    return [m for raw in raws for m in read(type(raw).FromString(raw.SerializeToString()))]


def test_a_run_of_dispatches_shares_one_message_and_the_rest_keeps_its_place():
    messages = [Welcome("n1", "3:7", 1.0, 5.0), dispatch(1), dispatch(2), dispatch(3), Cancel("3-7-1"), dispatch(4)]
    raws = batched_leader_messages(messages, batches=True)
    assert [r.WhichOneof("kind") for r in raws] == ["welcome", "dispatch", "cancel", "dispatch"]
    assert [len(r.more_dispatches) for r in raws] == [0, 2, 0, 0]
    assert travel(raws) == messages


def test_to_a_worker_that_reads_no_batches_every_dispatch_goes_alone():
    messages = [dispatch(1), dispatch(2), dispatch(3)]
    raws = batched_leader_messages(messages, batches=False)
    assert len(raws) == 3 and not any(r.more_dispatches for r in raws)
    assert travel(raws) == messages


def test_a_batch_holds_at_most_batch_max_items_and_batch_bytes_max():
    many = [dispatch(n) for n in range(BATCH_MAX * 2 + 1)]
    raws = batched_leader_messages(many, batches=True)
    assert [1 + len(r.more_dispatches) for r in raws] == [BATCH_MAX, BATCH_MAX, 1]
    assert travel(raws) == many
    big = [dispatch(n, body={"pad": "x" * (BATCH_BYTES_MAX // 3)}) for n in range(7)]
    raws = batched_leader_messages(big, batches=True)
    assert len(raws) > 1 and all(r.ByteSize() <= BATCH_BYTES_MAX + 64 for r in raws)
    assert travel(raws) == big
    huge = [dispatch(1, body={"pad": "x" * BATCH_BYTES_MAX}), dispatch(2)]  # over the bound alone: goes alone
    assert [len(r.more_dispatches) for r in batched_leader_messages(huge, batches=True)] == [0, 0]


def test_reports_share_messages_to_a_leader_that_reads_them_and_heartbeats_go_alone():
    messages = [report(1), report(2), Heartbeat(("payments",)), report(3), report(4), report(5)]
    raws = batched_worker_messages(messages, batches=True)
    assert [r.WhichOneof("kind") for r in raws] == ["report", "heartbeat", "report"]
    assert [len(r.more_reports) for r in raws] == [1, 0, 2]
    assert travel(raws) == messages
    assert len(batched_worker_messages(messages, batches=False)) == 6


def test_each_side_says_it_reads_batches():
    assert worker_message(WorkerHello("w1", "1.0")).hello.batches is True
    (welcome,) = batched_leader_messages([Welcome("n1", "3:7", 1.0, 5.0)], batches=False)
    assert welcome.welcome.batches is True


def test_a_malformed_item_of_a_batch_is_named_and_the_others_are_read():
    raw = pb.WorkerMessage(
        report=pb.WorkerReport(dispatch_id="3-7-1", fence="3:7", outcome="ok"),
        more_reports=[
            pb.WorkerReport(dispatch_id="", outcome="ok"),
            pb.WorkerReport(dispatch_id="3-7-3", fence="3:7", outcome="ok"),
        ],
    )
    first, bad, third = read_worker_messages(raw)
    assert isinstance(bad, WireError) and "more_reports[0].dispatch_id" in str(bad)
    assert (first.dispatch_id, third.dispatch_id) == ("3-7-1", "3-7-3")
    raw = pb.LeaderMessage(
        dispatch=pb.WorkerDispatch(operation="execute", registration_json="{}"),
        more_dispatches=[pb.WorkerDispatch(operation="delete", registration_json="{}")],
    )
    ok, bad = read_leader_messages(raw)
    assert isinstance(ok, Dispatch) and isinstance(bad, WireError) and "more_dispatches[0].operation" in str(bad)


# -- the leader's end of the stream ------------------------------------------------------------------
class LocalCallers:
    async def call(self, service, spec, operation) -> CallOutcome:
        raise AssertionError("remote mode: the leader makes no call")

    async def close(self) -> None:
        pass


def node_with_dispatcher() -> tuple[SimpleNamespace, Dispatcher]:
    workers = WorkerSettings(ids=("w1",), heartbeat_s=1.0, lease_s=5.0)
    dispatcher = Dispatcher(
        ExecutorSettings(mode="remote"), workers, LocalCallers(), node_id="n1", clock=lambda: 1_700_000_000.0
    )
    dispatcher.start_leading("3:7")
    node = SimpleNamespace(executor=SimpleNamespace(dispatcher=dispatcher))
    return node, dispatcher


async def a_stream(batches: bool) -> tuple[list[pb.LeaderMessage], list]:
    """A worker (whose hello says ``batches``) on serve_worker; three calls
    start at once, and it answers them in one message: what it was sent,
    and the calls' outcomes."""
    node, dispatcher = node_with_dispatcher()
    incoming: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (message := await incoming.get()) is not None:
            yield message

    hello = pb.WorkerMessage(hello=pb.WorkerHello(id="w1", release="1.0", capacity=8, batches=batches))
    stream = serve_worker(node, hello, requests(), None)  # type: ignore[arg-type]
    received = [await anext(stream)]  # the welcome
    calls = [
        asyncio.ensure_future(dispatcher.call(SERVICE, dataclasses.replace(SPEC, idempotency_key=f"k{n}"), "execute"))
        for n in range(3)
    ]
    dispatches = []
    while len(dispatches) < 3:
        raw = await asyncio.wait_for(anext(stream), 5)
        received.append(raw)
        dispatches += [m for m in read_leader_messages(raw) if isinstance(m, Dispatch)]
    reports = [Report(d.dispatch_id, d.spec.fence, "ok", {"key": d.spec.idempotency_key}, "", 1) for d in dispatches]
    for raw in batched_worker_messages(reports, batches=True):
        incoming.put_nowait(raw)
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), 5)
    incoming.put_nowait(None)
    await stream.aclose()
    return received, outcomes


async def test_the_leader_batches_dispatches_to_a_worker_that_reads_them_and_reads_batched_reports():
    received, outcomes = await a_stream(batches=True)
    assert received[0].welcome.batches is True
    assert [(r.WhichOneof("kind"), len(r.more_dispatches)) for r in received[1:]] == [("dispatch", 2)]
    assert [o.output for o in outcomes] == [{"key": "k0"}, {"key": "k1"}, {"key": "k2"}]


async def test_the_leader_sends_an_older_worker_one_dispatch_a_message():
    received, outcomes = await a_stream(batches=False)
    assert [(r.WhichOneof("kind"), len(r.more_dispatches)) for r in received[1:]] == [("dispatch", 0)] * 3
    assert [o.kind for o in outcomes] == ["ok"] * 3


def test_problems_are_never_batched():
    problems = [WorkerProblem("not_held", "no call", dispatch_id="3-7-1"), WorkerProblem("invalid", "x")]
    assert len(batched_leader_messages(problems, batches=True)) == 2
