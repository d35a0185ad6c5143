"""A transition worker process (``coordinator worker --config FILE --id ID``).

It keeps one ``Work`` stream open to the leader (proto/coordinator.proto):
it tries the cluster file's nodes in turn, follows a ``not_leader`` error to
the leader it names, and after a broken stream starts again with the
leader it knew. On the stream it says who it is (:class:`WorkerHello`),
sends a heartbeat every ``heartbeat_s`` the leader's welcome asks for, and
runs each dispatch through a :class:`WorkerAgent` with the participant
callers a node would build from the same cluster file (``[services]``
policy and TLS, the participant signing key). When the stream ends, every
call it was making stops: the leader gives them to another worker. The
reports ready at once go in one message when the leader's welcome says it
reads batches (cluster/executor/worker_wire.py).

A refusal (an id the cluster does not know, a release it does not admit,
a cluster in local mode) is logged once and tried again every
``REFUSED_RETRY_S``: a new leader may run with a newer cluster file. A
token the cluster does not accept ends the process (exit 1).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import metadata

import grpc

from coordinator.client.grpc_gen import coordinator_pb2_grpc
from coordinator.client.tls import ClientTls
from coordinator.cluster.core.config import ClusterConfig
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import participant_callers
from coordinator.cluster.executor.dispatch import Cancel, Dispatch, Report, Welcome, WorkerHello, WorkerProblem
from coordinator.cluster.executor.worker_wire import (
    WireError,
    batched_worker_messages,
    read_leader_messages,
    worker_message,
)
from coordinator.cluster.worker.agent import WorkerAgent

__all__ = ["REFUSED_RETRY_S", "WorkerOptions", "WorkerRejected", "release_of_this_package", "run_worker", "serve"]

log = logging.getLogger(__name__)

RETRY_S = 0.2  # after a broken stream, before the next node
RETRY_MAX_S = 2.0
REFUSED_RETRY_S = 5.0
WELCOME_WAIT_S = 10.0
MESSAGE_BYTES_MAX = 32 * 1024 * 1024
WRITE_MAX = 256  # messages the stream's writer takes from its queue for one round of writes
_SESSION_CODES = ("not_leader", "lease_lost", "replaced")


class WorkerRejected(Exception):
    """The cluster does not accept this worker's token: nothing to retry."""


@dataclass(frozen=True)
class WorkerOptions:
    hello: WorkerHello
    token: str | None = field(default=None, repr=False)
    tls: ClientTls | None = None  # the nodes' CA (and a client certificate) when the cluster has [tls]
    participant_key: bytes | None = field(default=None, repr=False)


