"""Two-phase commit as a pure state machine (no IO, no clock, no randomness).

    definition = parse_definition(raw, known_services)      # DefinitionError
    state, effects = start(with_id(definition, tx_id), at_ms)
    state, effects = step(state, VoteReceived("inventory", "yes", at_ms=...))
    pending_effects(state)    # what a new leader must (re)issue
    next_deadline(state)      # (at_ms, DeadlineReached) while undecided

Time and ids enter only inside events and definitions, stamped by the leader.
"""

from .codec import format_ms, history_to_api, record_to_api, state_from_dict, state_to_dict, to_api
from .definition import (
    ParticipantCall,
    ParticipantDefinition,
    TransactionDefinition,
    definition_from_dict,
    definition_to_dict,
    parse_definition,
    same_definition,
    with_id,
)
from .errors import DefinitionError, InputError, InvariantError
from .machine import next_deadline, pending_effects, start, step
from .model import (
    Acknowledged,
    Call,
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
)
from .tally import Tally, Vote, tally

__all__ = [
    # errors (twopc/errors.py)
    "DefinitionError",
    "InputError",
    "InvariantError",
    # definitions
    "ParticipantCall",
    "ParticipantDefinition",
    "TransactionDefinition",
    "definition_from_dict",
    "definition_to_dict",
    "parse_definition",
    "same_definition",
    "with_id",
    # state
    "Decision",
    "HistoryRecord",
    "ParticipantState",
    "ParticipantStatus",
    "TxState",
    "TxStatus",
    "Tally",
    "Vote",
    "tally",
    # events and effects
    "Acknowledged",
    "DeadlineReached",
    "Event",
    "VoteReceived",
    "Call",
    "CallAbort",
    "CallCommit",
    "CallPrepare",
    "Effect",
    "Finished",
    # the machine
    "start",
    "step",
    "pending_effects",
    "next_deadline",
    # plain data
    "state_to_dict",
    "state_from_dict",
    "history_to_api",
    "record_to_api",
    "to_api",
    "format_ms",
]
