"""Who makes the leader's participant calls: the leader itself, or the
transition workers leased them (``[executor] mode``).

The executor's drivers ask :meth:`Dispatcher.call` for a call's outcome, as
they asked the callers before (the same ``CallSpec``, the same
``CallOutcome``), and propose it exactly as before: nothing a worker says
reaches the state except through an entry the leader proposes.

- ``local`` (the default): the leader's own callers make every call.
- ``remote``: only workers make them. A call becomes a :class:`Dispatch`
  leased to an admitted worker that can reach its service - and, when the
  workflow names a ``release``, of that release - the least loaded one with
  room. With none, it waits in the queue; the leader never makes it itself.
- ``auto``: as ``remote`` while a worker that could take the call is
  connected; otherwise (and never for a pinned workflow) the leader makes it.

**Leases.** A dispatched call is leased to its worker until the worker
reports, the leader cancels it (its workflow no longer needs it) or the
worker loses its lease: its stream ends, or it is silent for ``lease_s``
(heartbeats every ``heartbeat_s``). A lost lease puts the call back in the
queue, and the next worker makes it again with the same idempotency key and
the same fence. A report is accepted only from the worker that holds the
call, with the fence it was sent: a report for a lease that was lost, or
from an earlier leadership, is dropped with an error to that worker.

Leases are kept in the leader's memory, never in the log. A lease decides
nothing the log must remember: it says only which worker is making a call
right now, and losing that knowledge costs one repeated call with the same
idempotency key, which participants absorb (that is the protocol's rule
for every retry). A new leader re-dispatches every call its committed state
says is pending (``pending_effects``) under its own fence, and the workers'
streams to the old leader end with it, so no report can outlive the
leadership it was leased under. A log entry per lease would cost a Raft round
and an fsync on a majority per call, for a record the outcome entry
already makes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.cluster.core.executor_settings import (
    RELEASE_PATTERN,
    WORKER_ID_PATTERN,
    ExecutorSettings,
    WorkerSettings,
)
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.http_caller import (
    ATTEMPTS_HARD_MAX,
    ERROR_CHARS_MAX,
    OUTPUT_BYTES_MAX,
    CallOutcome,
    CallSpec,
)
from coordinator.grammar import format_ms
from coordinator.grammar.limits import SERVICE_NAME_PATTERN

__all__ = [
    "CAPACITY_MAX",
    "Cancel",
    "Dispatch",
    "Dispatcher",
    "Heartbeat",
    "Report",
    "Welcome",
    "WorkerHello",
    "WorkerLink",
    "WorkerProblem",
    "WorkerRefused",
    "WorkerSession",
]

log = logging.getLogger(__name__)

CAPACITY_MAX = 1024
SERVICES_MAX = 256
DISPATCH_ID_CHARS_MAX = 64
REFUSED_KEPT_MAX = 64  # refused workers shown by GET /v1/workers (the latest of each id)
OUTCOMES = ("ok", "failed", "unknown")
ALL_SERVICES = "*"  # how the view writes "every registered service"


# -- the messages ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerHello:
    """What a worker says it is: its id, release, the services it can reach
    (empty: every registered one) and how many calls it makes at once."""

    id: str
    release: str
    services: tuple[str, ...] = ()
    capacity: int = 16

    def problem(self) -> str | None:
        """What is malformed, or None."""
        if not isinstance(self.id, str) or not WORKER_ID_PATTERN.fullmatch(self.id):
            return f"id: must match {WORKER_ID_PATTERN.pattern} (got {str(self.id)[:40]!r})"
        if not isinstance(self.release, str) or not RELEASE_PATTERN.fullmatch(self.release):
            return f"release: must match {RELEASE_PATTERN.pattern} (got {str(self.release)[:80]!r})"
        if len(self.services) > SERVICES_MAX:
            return f"services: at most {SERVICES_MAX}"
        for name in self.services:
            if not isinstance(name, str) or not SERVICE_NAME_PATTERN.fullmatch(name):
                return f"services: {str(name)[:70]!r} is not a service name"
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            return "capacity: must be an integer"
        if not 1 <= self.capacity <= CAPACITY_MAX:
            return f"capacity: must be 1 to {CAPACITY_MAX} (got {self.capacity})"
        return None

    def reaches(self, service: str) -> bool:
        return not self.services or service in self.services


@dataclass(frozen=True, slots=True)
class Welcome:
    node: str
    fence: str
    heartbeat_s: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One participant call leased to a worker: the call spec, the service's
    registration (``{"url"}`` or ``{"grpc", "tls"}``) and the operation."""

    dispatch_id: str
    operation: str
    registration: dict
    spec: CallSpec


