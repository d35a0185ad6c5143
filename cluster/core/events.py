"""What a node applies, as a stream of events: ``GET /v1/events``.

Sources, all on the thread the log applies on (PySyncObj's tick thread):

- :class:`ClusterState` calls :meth:`EventHub.before` and
  :meth:`EventHub.after` around every command it applies without rejection
  (``state.observer``). The events are *derived* by comparing: the history
  records a command appended to the saga or transaction it touched (one
  ``workflow`` event per record, ``type`` = the record's ``event``: started,
  step_succeeded, step_failed, step_unknown, compensating, signal, vote,
  decided, completed, ...), then one ``call_started`` event per participant
  call the command started (``call``: step, service, phase, idempotency
  key - derived from the state: a step that became the running one, a
  compensation begun or redriven, a prepare or phase-2 call owed; a call a
  new leader issues again starts no new event), the workflows a prune
  removed (``pruned``), and
  the service a registry command wrote (``service`` events ``put`` and
  ``deleted``). Nothing replicated is changed or read outside apply's lock;
  a failure here is logged and never reaches apply.
- :meth:`EventHub.restored` when a snapshot replaces the state: the events
  of the entries it covers are never seen here (see "floor" below).
- :meth:`EventHub.role` when the node's Raft role or term changes (``role``
  events, this node's own: they are not replicated).

Ids. A log event's id is ``"INDEX.N"``: the index of the entry applied and
its ordinal N among the events of that entry (a batch entry holds several
commands, a command may yield several events). Every replica derives the
same log events with the same ids, so ``Last-Event-ID`` from one node
resumes on another. A role event has no entry: it takes the index of the
last entry that yielded an event and the next ordinal after that entry's
events, so it sorts where it happened; role events differ between nodes.
An id ``"INDEX"`` alone means "after every event of entry INDEX", and
``"0"`` means from the start.

Hand-over. The tick thread only appends to ``pending`` (under a lock,
bounded by ``PENDING_MAX``: past it the oldest are dropped and counted as a
gap) and schedules :meth:`_drain` on the event loop with
``call_soon_threadsafe`` - at once while a stream is open, else once
``DRAIN_BATCH`` events wait (a new stream, and any read of the ring, drains
what waits first); it never waits for the loop. The ring and the
subscribers live on the loop only. A workflow event's JSON object is built
when a stream first sends it (:class:`_Event`).

Ring and floor. The loop keeps the last ``ring_size`` events. ``floor`` is
the id after which the hub has every event: the start (``"0"``) on a node
that applied its log from its first entry, the snapshot's index after a
restore (a node that restarts from its snapshot, or installs a leader's),
the evicted id once the ring is full. A node that restarts without a
snapshot applies its journal again and derives the same events again. A subscriber resuming after an id below the floor
first gets one ``reset`` event (the events after that id up to the newest
one are not sent: reload the state by GET) and then live events; at or
above the floor it gets exactly the ring's events after that id, then live
ones - no gap, no duplicate.

Subscribers. At most ``subscribers_max`` (:class:`Overloaded`, 429). Each
has a queue of ``queue_size`` live events; a subscriber whose queue is full
when an event arrives is dropped: its queue is emptied at once (the memory
is not held for a slow reader), it is sent a final ``dropped`` event and
its stream ends. The backlog a resume is served is a list of references
to events the ring holds, at most ``ring_size``, not counted in the queue.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator.cluster.core.errors import InvalidInput, Overloaded, Unavailable
from coordinator.grammar import format_ms
from coordinator.saga.definition import ActionStep
from coordinator.saga.state import FORWARD_STATES, SagaStatus, StepStatus
from coordinator.twopc.model import ACKNOWLEDGED_STATUS, idempotency_key

__all__ = ["EVENT_KINDS", "EventHub", "Subscription", "format_id", "parse_id"]

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset({"workflow", "service", "role"})
# An ordinal above any real one: the key of "after every event of entry I".
WHOLE_ENTRY = 1 << 62
# Events waiting for the loop; past this the loop is stuck and the oldest go.
PENDING_MAX = 100_000
# With no stream open, events go to the loop in batches of this many (see _queue).
DRAIN_BATCH = 256
WORKFLOW_COMMANDS = {
    "saga.submit": "saga",
    "saga.event": "saga",
    "saga.signal": "saga",
    "saga.redrive": "saga",
    "tx.submit": "transaction",
    "tx.event": "transaction",
}
TERMINAL_RECORDS = frozenset({"completed", "compensated", "committed", "aborted"})
PRUNE_COMMANDS = {"saga.prune": "saga", "tx.prune": "transaction"}
ROLES = {0: "follower", 1: "candidate", 2: "leader"}

Key = tuple[int, int]


# Before every event, role events at index 0 included: the id "0".
START: Key = (0, -1)


def format_id(key: Key) -> str:
    index, ordinal = key
    return str(index) if ordinal >= WHOLE_ENTRY or key == START else f"{index}.{ordinal}"


def parse_id(text: str, field: str = "Last-Event-ID") -> Key:
    """``"I.N"``, ``"I"`` (after all of entry I) or ``"0"`` (from the start:
    the role events a node has before applying any entry too);
    InvalidInput (400) naming ``field`` otherwise."""
    index, dot, ordinal = text.strip().partition(".")
    try:
        key = (int(index), int(ordinal) if dot else WHOLE_ENTRY)
    except ValueError:
        raise InvalidInput(field, f"{text[:40]!r} is not an event id: INDEX or INDEX.N") from None
    if key[0] < 0 or key[1] < 0 or (dot and key[1] >= WHOLE_ENTRY):
        raise InvalidInput(field, f"{text[:40]!r}: out of range")
    return START if key == (0, WHOLE_ENTRY) else key


@dataclass(slots=True)
class _Event:
    """One event of the ring. A workflow event is rendered (its JSON object
    built, history record and times formatted) only when a stream sends it:
    every node derives the events of every command it applies, and most of
    them are never read - rendering them all was a fifth of a follower's
    CPU. ``render`` holds only immutable values (the history record, the
    call, strings), so the object is the same whenever it is built; it is
    built on the event loop, once."""

    key: Key
    kind: str
    workflow: str | None
    _data: dict | None = None
    _render: Callable[[], dict] | None = None

    @property
    def data(self) -> dict:
        """The JSON object sent, id included."""
        if self._data is None:
            assert self._render is not None
            self._data, self._render = self._render(), None
        return self._data


@dataclass(slots=True, eq=False)  # compared (and hashed) by identity
class Subscription:
    """One stream: ``backlog`` first, then live events from ``queue``;
    ``end`` says why it stopped (``dropped`` or ``shutdown``)."""

    kinds: frozenset[str]
    workflow: str | None
    queue_size: int
    backlog: collections.deque = field(default_factory=collections.deque)
    queue: collections.deque = field(default_factory=collections.deque)
    after: Key = (0, -1)  # nothing at or before this id is sent live
    end: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, kind: str, workflow: str | None) -> bool:
        return kind in self.kinds and (self.workflow is None or workflow == self.workflow)

    def offer(self, key: Key, event: dict) -> None:
        if self.end is not None or key <= self.after:
            return
        if len(self.queue) >= self.queue_size:
            self.queue.clear()
            self.end = "dropped"
        else:
            self.queue.append(event)
        self.wake.set()

    async def next(self, timeout_s: float) -> dict | None:
        """The next event; None after ``timeout_s`` without one or once it
        ended (then ``end`` is set, after the queue is empty)."""
        while True:
            if self.backlog:
                return self.backlog.popleft()
            if self.queue:
                return self.queue.popleft()
            if self.end is not None:
                return None
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout_s)
            except TimeoutError:
                return None


class EventHub:
    def __init__(self, *, ring_size: int, queue_size: int, subscribers_max: int, clock: Callable[[], float]) -> None:
        self.ring_size, self.queue_size, self.subscribers_max = ring_size, queue_size, subscribers_max
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        # -- the tick thread's side --
        self._lock = threading.Lock()
        self._pending: collections.deque = collections.deque()  # _Event or ("gap", Key)
        self._drain_scheduled = False
        self._last_index = 0
        self._next_ordinal = 0
        self._role: tuple[int, int] | None = None
        # workflow id -> (its state after its last command, the calls that state
        # owes): what the next command's ``before`` would compute again.
        # Unfinished workflows only (bounded as they are); dropped on restore.
        self._calls: dict[str, tuple[Any, frozenset]] = {}
        # -- the loop's side --
        self._ring: collections.deque[_Event] = collections.deque()
        self._live = False  # a stream is open: hand each event to the loop at once
        self.floor: Key = START
        self.subscribers: set[Subscription] = set()
        self.dropped = 0  # subscribers dropped as too slow, for the log and tests
        self.finished = 0  # workflows that reached a terminal state here (the dashboard's throughput)
        self.closed = False  # the node stops: no new stream

    # -- feeding (the tick thread) ------------------------------------------------
    def before(self, state: Any, command: Any) -> Any:
        """What ``after`` compares with: the history length and the calls in
        progress of the workflow the command touches (None: none yet), or the
        ids a prune may remove."""
        try:
            body = command.body if isinstance(command.body, dict) else {}
            if command.kind in WORKFLOW_COMMANDS:
                store = state.sagas if command.kind.startswith("saga.") else state.transactions
                workflow_id = body.get("id") if not command.kind.endswith(".submit") else None
                if isinstance(workflow_id, str) and workflow_id in store.active:
                    workflow_state = store.items[workflow_id]
                    return len(workflow_state.history), self._calls_of(workflow_id, workflow_state)
                return None
            if command.kind in PRUNE_COMMANDS:
                store = state.sagas if command.kind == "saga.prune" else state.transactions
                ids = body.get("ids")
                return [i for i in ids if isinstance(i, str) and i in store.items] if isinstance(ids, list) else []
        except Exception:  # noqa: BLE001 - events never reach apply
            log.exception("events: reading before %s failed", getattr(command, "kind", "?"))
        return None

    def after(self, state: Any, index: int, command: Any, result: Any, before: Any) -> None:
        """The events of one applied command (see the module docstring).
        Never raises: apply would record a rejection on this replica only."""
        try:
            events = list(self._derive(state, command, result, before))
            if events:
                self._emit(index, events)
        except Exception:  # noqa: BLE001 - events never reach apply
            log.exception("events: deriving the events of entry %d failed", index)

    def _derive(self, state: Any, command: Any, result: Any, before: Any) -> Iterable[_Derived]:
        """The command's events, in order: (kind, workflow, its JSON object
        without id and index, or a function and the immutable arguments
        that build it)."""
        kind = command.kind
        if kind in WORKFLOW_COMMANDS:
            if not isinstance(result, dict) or not (result.get("changed") or result.get("created")):
                return
            workflow_type = WORKFLOW_COMMANDS[kind]
            store = state.sagas if workflow_type == "saga" else state.transactions
            workflow_id = result["id"]
            workflow_state = store.items.get(workflow_id)
            if workflow_state is None:
                return
            seen, calls_before = before or (0, frozenset())
            common = (workflow_id, workflow_type, _status(workflow_state), command.at_ms)
            for record in workflow_state.history[seen:]:
                if str(getattr(record.event, "value", record.event)) in TERMINAL_RECORDS:
                    self.finished += 1
                yield "workflow", workflow_id, (_record_event, common, store.model.record_to_api, record)
            calls = calls_in_progress(workflow_state)
            if workflow_state.terminal:
                self._calls.pop(workflow_id, None)
            else:
                self._calls[workflow_id] = (workflow_state, calls)
            for call in sorted(calls - calls_before):
                yield "workflow", workflow_id, (_call_event, common, call)
        elif kind in PRUNE_COMMANDS:
            at = format_ms(command.at_ms)
            for workflow_id in before or ():
                if workflow_id not in (state.sagas if kind == "saga.prune" else state.transactions).items:
                    data = {
                        "kind": "workflow",
                        "type": "pruned",
                        "workflow": workflow_id,
                        "workflow_type": PRUNE_COMMANDS[kind],
                        "at": at,
                    }
                    yield "workflow", workflow_id, data
        elif kind in ("service.put", "service.delete") and isinstance(result, dict):
            data = {
                "kind": "service",
                "type": "put" if kind == "service.put" else "deleted",
                "service": result.get("name"),
                "at": format_ms(command.at_ms),
                "record": result,
            }
            yield "service", None, data

    def _calls_of(self, workflow_id: str, state: Any) -> frozenset[Call]:
        """``calls_in_progress(state)``: as ``after`` found it for this very
        state object (states are immutable; any change is a new object) when
        the workflow's last command was applied, else computed."""
        seen = self._calls.get(workflow_id)
        if seen is not None and seen[0] is state:
            return seen[1]
        return calls_in_progress(state)

    def _emit(self, index: int, events: list[_Derived]) -> None:
        with self._lock:
            if index != self._last_index:
                self._last_index, self._next_ordinal = index, 0
            for kind, workflow, data in events:
                key = (index, self._next_ordinal)
                self._next_ordinal += 1
                if isinstance(data, dict):
                    self._queue(_Event(key, kind, workflow, {"id": format_id(key), "index": index, **data}))
                else:
                    render, *arguments = data
                    self._queue(_Event(key, kind, workflow, _render=functools.partial(render, key, *arguments)))

    def restored(self, applied_index: int) -> None:
        """A snapshot replaced the state: the events up to ``applied_index``
        were never derived here. Never raises (it runs inside the restore)."""
        self._calls.clear()
        with self._lock:
            self._last_index, self._next_ordinal = applied_index, 0
            self._queue(("gap", (applied_index, WHOLE_ENTRY)))

    def role(self, role: int, term: int) -> None:
        """The node's Raft role (0 follower, 1 candidate, 2 leader) or term changed."""
        if self._role == (role, term):
            return
        self._role = (role, term)
        data = {
            "kind": "role",
            "type": "role",
            "role": ROLES.get(role, str(role)),
            "term": term,
            "at": format_ms(int(self.clock() * 1000)),
        }
        with self._lock:
            key = (self._last_index, self._next_ordinal)
            self._next_ordinal += 1
            self._queue(_Event(key, "role", None, {"id": format_id(key), "index": key[0], **data}))

    def _queue(self, item: Any) -> None:  # under the lock
        self._pending.append(item)
        if len(self._pending) > PENDING_MAX:  # the loop is stuck: keep memory bounded, record the gap
            lost: Key = (0, 0)
            # keys only grow along the queue: the last one dropped is the gap's end
            while len(self._pending) >= PENDING_MAX or not isinstance(self._pending[0], _Event):
                item = self._pending.popleft()
                lost = item.key if isinstance(item, _Event) else item[1]
            self._pending.appendleft(("gap", lost))
        # Waking the loop costs a system call on this thread and a callback on
        # the loop: with no stream open, events wait for a batch (or for the
        # next stream, which drains them first).
        if not self._drain_scheduled and self._loop is not None and (self._live or len(self._pending) >= DRAIN_BATCH):
            self._drain_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed: the node is stopping
                pass

    # -- the loop --------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start handing events to ``loop`` (the node's, at start)."""
        with self._lock:
            self._loop = loop
            if self._pending and not self._drain_scheduled:
                self._drain_scheduled = True
                loop.call_soon(self._drain)

    @property
    def ring(self) -> collections.deque[_Event]:
        """The last ``ring_size`` events, the ones still waiting included (on the loop)."""
        self._drain()
        return self._ring

    def _drain(self) -> None:
        with self._lock:
            self._drain_scheduled = False
            items, self._pending = self._pending, collections.deque()
        for item in items:
            if isinstance(item, _Event):
                self._publish(item)
            else:
                self._gap(item[1])

    def _publish(self, event: _Event) -> None:
        if event.key <= self.floor:  # seen already (a gap's floor passed it)
            return
        self._ring.append(event)
        while len(self._ring) > self.ring_size:
            self.floor = self._ring.popleft().key
        for subscriber in list(self.subscribers):
            if subscriber.wants(event.kind, event.workflow):
                subscriber.offer(event.key, event.data)
                if subscriber.end == "dropped":
                    self.subscribers.discard(subscriber)
                    self._live = bool(self.subscribers)
                    self.dropped += 1
                    log.info("events: a subscriber was too slow (%d queued) and was dropped", self.queue_size)

    def _gap(self, key: Key) -> None:
        """Events up to ``key`` were lost here: the ring restarts after it and
        every subscriber is told (``reset``)."""
        if key <= self.floor:
            return
        lost_after = self._ring[-1].key if self._ring else self.floor
        self._ring.clear()
        self.floor = max(self.floor, key)
        reset = self._reset(lost_after, self.floor)
        for subscriber in self.subscribers:
            subscriber.offer(self.floor, reset)

    @staticmethod
    def _reset(after: Key, until: Key) -> dict:
        return {
            "id": format_id(until),
            "kind": "reset",
            "type": "reset",
            "lost_after": format_id(after),
            "lost_until": format_id(until),
            "message": (
                f"events after {format_id(after)} up to {format_id(until)} are not held by this node; "
                "reload the state by GET, then follow the events after this one"
            ),
        }

    def newest(self) -> Key:
        ring = self.ring
        return ring[-1].key if ring else self.floor

    def subscribe(self, since: Key | None, kinds: frozenset[str], workflow: str | None) -> Subscription:
        """A new stream (on the loop): after ``since`` (None: live only).
        Overloaded (429) past ``subscribers_max``; Unavailable (503) once closed."""
        if self.closed:
            raise Unavailable("this node is stopping; read another node", code="stopping", retry_after_s=1)
        if len(self.subscribers) >= self.subscribers_max:
            raise Overloaded(
                f"{self.subscribers_max} event streams are open on this node, the most it serves; "
                "retry later or read another node",
                retry_after_s=1,
            )
        subscription = Subscription(kinds, workflow, self.queue_size)
        self._live = True  # from now on every event goes to the loop at once; those waiting are drained here
        subscription.after = self.newest() if since is None else max(since, self.newest())
        if since is not None:
            if since < self.floor:
                subscription.backlog.append(self._reset(since, self.newest()))
            else:
                subscription.backlog.extend(
                    e.data for e in self._ring if e.key > since and subscription.wants(e.kind, e.workflow)
                )
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        self._live = bool(self.subscribers)

    def close(self) -> None:
        """The node stops: every stream ends, and no new one starts."""
        self.closed = True
        for subscriber in self.subscribers:
            subscriber.end = subscriber.end or "shutdown"
            subscriber.wake.set()
        self.subscribers.clear()
        self._live = False


