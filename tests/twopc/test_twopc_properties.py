"""Properties over any interleaving of votes, deadlines, duplicates, late messages and acks.

Hypothesis prints the failing example and a `@reproduce_failure` blob
(print_blob=True) that replays it exactly.
"""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.twopc import (
    Acknowledged,
    CallAbort,
    CallCommit,
    CallPrepare,
    DeadlineReached,
    Decision,
    Finished,
    ParticipantStatus,
    TxState,
    TxStatus,
    Vote,
    VoteReceived,
    limits,
    next_deadline,
    parse_definition,
    pending_effects,
    start,
    state_from_dict,
    state_to_dict,
    step,
)

CREATED_MS = 1_000
SETTINGS = settings(max_examples=150, deadline=None, print_blob=True)
DONE = {Decision.COMMIT: ParticipantStatus.COMMITTED, Decision.ABORT: ParticipantStatus.ABORTED}
PHASE_TWO = {Decision.COMMIT: CallCommit, Decision.ABORT: CallAbort}
FINAL = {Decision.COMMIT: TxStatus.COMMITTED, Decision.ABORT: TxStatus.ABORTED}


def make_definition(count: int, timeout_s: float):
    return parse_definition(
        {
            "id": "tx-p",
            "participants": [
                {"service": f"s{i}", "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/a"}}
                for i in range(count)
            ],
            "timeout_s": timeout_s,
        }
    )


@st.composite
def scenarios(draw):
    count = draw(st.integers(1, 5))
    timeout_s = draw(st.sampled_from([1, 2.5, 10]))
    services = [f"s{i}" for i in range(count)] + ["ghost"]
    service = st.sampled_from(services)
    at_ms = st.integers(0, CREATED_MS + 3 * int(timeout_s * 1000))
    event = st.one_of(
        st.builds(VoteReceived, service, st.sampled_from(list(Vote)), at_ms=at_ms),
        st.builds(VoteReceived, service, st.just(Vote.YES), at_ms=at_ms),
        st.builds(DeadlineReached, at_ms=at_ms),
        st.builds(Acknowledged, service, st.sampled_from(list(Decision)), at_ms=at_ms),
    )
    events = draw(st.lists(event, max_size=30))
    # Duplicates and late copies: re-insert some events later in the sequence.
    for index in draw(st.lists(st.integers(0, max(len(events) - 1, 0)), max_size=8)):
        if events:
            events.insert(draw(st.integers(index, len(events))), events[index])
    return make_definition(count, timeout_s), events


def reference_decision(state0: TxState, events) -> Decision | None:
    """The decision, computed independently of the machine."""
    votes: dict[str, Vote] = {}
    services = state0.definition.services
    for event in events:
        if isinstance(event, VoteReceived) and event.service in services:
            votes.setdefault(event.service, event.vote)  # the first vote counts
            if votes[event.service] == Vote.NO:
                return Decision.ABORT
            if all(votes.get(s) == Vote.YES for s in services):
                return Decision.COMMIT
        if isinstance(event, DeadlineReached) and event.at_ms >= state0.deadline_ms:
            return Decision.ABORT
    return None


def check_round_trip(state: TxState) -> None:
    plain = state_to_dict(state)
    assert state_from_dict(plain) == state
    assert state_from_dict(msgpack.unpackb(msgpack.packb(plain))) == state


def check_pending(state: TxState) -> None:
    pending = pending_effects(state)
    if state.terminal:
        assert pending == ()
    elif state.decision is None:
        unvoted = [p.service for p in state.participants if p.vote is None]
        assert [e.service for e in pending] == unvoted
        assert all(isinstance(e, CallPrepare) for e in pending)
        deadline_ms = state.deadline_ms
        assert next_deadline(state) == (deadline_ms, DeadlineReached(at_ms=deadline_ms))
    else:
        owed = [p.service for p in state.participants if p.status != DONE[state.decision]]
        assert [e.service for e in pending] == owed and owed
        assert all(isinstance(e, PHASE_TWO[state.decision]) for e in pending)
        assert all(e.idempotency_key == f"tx-p/{e.service}/{state.decision}" for e in pending)
    if state.decision is not None:
        assert next_deadline(state) is None


