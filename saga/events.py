"""What goes into the saga machine (events) and what comes out (effects).

Events are applied from the Raft log; every one carries `at_ms`, the time
the leader stamped on the entry. `step` is a step index. Effects are what
the leader's executor must do: call a participant, wait for a signal, report
that a saga finished. `event_to_dict` / `event_from_dict` give the plain
form an event takes inside a log entry.

The outcome of a participant call (the five events with `attempts`) may
also carry what the executor measured of it: `fence`, the Coordinator-Fence
it sent, and `duration_ms`, from the first attempt's start to the outcome,
retries and backoff included. Both land in the outcome's history record.
Unlike the other fields, these two are checked when the event is built
(InputError): no entry written before them has them, so refusing a bad one
changes how no old journal replays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from coordinator.grammar import duration_problem, fence_problem

from .definition import RetryPolicy
from .errors import InputError
from .state import SagaStatus

# -- events -------------------------------------------------------------------

# The fields of what the executor measured of a call: absent (None) in an
# event's plain form when not reported, as in entries written before them.
CALL_FIELDS = ("fence", "duration_ms")


class _CallOutcome:
    """The check of `fence` and `duration_ms`, shared by the outcome events."""

    __slots__ = ()
    fence: str | None
    duration_ms: int | None

    def __post_init__(self) -> None:
        problem = fence_problem(self.fence)
        if problem is not None:
            raise InputError(f"fence: {problem}")
        problem = duration_problem(self.duration_ms)
        if problem is not None:
            raise InputError(f"duration_ms: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSucceeded(_CallOutcome):
    """The action answered 2xx; `output` is its JSON body."""

    step: int
    output: object
    attempts: int
    at_ms: int
    fence: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionFailed(_CallOutcome):
    """A definite business failure (4xx but 408 and 429)."""

    step: int
    error: str
    attempts: int
    at_ms: int
    fence: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionUnknown(_CallOutcome):
    """Out of retries without a definite answer: it may have taken effect."""

    step: int
    error: str
    attempts: int
    at_ms: int
    fence: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationSucceeded(_CallOutcome):
    """`redrives`: copied from the `CallCompensation` answered; an outcome
    of a call issued before a later redrive is then ignored (None: any)."""

    step: int
    attempts: int
    at_ms: int
    redrives: int | None = None
    fence: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationExhausted(_CallOutcome):
    """The compensation ran out of its retry budget: the saga goes stuck.
    `redrives` as for `CompensationSucceeded`."""

    step: int
    error: str
    attempts: int
    at_ms: int
    redrives: int | None = None
    fence: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalReceived:
    """`by`: who sent it (an API token's name), recorded in the history."""

    name: str
    payload: object
    at_ms: int
    by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlineReached:
    """`kind` "saga": the saga's deadline (step None); "step": the running
    await step `step` waited its `timeout_s`."""

    kind: str
    step: int | None
    at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Redrive:
    """An operator asks a stuck saga to resume compensating; `by` as for
    `SignalReceived`."""

    at_ms: int
    by: str | None = None


Event = (
    ActionSucceeded
    | ActionFailed
    | ActionUnknown
    | CompensationSucceeded
    | CompensationExhausted
    | SignalReceived
    | DeadlineReached
    | Redrive
)

_EVENT_TYPES: dict[str, type] = {
    "action_succeeded": ActionSucceeded,
    "action_failed": ActionFailed,
    "action_unknown": ActionUnknown,
    "compensation_succeeded": CompensationSucceeded,
    "compensation_exhausted": CompensationExhausted,
    "signal_received": SignalReceived,
    "deadline_reached": DeadlineReached,
    "redrive": Redrive,
}
_EVENT_NAMES = {cls: name for name, cls in _EVENT_TYPES.items()}


def event_to_dict(event: Event) -> dict:
    """Plain form: {"type": "action_succeeded", "step": 0, ...}; `fence` and
    `duration_ms` only when reported."""
    plain = {"type": _EVENT_NAMES[type(event)], **asdict(event)}
    for name in CALL_FIELDS:
        if plain.get(name, 0) is None:
            del plain[name]
    return plain


def event_from_dict(raw: dict) -> Event:
    """Inverse of `event_to_dict`; InputError (a ValueError) for an unknown
    type or fields, or a bad `fence` or `duration_ms`."""
    fields = dict(raw)
    cls = _EVENT_TYPES.get(fields.pop("type", None))
    if cls is None:
        raise InputError(f"unknown saga event type {raw.get('type')!r}")
    try:
        return cls(**fields)
    except TypeError as error:
        raise InputError(f"bad saga event {raw.get('type')!r}: {error}") from None


# -- effects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAction:
    """Call a step's action: METHOD {service url}{path} with `body`
    (references already substituted; None: no body), retried per `retry`
    with the same `idempotency_key`, each attempt bounded by `timeout_s`."""

    saga_id: str
    step: int
    name: str
    service: str
    method: str
    path: str
    body: object
    idempotency_key: str
    timeout_s: float
    retry: RetryPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCompensation:
    """Call a step's compensation; same shape as `CallAction`, plus the
    saga's `redrives` count to copy into the outcome event."""

    saga_id: str
    step: int
    name: str
    service: str
    method: str
    path: str
    body: object
    idempotency_key: str
    timeout_s: float
    retry: RetryPolicy
    redrives: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitSignal:
    """Step `step` waits for signal `signal`; at `deadline_at_ms` the leader
    proposes `DeadlineReached(kind="step")` (see `next_deadline`)."""

    saga_id: str
    step: int
    name: str
    signal: str
    deadline_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The saga reached a terminal state."""

    saga_id: str
    state: SagaStatus


Effect = CallAction | CallCompensation | AwaitSignal | Finished
