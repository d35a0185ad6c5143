"""JSON values inside saga state: kept as compact, canonical JSON text.

Bodies, outputs and signal payloads are stored as text (`*_json` fields):
text is immutable, compares exactly, round-trips through msgpack unchanged
and its UTF-8 length is the size every bound is measured in.
"""

from __future__ import annotations

import json

from coordinator.grammar import size_problem


def encode_json(value: object) -> str:
    """Canonical compact JSON text of `value`; ValueError when not JSON."""
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"not a JSON value ({error})") from None
    return text


def encode_bounded(value: object, bytes_max: int) -> str:
    """`encode_json(value)`, or ValueError when over `bytes_max` bytes."""
    text = encode_json(value)
    problem = size_problem(text, bytes_max)
    if problem is not None:
        raise ValueError(problem)
    return text


def decode_json(text: str | None) -> object:
    """A fresh decoded copy of stored text; None stays None."""
    if text is None:
        return None
    return json.loads(text)
