"""Field checks of the saga definition parser: each raises DefinitionError
naming the field. Private to `saga`; what two-phase commit checks the same
way (names, request paths, JSON bodies) is grammar/checks.py's."""

from __future__ import annotations

import math
import re

from coordinator.grammar import (
    dot_segment_problem,
    field,
    json_value_problem,
    path_problem,
    pattern_problem,
    release_problem,
    type_name,
    unknown_field_problem,
)

from . import limits
from .errors import DefinitionError
from .jsonvalue import encode_bounded

__all__ = [
    "ROOT",
    "body_json",
    "expect_object",
    "expect_pattern",
    "field",
    "integer",
    "path",
    "plain_path",
    "present",
    "reject_unknown_fields",
    "release",
    "require",
    "seconds",
    "type_name",
]

ROOT = "definition"


def present(obj: dict, name: str) -> bool:
    """A field is present when it is there and not null (null = absent)."""
    return obj.get(name) is not None


def expect_object(raw: object, where: str) -> dict:
    if not isinstance(raw, dict):
        raise DefinitionError(where, f"must be an object, not {type_name(raw)}")
    return raw


def reject_unknown_fields(obj: dict, allowed: tuple[str, ...], prefix: str) -> None:
    unknown = unknown_field_problem(obj, allowed)
    if unknown is not None:
        name, message = unknown
        raise DefinitionError(field(prefix, name), message)


def require(obj: dict, name: str, prefix: str) -> object:
    if not present(obj, name):
        raise DefinitionError(field(prefix, name), "is required")
    return obj[name]


def expect_pattern(raw: object, where: str, pattern: re.Pattern[str]) -> str:
    problem = pattern_problem(raw, pattern)
    if problem is not None:
        raise DefinitionError(where, problem)
    return str(raw)


def release(raw: object, where: str) -> str | None:
    """The release a definition names (None: none, any worker runs it)."""
    problem = release_problem(raw)
    if problem is not None:
        raise DefinitionError(where, problem)
    return None if raw is None else str(raw)


def seconds(raw: object, where: str, default: float, maximum: float, allow_zero: bool = False) -> float:
    """A duration in seconds: a finite number in (0, maximum] ([0, ...] with
    `allow_zero`); `default` when absent."""
    if raw is None:
        return float(default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise DefinitionError(where, f"must be a number, not {type_name(raw)}")
    if not math.isfinite(raw):
        raise DefinitionError(where, "must be a finite number")
    if allow_zero and raw < 0:
        raise DefinitionError(where, f"must be >= 0 (got {raw})")
    if not allow_zero and raw <= 0:
        raise DefinitionError(where, f"must be > 0 (got {raw})")
    if raw > maximum:
        raise DefinitionError(where, f"must be at most {maximum} (got {raw})")
    return float(raw)


def integer(raw: object, where: str, default: int, minimum: int, maximum: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise DefinitionError(where, f"must be an integer, not {type_name(raw)}")
    if not minimum <= raw <= maximum:
        raise DefinitionError(where, f"must be between {minimum} and {maximum} (got {raw})")
    return raw


def path(raw: object, where: str) -> str:
    """A request path on a registered service: never a URL of its own."""
    problem = path_problem(raw)
    if problem is not None:
        raise DefinitionError(where, problem)
    return str(raw)


def plain_path(raw: str, where: str) -> None:
    """A new definition's path must stay under the service's base path:
    no dot segments, no query or fragment (`parse_definition` checks it
    for new definitions, not for stored ones)."""
    problem = dot_segment_problem(raw)
    if problem is not None:
        raise DefinitionError(where, problem)


def body_json(raw: object, where: str) -> str | None:
    """A body as canonical JSON text (None when absent), within bounds."""
    if raw is None:
        return None
    problem = json_value_problem(raw, where)
    if problem is not None:
        raise DefinitionError(*problem)
    try:
        return encode_bounded(raw, limits.STEP_BODY_BYTES_MAX)
    except ValueError as error:
        raise DefinitionError(where, str(error)) from None
