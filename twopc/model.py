"""The values of two-phase commit: state, events, effects, invariants.

    TxState        what every replica holds for one transaction
    events         VoteReceived, DeadlineReached, Acknowledged: answers and
                   deadlines the leader stamped (`at_ms`) into the Raft log
    effects        CallPrepare, CallCommit, CallAbort, Finished: what the
                   leader's executor must do once the entry is applied

All frozen; lists are tuples. `check_invariants` states what must hold of
every state `step()` returns; a failure is a bug, never an operating error
(InvariantError, raised explicitly: it stays under `python -O`).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from coordinator.grammar import duration_problem, fence_problem

from . import limits
from .definition import TransactionDefinition
from .errors import InputError, InvariantError, invariant
from .tally import Tally, Vote, tally


class TxStatus(enum.StrEnum):
    PREPARING = "preparing"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ABORTING = "aborting"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        """Committed or aborted: nothing changes any more."""
        return self in (TxStatus.COMMITTED, TxStatus.ABORTED)


class Decision(enum.StrEnum):
    COMMIT = "commit"
    ABORT = "abort"


class ParticipantStatus(enum.StrEnum):
    PREPARING = "preparing"
    PREPARED = "prepared"
    REFUSED = "refused"
    COMMITTED = "committed"
    ABORTED = "aborted"


# What a decided transaction moves to, and what its participants end in.
DECIDED_STATUS = {Decision.COMMIT: TxStatus.COMMITTING, Decision.ABORT: TxStatus.ABORTING}
FINAL_STATUS = {Decision.COMMIT: TxStatus.COMMITTED, Decision.ABORT: TxStatus.ABORTED}
ACKNOWLEDGED_STATUS = {Decision.COMMIT: ParticipantStatus.COMMITTED, Decision.ABORT: ParticipantStatus.ABORTED}
_STATUS_DECISION = {
    TxStatus.PREPARING: None,
    TxStatus.COMMITTING: Decision.COMMIT,
    TxStatus.COMMITTED: Decision.COMMIT,
    TxStatus.ABORTING: Decision.ABORT,
    TxStatus.ABORTED: Decision.ABORT,
}
_STATUSES_FOR_VOTE = {
    None: {ParticipantStatus.PREPARING, ParticipantStatus.ABORTED},
    Vote.YES: {ParticipantStatus.PREPARED, ParticipantStatus.COMMITTED, ParticipantStatus.ABORTED},
    Vote.NO: {ParticipantStatus.REFUSED, ParticipantStatus.ABORTED},
}


@dataclass(frozen=True, slots=True)
class ParticipantState:
    service: str
    vote: Vote | None
    status: ParticipantStatus


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One line of history: {"at", "event", **details}; details are strings,
    but `duration_ms` (CALL_DETAILS), an int."""

    at_ms: int
    event: str
    details: tuple[tuple[str, str | int], ...] = ()


@dataclass(frozen=True, slots=True)
class TxState:
    definition: TransactionDefinition
    status: TxStatus
    decision: Decision | None
    participants: tuple[ParticipantState, ...]
    history: tuple[HistoryRecord, ...]
    created_at_ms: int
    updated_at_ms: int

    @property
    def tx_id(self) -> str:
        if self.definition.id is None:
            raise InvariantError("a transaction state without an id")
        return self.definition.id

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def deadline_ms(self) -> int:
        """When an undecided transaction is presumed aborted."""
        return self.created_at_ms + self.definition.timeout_ms


# -- events -----------------------------------------------------------------


def check_at_ms(at_ms: object) -> None:
    """InputError unless `at_ms` is a non-negative int."""
    if isinstance(at_ms, bool) or not isinstance(at_ms, int) or at_ms < 0:
        raise InputError(f"at_ms must be a non-negative int, not {at_ms!r}")


# What a vote or an acknowledgement may report of the participant call it
# answers: the Coordinator-Fence the executor sent and how long the call
# took in ms, retries and backoff included. None: not reported (an entry
# written before them). The details of the event's history record.
CALL_DETAILS = ("fence", "duration_ms")


def check_call(fence: object, duration_ms: object) -> None:
    """InputError unless `fence` and `duration_ms` are None or within bounds
    (grammar/limits.py)."""
    problem = fence_problem(fence)
    if problem is not None:
        raise InputError(f"fence: {problem}")
    problem = duration_problem(duration_ms)
    if problem is not None:
        raise InputError(f"duration_ms: {problem}")


