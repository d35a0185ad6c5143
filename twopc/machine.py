"""The two-phase commit state machine: `step(state, event) -> (state, effects)`.

    preparing --all yes--------------> committing --all acks--> committed
        |  \\--one no / deadline----> aborting   --all acks--> aborted

- `start` emits a CallPrepare to every participant at once.
- The first "no", or the deadline while undecided (presumed abort), decides
  abort without waiting for the other votes; a "yes" from every participant
  decides commit. Deciding emits the phase-2 call to EVERY participant (an
  abort reaches those that never voted: it is a no-op for them).
- The decision is final. Late votes, deadlines after the decision, acks of
  the other phase, duplicates and unknown services change nothing and emit
  nothing (the same state object); they never raise. An object that is not
  a two-phase commit event at all is a bug of the caller, never a no-op:
  TypeError (as in saga/machine.py; twopc/errors.py lists what the model
  raises).

Every replica applies the same events; only the leader's executor performs
the effects, and `pending_effects` tells a new leader what is still owed.
"""

from __future__ import annotations

from coordinator.grammar.evolve import evolve as replace

from . import limits

# The codec has its own module; re-exported here beside the machine.
from .codec import state_from_dict, state_to_dict, to_api
from .definition import TransactionDefinition
from .errors import InputError, InvariantError, invariant
from .model import (
    ACKNOWLEDGED_STATUS,
    DECIDED_STATUS,
    FINAL_STATUS,
    PHASE_TWO_CALL,
    Acknowledged,
    CallAbort,
    CallCommit,
    CallPrepare,
    DeadlineReached,
    Decision,
    Effect,
    Event,
    Finished,
    HistoryRecord,
    ParticipantState,
    ParticipantStatus,
    TxState,
    TxStatus,
    VoteReceived,
    call_details,
    check_at_ms,
    check_invariants,
    idempotency_key,
)
from .tally import Tally, Vote, tally

__all__ = ["start", "step", "pending_effects", "next_deadline", "state_to_dict", "state_from_dict", "to_api"]

Step = tuple[TxState, tuple[Effect, ...]]

_VOTED_STATUS = {Vote.YES: ParticipantStatus.PREPARED, Vote.NO: ParticipantStatus.REFUSED}


def start(definition: TransactionDefinition, at_ms: int, by: str | None = None) -> Step:
    """A new transaction in `preparing`; prepare every participant. `by`
    (who submitted it: an API token's name) is a detail of "started"."""
    if definition.id is None:
        raise InputError("a transaction starts from a definition with an id (see with_id)")
    if not (by is None or isinstance(by, str)):
        raise InputError(f"by must be a name or None, not {by!r}")
    check_at_ms(at_ms)
    state = TxState(
        definition=definition,
        status=TxStatus.PREPARING,
        decision=None,
        participants=tuple(
            ParticipantState(service, None, ParticipantStatus.PREPARING) for service in definition.services
        ),
        history=(HistoryRecord(at_ms, "started", () if by is None else (("by", by),)),),
        created_at_ms=at_ms,
        updated_at_ms=at_ms,
    )
    check_invariants(state)
    return state, pending_effects(state)


def step(state: TxState, event: Event) -> Step:
    """Apply one event. Events that change nothing return `(state, ())`
    itself; TypeError when it is not a two-phase commit event."""
    if isinstance(event, VoteReceived):
        after, effects = _on_vote(state, event)
    elif isinstance(event, DeadlineReached):
        after, effects = _on_deadline(state, event)
    elif isinstance(event, Acknowledged):
        after, effects = _on_acknowledged(state, event)
    else:
        raise TypeError(f"not a two-phase commit event: {event!r}")
    _check_step(state, after, effects)
    return after, effects


def pending_effects(state: TxState) -> tuple[Effect, ...]:
    """The calls still owed: what a new leader must (re)issue.

    Preparing: a prepare to each participant without a vote. Decided: the
    phase-2 call to each participant that has not acknowledged it.
    """
    if state.terminal:
        return ()
    if state.decision is None:
        return tuple(_call(state, CallPrepare, p.service) for p in state.participants if p.vote is None)
    acknowledged = ACKNOWLEDGED_STATUS[state.decision]
    return tuple(
        _call(state, PHASE_TWO_CALL[state.decision], p.service) for p in state.participants if p.status != acknowledged
    )


def next_deadline(state: TxState) -> tuple[int, DeadlineReached] | None:
    """When to append a DeadlineReached, while undecided; else None."""
    if state.status != TxStatus.PREPARING:
        return None
    at_ms = state.deadline_ms
    return at_ms, DeadlineReached(at_ms=at_ms)


