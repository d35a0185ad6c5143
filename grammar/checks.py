"""Checks of the parts both definitions share, and of what both machines
record of a participant call; each returns what is wrong, or None.

A problem is a message for a DefinitionError ("must start with '/'"); a
JSON body's problem comes with the field it is about, since it may lie deep
inside the body ("steps[0].action.body.items[3]").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

from . import limits

_TYPE_NAMES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    tuple: "an array",
    dict: "an object",
}


def field(prefix: str, name: str) -> str:
    """`name` inside `prefix` ("steps[0]" and "name": "steps[0].name")."""
    return f"{prefix}.{name}" if prefix else name


def type_name(value: object) -> str:
    """The JSON name of a value's type ("a string"), else the Python one."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def pattern_problem(raw: object, pattern: re.Pattern[str]) -> str | None:
    if not isinstance(raw, str):
        return f"must be a string, not {type_name(raw)}"
    if not pattern.fullmatch(raw):
        return f"must match {pattern.pattern} (got {raw[:140]!r})"
    return None


def unknown_field_problem(obj: dict, allowed: Iterable[str]) -> tuple[str, str] | None:
    """(the key, the message) of the first key of `obj` not in `allowed`."""
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            return (
                key if isinstance(key, str) else repr(key)
            ), f"unknown field (expected one of: {', '.join(allowed)})"
    return None


# -- request paths -------------------------------------------------------------------


def path_problem(raw: object) -> str | None:
    """A request path on a registered service: never a URL of its own."""
    if not isinstance(raw, str):
        return f"must be a string, not {type_name(raw)}"
    return _kept(_path_answers, _path_problem, raw)


# Every node checks every definition's paths at apply, and workflows use few
# distinct paths: the answers of these two pure functions of a string are
# kept, up to PATH_ANSWERS_KEPT_MAX each (cleared when full). A dict rather
# than functools.lru_cache: this package imports only the modules its
# purity test allows.
PATH_ANSWERS_KEPT_MAX = 1024
_path_answers: dict[str, str | None] = {}
_dot_answers: dict[str, str | None] = {}


_UNKNOWN = object()


def _kept(answers: dict[str, str | None], check: Callable[[str], str | None], raw: str) -> str | None:
    answer = answers.get(raw, _UNKNOWN)  # one lookup: the Raft thread and the event loop both ask
    if answer is _UNKNOWN:
        if len(answers) >= PATH_ANSWERS_KEPT_MAX:
            answers.clear()
        answer = answers[raw] = check(raw)
    return answer  # type: ignore[return-value]


def _path_problem(raw: str) -> str | None:
    if len(raw) > limits.PATH_CHARS_MAX:
        return f"is {len(raw)} characters, over the limit of {limits.PATH_CHARS_MAX}"
    if not raw.startswith("/"):
        return "must start with '/'"
    if raw.startswith("//"):
        return "must not start with '//'"
    if "://" in raw:
        return "must be a path, not a URL (no '://')"
    if any(char.isspace() or not char.isprintable() for char in raw):
        return "must not contain whitespace or control characters"
    return None


_ENCODED = re.compile(r"%(2[eEfF]|5[cC]|25)")
_DECODED = {"2e": ".", "2f": "/", "5c": "\\", "25": "%"}


def dot_segment_problem(raw: str) -> str | None:
    """Why `raw` could leave the service's base path (yarl and servers
    resolve '.' and '..' segments, some after percent-decoding, some on
    '\\'), or None. A new definition's paths must pass; a stored one's are
    not checked again (the machines' `stored=True`)."""
    return _kept(_dot_answers, _dot_segment_problem, raw)


def _dot_segment_problem(raw: str) -> str | None:
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


# -- JSON bodies ---------------------------------------------------------------------

_NO_KEY = object()


def json_value_problem(value: object, where: str) -> tuple[str, str] | None:
    """(field, message) of the first thing in `value`, in document order,
    that is not a bounded JSON value: JSON types only (an array is a list or
    a tuple), string keys, valid Unicode text, finite numbers, integers of
    64 bits, nesting up to BODY_DEPTH_MAX; or a body surely over
    BODY_BYTES_MAX as JSON. Walks iteratively: no recursion on deep input."""
    # (item, its field, its depth, the key it is under (_NO_KEY in an array)
    # and its parent's field); a key is checked when its value's turn comes
    stack: list[tuple[object, str, int, object, str]] = [(value, where, 0, _NO_KEY, where)]
    size_lower_bound = 0  # bytes the JSON text takes at least
    while stack:
        item, at, depth, key, parent = stack.pop()
        size_lower_bound += 1
        if key is not _NO_KEY:
            problem = _key_problem(key)
            if problem is not None:
                return parent, problem
            size_lower_bound += len(str(key))
        if size_lower_bound > limits.BODY_BYTES_MAX:
            return where, f"is over the limit of {limits.BODY_BYTES_MAX} bytes as JSON"
        if isinstance(item, (dict, list, tuple)) and depth >= limits.BODY_DEPTH_MAX:
            return at, f"nests deeper than the limit of {limits.BODY_DEPTH_MAX} levels"
        if isinstance(item, dict):
            stack.extend((child, f"{at}.{k}", depth + 1, k, at) for k, child in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{at}[{i}]", depth + 1, _NO_KEY, at) for i, child in reversed(list(enumerate(item))))
        else:
            problem = _scalar_problem(item)
            if problem is not None:
                return at, problem
            if isinstance(item, str):
                size_lower_bound += len(item)
    return None


def size_problem(text: str, bytes_max: int) -> str | None:
    """`text` (JSON) over `bytes_max` bytes in UTF-8."""
    size = len(text.encode("utf-8"))
    if size > bytes_max:
        return f"is {size} bytes as JSON, over the limit of {bytes_max}"
    return None


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"object key {key!r} is not a string"
    return _scalar_problem(key)


def _scalar_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text"
        return None
    if isinstance(value, int):
        if not limits.BODY_INT_MIN <= value <= limits.BODY_INT_MAX:
            return "integer out of the signed 64-bit range"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    return f"is not a JSON value ({type_name(value)})"


# -- releases ------------------------------------------------------------------------
# The release a definition may name (limits.RELEASE_PATTERN): the workflow runs
# only on workers of that release. None is no release named (any worker).

_RELEASE_RULE = (
    f"must be a string of 1 to {limits.RELEASE_CHARS_MAX} of A-Z a-z 0-9 . _ + - starting with a letter or digit"
)


def release_problem(raw: object) -> str | None:
    """A release: None, or a version string matching RELEASE_PATTERN."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        return f"{_RELEASE_RULE}, not {type_name(raw)}"
    if not limits.RELEASE_PATTERN.fullmatch(raw):
        return f"{_RELEASE_RULE} (got {raw[:140]!r})"
    return None


# -- participant calls ---------------------------------------------------------------
# Not of a definition: what the executor reports of a call in an outcome event
# (limits.FENCE_CHARS_MAX); None is a value not reported (an older entry).


def fence_problem(raw: object) -> str | None:
    """A call's fence: None, or visible ASCII of at most FENCE_CHARS_MAX characters."""
    if raw is None:
        return None
    return pattern_problem(raw, limits.FENCE_PATTERN)


def duration_problem(raw: object) -> str | None:
    """A call's duration in milliseconds: None, or an int in [0, CALL_DURATION_MS_MAX]."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        return f"must be an integer, not {type_name(raw)}"
    if not 0 <= raw <= limits.CALL_DURATION_MS_MAX:
        return f"must be between 0 and {limits.CALL_DURATION_MS_MAX} (got {raw})"
    return None
