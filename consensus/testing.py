"""Testing only: an in-memory ReplicatedLog for fast, deterministic unit tests.

Entries are applied at once, in order, to the state machine and to any
``replicas`` (to check that every replica reaches the same state). Tests
steer leadership with :meth:`InMemoryLog.set_leader`.
"""

from __future__ import annotations

import asyncio

from .applier import Applier
from .base import LogBase
from .codec import Command, encode_command
from .errors import NotLeader
from .port import Applied, LeadershipChange, LogStatus, Rejected, Role, StateMachine

__all__ = ["InMemoryLog"]


class InMemoryLog(LogBase):
    def __init__(
        self,
        state_machine: StateMachine,
        *,
        replicas: tuple[StateMachine, ...] = (),
        leader: bool = True,
        term: int = 1,
    ) -> None:
        super().__init__(state_machine)
        self._replicas = [Applier(replica, self._lock, self.stats.__class__()) for replica in replicas]
        self._leader = leader
        self._term = term
        self._index = 1  # PySyncObj's log starts with a no-op at index 1
        self.entries: list[bytes] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._leader:
            self._emit_leadership(LeadershipChange(True, self._term, self._index))

    async def stop(self) -> None:
        self._loop = None

    async def propose(self, command: Command, timeout_s: float | None = None) -> Applied | Rejected:
        data = encode_command(command)
        if not self._leader:
            self.stats.count_proposal("not_written")
            raise NotLeader(None)
        self._index += 1
        self.entries.append(data)
        future = asyncio.get_running_loop().create_future()
        future.set_result(self._apply_entry(self._index, data))
        for replica in self._replicas:
            replica.apply_entry(self._index, data)
        self._drain_applied()
        return await self._timed(future, timeout_s or 5.0)

    def set_leader(self, is_leader: bool, term: int | None = None) -> None:
        self._term = term if term is not None else self._term + (1 if is_leader and not self._leader else 0)
        was = self._leader
        self._leader = is_leader
        if was != is_leader:
            self._emit_leadership(LeadershipChange(is_leader, self._term, self._index))

    def is_leader(self) -> bool:
        return self._leader

    def term(self) -> int:
        return self._term

    def status(self) -> LogStatus:
        return LogStatus(
            role=Role.LEADER if self._leader else Role.FOLLOWER,
            term=self._term,
            leader="memory" if self._leader else None,
            commit_index=self._index,
            applied_index=self._index,
            has_quorum=self._leader,
        )
