"""Effects a saga state asks for, and the deadlines it runs against.

Pure functions of the state: `step` emits them when a step or compensation
starts, `pending_effects` rebuilds the same values for a new leader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from .definition import ActionStep, AwaitStep
from .errors import InvariantError
from .events import AwaitSignal, CallAction, CallCompensation
from .jsonvalue import decode_json
from .state import SagaState
from .substitution import substitute


class Outputs(Mapping[str, object]):
    """Step outputs by step name, decoded only when a reference reads them."""

    __slots__ = ("_texts",)

    def __init__(self, state: SagaState) -> None:
        self._texts = {
            spec.name: s.output_json
            for spec, s in zip(state.definition.steps, state.steps, strict=True)
            if s.output_json is not None
        }

    def __getitem__(self, name: str) -> object:
        return decode_json(self._texts[name])

    def __contains__(self, name: object) -> bool:
        return name in self._texts

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


def substituted(state: SagaState, body_json: str | None, *, unresolved_as_null: bool = False) -> object:
    if body_json is None:
        return None
    return substitute(
        decode_json(body_json), Outputs(state), state.definition.step_names, unresolved_as_null=unresolved_as_null
    )


def action_effect(state: SagaState, index: int) -> CallAction:
    spec = state.definition.steps[index]
    if not isinstance(spec, ActionStep):
        raise InvariantError(state.id, index, "not an action step")
    return CallAction(
        saga_id=state.id,
        step=index,
        name=spec.name,
        service=spec.service,
        method=spec.action.method,
        path=spec.action.path,
        body=substituted(state, spec.action.body_json),
        idempotency_key=f"{state.id}/{spec.name}/action",
        timeout_s=spec.timeout_s,
        retry=spec.retry,
    )


def compensation_effect(state: SagaState, index: int) -> CallCompensation:
    spec = state.definition.steps[index]
    if not isinstance(spec, ActionStep) or spec.compensation is None:
        raise InvariantError(state.id, index, "no compensation")
    compensation = spec.compensation
    return CallCompensation(
        saga_id=state.id,
        step=index,
        name=spec.name,
        service=spec.service,
        method=compensation.method,
        path=compensation.path,
        body=substituted(state, compensation.body_json, unresolved_as_null=True),
        idempotency_key=f"{state.id}/{spec.name}/compensation",
        timeout_s=spec.timeout_s,
        retry=compensation.retry,
        redrives=state.redrives,
    )


def await_effect(state: SagaState, index: int) -> AwaitSignal:
    spec = state.definition.steps[index]
    if not isinstance(spec, AwaitStep):
        raise InvariantError(state.id, index, "not an await step")
    return AwaitSignal(
        saga_id=state.id, step=index, name=spec.name, signal=spec.signal, deadline_at_ms=await_deadline_ms(state, index)
    )


def seconds_to_ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


def await_deadline_ms(state: SagaState, index: int) -> int:
    started_at_ms = state.steps[index].started_at_ms
    if started_at_ms is None:
        raise InvariantError(state.id, index, "an await step running since no time")
    return started_at_ms + seconds_to_ms(state.definition.steps[index].timeout_s)


def saga_deadline_ms(state: SagaState) -> int | None:
    timeout_s = state.definition.timeout_s
    return None if timeout_s is None else state.created_at_ms + seconds_to_ms(timeout_s)
