"""Apply one log entry: decode, run the state machine, never raise.

Deterministic on every replica: the same bytes at the same index (and
term) give the same result everywhere. A command the codec or the state machine refuses
becomes a recorded :class:`Rejected` that changed nothing. An unexpected
exception is a bug; it is logged loudly and recorded as a rejection too,
because raising here would make PySyncObj retry the entry forever and
block every entry behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .batching import BATCH_KIND
from .codec import TERM_KIND, Command, decode_command, decode_in_term
from .errors import CodecError
from .port import Applied, Rejected, Rejection, StateMachine
from .stats import LogStats

__all__ = ["Applier", "BARRIER_KIND", "BATCH_KIND", "STALE_TERM"]

log = logging.getLogger(__name__)
BARRIER_KIND = "raft.barrier"
# The rejection of an entry proposed in another term than the one it was
# appended in (see coordinator.consensus.codec.encode_in_term): nothing of it applied.
STALE_TERM = "stale_term"


class Applier:
    def __init__(self, state_machine: StateMachine, lock: threading.RLock, stats: LogStats) -> None:
        self._state_machine = state_machine
        self._lock = lock
        self._stats = stats

    def apply_entry(
        self, index: int, data: bytes, term: int | None = None
    ) -> tuple[Any, list[tuple[Command, Applied | Rejected]]]:
        """Apply one log entry, plain or a batch (:mod:`coordinator.consensus.batching`),
        possibly in a term envelope (:func:`coordinator.consensus.codec.encode_in_term`).

        ``term`` is the term of the log entry at ``index``. An envelope whose
        term differs was proposed by a leader of an earlier term and appended
        by a later one: it is rejected whole (:data:`STALE_TERM`), identically
        on every node. Entries written before envelopes existed carry none
        and are applied as they are.

        Returns the entry's result (a list of results for a batch) and each
        applied command with its result, in order."""
        self._stats.entries_applied += 1
        try:
            command = decode_command(data)
            if command.kind == TERM_KIND:
                proposed_term, data = decode_in_term(command)
                if term is not None and proposed_term != term:
                    self._stats.applied_rejections += 1
                    self._stats.stale_term_entries += 1
                    message = f"proposed in term {proposed_term}, appended in term {term}: not applied"
                    return Rejected(index, STALE_TERM, message), []
                command = decode_command(data)
                if command.kind == TERM_KIND:
                    raise CodecError("a term envelope inside a term envelope")
        except CodecError as exc:
            self._stats.applied_rejections += 1
            return Rejected(index, "invalid_command", str(exc)), []
        if command.kind != BATCH_KIND:
            result = self._apply_command(index, command)
            return result, [(command, result)]
        return self._apply_batch(index, command)

    def _apply_batch(self, index: int, command: Command) -> tuple[Any, list[tuple[Command, Applied | Rejected]]]:
        items = command.body
        if not isinstance(items, list) or not items or not all(isinstance(item, bytes) for item in items):
            self._stats.applied_rejections += 1
            return Rejected(index, "invalid_command", "a batch is a non-empty list of encoded commands"), []
        results: list[Applied | Rejected] = []
        applied: list[tuple[Command, Applied | Rejected]] = []
        for item in items:
            try:
                inner = decode_command(item)
                if inner.kind in (BATCH_KIND, TERM_KIND):
                    raise CodecError(f"a {inner.kind} inside a batch")
            except CodecError as exc:
                self._stats.applied_rejections += 1
                results.append(Rejected(index, "invalid_command", str(exc)))
                continue
            result = self._apply_command(index, inner)
            results.append(result)
            applied.append((inner, result))
        return results, applied

    def _apply_command(self, index: int, command: Command) -> Applied | Rejected:
        self._stats.commands_applied += 1
        if command.kind == BARRIER_KIND:
            return Applied(index, None)
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
        return result
