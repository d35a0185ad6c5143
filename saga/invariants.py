"""Invariants of saga states and transitions: a failing one is a bug.

Checked on every state `step()` returns, by `invariant()` (saga/errors.py):
unlike `assert`, it stays under `python -O`.
"""

from __future__ import annotations

from . import limits
from .errors import invariant
from .events import AwaitSignal, CallAction, Effect
from .state import BACKWARD_STATES, FORWARD_STATES, SagaState, SagaStatus, StepStatus

TO_COMPENSATE = (StepStatus.SUCCEEDED, StepStatus.UNKNOWN)


def check_transition(old: SagaState, new: SagaState, effects: tuple[Effect, ...]) -> None:
    """The decision to compensate is never undone; no step goes forward after it."""
    if old.status in BACKWARD_STATES:
        invariant(new.status in BACKWARD_STATES, new.id, old.status, new.status)
        invariant(not any(isinstance(e, (CallAction, AwaitSignal)) for e in effects), new.id)
    check_state(new)


def check_state(state: SagaState) -> None:
    """What holds of every saga state the machine returns."""
    invariant(len(state.history) <= limits.history_records_max(len(state.steps)), state.id)
    invariant(len(state.signals) <= limits.SIGNALS_MAX, state.id)
    statuses = [s.status for s in state.steps]
    running = statuses.count(StepStatus.RUNNING)
    invariant(statuses.count(StepStatus.COMPENSATING) <= 1, state.id)
    if state.status in FORWARD_STATES:
        invariant(running == 1 and state.failure is None, state.id)
        first_pending = statuses.index(StepStatus.RUNNING)
        invariant(all(s is StepStatus.SUCCEEDED for s in statuses[:first_pending]), state.id)
    else:
        invariant(running == 0 and StepStatus.PENDING not in statuses, state.id)
    if state.status in BACKWARD_STATES:
        invariant(state.failure is not None and not state.signals, state.id)
    if state.status is SagaStatus.COMPLETED:
        invariant(all(s is StepStatus.SUCCEEDED for s in statuses), state.id)
    if state.status is SagaStatus.COMPENSATED:
        invariant(not any(s in TO_COMPENSATE for s in statuses), state.id)
        invariant(StepStatus.COMPENSATING not in statuses, state.id)
    if state.status is SagaStatus.STUCK:
        invariant(StepStatus.COMPENSATING in statuses, state.id)
