"""Simulated transition workers: the real dispatcher and worker agent on the
simulation's edges.

A run in ``remote`` or ``auto`` executor mode (:class:`SimSettings` ``mode``
and ``workers``) starts N workers beside the nodes. Each is a simulated
process (:class:`~coordinator.chaos.sim.clock.Process`, ``w1#1``) holding a
real :class:`~coordinator.cluster.worker.agent.WorkerAgent` whose participant
callers are the real ``HttpCaller`` over the simulated participant links,
calling as ``w1`` (so the participants and the trace see who called).

**The stream.** In place of the gRPC ``Work`` stream, a :class:`_Stream`
joins the worker to one node: at the node's end it is the dispatcher's
:class:`~coordinator.cluster.executor.dispatch.WorkerLink`
(:meth:`~coordinator.cluster.executor.dispatch.Dispatcher.connect` is given
it when the worker's hello arrives), at the worker's end an inbox. Each way
it is ordered (FIFO, as one HTTP/2 stream is), every message arriving after
a seeded delay of 0.2-5 ms and running inside the receiving process: a
message to a process that died is lost. The stream breaks - both ends see
it end, what was in flight is lost - on a rare seeded reset while the
faults run, and when its node's host runs again after a crash (the new
process's kernel resets it). Every crash of the simulation is a power
loss: while the host is down, nothing answers the worker and nothing tells
it (no keepalive), and a new connection to it waits for it to come back
(up to gRPC's 20 s connect timeout). While the
worker is cut from its node (``worker-partition``) the messages of both
ways wait and arrive, in order, when the cut heals, as TCP retransmits
them: the stream does not break (the worker's gRPC channel has no
keepalive, and the node's pings come after 60 s; a cut lasts at most 3 s),
so the node's lease watch takes the worker's calls back meanwhile and the
worker learns it only when the cut heals. A worker killed closes its end
(the node sees the stream end after what was in flight).

**Following the leader** as cluster/worker/process.py does: the worker tries
the nodes in turn, follows a ``not_leader`` refusal to the leader it names
(as cluster/api/grpc_workers.py fills it in), heartbeats every
``heartbeat_s`` of the welcome, and after a session ends (``lease_lost``,
``not_leader``, ``replaced``, a broken stream) tries again after the same
doubling backoff, with jitter from its seeded stream.

**Faults** (the nemesis): ``worker-kill`` (its calls stop; restarted later
as a fresh process and session), ``worker-pause`` (the process is frozen:
it reads nothing, sends nothing, and its participant calls neither leave
nor return until it resumes, so the leader takes its calls back at the end
of its lease and leases them again; what the worker sends when it wakes -
reports of calls it no longer holds - must be dropped) and
``worker-partition`` (the worker runs on, cut from the leader or from every
node). Every report the dispatcher gets for a call the session no longer
holds is counted (``late_reports``); one that the dispatcher accepted
anyway would be a ``late_report_accepted`` violation.

All of a worker's draws (delays, resets, backoff, its callers' jitter) come
from its own seeded stream, so a seed replays exactly.
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import TYPE_CHECKING, Any

from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.dispatch import (
    Cancel,
    Dispatch,
    Report,
    Welcome,
    WorkerHello,
    WorkerProblem,
    WorkerRefused,
    WorkerSession,
)
from coordinator.cluster.executor.http_caller import HttpCaller
from coordinator.cluster.worker.agent import WorkerAgent
from coordinator.cluster.worker.process import REFUSED_RETRY_S, RETRY_MAX_S, RETRY_S

from .clock import Process
from .participants import SimSession

if TYPE_CHECKING:  # pragma: no cover
    from coordinator.cluster.core.node import Node

__all__ = ["RELEASE", "SimWorker", "SimWorkers"]

RELEASE = "sim"
CAPACITY = 8
DELAY_S = (0.0002, 0.005)  # one way, one message on a worker's stream
RESET_PROBABILITY = 0.001  # per message while the faults run: the stream resets
# A connection to a host that is down waits this long for it (gRPC's
# minimum connect timeout), looking every CONNECT_POLL_S.
CONNECT_TIMEOUT_S = 20.0
CONNECT_POLL_S = 0.1
# The codes that end a session and are retried with backoff (cluster/worker/process.py).
SESSION_CODES = ("not_leader", "lease_lost", "replaced")
_HELLO = "hello"  # the first message of a stream, carrying the worker's WorkerHello
_END = "end"  # the stream's end, after what was sent before it

# ``world`` below is the run's World (chaos/sim/world.py): that module builds
# the workers, so this one does not import it back.


class _Frozen:
    """An exchange of a paused worker: its request leaves, and its answer is
    read, only while the worker runs."""

    def __init__(self, exchange: Any, awake: asyncio.Event) -> None:
        self._exchange = exchange
        self._awake = awake

    async def __aenter__(self) -> Any:
        await self._awake.wait()
        response = await self._exchange.__aenter__()
        await self._awake.wait()
        return response

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exchange.__aexit__(*exc_info)


class _WorkerSession(SimSession):
    """A worker's participant session, frozen while the worker is paused."""

    def __init__(self, links: Any, caller: str, awake: asyncio.Event) -> None:
        super().__init__(links, caller)
        self._awake = awake

    def request(self, method: str, url: str, **kwargs: Any) -> _Frozen:  # type: ignore[override]
        return _Frozen(super().request(method, url, **kwargs), self._awake)


