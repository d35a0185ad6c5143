"""Two-phase commit scenarios, written as scripts with the expected transcript.

Script lines: `start @MS`, `vote SERVICE yes|no @MS`, `deadline @MS`,
`ack SERVICE commit|abort @MS`, `pending` (what a new leader would issue).
"""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest

from coordinator import saga
from coordinator.twopc import (
    Acknowledged,
    CallAbort,
    CallCommit,
    CallPrepare,
    DeadlineReached,
    Decision,
    Finished,
    InputError,
    ParticipantStatus,
    TxStatus,
    Vote,
    VoteReceived,
    next_deadline,
    parse_definition,
    pending_effects,
    start,
    step,
)


def make_definition(services: tuple[str, ...] = ("a", "b", "c"), timeout_s: float = 10):
    return parse_definition(
        {
            "id": "tx-1",
            "participants": [
                {
                    "service": s,
                    "prepare": {"path": f"/{s}/prepare", "body": {"from": s}},
                    "commit": {"path": f"/{s}/commit"},
                    "abort": {"path": f"/{s}/abort"},
                }
                for s in services
            ],
            "timeout_s": timeout_s,
        }
    )


def describe_effect(effect) -> str:
    if isinstance(effect, Finished):
        return f"Finished {effect.status} {effect.decision}"
    return f"{type(effect).__name__} {effect.service} {effect.path} key={effect.idempotency_key}"


def describe_state(state) -> str:
    parts = " ".join(f"{p.service}={p.vote or '-'}/{p.status}" for p in state.participants)
    return f"{state.status} decision={state.decision} {parts}"


def parse_event(words: list[str], at_ms: int):
    kind, args = words[0], words[1:]
    if kind == "vote":
        return VoteReceived(args[0], args[1], at_ms=at_ms)
    if kind == "ack":
        return Acknowledged(args[0], args[1], at_ms=at_ms)
    assert kind == "deadline", kind
    return DeadlineReached(at_ms=at_ms)


def run(script: str, definition=None) -> str:
    definition = definition or make_definition()
    state, lines = None, []
    for line in textwrap.dedent(script).strip().splitlines():
        lines.append(f"> {line}")
        words = line.split()
        if words[0] == "pending":
            effects = pending_effects(state)
        else:
            at_ms = int(words[-1].removeprefix("@"))
            if words[0] == "start":
                state, effects = start(definition, at_ms)
            else:
                before = state
                state, effects = step(state, parse_event(words[:-1], at_ms))
                if state is before:
                    lines.append("  (no change)")
                    continue
            lines.append(f"  {describe_state(state)}")
        lines.extend(f"  -> {describe_effect(e)}" for e in effects)
    return "\n".join(lines)


def check(script: str, expected: str) -> None:
    assert run(script) == textwrap.dedent(expected).strip()


def test_all_yes_commits_then_acks_finish_it() -> None:
    check(
        """
        start @1000
        vote a yes @1100
        vote c yes @1150
        pending
        vote b yes @1200
        ack b commit @1300
        ack b commit @1310
        pending
        ack a commit @1400
        ack c commit @1500
        pending
        """,
        """
        > start @1000
          preparing decision=None a=-/preparing b=-/preparing c=-/preparing
          -> CallPrepare a /a/prepare key=tx-1/a/prepare
          -> CallPrepare b /b/prepare key=tx-1/b/prepare
          -> CallPrepare c /c/prepare key=tx-1/c/prepare
        > vote a yes @1100
          preparing decision=None a=yes/prepared b=-/preparing c=-/preparing
        > vote c yes @1150
          preparing decision=None a=yes/prepared b=-/preparing c=yes/prepared
        > pending
          -> CallPrepare b /b/prepare key=tx-1/b/prepare
        > vote b yes @1200
          committing decision=commit a=yes/prepared b=yes/prepared c=yes/prepared
          -> CallCommit a /a/commit key=tx-1/a/commit
          -> CallCommit b /b/commit key=tx-1/b/commit
          -> CallCommit c /c/commit key=tx-1/c/commit
        > ack b commit @1300
          committing decision=commit a=yes/prepared b=yes/committed c=yes/prepared
        > ack b commit @1310
          (no change)
        > pending
          -> CallCommit a /a/commit key=tx-1/a/commit
          -> CallCommit c /c/commit key=tx-1/c/commit
        > ack a commit @1400
          committing decision=commit a=yes/committed b=yes/committed c=yes/prepared
        > ack c commit @1500
          committed decision=commit a=yes/committed b=yes/committed c=yes/committed
          -> Finished committed commit
        > pending
        """,
    )