# -- transitions --------------------------------------------------------------


def _on_vote(state: TxState, event: VoteReceived) -> Step:
    index = _participant_index(state, event.service)
    if state.decision is not None or index is None:
        return state, ()
    participant = state.participants[index]
    if participant.vote is not None:
        return state, ()
    voted = replace(participant, vote=event.vote, status=_VOTED_STATUS[event.vote])
    state = _record(
        replace(state, participants=_replace_at(state.participants, index, voted)),
        event.at_ms,
        "vote",
        service=event.service,
        vote=str(event.vote),
        **call_details(event),
    )
    votes = {p.service: p.vote for p in state.participants}
    result = tally(state.definition.services, votes)
    if result == Tally.ALL_YES:
        return _decide(state, Decision.COMMIT, event.at_ms, "all_voted_yes")
    if result == Tally.ANY_NO:
        return _decide(state, Decision.ABORT, event.at_ms, "voted_no")
    return state, ()


def _on_deadline(state: TxState, event: DeadlineReached) -> Step:
    if state.decision is not None or event.at_ms < state.deadline_ms:
        return state, ()
    state = _record(state, event.at_ms, "timed_out")
    return _decide(state, Decision.ABORT, event.at_ms, "timed_out")


def _on_acknowledged(state: TxState, event: Acknowledged) -> Step:
    index = _participant_index(state, event.service)
    if state.decision is None or event.phase != state.decision or index is None:
        return state, ()
    done = ACKNOWLEDGED_STATUS[state.decision]
    participant = state.participants[index]
    if participant.status == done:
        return state, ()
    state = _record(
        replace(state, participants=_replace_at(state.participants, index, replace(participant, status=done))),
        event.at_ms,
        "acknowledged",
        service=event.service,
        phase=str(event.phase),
        **call_details(event),
    )
    if any(p.status != done for p in state.participants):
        return state, ()
    final = FINAL_STATUS[state.decision]
    state = _record(replace(state, status=final), event.at_ms, str(final))
    return state, (Finished(state.tx_id, final, state.decision),)


def _decide(state: TxState, decision: Decision, at_ms: int, reason: str) -> Step:
    invariant(state.decision is None, state.tx_id, "a decision is never replaced")
    state = _record(
        replace(state, decision=decision, status=DECIDED_STATUS[decision]),
        at_ms,
        "decided",
        decision=str(decision),
        reason=reason,
    )
    return state, pending_effects(state)


# -- helpers ------------------------------------------------------------------


def _check_step(before: TxState, after: TxState, effects: tuple[Effect, ...]) -> None:
    if before.decision is not None:
        invariant(after.decision == before.decision, after.tx_id, "a decision never changes")
    if after is before:
        invariant(effects == (), after.tx_id, "an event that changes nothing emits nothing")
        return
    for effect in effects:
        invariant(not isinstance(effect, CallPrepare), after.tx_id, "prepares come from start()")
        if isinstance(effect, (CallCommit, CallAbort)):
            invariant(after.decision is not None, after.tx_id, "no phase-2 call without a decision")
            invariant(isinstance(effect, PHASE_TWO_CALL[after.decision]), after.tx_id, effect)
    invariant(after.history[: len(before.history)] == before.history, after.tx_id, "history only grows")
    check_invariants(after)


def _call(state: TxState, kind: type, service: str) -> Effect:
    participant = state.definition.participant(service)
    if participant is None:
        raise InvariantError(state.tx_id, f"{service!r} is not a participant")
    phase = {CallPrepare: "prepare", CallCommit: "commit", CallAbort: "abort"}[kind]
    call = getattr(participant, phase)
    return kind(
        tx_id=state.tx_id,
        service=service,
        path=call.path,
        body_json=call.body_json,
        idempotency_key=idempotency_key(state.tx_id, service, phase),
    )


def _participant_index(state: TxState, service: str) -> int | None:
    for index, participant in enumerate(state.participants):
        if participant.service == service:
            return index
    return None


def _replace_at(items: tuple, index: int, item: object) -> tuple:
    return items[:index] + (item,) + items[index + 1 :]


def _record(state: TxState, at_ms: int, event: str, **details: str | int) -> TxState:
    record = HistoryRecord(at_ms, event, tuple(details.items()))
    history = state.history + (record,)
    invariant(len(history) <= limits.HISTORY_RECORDS_MAX, state.tx_id, "history is bounded")
    return replace(state, history=history, updated_at_ms=max(state.updated_at_ms, at_ms))
