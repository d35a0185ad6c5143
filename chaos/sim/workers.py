"""Simulated transition workers: the real dispatcher and worker agent on the
simulation's edges.

A run in ``remote`` or ``auto`` executor mode (:class:`SimSettings` ``mode``
and ``workers``) starts N workers beside the nodes. Each is a simulated
process (:class:`~coordinator.chaos.sim.clock.Process`, ``w1#1``) holding a
real :class:`~coordinator.cluster.worker.agent.WorkerAgent` whose participant
callers are the real ``HttpCaller`` over the simulated participant links,
calling as ``w1`` (so the participants and the trace see who called). Its
session with the leader is the dispatcher's own
(:meth:`~coordinator.cluster.executor.dispatch.Dispatcher.connect` with a
link of this module) in place of the gRPC stream: every message either way
arrives after a seeded delay of 0.2-5 ms, runs inside the receiving process
(a message to a node that died, or to a worker that died, is lost), and a
stream that breaks - the worker killed, its node killed - is seen by the
other side after such a delay too.

A worker connects to the node that leads (the highest term whose executor
runs), heartbeats every ``heartbeat_s``, and connects again after its
session ends (``not_leader``, ``lease_lost``) or its node dies. The nemesis
kills workers (their calls stop; restarted 0.5-3 s later) and pauses them
for 1.3-2.5 leases: a paused worker neither sends nor reads, so the leader
takes its calls back and leases them again, and what it sends when it wakes
- reports of calls it lost - must be dropped.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.dispatch import (
    Cancel,
    Dispatch,
    Report,
    WorkerHello,
    WorkerProblem,
    WorkerRefused,
    WorkerSession,
)
from coordinator.cluster.executor.http_caller import HttpCaller
from coordinator.cluster.worker.agent import WorkerAgent

from .clock import Process
from .participants import SimSession

__all__ = ["RELEASE", "SimWorker", "SimWorkers"]

RELEASE = "sim"
CAPACITY = 8
DELAY_S = (0.0002, 0.005)
RETRY_S = 0.2
REFUSED_RETRY_S = 1.0
_END = object()


# ``world`` below is the run's World (chaos/sim/world.py): that module builds
# the workers, so this one does not import it back.


class _Link:
    """The dispatcher's end of one session: what it sends reaches the worker later."""

    def __init__(self, worker: SimWorker, session_no: int) -> None:
        self.worker = worker
        self.session_no = session_no
        self.closed = False

    def send(self, message: Any) -> None:
        if not self.closed:
            self.worker.from_leader(self.session_no, message)

    def close(self, problem: WorkerProblem | None) -> None:
        if not self.closed:
            if problem is not None:
                self.worker.from_leader(self.session_no, problem)
            self.worker.from_leader(self.session_no, _END)
            self.closed = True


