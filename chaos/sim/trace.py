"""The trace of a simulated run: every delivered message, applied entry,
participant effect, client answer and fault, hashed in order.

Two runs of the same seed (same code, same PYTHONHASHSEED) give the same
digest; the first line where two kept traces differ shows where a replay
diverged. Lines are kept only when asked (``keep_lines_max``), newest last.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable

__all__ = ["Trace", "first_difference"]

TRACE_LINES_MAX = 2_000_000
# The last lines kept in any case, for a violation to show what led to it.
TAIL_LINES = 30


class Trace:
    def __init__(self, now: Callable[[], float], *, keep_lines_max: int = 0) -> None:
        assert 0 <= keep_lines_max <= TRACE_LINES_MAX
        self._now = now
        self._hash = hashlib.blake2b(digest_size=16)
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines_max or 1)
        self._keep = keep_lines_max > 0
        self.events = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._following: list[tuple[list[str], int]] = []  # (lines to fill, how many more)

    def event(self, *parts: object) -> None:
        line = f"{self._now():.6f} " + " ".join(str(part) for part in parts)
        self._hash.update(line.encode("utf-8", "backslashreplace") + b"\n")
        self.events += 1
        if self._keep:
            self.lines.append(line)
        self.tail.append(line)
        if self._following:
            for lines, _ in self._following:
                lines.append(line)
            self._following = [(lines, left - 1) for lines, left in self._following if left > 1]

    def around(self, after: int = TAIL_LINES // 2) -> dict[str, list[str]]:
        """The lines up to now, and a list the next ``after`` lines will fill."""
        following: list[str] = []
        if after > 0:
            self._following.append((following, after))
        return {"trace_before": list(self.tail), "trace_after": following}

    def digest(self) -> str:
        return self._hash.hexdigest()


def first_difference(a: list[str], b: list[str]) -> tuple[int, str | None, str | None] | None:
    """Where two kept traces part: (line number, line of a, line of b), or None."""
    for n, (x, y) in enumerate(zip(a, b, strict=False)):  # the common prefix; the lengths are compared after
        if x != y:
            return n, x, y
    if len(a) != len(b):
        n = min(len(a), len(b))
        return n, a[n] if n < len(a) else None, b[n] if n < len(b) else None
    return None
