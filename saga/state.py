"""Saga state: what every replica holds for one saga, and its encodings.

`state_to_dict` / `state_from_dict` round-trip exactly through plain types
(dict, list, str, int, float, bool, None) for Raft snapshots; `to_api` gives
the API's saga object (README.md, "HTTP API").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from coordinator.grammar import format_ms

from .definition import SagaDefinition, definition_from_dict, definition_to_dict
from .errors import InvariantError, invariant
from .jsonvalue import decode_json


# The enums of the saga are StrEnums, as those of two-phase commit
# (twopc/model.py): a member is its value wherever it is compared, formatted
# (str(), f-strings) or packed (msgpack, JSON). The encodings below write
# `.value`, the same text whatever the enum kind
# (tests/saga/test_saga_old_encodings.py decodes states written before).
class SagaStatus(enum.StrEnum):
    STARTED = "started"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    STUCK = "stuck"

    @property
    def terminal(self) -> bool:
        """Completed or compensated: nothing changes any more."""
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


TERMINAL_STATES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})
# Steps go forward (one running at a time) in these states ...
FORWARD_STATES = frozenset({SagaStatus.STARTED, SagaStatus.RUNNING})
# ... and once compensation began, the saga stays in these for good.
# (`failed` and `timed_out` are passed through inside one step() call and
# appear in the history, never as a resting state.)
BACKWARD_STATES = frozenset({SagaStatus.COMPENSATING, SagaStatus.STUCK, SagaStatus.COMPENSATED})


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    SKIPPED = "skipped"


class FailureReason(enum.StrEnum):
    STEP_FAILED = "step_failed"
    TIMED_OUT = "timed_out"


class HistoryEvent(enum.StrEnum):
    STARTED = "started"
    SIGNAL = "signal"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_UNKNOWN = "step_unknown"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    COMPENSATING = "compensating"
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    NOTHING_TO_COMPENSATE = "nothing_to_compensate"
    STUCK = "stuck"
    REDRIVE = "redrive"
    COMPLETED = "completed"
    COMPENSATED = "compensated"


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One line of a saga's history; absent details are None.

    A "signal" record without `step` is a signal buffered for a later await
    step; with `step`, one delivered to the await step running. `by` names
    who asked, on "started", "signal" and "redrive" records: the name of the
    API token (None: no tokens, or a record older than token names).
    `fence` and `duration_ms`, on the record of a participant call's outcome
    ("step_succeeded", "step_failed", "step_unknown" of an action;
    "compensation_succeeded"; "stuck" of a compensation out of retries):
    the Coordinator-Fence the leader sent and how long the call took, in ms,
    retries and backoff included (None: an outcome without a call, or a
    record older than them).
    """

    at_ms: int
    event: HistoryEvent
    step: str | None = None
    attempts: int | None = None
    error: str | None = None
    signal: str | None = None
    by: str | None = None
    fence: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    reason: FailureReason
    step: str | None
    error: str


@dataclass(frozen=True, slots=True)
class StepState:
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    output_json: str | None = None
    error: str | None = None
    started_at_ms: int | None = None
    compensation_attempts: int = 0
    compensation_error: str | None = None

    @property
    def output(self) -> object:
        """A fresh decoded copy of the output (None when there is none)."""
        return decode_json(self.output_json)


@dataclass(frozen=True, slots=True)
class SagaState:
    """One saga. `signals` holds (name, payload JSON) sent before their
    await step was reached; `signals_buffered` counts every signal ever
    buffered (bounded by SIGNALS_MAX); `redrives` counts redrives."""

    id: str
    definition: SagaDefinition
    status: SagaStatus
    steps: tuple[StepState, ...]
    failure: Failure | None
    history: tuple[HistoryRecord, ...]
    signals: tuple[tuple[str, str], ...]
    signals_buffered: int
    redrives: int
    created_at_ms: int
    updated_at_ms: int

    def index_in(self, status: StepStatus) -> int | None:
        """The index of the (only) step in `status`, or None."""
        found = [i for i, s in enumerate(self.steps) if s.status is status]
        invariant(len(found) <= 1, self.id, status, found)
        return found[0] if found else None

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def the_index_in(self, status: StepStatus) -> int:
        """The index of the one step in `status`, which there must be."""
        index = self.index_in(status)
        if index is None:
            raise InvariantError(self.id, f"no step {status}")
        return index


