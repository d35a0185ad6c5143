"""The saga state machine: `start(definition, at_ms)` and `step(state, event)`,
each returning `(state, effects)`.

Steps run strictly in order, one at a time. A definite failure, an unknown
outcome or a passed deadline turns the saga around for good: compensation
runs in reverse order over every step that succeeded or is unknown, one at a
time, until none is left (`compensated`) or a compensation runs out of its
budget (`stuck`, resumed by `Redrive`).

An event that does not apply to the state (duplicate, late, wrong step,
wrong phase, terminal saga, a count that is not a non-negative int) returns
the state unchanged (the same object) and no effects. That is what makes
redelivery harmless; `step` never raises for it. An object that is not a
saga event at all is a bug of the caller, never a no-op: TypeError (as in
twopc/machine.py; saga/errors.py lists what the model raises).
`pending_effects` and `next_deadline` tell a (new) leader what to do for a
saga without any event.
"""

from __future__ import annotations

from collections.abc import Iterator

from coordinator.grammar.evolve import evolve as replace

from . import limits
from .calls import action_effect, await_deadline_ms, await_effect, compensation_effect, saga_deadline_ms
from .definition import ActionStep, AwaitStep, SagaDefinition
from .errors import InputError, SubstitutionError, invariant
from .events import (
    ActionFailed,
    ActionSucceeded,
    ActionUnknown,
    CompensationExhausted,
    CompensationSucceeded,
    DeadlineReached,
    Effect,
    Event,
    Finished,
    Redrive,
    SignalReceived,
)
from .invariants import TO_COMPENSATE, check_state, check_transition
from .jsonvalue import encode_bounded
from .state import FORWARD_STATES, Failure, FailureReason, HistoryEvent, SagaState, SagaStatus, StepStatus
from .updates import call_details, error_text, initial_state, is_count, is_index, record, running_action, update_step

Transition = tuple[SagaState, tuple[Effect, ...]]
_NO_EFFECTS: tuple[Effect, ...] = ()


def start(definition: SagaDefinition, at_ms: int, by: str | None = None) -> Transition:
    """A new saga for `definition` (which must carry its id), created at
    `at_ms` (submitted `by` whom, recorded in "started"): step 0 is dispatched."""
    if not is_count(at_ms):
        raise InputError(f"at_ms must be a non-negative integer, not {at_ms!r}")
    if not (by is None or isinstance(by, str)):
        raise InputError(f"by must be a name or None, not {by!r}")
    state = initial_state(definition, at_ms, by)  # InputError without an id
    state, effects = _advance(state, 0, at_ms)
    check_state(state)
    return state, effects


