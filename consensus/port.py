"""The port between the coordinator and its replicated log.

Two questions stay apart: did the log accept the entry
(``propose`` raises a :mod:`coordinator.consensus.errors` error when it did not or may
not have), and what did the state machine return (:class:`Applied` or
:class:`Rejected`).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .codec import Command

__all__ = ["Applied", "Rejected", "Rejection", "Role", "LogStatus", "LeadershipChange", "StateMachine", "ReplicatedLog"]


@dataclass(frozen=True, slots=True)
class Applied:
    """The state machine applied the command at ``index`` and returned ``value``."""

    index: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The state machine refused the command at ``index``; nothing changed."""

    index: int
    code: str
    message: str


class Rejection(Exception):
    """Raised by a state machine *before it changes anything* to refuse a command."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class LogStatus:
    role: Role
    term: int
    leader: str | None  # the leader's Raft address, as this node knows it
    commit_index: int
    applied_index: int
    has_quorum: bool
    peers: dict[str, bool] = field(default_factory=dict)  # Raft address -> connected


@dataclass(frozen=True, slots=True)
class LeadershipChange:
    """Delivered on the event loop.

    ``is_leader=True``: this node became leader at ``term`` and has applied
    every entry committed before (its first barrier at ``term`` committed at
    ``index``). ``is_leader=False``: it lost leadership; stop issuing calls.
    """

    is_leader: bool
    term: int
    index: int = 0


class StateMachine(Protocol):
    def apply(self, index: int, command: Command) -> Any:
        """Deterministic; raise :class:`Rejection` to refuse without changing anything."""

    def snapshot(self) -> Any:
        """The whole state as plain msgpack-able values."""

    def restore(self, snapshot: Any) -> None:
        """Replace the whole state by a snapshot."""


ApplyListener = Callable[[int, Command, "Applied | Rejected"], None]
LeadershipListener = Callable[[LeadershipChange], None]
# (role, term): 0 follower, 1 candidate, 2 leader; on the log's own thread.
RoleListener = Callable[[int, int], None]


@runtime_checkable
class ReplicatedLog(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def propose(self, command: Command, timeout_s: float | None = None) -> Awaitable[Applied | Rejected]: ...

    async def read_barrier(self) -> int: ...

    def is_leader(self) -> bool: ...

    def term(self) -> int: ...

    def status(self) -> LogStatus: ...

    def reading(self) -> AbstractContextManager[None]:
        """Hold while reading the state machine from the event loop."""

    def add_apply_listener(self, listener: ApplyListener) -> None: ...

    def add_leadership_listener(self, listener: LeadershipListener) -> None: ...

    def add_role_listener(self, listener: RoleListener) -> None:
        """Called with (role, term) whenever either changes, on the thread
        the log applies on (it must not block); not called by a log that has
        no roles (the in-memory one)."""
