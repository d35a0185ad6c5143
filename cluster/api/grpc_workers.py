"""The ``Work`` RPC: one transition worker's stream, on the leader.

The first message must be the worker's hello (within ``HELLO_WAIT_S``;
read before the token is checked, cluster/api/grpc_api.py); the
node hands it to its dispatcher (cluster/executor/dispatch.py), which admits
the worker or says why not. Then two flows share the stream: what the
dispatcher sends the worker (welcome, dispatches, cancels, errors) is
queued and written in order here, and what the worker sends (heartbeats,
reports) is read by a task of its own and handed to the dispatcher. A
message that cannot be read is answered with an ``invalid`` error about it
and nothing of it is applied; the session stays open. When the stream ends
either way, the worker loses its leases.

The writer sends what the dispatcher queued since its last write in as few
messages as the worker reads: to a worker whose hello set ``batches``, a
run of dispatches shares messages (cluster/executor/worker_wire.py); the
reader takes the reports a worker packed together one by one, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.cluster.core.node import Node
from coordinator.cluster.executor.dispatch import (
    Cancel,
    Dispatch,
    Dispatcher,
    Heartbeat,
    Report,
    Welcome,
    WorkerHello,
    WorkerProblem,
    WorkerRefused,
    WorkerSession,
)
from coordinator.cluster.executor.worker_wire import (
    WireError,
    batched_leader_messages,
    leader_message,
    read_worker_message,
    read_worker_messages,
)

__all__ = ["HELLO_WAIT_S", "first_message", "serve_worker"]

log = logging.getLogger(__name__)
HELLO_WAIT_S = 10.0
WRITE_MAX = 256  # messages the writer takes from its queue for one round of writes
_END = object()


class _QueueLink:
    """The dispatcher's end of the stream: messages queued for the writer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def send(self, message: Welcome | Dispatch | Cancel | WorkerProblem) -> None:
        if not self.closed:
            self.queue.put_nowait(message)

    def close(self, problem: WorkerProblem | None) -> None:
        if not self.closed:
            if problem is not None:
                self.queue.put_nowait(problem)
            self.queue.put_nowait(_END)
            self.closed = True


async def first_message(requests: AsyncIterator[Any]) -> Any:
    """The stream's first message, or None when none came within ``HELLO_WAIT_S``."""
    try:
        return await asyncio.wait_for(anext(requests), HELLO_WAIT_S)
    except (TimeoutError, StopAsyncIteration):
        return None


async def serve_worker(
    node: Node, first: Any, requests: AsyncIterator[Any], context: Any
) -> AsyncIterator[pb.LeaderMessage]:
    """The leader's side of one worker's stream (already authorized), whose
    first message was ``first`` (None: none came)."""
    dispatcher: Dispatcher = node.executor.dispatcher  # type: ignore[attr-defined]
    if first is None:
        yield leader_message(WorkerProblem("invalid", f"no hello within {HELLO_WAIT_S:g} s"))
        return
    try:
        hello = read_worker_message(first)
        if not isinstance(hello, WorkerHello):
            raise WireError("the first message must be a hello")
    except WireError as exc:
        yield leader_message(WorkerProblem("invalid", str(exc)))
        return
    link = _QueueLink()
    try:
        session = dispatcher.connect(hello, link)
    except WorkerRefused as refused:
        problem = refused.problem
        if problem.code == "not_leader":
            leader = node.leader_address()
            if leader is not None and leader.id != node.config.node.id:
                problem = WorkerProblem(problem.code, problem.message, leader=leader.grpc)
        yield leader_message(problem)
        return
    batches = first.hello.batches  # it reads more_dispatches
    reader = asyncio.ensure_future(_read(dispatcher, session, requests, link))
    try:
        while True:
            queued = [await link.queue.get()]
            while queued[-1] is not _END and len(queued) < WRITE_MAX and not link.queue.empty():
                queued.append(link.queue.get_nowait())
            ended = queued[-1] is _END
            for message in batched_leader_messages(queued[:-1] if ended else queued, batches):
                yield message
            if ended:
                return
    finally:
        reader.cancel()
        dispatcher.disconnected(session, "its stream ended")


async def _read(dispatcher: Dispatcher, session: WorkerSession, requests: AsyncIterator[Any], link: _QueueLink) -> None:
    try:
        async for raw in requests:
            for message in read_worker_messages(raw):
                if isinstance(message, WireError):
                    link.send(WorkerProblem("invalid", str(message)))
                elif isinstance(message, Heartbeat):
                    dispatcher.heartbeat(session, message)
                elif isinstance(message, Report):
                    dispatcher.report(session, message)
                else:
                    link.send(WorkerProblem("invalid", "a second hello on one stream"))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the stream broke: the session ends
        log.info("worker %s: stream broke: %s", session.hello.id, exc)
    dispatcher.disconnected(session, "its stream ended")
