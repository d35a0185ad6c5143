"""Small pure helpers the saga machine builds its transitions from."""

from __future__ import annotations

from typing import TypeGuard

from coordinator.grammar.evolve import evolve as replace

from . import limits
from .definition import ActionStep, SagaDefinition
from .errors import InputError
from .state import FORWARD_STATES, HistoryEvent, HistoryRecord, SagaState, SagaStatus, StepState, StepStatus


def initial_state(definition: SagaDefinition, at_ms: int, by: str | None = None) -> SagaState:
    """A saga just created: every step pending, history "started" (`by` whom)."""
    if definition.id is None:
        raise InputError("a saga starts from a definition with an id (see with_id)")
    return SagaState(
        id=definition.id,
        definition=definition,
        status=SagaStatus.STARTED,
        steps=tuple(StepState() for _ in definition.steps),
        failure=None,
        history=(HistoryRecord(at_ms, HistoryEvent.STARTED, by=by),),
        signals=(),
        signals_buffered=0,
        redrives=0,
        created_at_ms=at_ms,
        updated_at_ms=at_ms,
    )


def is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_index(state: SagaState, value: object) -> TypeGuard[int]:
    return is_count(value) and value < len(state.steps)  # type: ignore[operator]


def running_action(state: SagaState, step: object) -> int | None:
    """`step` when it is the action step running, else None."""
    if state.status not in FORWARD_STATES or not is_index(state, step):
        return None
    if state.steps[step].status is not StepStatus.RUNNING:
        return None
    return step if isinstance(state.definition.steps[step], ActionStep) else None


def error_text(error: object) -> str:
    text = error if isinstance(error, str) else str(error)
    if len(text) > limits.ERROR_CHARS_MAX:
        text = text[: limits.ERROR_CHARS_MAX] + " [truncated]"
    return text


def update_step(state: SagaState, index: int, **changes: object) -> SagaState:
    step_state = replace(state.steps[index], **changes)
    return replace(state, steps=state.steps[:index] + (step_state,) + state.steps[index + 1 :])


def call_details(event: object) -> dict[str, object]:
    """What an outcome event reports of its call (`fence`, `duration_ms`),
    as details of its history record."""
    return {"fence": getattr(event, "fence", None), "duration_ms": getattr(event, "duration_ms", None)}


def record(state: SagaState, at_ms: int, event: HistoryEvent, **details: object) -> SagaState:
    entry = HistoryRecord(at_ms, event, **details)  # type: ignore[arg-type]
    return replace(state, history=state.history + (entry,))