def step(state: SagaState, event: Event) -> Transition:
    """Apply `event`; `(state, ())` itself when it does not apply;
    TypeError when it is not a saga event."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"not a saga event: {event!r}")
    if state.terminal or not is_count(event.at_ms):
        return state, _NO_EFFECTS
    new_state, effects = handler(state, event)
    if new_state is state:
        return state, _NO_EFFECTS
    new_state = replace(new_state, updated_at_ms=max(state.updated_at_ms, event.at_ms))
    check_transition(state, new_state, effects)
    return new_state, effects


def pending_effects(state: SagaState) -> tuple[Effect, ...]:
    """What a (new) leader must (re)issue: the call of the step running, the
    wait of the await step running, or the compensation running; nothing for
    a stuck or terminal saga. Equal to what `step` last emitted for it."""
    if state.status in FORWARD_STATES:
        index = state.the_index_in(StepStatus.RUNNING)
        if isinstance(state.definition.steps[index], AwaitStep):
            return (await_effect(state, index),)
        return (action_effect(state, index),)
    if state.status is SagaStatus.COMPENSATING:
        index = state.the_index_in(StepStatus.COMPENSATING)
        return (compensation_effect(state, index),)
    return _NO_EFFECTS


def next_deadline(state: SagaState) -> tuple[int, DeadlineReached] | None:
    """The earliest deadline of a saga going forward, with the event to
    propose once the leader's clock passes it (the leader may stamp its own
    `at_ms`; an event stamped before the deadline is a no-op)."""
    if state.status not in FORWARD_STATES:
        return None
    deadlines: list[tuple[int, DeadlineReached]] = []
    if state.definition.timeout_s is not None:
        at_ms = saga_deadline_ms(state)
        deadlines.append((at_ms, DeadlineReached(kind="saga", step=None, at_ms=at_ms)))
    index = state.index_in(StepStatus.RUNNING)
    if index is not None and isinstance(state.definition.steps[index], AwaitStep):
        at_ms = await_deadline_ms(state, index)
        deadlines.append((at_ms, DeadlineReached(kind="step", step=index, at_ms=at_ms)))
    return min(deadlines, key=lambda d: d[0]) if deadlines else None


# -- going forward ---------------------------------------------------------------


def _advance(state: SagaState, first: int, at_ms: int) -> Transition:
    """Dispatch steps from `first` on: an action is called, an await step
    waits (or takes a buffered signal and the next step follows)."""
    invariant(state.status in FORWARD_STATES, state.id, state.status)
    for index in range(first, len(state.steps)):
        spec = state.definition.steps[index]
        state = update_step(state, index, status=StepStatus.RUNNING, started_at_ms=at_ms)
        if isinstance(spec, AwaitStep):
            payload_json = dict(state.signals).get(spec.signal)
            if payload_json is None:
                return state, (await_effect(state, index),)
            signals = tuple(s for s in state.signals if s[0] != spec.signal)
            state = _succeed(replace(state, signals=signals), index, payload_json, 0, at_ms)
            continue
        try:
            return state, (action_effect(state, index),)
        except SubstitutionError as error:
            text = f"substitution failed: {error}"
            state = update_step(state, index, status=StepStatus.FAILED, error=text)
            state = record(state, at_ms, HistoryEvent.STEP_FAILED, step=spec.name, error=text)
            return _turn_around(state, at_ms, FailureReason.STEP_FAILED, spec.name, text)
    state = record(replace(state, status=SagaStatus.COMPLETED), at_ms, HistoryEvent.COMPLETED)
    return state, (Finished(saga_id=state.id, state=SagaStatus.COMPLETED),)


def _succeed(state: SagaState, index: int, output_json: str, attempts: int, at_ms: int, **call: object) -> SagaState:
    """Step `index` succeeded; `call`: what its action's outcome reported of
    the call (call_details), for the record."""
    state = update_step(state, index, status=StepStatus.SUCCEEDED, attempts=attempts, output_json=output_json)
    name = state.definition.steps[index].name
    state = record(state, at_ms, HistoryEvent.STEP_SUCCEEDED, step=name, attempts=attempts, **call)
    return replace(state, status=SagaStatus.RUNNING)


def _on_action_succeeded(state: SagaState, event: ActionSucceeded) -> Transition:
    index = running_action(state, event.step)
    if index is None or not is_count(event.attempts):
        return state, _NO_EFFECTS
    try:
        output_json = encode_bounded(event.output, limits.STEP_OUTPUT_BYTES_MAX)
    except ValueError as error:
        # It took effect but its output cannot be kept: compensate it.
        unknown = ActionUnknown(
            step=index,
            error=f"output {error}",
            attempts=event.attempts,
            at_ms=event.at_ms,
            fence=event.fence,
            duration_ms=event.duration_ms,
        )
        return _on_action_outcome(state, unknown)
    state = _succeed(state, index, output_json, event.attempts, event.at_ms, **call_details(event))
    return _advance(state, index + 1, event.at_ms)


def _on_action_outcome(state: SagaState, event: ActionFailed | ActionUnknown) -> Transition:
    index = running_action(state, event.step)
    if index is None or not is_count(event.attempts):
        return state, _NO_EFFECTS
    definite = isinstance(event, ActionFailed)
    status = StepStatus.FAILED if definite else StepStatus.UNKNOWN
    history = HistoryEvent.STEP_FAILED if definite else HistoryEvent.STEP_UNKNOWN
    text = error_text(event.error)
    name = state.definition.steps[index].name
    state = update_step(state, index, status=status, attempts=event.attempts, error=text)
    state = record(state, event.at_ms, history, step=name, attempts=event.attempts, error=text, **call_details(event))
    return _turn_around(state, event.at_ms, FailureReason.STEP_FAILED, name, text)


def _on_signal(state: SagaState, event: SignalReceived) -> Transition:
    if state.status not in FORWARD_STATES:
        return state, _NO_EFFECTS
    if not isinstance(event.name, str) or not limits.SIGNAL_NAME_PATTERN.fullmatch(event.name):
        return state, _NO_EFFECTS
    try:
        payload_json = encode_bounded(event.payload, limits.SIGNAL_PAYLOAD_BYTES_MAX)
    except ValueError:
        return state, _NO_EFFECTS
    index = state.the_index_in(StepStatus.RUNNING)
    spec = state.definition.steps[index]
    if isinstance(spec, AwaitStep) and spec.signal == event.name:
        state = record(state, event.at_ms, HistoryEvent.SIGNAL, step=spec.name, signal=event.name, by=_by(event))
        state = _succeed(state, index, payload_json, 0, event.at_ms)
        return _advance(state, index + 1, event.at_ms)
    return _buffer_signal(state, index, event.name, payload_json, event.at_ms, _by(event)), _NO_EFFECTS


def _by(event: SignalReceived | Redrive) -> str | None:
    """Who sent the event, as recorded: a name, else None."""
    return event.by if isinstance(event.by, str) else None


def _buffer_signal(
    state: SagaState, running: int, name: str, payload_json: str, at_ms: int, by: str | None = None
) -> SagaState:
    """Keep a signal for a later await step (the latest payload per name);
    a signal no later step waits for, or past SIGNALS_MAX, is dropped."""
    waited = any(isinstance(spec, AwaitStep) and spec.signal == name for spec in state.definition.steps[running + 1 :])
    buffered = dict(state.signals)
    if not waited or buffered.get(name) == payload_json:
        return state
    if name in buffered:
        signals = tuple((n, payload_json if n == name else p) for n, p in state.signals)
        return replace(state, signals=signals)
    if state.signals_buffered >= limits.SIGNALS_MAX:
        return state
    state = replace(state, signals=state.signals + ((name, payload_json),), signals_buffered=state.signals_buffered + 1)
    return record(state, at_ms, HistoryEvent.SIGNAL, signal=name, by=by)


def _on_deadline(state: SagaState, event: DeadlineReached) -> Transition:
    if state.status not in FORWARD_STATES:
        return state, _NO_EFFECTS
    index = state.the_index_in(StepStatus.RUNNING)
    spec = state.definition.steps[index]
    is_await = isinstance(spec, AwaitStep)
    if event.kind == "saga":
        deadline_ms = saga_deadline_ms(state)
        if deadline_ms is None or event.at_ms < deadline_ms:
            return state, _NO_EFFECTS
        text = f"saga deadline of {state.definition.timeout_s:g} s passed"
        # An action running may have taken effect; an await step has not.
        status = StepStatus.FAILED if is_await else StepStatus.UNKNOWN
    elif event.kind == "step" and event.step == index and isinstance(spec, AwaitStep):
        if event.at_ms < await_deadline_ms(state, index):
            return state, _NO_EFFECTS
        text = f"no signal {spec.signal!r} within {spec.timeout_s:g} s"
        status = StepStatus.FAILED
    else:
        return state, _NO_EFFECTS
    history = HistoryEvent.STEP_FAILED
    if status is StepStatus.UNKNOWN:
        history = HistoryEvent.STEP_UNKNOWN
    state = update_step(state, index, status=status, error=text)
    state = record(state, event.at_ms, history, step=spec.name, error=text)
    return _turn_around(state, event.at_ms, FailureReason.TIMED_OUT, spec.name, text)


# -- going backward --------------------------------------------------------------


def _turn_around(state: SagaState, at_ms: int, reason: FailureReason, name: str, error: str) -> Transition:
    """The decision to compensate: recorded once, never undone."""
    invariant(state.status in FORWARD_STATES, state.id, state.status)
    event = HistoryEvent.FAILED
    if reason is FailureReason.TIMED_OUT:
        event = HistoryEvent.TIMED_OUT
    state = record(state, at_ms, event, step=name, error=error)
    state = record(state, at_ms, HistoryEvent.COMPENSATING)
    steps = tuple(replace(s, status=StepStatus.SKIPPED) if s.status is StepStatus.PENDING else s for s in state.steps)
    state = replace(
        state, status=SagaStatus.COMPENSATING, steps=steps, signals=(), failure=Failure(reason, name, error)
    )
    return _compensate_next(state, at_ms)


def _compensate_next(state: SagaState, at_ms: int) -> Transition:
    """Start the compensation of the latest step still to compensate;
    steps with nothing to compensate are passed over on the way."""
    invariant(state.status is SagaStatus.COMPENSATING, state.id, state.status)
    for index in _indices_to_compensate(state):
        spec = state.definition.steps[index]
        if isinstance(spec, ActionStep) and spec.compensation is not None:
            state = update_step(state, index, status=StepStatus.COMPENSATING)
            return _issue_compensation(state, index, at_ms)
        state = update_step(state, index, status=StepStatus.COMPENSATED)
        state = record(state, at_ms, HistoryEvent.NOTHING_TO_COMPENSATE, step=spec.name)
    state = replace(state, status=SagaStatus.COMPENSATED)
    state = record(state, at_ms, HistoryEvent.COMPENSATED)
    return state, (Finished(saga_id=state.id, state=SagaStatus.COMPENSATED),)


def _indices_to_compensate(state: SagaState) -> Iterator[int]:
    for index in reversed(range(len(state.steps))):
        if state.steps[index].status in TO_COMPENSATE:
            yield index


def _issue_compensation(state: SagaState, index: int, at_ms: int) -> Transition:
    try:
        return state, (compensation_effect(state, index),)
    except SubstitutionError as error:
        return _stuck(state, index, at_ms, f"substitution failed: {error}", None), _NO_EFFECTS


def _stuck(state: SagaState, index: int, at_ms: int, error: str, attempts: int | None, **call: object) -> SagaState:
    """The compensation of step `index` gave up: wait for a redrive; `call`
    as for `_succeed`."""
    changes: dict[str, object] = {"compensation_error": error}
    if attempts is not None:
        changes["compensation_attempts"] = attempts
    state = update_step(state, index, **changes)
    state = replace(state, status=SagaStatus.STUCK)
    if state.redrives <= limits.REDRIVES_RECORDED_MAX:
        name = state.definition.steps[index].name
        state = record(state, at_ms, HistoryEvent.STUCK, step=name, attempts=attempts, error=error, **call)
    return state


def _compensating_step(state: SagaState, event: CompensationSucceeded | CompensationExhausted) -> int | None:
    """The event's step when its compensation is the one running (and the
    call answered was issued after the last redrive), else None."""
    if state.status is not SagaStatus.COMPENSATING or not is_index(state, event.step):
        return None
    if event.redrives is not None and event.redrives != state.redrives:
        return None
    if not is_count(event.attempts):
        return None
    index = event.step
    return index if state.steps[index].status is StepStatus.COMPENSATING else None


def _on_compensation_succeeded(state: SagaState, event: CompensationSucceeded) -> Transition:
    index = _compensating_step(state, event)
    if index is None:
        return state, _NO_EFFECTS
    state = update_step(state, index, status=StepStatus.COMPENSATED, compensation_attempts=event.attempts)
    name = state.definition.steps[index].name
    state = record(
        state,
        event.at_ms,
        HistoryEvent.COMPENSATION_SUCCEEDED,
        step=name,
        attempts=event.attempts,
        **call_details(event),
    )
    return _compensate_next(state, event.at_ms)


def _on_compensation_exhausted(state: SagaState, event: CompensationExhausted) -> Transition:
    index = _compensating_step(state, event)
    if index is None:
        return state, _NO_EFFECTS
    text = error_text(event.error)
    return _stuck(state, index, event.at_ms, text, event.attempts, **call_details(event)), _NO_EFFECTS


def _on_redrive(state: SagaState, event: Redrive) -> Transition:
    if state.status is not SagaStatus.STUCK:
        return state, _NO_EFFECTS
    index = state.the_index_in(StepStatus.COMPENSATING)
    state = replace(state, status=SagaStatus.COMPENSATING, redrives=state.redrives + 1)
    if state.redrives <= limits.REDRIVES_RECORDED_MAX:
        state = record(state, event.at_ms, HistoryEvent.REDRIVE, by=_by(event))
        state = record(state, event.at_ms, HistoryEvent.COMPENSATING)
    return _issue_compensation(state, index, event.at_ms)


_HANDLERS = {
    ActionSucceeded: _on_action_succeeded,
    ActionFailed: _on_action_outcome,
    ActionUnknown: _on_action_outcome,
    SignalReceived: _on_signal,
    DeadlineReached: _on_deadline,
    CompensationSucceeded: _on_compensation_succeeded,
    CompensationExhausted: _on_compensation_exhausted,
    Redrive: _on_redrive,
}