@dataclass(frozen=True, slots=True)
class Cancel:
    dispatch_id: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    open_breakers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    dispatch_id: str
    fence: str
    outcome: str  # "ok" | "failed" | "unknown"
    output: Any = None
    error: str = ""
    attempts: int = 0

    def problem(self) -> str | None:
        if self.outcome not in OUTCOMES:
            return f"outcome: must be one of {', '.join(OUTCOMES)} (got {str(self.outcome)[:20]!r})"
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            return "attempts: must be an integer"
        if not 0 <= self.attempts <= ATTEMPTS_HARD_MAX:
            return f"attempts: must be 0 to {ATTEMPTS_HARD_MAX}"
        if not isinstance(self.error, str) or len(self.error) > ERROR_CHARS_MAX:
            return f"error: a string of at most {ERROR_CHARS_MAX} characters"
        try:
            size = len(json.dumps(self.output, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError):
            return "output: not a JSON value"
        if size > OUTPUT_BYTES_MAX:
            return f"output: over {OUTPUT_BYTES_MAX} bytes"
        return None

    def outcome_of(self) -> CallOutcome:
        return CallOutcome(self.outcome, output=self.output, error=self.error, attempts=self.attempts)


@dataclass(frozen=True, slots=True)
class WorkerProblem:
    """An error to one worker. ``dispatch_id`` set: about that report only
    (the session stays open); else the session ends with it."""

    code: str
    message: str
    leader: str = ""
    dispatch_id: str = ""


class WorkerRefused(Exception):
    def __init__(self, problem: WorkerProblem) -> None:
        super().__init__(f"{problem.code}: {problem.message}")
        self.problem = problem


class WorkerLink(Protocol):
    """The leader's end of one worker's stream (the gRPC ``Work`` RPC, or the
    simulator's link). Neither method blocks; messages go in order."""

    def send(self, message: Welcome | Dispatch | Cancel | WorkerProblem) -> None: ...

    def close(self, problem: WorkerProblem | None) -> None:
        """End the stream, after ``problem`` when given."""


# -- the leader's side -----------------------------------------------------------------------------------
@dataclass(eq=False)
class _Call:
    seq: int
    dispatch: Dispatch
    release: str | None
    future: asyncio.Future | None = None
    worker: WorkerSession | None = None
    dispatched: int = 0


@dataclass(eq=False)
class WorkerSession:
    hello: WorkerHello
    link: WorkerLink
    connected_ms: int
    last_seen_s: float
    last_heartbeat_ms: int
    held: dict[str, _Call] = field(default_factory=dict)
    open_breakers: frozenset[str] = frozenset()
    lost: bool = False
    completed: int = 0


_FALL_BACK = object()  # auto mode: no worker can take the call any more; the leader makes it


class Dispatcher:
    """The executor's participant calls, by ``[executor] mode`` (see the
    module docstring). ``clock``: the wall clock (what the view stamps);
    liveness is measured on the event loop's clock."""

    def __init__(
        self,
        settings: ExecutorSettings,
        workers: WorkerSettings,
        local: ParticipantCallers,
        *,
        node_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.mode = settings.mode
        self.workers = workers
        self.local = local
        self.node_id = node_id
        self.clock = clock
        self.leading = False
        self.fence = ""
        self.sessions: dict[str, WorkerSession] = {}
        self.refused: dict[str, dict] = {}
        self._queue: dict[int, _Call] = {}
        self._seq = 0
        self._term_tag = ""
        self._watch: asyncio.Task | None = None
        self._logged: set[tuple[str, str]] = set()
        # counters for /metrics
        self.dispatched_total = 0
        self.redispatches_total = 0
        self.leases_lost_total = 0
        self.reports_dropped_total = 0

    # -- leadership -----------------------------------------------------------------------------
    def start_leading(self, fence: str) -> None:
        self.stop_leading()
        self.leading = True
        self.fence = fence
        self._term_tag = fence.replace(":", "-")
        if self.mode != "local":
            self._watch = asyncio.ensure_future(self._watch_leases())

    def stop_leading(self) -> None:
        """Every worker's stream ends (they look for the new leader); every
        queued or leased call is forgotten (the executor cancels its calls
        at the same moment)."""
        self.leading = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for session in list(self.sessions.values()):
            self._end(session, WorkerProblem("not_leader", f"{self.node_id} no longer leads"), requeue=False)
        self._queue.clear()

    # -- calls ----------------------------------------------------------------------------------------
    async def call(self, service: dict | None, spec: CallSpec, operation: str) -> CallOutcome:
        """The outcome of one participant call, made by the leader or by a worker."""
        if service is None or (self.mode == "local" and spec.release is None):
            return await self.local.call(service, spec, operation)
        # (a pinned call in local mode - submitted before the mode changed - waits: no worker is admitted)
        self._seq += 1
        registration = {k: service[k] for k in ("url", "grpc", "tls") if k in service}
        dispatch = Dispatch(f"{self._term_tag}-{self._seq}", operation, registration, spec)
        call = _Call(self._seq, dispatch, spec.release)
        try:
            while True:
                if self._falls_back(call):
                    return await self.local.call(service, spec, operation)
                call.future = asyncio.get_running_loop().create_future()
                self._queue[call.seq] = call
                self._pump()
                result = await call.future
                if result is not _FALL_BACK:
                    return result
        finally:
            self._queue.pop(call.seq, None)
            worker = call.worker
            if worker is not None and worker.held.pop(dispatch.dispatch_id, None) is call:
                call.worker = None
                if not worker.lost:
                    worker.link.send(Cancel(dispatch.dispatch_id))
                self._pump()

    def _eligible(self, session: WorkerSession, call: _Call) -> bool:
        return (
            not session.lost
            and session.hello.reaches(call.dispatch.spec.service)
            and (call.release is None or session.hello.release == call.release)
        )

    def _falls_back(self, call: _Call) -> bool:
        return (
            self.mode == "auto"
            and call.release is None
            and not any(self._eligible(s, call) for s in self.sessions.values())
        )

    def _pump(self) -> None:
        """Lease queued calls, oldest first, to the least loaded eligible
        worker with room."""
        if not self._queue or not self.leading:
            return
        free = [s for s in self.sessions.values() if not s.lost and len(s.held) < s.hello.capacity]
        for seq in list(self._queue):
            call = self._queue[seq]
            if self._falls_back(call):
                del self._queue[seq]
                if call.future is not None and not call.future.done():
                    call.future.set_result(_FALL_BACK)
                continue
            if not free:
                if self.mode == "auto":
                    continue  # others may still fall back
                return
            choices = [s for s in free if self._eligible(s, call)]
            if not choices:
                continue
            session = min(choices, key=lambda s: (len(s.held) / s.hello.capacity, s.hello.id))
            del self._queue[seq]
            self._lease(session, call)
            if len(session.held) >= session.hello.capacity:
                free.remove(session)

    def _lease(self, session: WorkerSession, call: _Call) -> None:
        call.worker = session
        call.dispatched += 1
        self.dispatched_total += 1
        if call.dispatched > 1:
            self.redispatches_total += 1
        session.held[call.dispatch.dispatch_id] = call
        session.link.send(call.dispatch)

    # -- sessions ---------------------------------------------------------------------------------------
    def connect(self, hello: WorkerHello, link: WorkerLink) -> WorkerSession:
        """Admit a worker (its stream is ``link``) and welcome it; WorkerRefused
        says why not."""
        problem = hello.problem()
        if problem is not None:
            raise WorkerRefused(WorkerProblem("invalid", f"hello: {problem}"))
        refusal = None
        if not self.leading:
            raise WorkerRefused(WorkerProblem("not_leader", f"{self.node_id} does not lead"))
        if self.mode == "local":
            refusal = WorkerProblem("local_mode", "[executor] mode is local: this cluster's leader makes every call")
        elif hello.id not in self.workers.ids:
            refusal = WorkerProblem("unknown_worker", f"worker id {hello.id!r} is not in [workers] ids")
        elif not self.workers.admits(hello.release):
            refusal = WorkerProblem(
                "release_refused",
                f"release {hello.release!r} is not in [workers] releases ({', '.join(self.workers.releases)})",
            )
        if refusal is not None:
            self._note_refused(hello, refusal)
            raise WorkerRefused(refusal)
        self.refused.pop(hello.id, None)
        existing = self.sessions.get(hello.id)
        if existing is not None:
            self._end(existing, WorkerProblem("replaced", "another session of this worker id connected"))
        now_ms = int(self.clock() * 1000)
        session = WorkerSession(hello, link, now_ms, self._now_s(), now_ms)
        self.sessions[hello.id] = session
        link.send(Welcome(self.node_id, self.fence, self.workers.heartbeat_s, self.workers.lease_s))
        log.info(
            "worker %s admitted (release %s, capacity %d, services %s)",
            hello.id,
            hello.release,
            hello.capacity,
            ", ".join(hello.services) or "all",
        )
        self._pump()
        return session

    def heartbeat(self, session: WorkerSession, beat: Heartbeat) -> None:
        if session.lost:
            return
        session.last_seen_s = self._now_s()
        session.last_heartbeat_ms = int(self.clock() * 1000)
        session.open_breakers = frozenset(beat.open_breakers[:SERVICES_MAX])

    def report(self, session: WorkerSession, report: Report) -> None:
        """A worker's outcome of a call it holds: the call's answer. Anything
        else is dropped, with an error to that worker."""
        if session.lost:
            return
        session.last_seen_s = self._now_s()
        call = session.held.get(report.dispatch_id)
        if call is None:
            self._drop(session, report, "not_held", "no call of that id is leased to this worker")
            return
        if report.fence != call.dispatch.spec.fence:
            self._drop(session, report, "stale_fence", f"the call was sent with fence {call.dispatch.spec.fence}")
            return
        problem = report.problem()
        if problem is not None:
            # A malformed answer is no answer: the call goes to a worker again.
            self._drop(session, report, "invalid", problem)
            del session.held[report.dispatch_id]
            call.worker = None
            self._queue[call.seq] = call
            self._pump()
            return
        del session.held[report.dispatch_id]
        call.worker = None
        session.completed += 1
        if call.future is not None and not call.future.done():
            call.future.set_result(report.outcome_of())
        self._pump()

    def disconnected(self, session: WorkerSession, why: str) -> None:
        """The worker's stream ended: it loses its leases."""
        self._end(session, None, why=why)

    def _drop(self, session: WorkerSession, report: Report, code: str, message: str) -> None:
        self.reports_dropped_total += 1
        self._log_once(session.hello.id, code, f"worker {session.hello.id}: report dropped ({code}): {message}")
        session.link.send(WorkerProblem(code, message, dispatch_id=str(report.dispatch_id)[:DISPATCH_ID_CHARS_MAX]))

    def _end(
        self, session: WorkerSession, problem: WorkerProblem | None, *, why: str = "", requeue: bool = True
    ) -> None:
        if session.lost:
            return
        session.lost = True
        if self.sessions.get(session.hello.id) is session:
            del self.sessions[session.hello.id]
        held, session.held = list(session.held.values()), {}
        if held:
            self.leases_lost_total += len(held)
            log.warning(
                "worker %s lost %d lease(s): %s",
                session.hello.id,
                len(held),
                why or (problem.message if problem else "stream ended"),
            )
        session.link.close(problem)
        for call in held:
            call.worker = None
            if requeue:
                self._queue[call.seq] = call
        if requeue:
            self._queue = dict(sorted(self._queue.items()))
            self._pump()

    async def _watch_leases(self) -> None:
        """End the session of every worker silent for ``lease_s``.

        Time this process did not run does not count against its workers: a
        leader stopped (SIGSTOP, a VM pause) or whose event loop stalled wakes
        with their heartbeats of that time still unread, and this watch, due
        long ago, would otherwise run first and end every healthy session (a
        chaos run saw both workers lose their leases the instant a paused
        leader resumed). A tick that comes late by more than its interval adds
        the lateness to every session's ``last_seen_s``; a worker that was
        already silent before the stall still loses its leases, that much
        later."""
        settings = self.workers
        interval_s = settings.heartbeat_s / 2
        last_tick_s = self._now_s()
        while True:
            await asyncio.sleep(interval_s)
            now_s = self._now_s()
            late_s = now_s - last_tick_s - interval_s
            last_tick_s = now_s
            if late_s > interval_s:
                for session in self.sessions.values():
                    session.last_seen_s += late_s
            for session in list(self.sessions.values()):
                if now_s - session.last_seen_s > settings.lease_s:
                    problem = WorkerProblem("lease_lost", f"no heartbeat for {settings.lease_s:g} s")
                    self._end(session, problem, why=problem.message)

    def _note_refused(self, hello: WorkerHello, refusal: WorkerProblem) -> None:
        self._log_once(hello.id, refusal.code, f"worker {hello.id} refused: {refusal.message}")
        self.refused.pop(hello.id, None)
        self.refused[hello.id] = {**self._identity(hello), "reason": refusal.message, "at_ms": int(self.clock() * 1000)}
        while len(self.refused) > REFUSED_KEPT_MAX:
            self.refused.pop(next(iter(self.refused)))

    def _log_once(self, worker_id: str, code: str, line: str) -> None:
        if (worker_id, code) not in self._logged and len(self._logged) < 10_000:
            self._logged.add((worker_id, code))
            log.warning("%s", line)

    @staticmethod
    def _now_s() -> float:
        return asyncio.get_running_loop().time()

    # -- views ---------------------------------------------------------------------------------------------
    def queued(self) -> int:
        return len(self._queue)

    def open_services(self) -> set[str]:
        """Services no connected worker can call with a closed breaker (every
        worker that reaches them has it open): their intake is suspended."""
        candidates = set().union(*(s.open_breakers for s in self.sessions.values())) if self.sessions else set()
        return {
            name
            for name in candidates
            if all(name in s.open_breakers for s in self.sessions.values() if s.hello.reaches(name))
        }

    @staticmethod
    def _identity(hello: WorkerHello) -> dict:
        return {
            "id": hello.id,
            "release": hello.release,
            "services": list(hello.services) or [ALL_SERVICES],
            "capacity": hello.capacity,
        }

    def view(self) -> dict:
        """GET /v1/workers: the admitted workers, then those refused lately."""
        workers = [
            {
                **self._identity(s.hello),
                "in_flight": len(s.held),
                "completed": s.completed,
                "connected_at": format_ms(s.connected_ms),
                "last_heartbeat": format_ms(s.last_heartbeat_ms),
                "open_breakers": sorted(s.open_breakers),
                "admitted": True,
                "reason": None,
            }
            for s in sorted(self.sessions.values(), key=lambda s: s.hello.id)
        ]
        workers += [
            {
                **{k: v for k, v in entry.items() if k != "at_ms"},
                "in_flight": 0,
                "completed": 0,
                "connected_at": None,
                "last_heartbeat": format_ms(entry["at_ms"]),
                "open_breakers": [],
                "admitted": False,
            }
            for _, entry in sorted(self.refused.items())
            if entry["id"] not in self.sessions
        ]
        return {
            "mode": self.mode,
            "leading": self.leading,
            "queued": len(self._queue),
            "releases": list(self.workers.releases),
            "workers": workers,
        }

    def counters(self) -> dict:
        return {
            "workers_connected": len(self.sessions),
            "commands_queued": len(self._queue),
            "dispatched_total": self.dispatched_total,
            "redispatches_total": self.redispatches_total,
            "leases_lost_total": self.leases_lost_total,
            "reports_dropped_total": self.reports_dropped_total,
        }
