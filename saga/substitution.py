"""`${steps.NAME.output.PATH}` references inside step bodies.

A string value that is EXACTLY `${steps.NAME.output}` or
`${steps.NAME.output.PATH}`, anywhere inside a body (nested objects and
arrays), is replaced by that value of step NAME's output: any JSON value,
not stringified. PATH is dot-separated; on an object a segment is a key, on
an array an all-digit segment is an index. Other strings are untouched:
there is no partial interpolation. A string that starts with `${steps.` and
ends with `}` but is not a well-formed reference is a definition error (it
is almost always a typo, such as `.outputs.`).

Step names may contain dots, so `${steps.a.b.output.c}` is read against the
definition's step names: the shortest NAME that is a step of the saga wins.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeGuard

from . import limits
from .errors import DefinitionError, SubstitutionError

REFERENCE_PREFIX = "${steps."
REFERENCE_SUFFIX = "}"
_OUTPUT = ".output"
_SEGMENT = re.compile(r"[^.{}]+")
_INDEX = re.compile(r"[0-9]+")
_FORM = "${steps.NAME.output} or ${steps.NAME.output.PATH}"


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: the step it names and the path into its output."""

    step: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(("steps", self.step, "output") + self.path)


def is_reference_like(value: object) -> TypeGuard[str]:
    """True for a string shaped like a reference (well-formed or not)."""
    return isinstance(value, str) and value.startswith(REFERENCE_PREFIX) and value.endswith(REFERENCE_SUFFIX)


def resolve_reference(text: str, step_names: Collection[str]) -> Reference:
    """The reference `text` makes, read against `step_names`.

    SubstitutionError when `text` is malformed or names no step of
    `step_names` (the message then names the step it seems to mean).
    """
    candidates = _candidates(text)
    if not candidates:
        raise SubstitutionError(f"malformed reference {text[:80]!r} (expected {_FORM})")
    for candidate in candidates:
        if candidate.step in step_names:
            return candidate
    raise SubstitutionError(f"references step {candidates[0].step!r} which is not a step")


def check_references(
    body: object,
    field: str,
    allowed: Collection[str],
    step_names: Collection[str],
    allowed_text: str = "an earlier step",
) -> None:
    """DefinitionError naming the field of the first bad reference in `body`.

    `allowed` are the steps this body may name; `step_names` all the
    saga's steps (to read names that contain dots).
    """
    for where, text in _reference_strings(body, field):
        candidates = _candidates(text)
        if not candidates:
            raise DefinitionError(where, f"malformed reference (expected {_FORM})")
        reference = next((c for c in candidates if c.step in step_names), candidates[0])
        if reference.step not in allowed:
            raise DefinitionError(where, f"references step {reference.step!r} which is not {allowed_text}")


def substitute(
    body: object,
    outputs: Mapping[str, object],
    step_names: Collection[str] | None = None,
    *,
    unresolved_as_null: bool = False,
) -> object:
    """A copy of `body` with every reference replaced by its value.

    `outputs` maps a step name to its (decoded) output; `step_names` are the
    saga's step names used to read references (default: the keys of
    `outputs`). SubstitutionError when a reference does not resolve, unless
    `unresolved_as_null`: compensations use that, because a compensation
    must still be sent for a step whose outcome is unknown (it has no
    output); the participant finds what to undo by the Idempotency-Key.
    Values are inserted as they are in `outputs`, not copied.
    """
    names: Collection[str] = outputs.keys() if step_names is None else step_names
    return _substitute(body, outputs, names, unresolved_as_null)


def _substitute(body: object, outputs: Mapping[str, object], names: Collection[str], lenient: bool) -> object:
    if isinstance(body, dict):
        return {key: _substitute(value, outputs, names, lenient) for key, value in body.items()}
    if isinstance(body, (list, tuple)):
        return [_substitute(value, outputs, names, lenient) for value in body]
    if not is_reference_like(body):
        return body
    reference = resolve_reference(body, names)
    try:
        if reference.step not in outputs:
            raise SubstitutionError(f"step {reference.step!r} has no output (in {body})")
        return _walk(outputs[reference.step], reference)
    except SubstitutionError:
        if lenient:
            return None
        raise


def _walk(value: object, reference: Reference) -> object:
    for depth, segment in enumerate(reference.path):
        where = ".".join(reference.path[: depth + 1])
        if isinstance(value, dict):
            if segment not in value:
                raise SubstitutionError(f"output of step {reference.step!r} has no field {where!r}")
            value = value[segment]
        elif isinstance(value, list):
            if not _INDEX.fullmatch(segment) or int(segment) >= len(value):
                raise SubstitutionError(f"output of step {reference.step!r} has no element {where!r}")
            value = value[int(segment)]
        else:
            raise SubstitutionError(
                f"output of step {reference.step!r} has no field {where!r} (not an object or array there)"
            )
    return value


def _candidates(text: str) -> list[Reference]:
    """Every well-formed reading of `text`, shortest step name first."""
    if not is_reference_like(text):
        return []
    inner = text[len(REFERENCE_PREFIX) : -len(REFERENCE_SUFFIX)]
    readings: list[Reference] = []
    position = inner.find(_OUTPUT)
    while position >= 0:
        name, rest = inner[:position], inner[position + len(_OUTPUT) :]
        if rest == "" or rest.startswith("."):
            path = tuple(rest[1:].split(".")) if rest else ()
            if limits.STEP_NAME_PATTERN.fullmatch(name) and all(_SEGMENT.fullmatch(segment) for segment in path):
                readings.append(Reference(name, path))
        position = inner.find(_OUTPUT, position + 1)
    return readings


def _reference_strings(body: object, field: str) -> Iterator[tuple[str, str]]:
    """(field, text) of every reference-like string inside `body`."""
    if isinstance(body, dict):
        for key, value in body.items():
            yield from _reference_strings(value, f"{field}.{key}")
    elif isinstance(body, (list, tuple)):
        for index, value in enumerate(body):
            yield from _reference_strings(value, f"{field}[{index}]")
    elif is_reference_like(body):
        yield field, body
