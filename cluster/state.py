"""The replicated state machine at the root of every node.

Every node applies the same commands in the same order and reaches the
same state; only ``at_ms`` (stamped by the leader) tells it the time.
Command kinds dispatch to the part of the state they change.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from consensus import Command, Rejection, pack

from .registry import ServiceRegistry

__all__ = ["ClusterState", "STATE_FORMAT_VERSION"]

STATE_FORMAT_VERSION = 1


class ClusterState:
    def __init__(self) -> None:
        self.registry = ServiceRegistry()
        self.applied_index = 0
        self._handlers: dict[str, Callable[[int, Command], Any]] = {
            "service.put": lambda index, c: self.registry.put(index, c.at_ms, c.body),
            "service.delete": lambda index, c: self.registry.delete(c.body),
        }

    def apply(self, index: int, command: Command) -> Any:
        assert index > self.applied_index, f"entry {index} applied after {self.applied_index}"
        handler = self._handlers.get(command.kind)
        self.applied_index = index
        if handler is None:
            raise Rejection("invalid", f"unknown command kind {command.kind!r}")
        return handler(index, command)

    def snapshot(self) -> dict:
        return {
            "format": STATE_FORMAT_VERSION,
            "applied_index": self.applied_index,
            "registry": self.registry.snapshot(),
        }

    def restore(self, snapshot: dict) -> None:
        if snapshot.get("format") != STATE_FORMAT_VERSION:
            raise ValueError(f"unsupported state format {snapshot.get('format')!r}")
        self.registry.restore(snapshot["registry"])
        self.applied_index = snapshot["applied_index"]

    def digest(self) -> str:
        """A hash of the whole state: equal on every node that applied the same entries."""
        content = self.snapshot()
        del content["applied_index"]  # bookkeeping, not state: rejections advance it
        return hashlib.sha256(pack(content)).hexdigest()