def apply_all(state: TxState, events, log: list) -> TxState:
    """Step through events, checking what must hold after each one."""
    for event in events:
        before = state
        state, effects = step(state, event)
        log.append((event, effects))
        if before.decision is not None:
            assert state.decision == before.decision, "the decision is final"
        if state == before:
            assert effects == (), "no change, no effects"
        phase_two = [e for e in effects if isinstance(e, (CallCommit, CallAbort))]
        if phase_two:
            assert before.decision is None, "phase 2 only on deciding"
            assert state.decision is not None, "no phase 2 without a decision"
            assert all(isinstance(e, PHASE_TWO[state.decision]) for e in phase_two)
            assert sorted(e.service for e in phase_two) == sorted(state.definition.services)
        assert not any(isinstance(e, CallPrepare) for e in effects)
        if state.decision == Decision.COMMIT:
            assert all(p.vote == Vote.YES for p in state.participants), "commit only on all yes"
        assert len(state.history) <= limits.HISTORY_RECORDS_MAX
        if state is not before:
            check_round_trip(state)
            check_pending(state)
    return state


@SETTINGS
@given(scenarios())
def test_the_decision_matches_an_independent_reference(scenario) -> None:
    definition, events = scenario
    state, effects = start(definition, CREATED_MS)
    assert [e.service for e in effects] == list(definition.services)
    final = apply_all(state, events, [])
    assert final.decision == reference_decision(state, events)


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False), st.booleans())
def test_every_transaction_ends_once_the_decided_phase_is_acknowledged(scenario, rnd, delay) -> None:
    definition, events = scenario
    state, _ = start(definition, CREATED_MS)
    log: list = []
    state = apply_all(state, events, log)
    if state.decision is None:
        state = apply_all(state, [DeadlineReached(at_ms=state.deadline_ms + delay)], log)
    decision = state.decision
    assert decision is not None
    wrong = Decision.ABORT if decision == Decision.COMMIT else Decision.COMMIT
    acks = [Acknowledged(s, decision, at_ms=50_000) for s in definition.services] * 2
    acks += [Acknowledged(s, wrong, at_ms=50_000) for s in definition.services]
    acks += [VoteReceived(s, Vote.NO, at_ms=50_000) for s in definition.services]
    rnd.shuffle(acks)
    state = apply_all(state, acks, log)
    assert state.terminal
    assert state.status == FINAL[decision]
    assert all(p.status == DONE[decision] for p in state.participants)
    finished = [e for _, effects in log for e in effects if isinstance(e, Finished)]
    assert finished == [Finished("tx-p", state.status, decision)], "Finished exactly once"
    emitted = [e for _, effects in log for e in effects]
    phase_two = [e for e in emitted if isinstance(e, (CallCommit, CallAbort))]
    assert all(isinstance(e, PHASE_TWO[decision]) for e in phase_two)
    assert len(phase_two) == len(definition.services), "phase 2 issued once, on deciding"


@SETTINGS
@given(scenarios(), st.integers(0, 40))
def test_a_new_leader_from_a_snapshot_owes_the_same_calls(scenario, cut) -> None:
    definition, events = scenario
    state, _ = start(definition, CREATED_MS)
    state = apply_all(state, events[:cut], [])
    restored = state_from_dict(msgpack.unpackb(msgpack.packb(state_to_dict(state))))
    assert pending_effects(restored) == pending_effects(state)
    assert next_deadline(restored) == next_deadline(state)
    for event in events[cut:]:
        state, effects = step(state, event)
        restored, restored_effects = step(restored, event)
        assert (restored, restored_effects) == (state, effects), "replicas agree"
