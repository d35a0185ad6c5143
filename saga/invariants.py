"""Invariants of saga states and transitions: a failing one is a bug."""

from __future__ import annotations

from . import limits
from .events import AwaitSignal, CallAction, Effect
from .state import BACKWARD_STATES, FORWARD_STATES, SagaState, SagaStatus, StepStatus

TO_COMPENSATE = (StepStatus.SUCCEEDED, StepStatus.UNKNOWN)


def check_transition(old: SagaState, new: SagaState, effects: tuple[Effect, ...]) -> None:
    """The decision to compensate is never undone; no step goes forward after it."""
    if old.status in BACKWARD_STATES:
        assert new.status in BACKWARD_STATES, (new.id, old.status, new.status)
        assert not any(isinstance(e, (CallAction, AwaitSignal)) for e in effects), new.id
    check_state(new)


def check_state(state: SagaState) -> None:
    """What holds of every saga state the machine returns."""
    assert len(state.history) <= limits.history_records_max(len(state.steps)), state.id
    assert len(state.signals) <= limits.SIGNALS_MAX, state.id
    statuses = [s.status for s in state.steps]
    running = statuses.count(StepStatus.RUNNING)
    assert statuses.count(StepStatus.COMPENSATING) <= 1, state.id
    if state.status in FORWARD_STATES:
        assert running == 1 and state.failure is None, state.id
        first_pending = statuses.index(StepStatus.RUNNING)
        assert all(s is StepStatus.SUCCEEDED for s in statuses[:first_pending]), state.id
    else:
        assert running == 0 and StepStatus.PENDING not in statuses, state.id
    if state.status in BACKWARD_STATES:
        assert state.failure is not None and not state.signals, state.id
    if state.status is SagaStatus.COMPLETED:
        assert all(s is StepStatus.SUCCEEDED for s in statuses), state.id
    if state.status is SagaStatus.COMPENSATED:
        assert not any(s in TO_COMPENSATE for s in statuses), state.id
        assert StepStatus.COMPENSATING not in statuses, state.id
    if state.status is SagaStatus.STUCK:
        assert StepStatus.COMPENSATING in statuses, state.id
