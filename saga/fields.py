"""Field checks shared by the definition parser: each raises DefinitionError
naming the field. Private to `saga`."""

from __future__ import annotations

import math
import re

from . import limits
from .errors import DefinitionError
from .jsonvalue import encode_bounded

ROOT = "definition"


def field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def type_name(value: object) -> str:
    names = {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        tuple: "an array",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def present(obj: dict, name: str) -> bool:
    """A field is present when it is there and not null (null = absent)."""
    return obj.get(name) is not None


def expect_object(raw: object, where: str) -> dict:
    if not isinstance(raw, dict):
        raise DefinitionError(where, f"must be an object, not {type_name(raw)}")
    return raw


def reject_unknown_fields(obj: dict, allowed: tuple[str, ...], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            name = key if isinstance(key, str) else repr(key)
            raise DefinitionError(field(prefix, name), f"unknown field (expected one of: {', '.join(allowed)})")


def require(obj: dict, name: str, prefix: str) -> object:
    if not present(obj, name):
        raise DefinitionError(field(prefix, name), "is required")
    return obj[name]


def expect_pattern(raw: object, where: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(raw, str):
        raise DefinitionError(where, f"must be a string, not {type_name(raw)}")
    if not pattern.fullmatch(raw):
        raise DefinitionError(where, f"must match {pattern.pattern} (got {raw[:140]!r})")
    return raw


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


_ENCODED = re.compile(r"%(2[eEfF]|5[cC]|25)")
_DECODED = {"2e": ".", "2f": "/", "5c": "\\", "25": "%"}


def _dot_segment_problem(raw: str) -> str | None:
    """Why `raw` could leave the service's base path (yarl and servers
    resolve '.' and '..' segments, some after percent-decoding, some on
    '\\'), or None."""
    if "?" in raw or "#" in raw:
        return "must not contain '?' or '#': a path is plain, with no query or fragment"
    text = raw
    for _ in range(limits.PATH_DECODE_ROUNDS_MAX):
        segments = re.split(r"[/\\]", text)
        if any(segment in (".", "..") for segment in segments):
            return "must not contain '.' or '..' segments (also percent-encoded): they leave the service's base path"
        decoded = _ENCODED.sub(lambda m: _DECODED[m.group(1).lower()], text)
        if decoded == text:
            return None
        text = decoded
    return "is percent-encoded too many times"


def path(raw: object, where: str) -> str:
    """A request path on a registered service: never a URL of its own."""
    if not isinstance(raw, str):
        raise DefinitionError(where, f"must be a string, not {type_name(raw)}")
    if len(raw) > limits.PATH_CHARS_MAX:
        raise DefinitionError(where, f"is {len(raw)} characters, over the limit of {limits.PATH_CHARS_MAX}")
    if not raw.startswith("/"):
        raise DefinitionError(where, "must start with '/'")
    if raw.startswith("//"):
        raise DefinitionError(where, "must not start with '//'")
    if "://" in raw:
        raise DefinitionError(where, "must be a path, not a URL")
    if any(char.isspace() or not char.isprintable() for char in raw):
        raise DefinitionError(where, "must not contain whitespace or control characters")
    return raw


def plain_path(raw: str, where: str) -> None:
    """A new definition's path must stay under the service's base path:
    no dot segments, no query or fragment (`parse_definition` checks it
    for new definitions, not for stored ones)."""
    problem = _dot_segment_problem(raw)
    if problem is not None:
        raise DefinitionError(where, problem)


def body_json(raw: object, where: str) -> str | None:
    """A body as canonical JSON text (None when absent), within bounds."""
    if raw is None:
        return None
    json_value(raw, where, 0)
    try:
        return encode_bounded(raw, limits.STEP_BODY_BYTES_MAX)
    except ValueError as error:
        raise DefinitionError(where, str(error)) from None


def json_value(raw: object, where: str, depth: int) -> None:
    """Only JSON types, string keys, finite floats, 64-bit integers and
    nesting up to BODY_DEPTH_MAX."""
    if raw is None or isinstance(raw, (bool, str)):
        return
    if isinstance(raw, int):
        if not limits.BODY_INT_MIN <= raw <= limits.BODY_INT_MAX:
            raise DefinitionError(where, "integer out of range (must fit in 64 bits)")
        return
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise DefinitionError(where, "must be a finite number")
        return
    if not isinstance(raw, (list, tuple, dict)):
        raise DefinitionError(where, f"is not a JSON value ({type_name(raw)})")
    if depth >= limits.BODY_DEPTH_MAX:
        raise DefinitionError(where, f"nests deeper than the limit of {limits.BODY_DEPTH_MAX}")
    if isinstance(raw, dict):
        for key, value in raw.items():
            if not isinstance(key, str):
                raise DefinitionError(where, "object keys must be strings")
            json_value(value, f"{where}.{key}", depth + 1)
    else:
        for index, value in enumerate(raw):
            json_value(value, f"{where}[{index}]", depth + 1)