class _Logged:
    """Log a refusal once until it changes."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, line: str) -> None:
        if line != self.last:
            self.last = line
            log.warning("%s", line)


async def run_worker(cluster: ClusterConfig, options: WorkerOptions, stop: asyncio.Event) -> None:
    """Serve as a worker until ``stop`` is set; WorkerRejected for a refused token."""
    rng = random.Random()
    settings = cluster.executor
    breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s, rng=rng)
    agent = WorkerAgent(options.hello, participant_callers(cluster, options.participant_key, breakers, rng), breakers)
    targets = [node.grpc for node in cluster.nodes]
    credentials = None
    if cluster.tls is not None:
        credentials = (options.tls or ClientTls()).grpc_credentials()
    metadata = (("authorization", f"Bearer {options.token}"),) if options.token else ()
    logged = _Logged()
    turn, hint, wait_s = 0, None, RETRY_S
    try:
        while not stop.is_set():
            target = hint or targets[turn % len(targets)]
            turn += 0 if hint else 1
            hint = None
            problem = await _session(target, credentials, metadata, agent, stop, logged)
            if stop.is_set():
                return
            if problem is not None and problem.code == "not_leader" and problem.leader:
                hint = problem.leader
                wait_s = RETRY_S
                continue
            if problem is not None and problem.code not in _SESSION_CODES:
                delay_s = REFUSED_RETRY_S
            else:
                delay_s, wait_s = wait_s, min(RETRY_MAX_S, wait_s * 2)
            try:
                await asyncio.wait_for(stop.wait(), delay_s * rng.uniform(0.5, 1.5))
            except TimeoutError:
                pass
    finally:
        await agent.close()


async def _session(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    metadata: tuple,
    agent: WorkerAgent,
    stop: asyncio.Event,
    logged: _Logged,
) -> WorkerProblem | None:
    """One stream to ``target``: the problem it ended with, if the leader said one."""
    options = [("grpc.max_receive_message_length", MESSAGE_BYTES_MAX)]
    if credentials is not None:
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.aio.insecure_channel(target, options=options)
    outgoing: asyncio.Queue = asyncio.Queue()  # heartbeats and reports, then None to end
    leader_reads_batches = False  # the welcome's batches: the leader reads more_reports

    async def requests() -> AsyncIterator:
        yield worker_message(agent.hello)
        while True:
            queued = [await outgoing.get()]
            while queued[-1] is not None and len(queued) < WRITE_MAX and not outgoing.empty():
                queued.append(outgoing.get_nowait())
            ended = queued[-1] is None
            for message in batched_worker_messages(queued[:-1] if ended else queued, leader_reads_batches):
                yield message
            if ended:
                return

    def send(report: Report) -> None:
        outgoing.put_nowait(report)

    stream = coordinator_pb2_grpc.CoordinatorStub(channel).Work(requests(), metadata=metadata)
    beating: asyncio.Task | None = None
    stopping = asyncio.ensure_future(stop.wait())
    problem: WorkerProblem | None = None
    try:
        while True:
            reading = asyncio.ensure_future(stream.read())
            done, _ = await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                reading.cancel()
                return None
            raw = reading.result()
            if raw is grpc.aio.EOF:
                return problem
            for message in read_leader_messages(raw):
                if isinstance(message, WireError):
                    log.error("worker %s: a message from %s cannot be read: %s", agent.hello.id, target, message)
                elif isinstance(message, Welcome):
                    log.info("worker %s: admitted by %s (fence %s)", agent.hello.id, message.node, message.fence)
                    logged.last = None
                    leader_reads_batches = raw.welcome.batches
                    if beating is not None:
                        beating.cancel()
                    beating = asyncio.ensure_future(_beat(agent, outgoing, message.heartbeat_s))
                elif isinstance(message, Dispatch):
                    agent.dispatched(message, send)
                elif isinstance(message, Cancel):
                    agent.cancelled(message.dispatch_id)
                elif message.dispatch_id:
                    logged(
                        f"worker {agent.hello.id}: report {message.dispatch_id} dropped ({message.code}): "
                        f"{message.message}"
                    )
                else:
                    problem = message
                    if message.code not in _SESSION_CODES:
                        logged(f"worker {agent.hello.id}: refused by {target}: {message.code}: {message.message}")
                    else:
                        log.info("worker %s: session with %s ended: %s", agent.hello.id, target, message.message)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise WorkerRejected(f"{target}: {exc.details()}") from None
        log.debug("worker %s: %s: %s", agent.hello.id, target, exc.code().name)
        return problem
    finally:
        stopping.cancel()
        if beating is not None:
            beating.cancel()
        agent.drop_all()
        outgoing.put_nowait(None)
        stream.cancel()
        await channel.close(grace=None)


async def _beat(agent: WorkerAgent, outgoing: asyncio.Queue, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        outgoing.put_nowait(agent.heartbeat())


def release_of_this_package() -> str:
    """The installed package's version: a worker's release unless told otherwise."""
    try:
        return metadata.version("coordinator")
    except metadata.PackageNotFoundError:
        return "0.0.0"


async def serve(cluster: ClusterConfig, options: WorkerOptions) -> None:
    """Run one worker process until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker %s: release %s, capacity %d", options.hello.id, options.hello.release, options.hello.capacity)
    await run_worker(cluster, options, stop)
    log.info("worker %s stopped", options.hello.id)