class _Stream:
    """One worker's stream to one node (see the module docstring): the
    dispatcher's link at the node's end (``send``, ``close``), ``inbox`` at
    the worker's."""

    def __init__(self, worker: SimWorker, no: int, node_id: str, node: Node, node_process: Process) -> None:
        assert worker.process is not None
        self.worker = worker
        self.world = worker.world
        self.no = no
        self.node_id = node_id
        self.node = node
        self.node_process = node_process
        self.worker_process = worker.process
        self.session: WorkerSession | None = None  # the dispatcher's, once it admitted the worker
        self.welcome: Welcome | None = None
        self.problem: WorkerProblem | None = None  # what the node ended the session with
        self.inbox: collections.deque = collections.deque()
        self.arrived = asyncio.Event()
        self.node_closed = False
        self.worker_closed = False
        self.broken = False
        self._last_arrival = {"up": 0.0, "down": 0.0}
        self._in_flight: dict[str, collections.deque] = {"up": collections.deque(), "down": collections.deque()}
        self._held: list[tuple[str, Any]] = []  # while the worker is cut from the node, both ways in order

    # -- the dispatcher's WorkerLink -----------------------------------------------------------------
    def send(self, message: Any) -> None:
        if not self.node_closed:
            self._transmit("down", message)

    def close(self, problem: WorkerProblem | None) -> None:
        if self.node_closed:
            return
        if problem is not None:
            self._transmit("down", problem)
        self._transmit("down", _END)
        self.node_closed = True

    # -- the worker's end ----------------------------------------------------------------------------
    def up(self, message: Any) -> None:
        """A hello, heartbeat or report of the worker, to the node (once it
        runs again, if it is paused)."""
        if self.worker.paused:
            self.worker.unsent.append((self, message))
        elif not self.worker_closed:
            self._transmit("up", message)

    def close_by_worker(self) -> None:
        """The worker ends the stream (its session ended, or it was killed)."""
        if not self.worker_closed:
            self._transmit("up", _END)
            self.worker_closed = True

    def node_alive(self) -> bool:
        return self.world.cluster.slots[self.node_id].node is self.node

    def host_back(self) -> bool:
        """Its node's host runs again, with another process: it resets this stream."""
        slot = self.world.cluster.slots[self.node_id]
        return slot.node is not None and slot.node is not self.node

    # -- the wire -------------------------------------------------------------------------------------
    def _transmit(self, direction: str, message: Any) -> None:
        if self.broken:
            return
        if direction == "up" and not self.node_alive():
            if self.host_back():
                self.break_("reset by its node's new process")
            return  # its host is down (a power loss): nothing answers, nothing says so
        worker = self.worker
        if not self.world.network.quiet and worker.rng.random() < RESET_PROBABILITY:
            self.break_("reset")
            return
        if self.node_id in worker.cut_from:
            self._held.append((direction, message))
            return
        self._schedule(direction, message)

    def _schedule(self, direction: str, message: Any) -> None:
        loop = self.world.loop
        at = max(loop.time() + self.worker.delay(), self._last_arrival[direction])
        self._last_arrival[direction] = at
        self._in_flight[direction].append(message)
        process = self.worker_process if direction == "down" else self.node_process
        process.run(loop.call_at, at, self._arrive, direction)  # lost if that process dies first

    def release(self) -> None:
        """The cut healed: what waited goes on, in order."""
        held, self._held = self._held, []
        for direction, message in held:
            if not self.broken:
                self._schedule(direction, message)

    def break_(self, why: str) -> None:
        """The connection is gone: both ends see the stream end a moment later;
        nothing in flight or held arrives."""
        if self.broken:
            return
        self.broken = True
        self._held = []
        self.worker.streams_broken += 1
        self.world.trace.event("worker-stream-break", self.worker.id, self.node_id, self.no, why)
        loop = self.world.loop
        # (scheduled, never called back at once: the dispatcher may be the one sending)
        self.node_process.run(loop.call_later, self.worker.delay(), self._broken_at_node, why)
        self.worker_process.run(loop.call_later, self.worker.delay(), self._deliver_to_worker, _END)

    def _broken_at_node(self, why: str) -> None:
        if self.session is not None:  # (a stream that breaks as its welcome leaves ends the session too)
            self.node.executor.dispatcher.disconnected(self.session, f"its stream broke ({why})")

    def _arrive(self, direction: str) -> None:
        message = self._in_flight[direction].popleft()
        if self.broken:
            return
        if direction == "down":
            self._deliver_to_worker(message)
        else:
            self._deliver_to_node(message)

    def _deliver_to_worker(self, message: Any) -> None:
        self.inbox.append(message)
        self.arrived.set()

    def _deliver_to_node(self, message: Any) -> None:
        dispatcher = self.node.executor.dispatcher
        if message is _HELLO:
            try:
                self.session = dispatcher.connect(self.worker.hello, self)
            except WorkerRefused as refused:
                problem = refused.problem
                if problem.code == "not_leader":  # as cluster/api/grpc_workers.py answers
                    leader = self.node.leader_address()
                    if leader is not None and leader.id != self.node_id:
                        problem = WorkerProblem(problem.code, problem.message, leader=leader.id)
                self.close(problem)
            return
        session = self.session
        if session is None:
            return  # refused: the node reads nothing more of this stream
        if message is _END:
            dispatcher.disconnected(session, "its stream ended")
        elif isinstance(message, Report):
            self.worker.workers.report_arrived(self, dispatcher, session, message)
        else:
            dispatcher.heartbeat(session, message)


