"""Transaction state as plain data: for the Raft log / snapshots, and for the API.

- `state_to_dict` / `state_from_dict`: an exact round trip through plain
  types (str, int, None, list, dict) that msgpack and JSON both carry.
- `to_api`: the transaction object of the HTTP API (README.md), times as
  ISO-8601 UTC strings ("2024-05-01T12:00:00.000Z").
"""

from __future__ import annotations

from coordinator.grammar import format_ms

from .definition import definition_from_dict, definition_to_dict
from .errors import InputError, invariant
from .model import (
    CALL_DETAILS,
    Decision,
    HistoryRecord,
    ParticipantState,
    ParticipantStatus,
    TxState,
    TxStatus,
    check_call,
    check_invariants,
)
from .tally import Vote

__all__ = ["format_ms", "history_to_api", "record_to_api", "state_from_dict", "state_to_dict", "to_api"]

_RECORD_KEYS = ("at_ms", "event")


def state_to_dict(state: TxState) -> dict:
    return {
        "definition": definition_to_dict(state.definition),
        "status": str(state.status),
        "decision": _optional_str(state.decision),
        "participants": [
            {"service": p.service, "vote": _optional_str(p.vote), "status": str(p.status)} for p in state.participants
        ],
        "history": [_record_to_dict(record) for record in state.history],
        "created_at_ms": state.created_at_ms,
        "updated_at_ms": state.updated_at_ms,
    }


def state_from_dict(raw: dict) -> TxState:
    """Inverse of `state_to_dict`; InvariantError when the result breaks an
    invariant (`check_invariants`), InputError for a field of the wrong type."""
    state = TxState(
        definition=definition_from_dict(raw["definition"]),
        status=TxStatus(raw["status"]),
        decision=None if raw["decision"] is None else Decision(raw["decision"]),
        participants=tuple(
            ParticipantState(
                service=p["service"],
                vote=None if p["vote"] is None else Vote(p["vote"]),
                status=ParticipantStatus(p["status"]),
            )
            for p in raw["participants"]
        ),
        history=tuple(_record_from_dict(record) for record in raw["history"]),
        created_at_ms=_int(raw["created_at_ms"]),
        updated_at_ms=_int(raw["updated_at_ms"]),
    )
    check_invariants(state)
    return state


def history_to_api(state: TxState, start: int = 0) -> list[dict]:
    """The API's history records from the ``start``-th on."""
    return [record_to_api(record) for record in state.history[start:]]


def record_to_api(record: HistoryRecord) -> dict:
    """One history record as the API writes it (the event stream's ``record``)."""
    return {"at": format_ms(record.at_ms), "event": record.event, **dict(record.details)}


def to_api(state: TxState) -> dict:
    """The transaction object the HTTP API answers with."""
    return {
        "id": state.tx_id,
        "state": str(state.status),
        "decision": _optional_str(state.decision),
        "participants": [
            {"service": p.service, "vote": _optional_str(p.vote), "state": str(p.status)} for p in state.participants
        ],
        "history": history_to_api(state),
        "created_at": format_ms(state.created_at_ms),
        "updated_at": format_ms(state.updated_at_ms),
    }


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"a time in a transaction state must be an int, not {value!r}")
    return value


def _record_to_dict(record: HistoryRecord) -> dict:
    invariant(all(key not in _RECORD_KEYS for key, _ in record.details), record)
    return {"at_ms": record.at_ms, "event": record.event, **dict(record.details)}


def _record_from_dict(raw: dict) -> HistoryRecord:
    details = tuple((key, value) for key, value in raw.items() if key not in _RECORD_KEYS)
    if not all(isinstance(value, str) for key, value in details if key not in CALL_DETAILS):
        raise InputError(f"the details of a history record must be strings (but duration_ms): {details!r}")
    check_call(raw.get("fence"), raw.get("duration_ms"))
    return HistoryRecord(_int(raw["at_ms"]), raw["event"], details)