def test_one_no_aborts_everyone_at_once_even_those_that_never_voted() -> None:
    check(
        """
        start @1000
        vote a yes @1100
        vote b no @1200
        vote c yes @1300
        ack a commit @1350
        ack c abort @1400
        pending
        ack a abort @1500
        ack b abort @1600
        """,
        """
        > start @1000
          preparing decision=None a=-/preparing b=-/preparing c=-/preparing
          -> CallPrepare a /a/prepare key=tx-1/a/prepare
          -> CallPrepare b /b/prepare key=tx-1/b/prepare
          -> CallPrepare c /c/prepare key=tx-1/c/prepare
        > vote a yes @1100
          preparing decision=None a=yes/prepared b=-/preparing c=-/preparing
        > vote b no @1200
          aborting decision=abort a=yes/prepared b=no/refused c=-/preparing
          -> CallAbort a /a/abort key=tx-1/a/abort
          -> CallAbort b /b/abort key=tx-1/b/abort
          -> CallAbort c /c/abort key=tx-1/c/abort
        > vote c yes @1300
          (no change)
        > ack a commit @1350
          (no change)
        > ack c abort @1400
          aborting decision=abort a=yes/prepared b=no/refused c=-/aborted
        > pending
          -> CallAbort a /a/abort key=tx-1/a/abort
          -> CallAbort b /b/abort key=tx-1/b/abort
        > ack a abort @1500
          aborting decision=abort a=yes/aborted b=no/refused c=-/aborted
        > ack b abort @1600
          aborted decision=abort a=yes/aborted b=no/aborted c=-/aborted
          -> Finished aborted abort
        """,
    )


def test_the_deadline_presumes_abort() -> None:
    check(
        """
        start @1000
        vote a yes @2000
        deadline @10999
        deadline @11000
        vote b yes @11001
        deadline @12000
        """,
        """
        > start @1000
          preparing decision=None a=-/preparing b=-/preparing c=-/preparing
          -> CallPrepare a /a/prepare key=tx-1/a/prepare
          -> CallPrepare b /b/prepare key=tx-1/b/prepare
          -> CallPrepare c /c/prepare key=tx-1/c/prepare
        > vote a yes @2000
          preparing decision=None a=yes/prepared b=-/preparing c=-/preparing
        > deadline @10999
          (no change)
        > deadline @11000
          aborting decision=abort a=yes/prepared b=-/preparing c=-/preparing
          -> CallAbort a /a/abort key=tx-1/a/abort
          -> CallAbort b /b/abort key=tx-1/b/abort
          -> CallAbort c /c/abort key=tx-1/c/abort
        > vote b yes @11001
          (no change)
        > deadline @12000
          (no change)
        """,
    )


# -- single points, asserted directly ---------------------------------------


def decided(decision: Decision):
    state, _ = start(make_definition(), 1000)
    if decision == Decision.COMMIT:
        for service in ("a", "b", "c"):
            state, _ = step(state, VoteReceived(service, Vote.YES, at_ms=1100))
    else:
        state, _ = step(state, VoteReceived("a", Vote.NO, at_ms=1100))
    assert state.decision == decision
    return state


def test_start_stamps_times_and_the_deadline() -> None:
    state, effects = start(make_definition(timeout_s=2.5), 1000)
    assert (state.created_at_ms, state.updated_at_ms) == (1000, 1000)
    assert next_deadline(state) == (3500, DeadlineReached(at_ms=3500))
    assert all(isinstance(e, CallPrepare) for e in effects)
    assert effects[0].body == {"from": "a"}
    assert effects == pending_effects(state)


def test_a_transaction_needs_an_id_and_a_time() -> None:
    with pytest.raises(InputError, match="with_id"):
        start(replace(make_definition(), id=None), 1000)
    for at_ms in (-1, True, 1.5, None):
        with pytest.raises(InputError, match="at_ms"):
            start(make_definition(), at_ms)


@pytest.mark.parametrize("decision", list(Decision))
def test_events_after_the_decision_change_nothing(decision: Decision) -> None:
    state = decided(decision)
    other_phase = Decision.ABORT if decision == Decision.COMMIT else Decision.COMMIT
    late = [
        VoteReceived("b", Vote.YES, at_ms=1200),
        VoteReceived("b", Vote.NO, at_ms=1200),
        VoteReceived("a", Vote.YES, at_ms=1200),
        DeadlineReached(at_ms=99_000),
        Acknowledged("a", other_phase, at_ms=1200),
        Acknowledged("ghost", decision, at_ms=1200),
        VoteReceived("ghost", Vote.NO, at_ms=1200),
    ]
    for event in late:
        after, effects = step(state, event)
        assert after is state and effects == ()
    assert next_deadline(state) is None


def test_duplicate_votes_are_ignored_even_if_they_disagree() -> None:
    state, _ = start(make_definition(), 1000)
    state, _ = step(state, VoteReceived("a", "yes", at_ms=1100))
    assert step(state, VoteReceived("a", "yes", at_ms=1200)) == (state, ())
    assert step(state, VoteReceived("a", "no", at_ms=1200)) == (state, ())