@dataclass
class _Session:
    no: int
    node_id: str
    node: Any  # the Node whose dispatcher admitted it
    leader_session: WorkerSession
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class SimWorker:
    def __init__(self, world: Any, worker_id: str, rng: random.Random) -> None:
        self.world = world
        self.id = worker_id
        self.rng = rng
        self.hello = WorkerHello(worker_id, RELEASE, (), CAPACITY)
        self.settings = world.cluster.config.workers
        self.process: Process | None = None
        self.incarnation = 0
        self.agent: WorkerAgent | None = None
        self.session: _Session | None = None
        self._session_no = 0
        self.paused = False
        self._held_in: list[tuple[int, Any]] = []
        self._held_out: list[tuple[_Session, Any]] = []

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.alive:
            return
        self.incarnation += 1
        self.process = Process(f"{self.id}#{self.incarnation}")
        self.paused = False
        self._held_in, self._held_out = [], []
        self.world.trace.event("worker-start", self.id, self.incarnation)
        self.process.run(self._boot)

    def _boot(self) -> None:
        executor = self.world.settings.executor
        rng = random.Random(self.rng.getrandbits(64))
        breakers = Breakers(executor.breaker_failures_to_open, executor.breaker_slow_interval_s, rng=rng)
        session = SimSession(self.world.links, self.id)
        callers = ParticipantCallers(HttpCaller(session, breakers, rng=rng), on_close=(session.close,))  # type: ignore[arg-type]
        self.agent = WorkerAgent(self.hello, callers, breakers)
        asyncio.ensure_future(self._run())

    def kill(self) -> None:
        """SIGKILL: its calls stop; its node sees the stream break a little later."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.kill()
        session, self.session = self.session, None
        if self.agent is not None:
            self.agent.drop_all()
        if session is not None:
            self._to_leader(session, lambda s=session: self._disconnect(s, "its worker was killed"), force=True)
        self.world.trace.event("worker-kill", self.id, self.incarnation)

    def pause(self) -> None:
        if self.alive and not self.paused:
            self.paused = True
            self.world.trace.event("worker-pause", self.id)

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self.world.trace.event("worker-resume", self.id)
        held_out, self._held_out = self._held_out, []
        for session, message in held_out:
            self._to_leader(session, message)
        held_in, self._held_in = self._held_in, []
        for session_no, message in held_in:
            self._receive(session_no, message)

    # -- the session -------------------------------------------------------------------------------
    async def _run(self) -> None:
        cluster = self.world.cluster
        while True:
            leader_id = cluster.leader()
            node = cluster.node(leader_id) if leader_id else None
            if node is None or self.paused:
                await asyncio.sleep(RETRY_S)
                continue
            await asyncio.sleep(self._delay())  # the connection and the hello
            if cluster.node(leader_id) is not node or self.paused:
                continue
            self._session_no += 1
            link = _Link(self, self._session_no)
            try:
                leader_session = cluster.slots[leader_id].process.run(
                    node.executor.dispatcher.connect, self.hello, link
                )
            except WorkerRefused as refused:
                self.world.trace.event("worker-refused", self.id, leader_id, refused.problem.code)
                await asyncio.sleep(REFUSED_RETRY_S)
                continue
            session = self.session = _Session(self._session_no, leader_id, node, leader_session)
            self.world.trace.event("worker-session", self.id, leader_id, session.no)
            while not session.ended.is_set():
                try:
                    await asyncio.wait_for(session.ended.wait(), self.settings.heartbeat_s)
                except TimeoutError:
                    pass
                if cluster.node(leader_id) is not node:  # its node died: the stream broke
                    session.ended.set()
                elif not session.ended.is_set():
                    self._to_leader(session, self.agent.heartbeat())
            self.session = None
            self.agent.drop_all()
            self.world.trace.event("worker-session-end", self.id, session.no)
            await asyncio.sleep(RETRY_S * self.rng.uniform(0.5, 1.5))

    def from_leader(self, session_no: int, message: Any) -> None:
        """A message of the leader's dispatcher, on its way to this worker."""
        process = self.process
        if process is None or not process.alive:
            return
        loop = self.world.loop
        incarnation = self.incarnation
        process.run(loop.call_later, self._delay(), self._arrived, incarnation, session_no, message)

    def _arrived(self, incarnation: int, session_no: int, message: Any) -> None:
        if incarnation != self.incarnation or not self.alive:
            return
        if self.paused:
            self._held_in.append((session_no, message))
            return
        self._receive(session_no, message)

    def _receive(self, session_no: int, message: Any) -> None:
        session = self.session
        if session is None or session.no != session_no or self.agent is None:
            return  # a session that already ended
        if message is _END or (isinstance(message, WorkerProblem) and not message.dispatch_id):
            session.ended.set()
        elif isinstance(message, Dispatch):
            self.agent.dispatched(message, lambda report, s=session: self._to_leader(s, report))
        elif isinstance(message, Cancel):
            self.agent.cancelled(message.dispatch_id)

    def _to_leader(self, session: _Session, message: Any, *, force: bool = False) -> None:
        """A heartbeat, a report, or (``force``) the stream's end, on its way to
        the node of ``session``; held while the worker is paused."""
        if self.paused and not force:
            self._held_out.append((session, message))
            return
        slot = self.world.cluster.slots[session.node_id]
        if slot.process is None or slot.node is not session.node:
            return  # that node process is gone: nothing reaches it
        slot.process.run(self.world.loop.call_later, self._delay(), self._deliver, session, message)

    def _deliver(self, session: _Session, message: Any) -> None:
        dispatcher = session.node.executor.dispatcher
        if callable(message):
            message()
        elif isinstance(message, Report):
            dispatcher.report(session.leader_session, message)
        else:
            dispatcher.heartbeat(session.leader_session, message)

    @staticmethod
    def _disconnect(session: _Session, why: str) -> None:
        session.node.executor.dispatcher.disconnected(session.leader_session, why)

    def _delay(self) -> float:
        return self.rng.uniform(*DELAY_S)


class SimWorkers:
    """The run's workers (none unless the run is in remote or auto mode)."""

    def __init__(self, world: Any, rng: random.Random) -> None:
        ids = world.cluster.config.workers.ids if world.settings.executor.mode != "local" else ()
        self.workers = {worker_id: SimWorker(world, worker_id, random.Random(rng.getrandbits(64))) for worker_id in ids}

    def start_all(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def heal_all(self) -> None:
        for worker in self.workers.values():
            worker.resume()
            worker.start()

    def stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.alive:
                worker.process.kill()
                if worker.agent is not None:
                    worker.agent.drop_all()

    def counters(self) -> dict[str, int]:
        return {worker_id: worker.incarnation for worker_id, worker in self.workers.items()}