@dataclass(frozen=True, slots=True, order=True)
class Call:
    """A participant call a workflow's state says is owed now: what the
    leader is calling (or, on a new leader, will call again)."""

    number: int  # the step's 1-based position (saga), the participant's (2PC)
    step: str  # the step's name (saga), the participant's service (2PC)
    service: str
    phase: str  # action, compensation (saga); prepare, commit, abort (2PC)
    idempotency_key: str
    round: int = 0  # a saga's redrives: a redriven compensation is a new call

    def view(self) -> dict:
        return {
            "number": self.number,
            "step": self.step,
            "service": self.service,
            "phase": self.phase,
            "idempotency_key": self.idempotency_key,
        }


def calls_in_progress(state: Any) -> frozenset[Call]:
    """The participant calls ``state`` owes, as the machines' own
    ``pending_effects`` would issue them (saga/machine.py, twopc/machine.py),
    without building their bodies. Duck-typed: a saga state has ``steps``."""
    if state.terminal:
        return frozenset()
    if hasattr(state, "steps"):
        status = StepStatus.RUNNING if state.status in FORWARD_STATES else None
        if state.status is SagaStatus.COMPENSATING:
            status = StepStatus.COMPENSATING
        for index, (spec, step) in enumerate(zip(state.definition.steps, state.steps, strict=True)):
            if step.status is status and isinstance(spec, ActionStep):
                phase = "action" if status is StepStatus.RUNNING else "compensation"
                key = f"{state.id}/{spec.name}/{phase}"
                rounds = state.redrives if phase == "compensation" else 0
                return frozenset({Call(index + 1, spec.name, spec.service, phase, key, rounds)})
        return frozenset()
    if state.decision is None:
        owed = [(i, p, "prepare") for i, p in enumerate(state.participants) if p.vote is None]
    else:
        phase = "commit" if str(state.decision) == "commit" else "abort"
        acknowledged = ACKNOWLEDGED_STATUS[state.decision]
        owed = [(i, p, phase) for i, p in enumerate(state.participants) if p.status != acknowledged]
    return frozenset(
        Call(i + 1, p.service, p.service, phase, idempotency_key(state.tx_id, p.service, phase)) for i, p, phase in owed
    )


