"""Sagas as a pure model: definitions and a state machine.

The machine has the form `step(state, event) -> (state, effects)`.

No IO, clocks or randomness in here: time enters as `at_ms` stamped by the
leader into each event, ids come inside the definition. The leader's
executor turns effects into participant calls and their answers back into
events through the Raft log.

    definition = with_id(parse_definition(raw, known_services), saga_id)
    state, effects = start(definition, at_ms)
    state, effects = step(state, ActionSucceeded(step=0, output={...},
                                                 attempts=1, at_ms=...))
"""

from .definition import (
    ActionStep,
    AwaitStep,
    Compensation,
    HttpCall,
    RetryPolicy,
    SagaDefinition,
    Step,
    definition_from_dict,
    definition_to_dict,
    parse_definition,
    same_definition,
    with_id,
)
from .errors import DefinitionError, InputError, InvariantError, SubstitutionError
from .events import (
    ActionFailed,
    ActionSucceeded,
    ActionUnknown,
    AwaitSignal,
    CallAction,
    CallCompensation,
    CompensationExhausted,
    CompensationSucceeded,
    DeadlineReached,
    Effect,
    Event,
    Finished,
    Redrive,
    SignalReceived,
    event_from_dict,
    event_to_dict,
)
from .machine import next_deadline, pending_effects, start, step
from .state import (
    TERMINAL_STATES,
    Failure,
    FailureReason,
    HistoryEvent,
    HistoryRecord,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
    history_to_api,
    record_to_api,
    state_from_dict,
    state_to_dict,
    to_api,
)
from .substitution import substitute

__all__ = [
    "ActionFailed",
    "ActionStep",
    "ActionSucceeded",
    "ActionUnknown",
    "AwaitSignal",
    "AwaitStep",
    "CallAction",
    "CallCompensation",
    "Compensation",
    "CompensationExhausted",
    "CompensationSucceeded",
    "DeadlineReached",
    "DefinitionError",
    "Effect",
    "Event",
    "Failure",
    "FailureReason",
    "Finished",
    "HistoryEvent",
    "HistoryRecord",
    "HttpCall",
    "InputError",
    "InvariantError",
    "Redrive",
    "RetryPolicy",
    "SagaDefinition",
    "SagaState",
    "SagaStatus",
    "SignalReceived",
    "Step",
    "StepState",
    "StepStatus",
    "SubstitutionError",
    "TERMINAL_STATES",
    "definition_from_dict",
    "definition_to_dict",
    "event_from_dict",
    "event_to_dict",
    "next_deadline",
    "parse_definition",
    "pending_effects",
    "same_definition",
    "start",
    "state_from_dict",
    "state_to_dict",
    "step",
    "substitute",
    "history_to_api",
    "record_to_api",
    "to_api",
    "with_id",
]