def state_to_dict(state: SagaState) -> dict:
    """Plain (msgpack-able) form; `state_from_dict(state_to_dict(s)) == s`."""
    return {
        "id": state.id,
        "definition": definition_to_dict(state.definition),
        "status": state.status.value,
        "steps": [_step_to_dict(s) for s in state.steps],
        "failure": None
        if state.failure is None
        else {"reason": state.failure.reason.value, "step": state.failure.step, "error": state.failure.error},
        "history": [_record_to_dict(r) for r in state.history],
        "signals": [[name, payload] for name, payload in state.signals],
        "signals_buffered": state.signals_buffered,
        "redrives": state.redrives,
        "created_at_ms": state.created_at_ms,
        "updated_at_ms": state.updated_at_ms,
    }


def state_from_dict(raw: dict) -> SagaState:
    failure = raw["failure"]
    return SagaState(
        id=raw["id"],
        definition=definition_from_dict(raw["definition"]),
        status=SagaStatus(raw["status"]),
        steps=tuple(_step_from_dict(s) for s in raw["steps"]),
        failure=None
        if failure is None
        else Failure(FailureReason(failure["reason"]), failure["step"], failure["error"]),
        history=tuple(_record_from_dict(r) for r in raw["history"]),
        signals=tuple((name, payload) for name, payload in raw["signals"]),
        signals_buffered=raw["signals_buffered"],
        redrives=raw["redrives"],
        created_at_ms=raw["created_at_ms"],
        updated_at_ms=raw["updated_at_ms"],
    )


def to_api(state: SagaState) -> dict:
    """The API's saga object, JSON-ready; times as ISO-8601 UTC."""
    return {
        "id": state.id,
        "state": state.status.value,
        "steps": [
            {
                "name": spec.name,
                "state": s.status.value,
                "attempts": s.attempts,
                "output": s.output,
                "error": s.error,
                "compensation_attempts": s.compensation_attempts,
                "compensation_error": s.compensation_error,
            }
            for spec, s in zip(state.definition.steps, state.steps, strict=True)
        ],
        "failure": None
        if state.failure is None
        else {"reason": state.failure.reason.value, "step": state.failure.step, "error": state.failure.error},
        "history": history_to_api(state),
        "redrives": state.redrives,
        "created_at": format_ms(state.created_at_ms),
        "updated_at": format_ms(state.updated_at_ms),
    }


def history_to_api(state: SagaState, start: int = 0) -> list[dict]:
    """The API's history records from the ``start``-th on: the event stream
    renders only the records a command added, not the whole saga."""
    return [record_to_api(r) for r in state.history[start:]]


def _step_to_dict(step: StepState) -> dict:
    return {
        "status": step.status.value,
        "attempts": step.attempts,
        "output_json": step.output_json,
        "error": step.error,
        "started_at_ms": step.started_at_ms,
        "compensation_attempts": step.compensation_attempts,
        "compensation_error": step.compensation_error,
    }


def _step_from_dict(raw: dict) -> StepState:
    return StepState(
        status=StepStatus(raw["status"]),
        attempts=raw["attempts"],
        output_json=raw["output_json"],
        error=raw["error"],
        started_at_ms=raw["started_at_ms"],
        compensation_attempts=raw["compensation_attempts"],
        compensation_error=raw["compensation_error"],
    )


# A detail is in a record's plain and API forms only when it is not None: a
# record without the later ones ("by", "fence", "duration_ms") encodes as
# it did before them.
_RECORD_DETAILS = ("step", "attempts", "error", "signal", "by", "fence", "duration_ms")


def _record_to_dict(record: HistoryRecord) -> dict:
    out: dict = {"at_ms": record.at_ms, "event": record.event.value}
    for name in _RECORD_DETAILS:
        value = getattr(record, name)
        if value is not None:
            out[name] = value
    return out


def _record_from_dict(raw: dict) -> HistoryRecord:
    details = {name: raw.get(name) for name in _RECORD_DETAILS}
    return HistoryRecord(raw["at_ms"], HistoryEvent(raw["event"]), **details)


def record_to_api(record: HistoryRecord) -> dict:
    """One history record as the API writes it (the event stream's ``record``)."""
    out = _record_to_dict(record)
    del out["at_ms"]
    return {"at": format_ms(record.at_ms), **out}
