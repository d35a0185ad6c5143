"""Invariants the simulation checks as the run goes (``sim_invariants``).

:class:`RegisterWatch` - a linearizable read of the registry never returns
a value older than the last *acknowledged* write of its key. Per key it
keeps every write (put: its URL, delete: absent) with its invoke time,
completion time and outcome. When a read that was invoked at ``t`` returns,
the values that could be current are those of

- the initial value (absent), unless a write was acknowledged before ``t``;
- every write acknowledged (ok) that completed no earlier than the invoke
  of the latest-invoked write acknowledged before ``t``: anything that
  completed before that write was invoked is ordered before it, so
  overwritten by the time of the read;
- every write still pending or whose outcome is unknown (it may take
  effect at any time after its invoke, or never);

a definitely failed write never took effect and is left out. A read that
returns anything else is a violation at that moment, recorded with the
trace lines around it. This is a necessary condition of linearizability
(``registry_linearizable`` checks the whole history after the run); it
catches a stale read where it happens, with its context.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["RegisterWatch"]

PUT, GET, DELETE = "registry_put", "registry_get", "registry_delete"
WRITES_PER_KEY_MAX = 100_000


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class _Write:
    op_id: int
    value: str  # canonical JSON; "null": absent
    invoke_s: float
    complete_s: float = math.inf  # pending or unknown: +infinity
    outcome: str = "pending"


class RegisterWatch:
    """Online: reads never older than the last acknowledged write (see the module docstring)."""

    def __init__(self, now: Callable[[], float], on_violation: Callable[..., None]) -> None:
        self._now = now
        self._on_violation = on_violation
        self._writes: dict[str, list[_Write]] = {}
        self._by_id: dict[int, _Write] = {}
        self._reads: dict[int, tuple[str, float]] = {}
        self.reads_checked = 0

    def invoked(self, op_id: int, kind: str, key: str | None, value: Any) -> None:
        if key is None or kind not in (PUT, GET, DELETE):
            return
        if kind == GET:
            self._reads[op_id] = (key, self._now())
            return
        writes = self._writes.setdefault(key, [])
        assert len(writes) < WRITES_PER_KEY_MAX, f"over WRITES_PER_KEY_MAX ({WRITES_PER_KEY_MAX}) writes of {key}"
        write = _Write(op_id, _canonical(value if kind == PUT else None), self._now())
        writes.append(write)
        self._by_id[op_id] = write

    def completed(self, op_id: int, outcome: str, result: Any) -> None:
        write = self._by_id.pop(op_id, None)
        if write is not None:
            write.outcome = outcome
            if outcome == "ok":
                write.complete_s = self._now()
            return
        read = self._reads.pop(op_id, None)
        if read is None or outcome != "ok":
            return  # a failed or unknown read observed nothing
        key, invoke_s = read
        self.reads_checked += 1
        possible, acknowledged = self.possible(key, invoke_s)
        if _canonical(result) not in possible:
            self._on_violation(
                "stale_read", f"registry_get {key!r} (op {op_id}, invoked at {invoke_s:.6f}) returned {result!r}; "
                f"it could only return one of {sorted(possible)} (last acknowledged write before it: "
                f"{acknowledged})", key=key, op=op_id, returned=result, possible=sorted(possible),
                acknowledged=acknowledged)

    def possible(self, key: str, invoke_s: float) -> tuple[set[str], dict[str, Any] | None]:
        """The values a read of ``key`` invoked at ``invoke_s`` may return now, and
        the acknowledged write that bounds them (None: none yet)."""
        writes = [w for w in self._writes.get(key, ()) if w.outcome != "fail"]
        done = [w for w in writes if w.outcome == "ok" and w.complete_s < invoke_s]
        if not done:
            return {_canonical(None)} | {w.value for w in writes}, None
        last = max(done, key=lambda w: w.invoke_s)
        possible = {w.value for w in writes if w.complete_s >= last.invoke_s}
        bound = {"op": last.op_id, "value": json.loads(last.value), "invoke_s": last.invoke_s,
                 "complete_s": last.complete_s}
        return possible, bound