def call_details(event: VoteReceived | Acknowledged) -> dict[str, str | int]:
    """The reported ones of `fence` and `duration_ms`, as record details."""
    reported = {"fence": event.fence, "duration_ms": event.duration_ms}
    return {name: value for name, value in reported.items() if value is not None}


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A participant's answer to prepare ("yes"; "no" or a 4xx is "no");
    `fence`, `duration_ms`: what the executor measured of the call
    (CALL_DETAILS)."""

    service: str
    vote: Vote
    at_ms: int
    fence: str | None = None
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vote", Vote(self.vote))
        check_at_ms(self.at_ms)
        check_call(self.fence, self.duration_ms)


@dataclass(frozen=True, slots=True)
class DeadlineReached:
    """The leader's clock passed `created_at_ms + timeout_s`."""

    at_ms: int

    def __post_init__(self) -> None:
        check_at_ms(self.at_ms)


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """A participant answered 2xx to the commit or abort call; `fence`,
    `duration_ms` as for VoteReceived."""

    service: str
    phase: Decision
    at_ms: int
    fence: str | None = None
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "phase", Decision(self.phase))
        check_at_ms(self.at_ms)
        check_call(self.fence, self.duration_ms)


Event = VoteReceived | DeadlineReached | Acknowledged


# -- effects ----------------------------------------------------------------


class _DecodedBody:
    __slots__ = ()
    body_json: str

    @property
    def body(self) -> object:
        """A fresh decoded copy of the JSON body (`body_json` is what is sent)."""
        return json.loads(self.body_json)


@dataclass(frozen=True, slots=True)
class CallPrepare(_DecodedBody):
    """POST path with body_json to the service; Idempotency-Key: idempotency_key."""

    tx_id: str
    service: str
    path: str
    body_json: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class CallCommit(_DecodedBody):
    tx_id: str
    service: str
    path: str
    body_json: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class CallAbort(_DecodedBody):
    tx_id: str
    service: str
    path: str
    body_json: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Finished:
    tx_id: str
    status: TxStatus
    decision: Decision


Call = CallPrepare | CallCommit | CallAbort
Effect = CallPrepare | CallCommit | CallAbort | Finished
PHASE_TWO_CALL = {Decision.COMMIT: CallCommit, Decision.ABORT: CallAbort}


def idempotency_key(tx_id: str, service: str, phase: str) -> str:
    return f"{tx_id}/{service}/{phase}"


# -- invariants -------------------------------------------------------------


def check_invariants(state: TxState) -> None:
    """Raise InvariantError unless `state` holds what every transaction state does."""
    invariant(state.definition.id is not None, "a transaction state without an id")
    tx_id = state.definition.id
    invariant(tuple(p.service for p in state.participants) == state.definition.services, tx_id)
    invariant(_STATUS_DECISION[state.status] == state.decision, tx_id, state.status, state.decision)
    invariant(len(state.history) <= limits.HISTORY_RECORDS_MAX, tx_id, len(state.history))
    invariant(state.created_at_ms <= state.updated_at_ms, tx_id)
    for p in state.participants:
        invariant(p.status in _STATUSES_FOR_VOTE[p.vote], tx_id, p.service, p.vote, p.status)
    if state.decision == Decision.COMMIT:
        invariant(all(p.vote == Vote.YES for p in state.participants), tx_id, "commit needs all yes")
        invariant(all(p.status != ParticipantStatus.ABORTED for p in state.participants), tx_id)
    if state.decision == Decision.ABORT:
        invariant(all(p.status != ParticipantStatus.COMMITTED for p in state.participants), tx_id)
    if state.decision is None:
        votes = {p.service: p.vote for p in state.participants}
        invariant(tally(state.definition.services, votes) == Tally.PENDING, tx_id, votes)
        undecided = (ParticipantStatus.PREPARING, ParticipantStatus.PREPARED)
        invariant(all(p.status in undecided for p in state.participants), tx_id)
    if state.decision is not None:
        acknowledged = [p.status == ACKNOWLEDGED_STATUS[state.decision] for p in state.participants]
        invariant(all(acknowledged) == state.terminal, tx_id, acknowledged, state.status)
