"""Transaction definitions: parse, validate, encode.

A definition as a user sends it (README.md, "Sagas and transactions from the CLI")::

    {"id": "tx-1",                                    # optional
     "participants": [
       {"service": "inventory",
        "prepare": {"path": "/reserve", "body": {"sku": "W-1"}},
        "commit":  {"path": "/reserve/commit"},       # body optional
        "abort":   {"path": "/reserve/abort"}}],
     "timeout_s": 10,                                  # optional
     "release": "2.4.1"}                               # optional: only its workers run it

Every call is a POST. `null` for an optional field means "absent". An absent
body is the empty object `{}`. Bodies are kept as compact JSON text
(`body_json`), which is immutable, hashable and exactly what is sent.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace

from coordinator.grammar import (
    dot_segment_problem,
    json_value_problem,
    path_problem,
    pattern_problem,
    release_problem,
    size_problem,
    type_name,
    unknown_field_problem,
)
from coordinator.grammar import field as _field

from . import limits
from .errors import DefinitionError

_ROOT = "definition"
_ROOT_FIELDS = ("id", "participants", "timeout_s", "release")
_PARTICIPANT_FIELDS = ("service", "prepare", "commit", "abort")
_CALL_FIELDS = ("path", "body")
_PHASES = ("prepare", "commit", "abort")
_EMPTY_BODY_JSON = "{}"


@dataclass(frozen=True, slots=True)
class ParticipantCall:
    """One POST to a participant: path and compact JSON body text."""

    path: str
    body_json: str

    @property
    def body(self) -> object:
        """A fresh decoded copy of the body."""
        return json.loads(self.body_json)


@dataclass(frozen=True, slots=True)
class ParticipantDefinition:
    service: str
    prepare: ParticipantCall
    commit: ParticipantCall
    abort: ParticipantCall


@dataclass(frozen=True, slots=True)
class TransactionDefinition:
    id: str | None
    participants: tuple[ParticipantDefinition, ...]
    timeout_s: int | float = limits.TX_TIMEOUT_S_DEFAULT
    # Run only on workers of this release (grammar/limits.py RELEASE_PATTERN);
    # None: on any worker.
    release: str | None = None

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(p.service for p in self.participants)

    @property
    def timeout_ms(self) -> int:
        return math.ceil(self.timeout_s * 1000)

    def participant(self, service: str) -> ParticipantDefinition | None:
        for p in self.participants:
            if p.service == service:
                return p
        return None


def parse_definition(
    raw: object, known_services: frozenset[str] | None = None, *, stored: bool = False
) -> TransactionDefinition:
    """Validate a user's definition; raise DefinitionError naming the field.

    With `known_services`, every participant must be one of them.
    `stored`: a definition accepted earlier (`definition_from_dict`), which
    must load even if rules added since (`_check_plain_paths`) refuse it.
    """
    obj = _expect_object(raw, _ROOT)
    _reject_unknown_fields(obj, _ROOT_FIELDS, "")
    tx_id = _parse_id(obj.get("id"))
    participants = _parse_participants(obj, known_services)
    timeout_s = _parse_timeout(obj.get("timeout_s"))
    release = _parse_release(obj.get("release"))
    if not stored:
        _check_plain_paths(participants)
    return TransactionDefinition(tx_id, participants, timeout_s, release)


def _check_plain_paths(participants: tuple) -> None:
    """A new definition's paths stay under the service's base path."""
    for index, participant in enumerate(participants):
        for phase in _PHASES:
            problem = dot_segment_problem(getattr(participant, phase).path)
            if problem is not None:
                raise DefinitionError(_field(f"participants[{index}].{phase}", "path"), problem)


def with_id(definition: TransactionDefinition, tx_id: str) -> TransactionDefinition:
    """The same definition under `tx_id` (validated like a user's id)."""
    return replace(definition, id=_parse_id(tx_id, allow_absent=False))


def definition_to_dict(definition: TransactionDefinition) -> dict:
    """Plain (JSON and msgpack-able) form with every default explicit.

    "release" is there only when one is named: a definition without one
    encodes as it did before the field (journals, snapshots, digests)."""
    plain = {
        "id": definition.id,
        "participants": [
            {"service": p.service, **{phase: _call_to_dict(getattr(p, phase)) for phase in _PHASES}}
            for p in definition.participants
        ],
        "timeout_s": definition.timeout_s,
    }
    if definition.release is not None:
        plain["release"] = definition.release
    return plain


def definition_from_dict(raw: object) -> TransactionDefinition:
    """Inverse of `definition_to_dict`: `from_dict(to_dict(d)) == d`."""
    return parse_definition(raw, stored=True)


def same_definition(a: TransactionDefinition, b: TransactionDefinition) -> bool:
    """True when both describe the same transaction once defaults are explicit.

    Body objects compare regardless of key order; 1, 1.0 and true differ;
    ids and releases are compared too.
    """
    return _normal_form(a) == _normal_form(b)


def _normal_form(definition: TransactionDefinition) -> tuple:
    def call(c: ParticipantCall) -> tuple[str, str]:
        canonical = json.dumps(json.loads(c.body_json), sort_keys=True, separators=(",", ":"))
        return (c.path, canonical)

    return (
        definition.id,
        float(definition.timeout_s),
        tuple((p.service, call(p.prepare), call(p.commit), call(p.abort)) for p in definition.participants),
        definition.release,
    )


def _call_to_dict(call: ParticipantCall) -> dict:
    return {"path": call.path, "body": call.body}


# -- fields (what sagas check the same way is grammar/checks.py's) ----------


def _expect_object(raw: object, field: str) -> dict:
    if not isinstance(raw, dict):
        raise DefinitionError(field, f"must be an object, not {type_name(raw)}")
    return raw


def _reject_unknown_fields(obj: dict, allowed: tuple[str, ...], prefix: str) -> None:
    unknown = unknown_field_problem(obj, allowed)
    if unknown is not None:
        name, message = unknown
        if name == "method":
            message = "unknown field (transaction calls are always POST)"
        raise DefinitionError(_field(prefix, name), message)


def _require(obj: dict, name: str, prefix: str) -> object:
    if name not in obj:
        raise DefinitionError(_field(prefix, name), "is required")
    return obj[name]


def _expect_pattern(raw: object, field: str, pattern: re.Pattern[str]) -> str:
    problem = pattern_problem(raw, pattern)
    if problem is not None:
        raise DefinitionError(field, problem)
    return str(raw)


def _parse_id(raw: object, allow_absent: bool = True) -> str | None:
    if raw is None and allow_absent:
        return None
    return _expect_pattern(raw, "id", limits.TX_ID_PATTERN)


def _parse_timeout(raw: object) -> int | float:
    if raw is None:
        return limits.TX_TIMEOUT_S_DEFAULT
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise DefinitionError("timeout_s", f"must be a number, not {type_name(raw)}")
    if not math.isfinite(raw) or raw <= 0 or raw > limits.TX_TIMEOUT_S_MAX:
        raise DefinitionError("timeout_s", f"must be greater than 0 and at most {limits.TX_TIMEOUT_S_MAX} (got {raw})")
    return raw


def _parse_release(raw: object) -> str | None:
    """The release a definition names (None: none, any worker runs it)."""
    problem = release_problem(raw)
    if problem is not None:
        raise DefinitionError("release", problem)
    return None if raw is None else str(raw)


def _parse_participants(obj: dict, known_services: frozenset[str] | None) -> tuple[ParticipantDefinition, ...]:
    raw = _require(obj, "participants", "")
    if not isinstance(raw, list):
        raise DefinitionError("participants", f"must be an array, not {type_name(raw)}")
    if not limits.PARTICIPANTS_MIN <= len(raw) <= limits.PARTICIPANTS_MAX:
        raise DefinitionError(
            "participants",
            f"must have {limits.PARTICIPANTS_MIN} to {limits.PARTICIPANTS_MAX} participants (got {len(raw)})",
        )
    seen: dict[str, int] = {}
    parsed = []
    for index, item in enumerate(raw):
        participant = _parse_participant(item, f"participants[{index}]", known_services)
        if participant.service in seen:
            raise DefinitionError(
                f"participants[{index}].service",
                f"service {participant.service!r} appears twice (also participants[{seen[participant.service]}])",
            )
        seen[participant.service] = index
        parsed.append(participant)
    return tuple(parsed)


def _parse_participant(raw: object, prefix: str, known_services: frozenset[str] | None) -> ParticipantDefinition:
    obj = _expect_object(raw, prefix)
    _reject_unknown_fields(obj, _PARTICIPANT_FIELDS, prefix)
    service = _parse_service(_require(obj, "service", prefix), prefix, known_services)
    calls = [_parse_call(_require(obj, phase, prefix), _field(prefix, phase)) for phase in _PHASES]
    return ParticipantDefinition(service, *calls)


def _parse_service(raw: object, prefix: str, known_services: frozenset[str] | None) -> str:
    field = _field(prefix, "service")
    service = _expect_pattern(raw, field, limits.SERVICE_NAME_PATTERN)
    if known_services is not None and service not in known_services:
        raise DefinitionError(field, f"unknown service {service!r}")
    return service


def _parse_call(raw: object, prefix: str) -> ParticipantCall:
    obj = _expect_object(raw, prefix)
    _reject_unknown_fields(obj, _CALL_FIELDS, prefix)
    path = _parse_path(_require(obj, "path", prefix), _field(prefix, "path"))
    body = obj.get("body")
    if body is None:
        return ParticipantCall(path, _EMPTY_BODY_JSON)
    return ParticipantCall(path, _encode_body(body, _field(prefix, "body")))


def _parse_path(raw: object, field: str) -> str:
    """A request path on a registered service: never a URL of its own."""
    problem = path_problem(raw)
    if problem is not None:
        raise DefinitionError(field, problem)
    return str(raw)


def _encode_body(body: object, field: str) -> str:
    """Compact JSON text, keys in the order given (what is sent), within bounds."""
    problem = json_value_problem(body, field)
    if problem is not None:
        raise DefinitionError(*problem)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    problem = size_problem(text, limits.BODY_BYTES_MAX)
    if problem is not None:
        raise DefinitionError(field, problem)
    return text