class SimWorker:
    def __init__(self, world: Any, workers: SimWorkers, worker_id: str, rng: random.Random) -> None:
        self.world = world
        self.workers = workers
        self.id = worker_id
        self.rng = rng
        self.hello = WorkerHello(worker_id, RELEASE, (), CAPACITY)
        self.settings = world.cluster.config.workers
        self.process: Process | None = None
        self.incarnation = 0
        self.agent: WorkerAgent | None = None
        self.stream: _Stream | None = None
        self._streams = 0
        self.awake = asyncio.Event()
        self.awake.set()
        self.cut_from: set[str] = set()  # the nodes this worker cannot reach now
        self.unsent: list[tuple[_Stream, Any]] = []  # what it would have sent while paused
        self.sessions = 0
        self.streams_broken = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    @property
    def paused(self) -> bool:
        return not self.awake.is_set()

    def delay(self) -> float:
        return self.rng.uniform(*DELAY_S)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.alive:
            return
        self.incarnation += 1
        self.process = Process(f"{self.id}#{self.incarnation}")
        self.awake = asyncio.Event()
        self.awake.set()
        self.unsent = []
        self.world.trace.event("worker-start", self.id, self.incarnation)
        self.process.run(self._boot)

    def _boot(self) -> None:
        executor = self.world.settings.executor
        rng = random.Random(self.rng.getrandbits(64))
        breakers = Breakers(executor.breaker_failures_to_open, executor.breaker_slow_interval_s, rng=rng)
        session = _WorkerSession(self.world.links, self.id, self.awake)
        callers = ParticipantCallers(HttpCaller(session, breakers, rng=rng), on_close=(session.close,))  # type: ignore[arg-type]
        self.agent = WorkerAgent(self.hello, callers, breakers)
        asyncio.ensure_future(self._run())

    def kill(self) -> None:
        """SIGKILL: its calls stop; its node sees the stream end (the kernel closes it)."""
        if not self.alive:
            return
        assert self.process is not None
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close_by_worker()
        self.process.kill()
        if self.agent is not None:
            self.agent.drop_all()
        self.world.trace.event("worker-kill", self.id, self.incarnation)

    def pause(self) -> None:
        if self.alive and not self.paused:
            self.awake.clear()
            self.world.trace.event("worker-pause", self.id)

    def resume(self) -> None:
        if self.paused:
            self.awake.set()
            self.world.trace.event("worker-resume", self.id)
            unsent, self.unsent = self.unsent, []
            for stream, message in unsent:
                stream.up(message)

    def cut(self, node_ids: set[str]) -> None:
        """The worker can no longer reach ``node_ids`` (it runs on)."""
        self.cut_from = set(node_ids)
        self.world.trace.event("worker-cut", self.id, sorted(node_ids))

    def uncut(self) -> None:
        if not self.cut_from:
            return
        self.cut_from = set()
        self.world.trace.event("worker-uncut", self.id)
        if self.stream is not None:
            self.stream.release()
        for stream in self.workers.holding(self):
            stream.release()

    # -- following the leader (as cluster/worker/process.py) ----------------------------------------
    async def _run(self) -> None:
        ids = self.world.cluster.ids
        turn, hint, wait_s = 0, None, RETRY_S
        while True:
            await self.awake.wait()
            target = hint or ids[turn % len(ids)]
            turn += 0 if hint else 1
            hint = None
            problem = await self._session(target)
            if problem is not None and problem.code == "not_leader" and problem.leader:
                hint, wait_s = problem.leader, RETRY_S
                continue
            if problem is not None and problem.code not in SESSION_CODES:
                delay_s = REFUSED_RETRY_S
            else:
                delay_s, wait_s = wait_s, min(RETRY_MAX_S, wait_s * 2)
            await asyncio.sleep(delay_s * self.rng.uniform(0.5, 1.5))

    async def _session(self, node_id: str) -> WorkerProblem | None:
        """One stream to ``node_id``: the problem the node ended it with, if any."""
        assert self.agent is not None
        slot = self.world.cluster.slots[node_id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S
        while slot.node is None and loop.time() < deadline:  # its host is down: SYNs go unanswered
            await asyncio.sleep(CONNECT_POLL_S)
        if slot.node is None or slot.process is None:
            return None
        self._streams += 1
        stream = self.stream = _Stream(self, self._streams, node_id, slot.node, slot.process)
        self.workers.opened(stream)
        beat_s = self.settings.heartbeat_s  # until the welcome says
        next_beat = loop.time() + beat_s
        stream.up(_HELLO)
        try:
            while True:
                while not stream.inbox:
                    stream.arrived.clear()
                    try:
                        await asyncio.wait_for(stream.arrived.wait(), max(0.0, next_beat - loop.time()))
                    except TimeoutError:
                        pass
                    await self.awake.wait()
                    if loop.time() >= next_beat:
                        next_beat = loop.time() + beat_s
                        if stream.host_back():
                            stream.break_("reset by its node's new process")
                        elif stream.welcome is not None:
                            stream.up(self.agent.heartbeat())
                message = stream.inbox.popleft()
                await self.awake.wait()
                if message is _END:
                    problem = stream.problem
                    self.world.trace.event(
                        "worker-session-end", self.id, node_id, stream.no, problem.code if problem else "-"
                    )
                    return problem
                if isinstance(message, Welcome):
                    stream.welcome, beat_s = message, message.heartbeat_s
                    next_beat = loop.time() + beat_s
                    self.sessions += 1
                    self.world.trace.event("worker-session", self.id, node_id, stream.no, message.fence)
                elif isinstance(message, Dispatch):
                    self.agent.dispatched(message, stream.up)
                elif isinstance(message, Cancel):
                    self.agent.cancelled(message.dispatch_id)
                elif isinstance(message, WorkerProblem) and message.dispatch_id:
                    self.workers.drop_notices += 1  # the leader dropped one of its reports
                elif isinstance(message, WorkerProblem):
                    stream.problem = message
        finally:
            if self.stream is stream:
                self.stream = None
            self.agent.drop_all()
            stream.close_by_worker()


class SimWorkers:
    """The run's workers (none unless the run is in remote or auto mode)."""

    def __init__(self, world: Any, rng: random.Random) -> None:
        self.world = world
        ids = world.cluster.config.workers.ids if world.settings.executor.mode != "local" else ()
        self.workers = {
            worker_id: SimWorker(world, self, worker_id, random.Random(rng.getrandbits(64))) for worker_id in ids
        }
        self._streams: list[_Stream] = []  # recent streams (a cut may hold messages on one that ended)
        self.late_reports = 0  # reports that reached a session no longer holding their call
        self.drop_notices = 0  # the leader's "report dropped" answers the workers read

    def start_all(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def heal_all(self) -> None:
        for worker in self.workers.values():
            worker.uncut()
            worker.resume()
            worker.start()

    def stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.alive:
                worker.process.kill()
                if worker.agent is not None:
                    worker.agent.drop_all()

    def opened(self, stream: _Stream) -> None:
        self._streams = [s for s in self._streams if not s.broken and s._held] + [stream]

    def holding(self, worker: SimWorker) -> list[_Stream]:
        return [s for s in self._streams if s.worker is worker and s._held and not s.broken]

    def report_arrived(self, stream: _Stream, dispatcher: Any, session: WorkerSession, report: Report) -> None:
        """A worker's report reaches its node's dispatcher. One for a call the
        session no longer holds under that fence (its lease lost, the call
        cancelled, the session over) must be dropped: no call may complete."""
        call = session.held.get(report.dispatch_id)
        current = not session.lost and call is not None and call.dispatch.spec.fence == report.fence
        completed = session.completed
        dispatcher.report(session, report)
        if current:
            return
        self.late_reports += 1
        self.world.trace.event("worker-late-report", stream.worker.id, stream.node_id, report.dispatch_id)
        if session.completed != completed:
            self.world.cluster.violation(
                "late_report_accepted",
                f"{stream.node_id} accepted {stream.worker.id}'s report of {report.dispatch_id} on a session "
                f"that no longer held that call (lost: {session.lost})",
                worker=stream.worker.id,
                node=stream.node_id,
                dispatch_id=report.dispatch_id,
            )

    def counters(self) -> dict[str, Any]:
        workers = self.workers.values()
        return {
            "worker_starts": sum(w.incarnation for w in workers),
            "worker_sessions": sum(w.sessions for w in workers),
            "worker_streams_broken": sum(w.streams_broken for w in workers),
            "late_reports": self.late_reports,
            "report_drop_notices": self.drop_notices,
        }
