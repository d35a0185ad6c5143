"""The replicated state machine at the root of every node.

Every node applies the same commands in the same order and reaches the
same state; only ``at_ms`` (stamped by the leader) tells it the time.
Command kinds dispatch to the part of the state they change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from coordinator.cluster.stores.registry import ServiceRegistry
from coordinator.cluster.stores.requests import RequestLog, valid_request_id
from coordinator.cluster.stores.saga import SagaStore
from coordinator.cluster.stores.twopc import TransactionStore
from coordinator.consensus import Command, Rejection, pack

__all__ = ["ClusterState", "STATE_FORMAT_VERSION"]

# 2: the command sequence number; 3: workflows as msgpack bytes; 4: the request log
STATE_FORMAT_VERSION = 4
STATE_FORMATS_READ = (3, 4)
# Commands that may carry a request id, answered once per id (cluster/stores/requests.py).
ONCE_PER_REQUEST = frozenset({"service.put", "service.delete"})


class ClusterState:
    def __init__(self) -> None:
        self.registry = ServiceRegistry()
        self.requests = RequestLog()
        self.sagas = SagaStore(self.registry)
        self.transactions = TransactionStore(self.registry)
        self.sagas.charged_bytes = self.transactions.charged_bytes = self.charged_bytes
        self.applied_index = 0
        self.sequence = 0  # commands applied without rejection
        # Sees each command applied without rejection and each restore, to
        # derive the node's events (cluster/core/events.py EventHub): its
        # ``before``/``after``/``restored`` read the state, change nothing and
        # never raise. Not replicated; None: nobody watches.
        self.observer: Any = None
        self._handlers: dict[str, Callable[[int, Command], Any]] = {
            "service.put": lambda index, c: self.registry.put(index, c.at_ms, c.body, self.service_in_use),
            "service.delete": self._delete_service,
            "saga.submit": lambda index, c: self.sagas.submit(index, c.at_ms, c.body),
            "saga.event": lambda index, c: self.sagas.event(index, c.at_ms, c.body),
            "saga.signal": lambda index, c: self.sagas.signal(index, c.at_ms, c.body),
            "saga.redrive": lambda index, c: self.sagas.redrive(index, c.at_ms, c.body),
            "saga.prune": lambda index, c: self.sagas.prune(index, c.at_ms, c.body),
            "tx.submit": lambda index, c: self.transactions.submit(index, c.at_ms, c.body),
            "tx.event": lambda index, c: self.transactions.event(index, c.at_ms, c.body),
            "tx.prune": lambda index, c: self.transactions.prune(index, c.at_ms, c.body),
        }

    def service_in_use(self, name: str) -> bool:
        """Whether a running (non-terminal) saga or transaction calls `name`:
        such a service is neither deleted nor re-pointed without force."""
        return self.sagas.uses_service(name) or self.transactions.uses_service(name)

    def charged_bytes(self) -> int:
        """The bytes the state budget counts (cluster/core/limits.py): every kept
        workflow and recorded outcome."""
        return self.sagas.items.bytes + self.sagas.outcome_bytes + self.transactions.items.bytes

    def _delete_service(self, index: int, command: Command) -> Any:
        name = command.body.get("name") if isinstance(command.body, dict) else None
        if isinstance(name, str) and self.service_in_use(name):
            raise Rejection("conflict", f"service {name!r} is used by workflows that are still running")
        return self.registry.delete(command.body)

    def apply(self, index: int, command: Command) -> Any:
        """Apply one command of the entry at ``index`` (a batch entry holds several).

        Handlers get the command's sequence number - one more than the last
        applied command's, counting only commands that changed the state - as
        the revision of what they write (registry revisions, outcome indexes).
        A rejection changes nothing, the sequence included."""
        assert index >= self.applied_index, f"entry {index} applied after {self.applied_index}"
        handler = self._handlers.get(command.kind)
        self.applied_index = index
        if handler is None:
            raise Rejection("invalid", f"unknown command kind {command.kind!r}")
        request_id = None
        if command.kind in ONCE_PER_REQUEST and isinstance(command.body, dict) and "request" in command.body:
            request_id = command.body["request"]
            if not valid_request_id(request_id):
                raise Rejection("invalid", "request: 1 to 64 of A-Z a-z 0-9 . _ : -")
            seen, answer = self.requests.answer(request_id, command.at_ms)
            if seen:
                return answer  # applied before: the first answer, nothing changes
            command = Command(command.kind, {k: v for k, v in command.body.items() if k != "request"}, command.at_ms)
        sequence = self.sequence + 1
        observer = self.observer
        before = observer.before(self, command) if observer is not None else None
        result = handler(sequence, command)
        self.sequence = sequence
        if request_id is not None:
            self.requests.record(request_id, command.at_ms, dict(result) if isinstance(result, dict) else result)
        if observer is not None:
            observer.after(self, index, command, result, before)
        return result

    def snapshot(self) -> dict:
        return {
            "format": STATE_FORMAT_VERSION,
            "applied_index": self.applied_index,
            "sequence": self.sequence,
            "registry": self.registry.snapshot(),
            "requests": self.requests.snapshot(),
            "sagas": self.sagas.snapshot(),
            "transactions": self.transactions.snapshot(),
        }

    def restore(self, snapshot: dict) -> None:
        if snapshot.get("format") not in STATE_FORMATS_READ:
            raise ValueError(f"unsupported state format {snapshot.get('format')!r}")
        self.registry.restore(snapshot["registry"])
        self.requests.restore(snapshot.get("requests", []))  # format 3 had none
        self.sagas.restore(snapshot["sagas"])
        self.transactions.restore(snapshot["transactions"])
        self.applied_index = snapshot["applied_index"]
        self.sequence = snapshot["sequence"]
        if self.observer is not None:
            self.observer.restored(self.applied_index)

    def digest(self) -> str:
        """A hash of the whole state: equal on every node that applied the same entries."""
        content = self.snapshot()
        del content["applied_index"]  # bookkeeping, not state: rejections advance it
        return hashlib.sha256(pack(content)).hexdigest()