def test_acks_before_any_decision_are_ignored() -> None:
    state, _ = start(make_definition(), 1000)
    for phase in Decision:
        assert step(state, Acknowledged("a", phase, at_ms=1100)) == (state, ())


def test_events_on_a_finished_transaction_change_nothing() -> None:
    state = decided(Decision.COMMIT)
    for service in ("a", "b", "c"):
        state, effects = step(state, Acknowledged(service, "commit", at_ms=1300))
    assert effects == (Finished("tx-1", TxStatus.COMMITTED, Decision.COMMIT),)
    assert state.terminal
    for event in (
        Acknowledged("a", "commit", at_ms=1400),
        VoteReceived("a", "no", at_ms=1400),
        DeadlineReached(at_ms=99_000),
    ):
        assert step(state, event) == (state, ())
    assert pending_effects(state) == ()
    assert all(p.status == ParticipantStatus.COMMITTED for p in state.participants)


def test_a_single_participant_commits_on_its_yes() -> None:
    state, _ = start(make_definition(("only",)), 0)
    state, effects = step(state, VoteReceived("only", "yes", at_ms=5))
    assert effects == (CallCommit("tx-1", "only", "/only/commit", "{}", "tx-1/only/commit"),)
    state, effects = step(state, Acknowledged("only", "commit", at_ms=6))
    assert state.status == TxStatus.COMMITTED and effects[0].status == TxStatus.COMMITTED


def test_abort_pending_effects_go_to_every_unacknowledged_participant() -> None:
    state = decided(Decision.ABORT)
    assert pending_effects(state) == tuple(
        CallAbort("tx-1", s, f"/{s}/abort", "{}", f"tx-1/{s}/abort") for s in ("a", "b", "c")
    )


def test_history_records_each_point() -> None:
    state, _ = start(make_definition(("a", "b")), 1000)
    state, _ = step(state, VoteReceived("a", "yes", at_ms=1100))
    state, _ = step(state, DeadlineReached(at_ms=11_000))
    state, _ = step(state, Acknowledged("a", "abort", at_ms=11_100))
    state, _ = step(state, Acknowledged("b", "abort", at_ms=11_200))
    assert [(r.at_ms, r.event, dict(r.details)) for r in state.history] == [
        (1000, "started", {}),
        (1100, "vote", {"service": "a", "vote": "yes"}),
        (11_000, "timed_out", {}),
        (11_000, "decided", {"decision": "abort", "reason": "timed_out"}),
        (11_100, "acknowledged", {"service": "a", "phase": "abort"}),
        (11_200, "acknowledged", {"service": "b", "phase": "abort"}),
        (11_200, "aborted", {}),
    ]


def test_updated_at_never_goes_back_when_a_new_leader_stamps_an_earlier_time() -> None:
    state, _ = start(make_definition(), 5000)
    state, _ = step(state, VoteReceived("a", "yes", at_ms=6000))
    state, _ = step(state, VoteReceived("b", "yes", at_ms=5500))
    assert state.updated_at_ms == 6000
    assert state.history[-1].at_ms == 5500


def test_malformed_events_fail_where_they_are_built() -> None:
    with pytest.raises(ValueError):
        VoteReceived("a", "maybe", at_ms=1)
    with pytest.raises(ValueError):
        Acknowledged("a", "prepare", at_ms=1)
    for at_ms in (-1, True, 1.5, None):
        with pytest.raises(ValueError):
            DeadlineReached(at_ms=at_ms)
    state, _ = start(make_definition(), 0)
    with pytest.raises(TypeError):
        step(state, "vote")


@pytest.mark.parametrize("terminal", [False, True], ids=["decided", "terminal"])
@pytest.mark.parametrize(
    "not_an_event",
    [object(), None, "vote", {"type": "deadline"}, saga.DeadlineReached(kind="saga", step=None, at_ms=99_000)],
    ids=["object", "None", "str", "plain", "saga-deadline"],
)
def test_what_is_not_a_transaction_event_is_a_type_error(not_an_event: object, terminal: bool) -> None:
    """The answer of the saga's step too (tests/saga/test_saga_scenarios.py):
    a non-event is a bug of the caller, never a no-op - not even the other
    machine's DeadlineReached, not even for a terminal transaction."""
    state = decided(Decision.ABORT)
    if terminal:
        for service in ("a", "b", "c"):
            state, _ = step(state, Acknowledged(service, "abort", at_ms=1300))
        assert state.terminal
    with pytest.raises(TypeError, match="not a two-phase commit event"):
        step(state, not_an_event)  # type: ignore[arg-type]
