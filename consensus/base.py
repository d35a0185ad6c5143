"""What both ReplicatedLog implementations share: listeners, barrier, stats."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .applier import BARRIER_KIND, Applier
from .barrier import ReadBarrier
from .codec import Command
from .errors import ConsensusError, NotWritten, OutcomeUnknown
from .port import Applied, ApplyListener, LeadershipChange, LeadershipListener, Rejected, RoleListener, StateMachine
from .stats import LogStats

log = logging.getLogger(__name__)

APPLIED_BACKLOG_MAX = 100_000


class LogBase:
    def __init__(self, state_machine: StateMachine) -> None:
        self.state_machine = state_machine
        self.stats = LogStats()
        self._lock = threading.RLock()
        self._applier = Applier(state_machine, self._lock, self.stats)
        self._apply_listeners: list[ApplyListener] = []
        self._leadership_listeners: list[LeadershipListener] = []
        self._role_listeners: list[RoleListener] = []
        self._applied: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._barrier = ReadBarrier(self._propose_barrier)

    # -- reading -------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock:
            yield

    async def read_barrier(self) -> int:
        index = await self._barrier.wait()
        self.stats.barrier_reads += 1
        return index

    async def _propose_barrier(self) -> int:
        self.stats.barriers += 1
        result = await self.propose(Command(BARRIER_KIND))
        return result.index

    # -- listeners -----------------------------------------------------------
    def add_apply_listener(self, listener: ApplyListener) -> None:
        self._apply_listeners.append(listener)

    def add_leadership_listener(self, listener: LeadershipListener) -> None:
        self._leadership_listeners.append(listener)

    def add_role_listener(self, listener: RoleListener) -> None:
        self._role_listeners.append(listener)

    def _emit_role(self, role: int, term: int) -> None:
        """On the log's own thread: the listeners must not block."""
        for listener in self._role_listeners:
            try:
                listener(role, term)
            except Exception:  # noqa: BLE001 - a listener bug must not stop the log
                log.exception("role listener failed")

    def _apply_entry(self, index: int, data: bytes, term: int | None = None) -> Any:
        """Runs where the log applies entries (PySyncObj's tick thread).

        ``term`` is the term of the entry at ``index`` (see
        :meth:`coordinator.consensus.applier.Applier.apply_entry`). The entry's result:
        one command's, or a list of them for a batch."""
        result, applied = self._applier.apply_entry(index, data, term)
        if not self._apply_listeners:
            return result
        for command, command_result in applied:
            if command.kind != BARRIER_KIND:
                self._applied.append((index, command, command_result))
        while len(self._applied) > APPLIED_BACKLOG_MAX:  # the loop is stuck; keep memory bounded
            self._applied.popleft()
        if self._applied:
            if not self._drain_scheduled and self._loop is not None:
                self._drain_scheduled = True
                self._loop.call_soon_threadsafe(self._drain_applied)
        return result

    def _drain_applied(self) -> None:
        self._drain_scheduled = False
        while self._applied:
            index, command, result = self._applied.popleft()
            for listener in self._apply_listeners:
                try:
                    listener(index, command, result)
                except Exception:  # noqa: BLE001 - a listener bug must not stop the others
                    log.exception("apply listener failed")

    def _emit_leadership(self, change: LeadershipChange) -> None:
        for listener in self._leadership_listeners:
            try:
                listener(change)
            except Exception:  # noqa: BLE001
                log.exception("leadership listener failed")

    # -- proposal accounting -------------------------------------------------
    async def _timed(self, future: asyncio.Future, timeout_s: float) -> Applied | Rejected:
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: one timer per proposal and no
            # extra future (every command passes here); shield keeps the
            # future for the apply callback when the wait times out.
            async with asyncio.timeout(timeout_s):
                result = await asyncio.shield(future)
        except TimeoutError:
            self.stats.count_proposal("timeout")
            raise OutcomeUnknown(f"no result within {timeout_s:g} s") from None
        except NotWritten:
            self.stats.count_proposal("not_written")
            raise
        except ConsensusError:
            self.stats.count_proposal("unknown")
            raise
        self.stats.commit_seconds.observe(time.perf_counter() - started)
        self.stats.count_proposal("rejected" if isinstance(result, Rejected) else "applied")
        return result
