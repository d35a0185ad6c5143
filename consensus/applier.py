"""Apply one log entry: decode, run the state machine, never raise.

Deterministic on every replica: the same bytes at the same index give the
same result everywhere. A command the codec or the state machine refuses
becomes a recorded :class:`Rejected` that changed nothing. An unexpected
exception is a bug; it is logged loudly and recorded as a rejection too,
because raising here would make PySyncObj retry the entry forever and
block every entry behind it.
"""

from __future__ import annotations

import logging
import threading
import time

from .codec import Command, decode_command
from .errors import CodecError
from .port import Applied, Rejected, Rejection, StateMachine
from .stats import LogStats

__all__ = ["Applier", "BARRIER_KIND"]

log = logging.getLogger(__name__)
BARRIER_KIND = "raft.barrier"


class Applier:
    def __init__(self, state_machine: StateMachine, lock: threading.RLock, stats: LogStats) -> None:
        self._state_machine = state_machine
        self._lock = lock
        self._stats = stats

    def apply(self, index: int, data: bytes) -> tuple[Applied | Rejected, Command | None]:
        try:
            command = decode_command(data)
        except CodecError as exc:
            self._stats.applied_rejections += 1
            return Rejected(index, "invalid_command", str(exc)), None
        if command.kind == BARRIER_KIND:
            return Applied(index, None), command
        started = time.perf_counter()
        with self._lock:
            try:
                result: Applied | Rejected = Applied(index, self._state_machine.apply(index, command))
            except Rejection as rejection:
                result = Rejected(index, rejection.code, rejection.message)
            except Exception as exc:  # noqa: BLE001 - see the module docstring
                log.critical("state machine failed on entry %d (%s): %r", index, command.kind, exc, exc_info=True)
                result = Rejected(index, "internal", f"the state machine failed: {exc!r}")
        self._stats.apply_seconds.observe(time.perf_counter() - started)
        if isinstance(result, Rejected):
            self._stats.applied_rejections += 1
        return result, command