def _status(state: Any) -> str:
    return str(getattr(state.status, "value", state.status))


# What _derive gives for one event: (kind, workflow, the JSON object without
# id and index) or (kind, workflow, (render, *its arguments)) - see _Event.
_Derived = tuple[str, str | None, Any]


def _record_event(
    key: Key, common: tuple[str, str, str, int], record_to_api: Callable[[Any], dict], record: Any
) -> dict:
    """A history record's event (rendered by _Event.data); its keys in the
    order events always had (the JSON text a client reads)."""
    workflow_id, workflow_type, status, at_ms = common
    rendered = record_to_api(record)
    return {
        "id": format_id(key),
        "index": key[0],
        "kind": "workflow",
        "workflow": workflow_id,
        "workflow_type": workflow_type,
        "type": rendered["event"],
        "state": status,
        "at": rendered.get("at", format_ms(at_ms)),
        "record": rendered,
    }


def _call_event(key: Key, common: tuple[str, str, str, int], call: Call) -> dict:
    """A participant call's ``call_started`` event (rendered by _Event.data)."""
    workflow_id, workflow_type, status, at_ms = common
    return {
        "id": format_id(key),
        "index": key[0],
        "kind": "workflow",
        "workflow": workflow_id,
        "workflow_type": workflow_type,
        "type": "call_started",
        "state": status,
        "at": format_ms(at_ms),
        "call": call.view(),
    }
