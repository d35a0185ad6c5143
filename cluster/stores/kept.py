"""The workflows a store keeps, by id: unfinished ones as state objects,
terminal ones only as msgpack bytes and a small summary.

Why: a terminal state never changes, yet as objects each kept saga is about
25 objects that CPython's cyclic garbage collector walks on every full
collection. With the 10,000 terminal workflows that retention keeps by
default, a full collection took about 200 ms - with the GIL held, so the
Raft tick thread missed heartbeats and elections followed one another
under sustained load; at 50,000 kept it took 0.5-0.7 s. Bytes and tuples of
atomic values are not tracked by the collector, and a saga takes about
700 bytes instead of about 4 KB. A read of a terminal workflow decodes it
(tens of microseconds); a snapshot reuses the bytes as they are.

The map keeps one insertion order for both forms (a value replaced in place
keeps its position), so every replica - and a replica restored from a
snapshot - lists and snapshots workflows in the same order.

The last :data:`RECENT_TERMINAL_MAX` workflows to end are also kept as
objects, beside their bytes: what reads a workflow right after it ends (the
event stream, on every node, for the very command that ended it; a client's
long poll on the leader) would otherwise decode it again at once. A
bounded handful of objects, which the collector walks cheaply.

It also charges each workflow its size for the state budget
(cluster/core/limits.py), as a function of the state alone - so a replica that
applied every entry and one restored from a snapshot charge the same: a
terminal workflow its packed bytes (packed anyway), an unfinished one its
encoded definition (packed once per id) plus :data:`WORKFLOW_OVERHEAD_BYTES`.
An unfinished workflow's outputs and signals count once it ends; the model's
limits bound them meanwhile (saga/limits.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic

from coordinator.cluster.stores.model import D, S, WorkflowModel
from coordinator.consensus import pack, unpack

__all__ = ["KeptWorkflows", "RECENT_TERMINAL_MAX", "WORKFLOW_OVERHEAD_BYTES"]

# History, step records and bookkeeping of an unfinished workflow, beyond
# its definition.
WORKFLOW_OVERHEAD_BYTES = 1024
# Terminal workflows kept as objects too, the most recent to end (see above).
RECENT_TERMINAL_MAX = 256


class KeptWorkflows(Generic[D, S]):
    def __init__(
        self, model: WorkflowModel[D, S], services_of: Callable[[D], tuple[str, ...]] = lambda definition: ()
    ) -> None:
        self._model = model
        self._services_of = services_of  # the services a definition calls, sorted
        self._kept: dict[str, S | bytes] = {}  # id -> state object (unfinished) or bytes (terminal)
        self.active: set[str] = set()  # ids of the unfinished ones
        # id of a terminal workflow -> (created_at_ms, updated_at_ms, status, services):
        # for retention, listing and filtering without decoding (a tuple of
        # strings: nothing the garbage collector tracks).
        self._summary: dict[str, tuple[int, int, str, tuple[str, ...]]] = {}
        self._services_seen: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.bytes = 0  # charged for the state budget, all kept workflows
        self._charged: dict[str, int] = {}
        self._definition_bytes: dict[str, int] = {}  # of the unfinished ones
        self._recent: OrderedDict[str, S] = OrderedDict()  # the last terminal ones, as objects

    def charge_of_new(self, definition: D) -> int:
        """What an unfinished workflow with this definition is charged."""
        return len(pack(self._model.definition_to_dict(definition))) + WORKFLOW_OVERHEAD_BYTES

    def _charge(self, workflow_id: str, charge: int) -> None:
        self.bytes += charge - self._charged.get(workflow_id, 0)
        self._charged[workflow_id] = charge

    # -- writes ------------------------------------------------------------------------
    def put(self, workflow_id: str, state: S, packed: bytes | None = None, charge: int | None = None) -> None:
        """Keep ``state``, packed from now on if it is terminal.
        ``packed``: its msgpack form when the caller has it (a snapshot);
        ``charge``: ``charge_of_new`` of its definition when the caller has
        it (a submission, which checked it against the budget)."""
        if not state.terminal:
            self._recent.pop(workflow_id, None)
            self._kept[workflow_id] = state
            self.active.add(workflow_id)
            if workflow_id not in self._definition_bytes:
                self._definition_bytes[workflow_id] = (
                    charge if charge is not None else self.charge_of_new(state.definition)
                )
            self._charge(workflow_id, self._definition_bytes[workflow_id])
            return
        self._kept[workflow_id] = value = packed if packed is not None else pack(self._model.state_to_dict(state))
        self._charge(workflow_id, len(value))
        self._definition_bytes.pop(workflow_id, None)
        services = self._services_of(state.definition)
        services = self._services_seen.setdefault(services, services)  # one tuple per set of services
        self._summary[workflow_id] = (state.created_at_ms, state.updated_at_ms, state.status.value, services)
        self.active.discard(workflow_id)
        self._recent[workflow_id] = state
        self._recent.move_to_end(workflow_id)
        if len(self._recent) > RECENT_TERMINAL_MAX:
            self._recent.popitem(last=False)

    def __delitem__(self, workflow_id: str) -> None:
        del self._kept[workflow_id]
        self._recent.pop(workflow_id, None)
        self.bytes -= self._charged.pop(workflow_id)
        self._definition_bytes.pop(workflow_id, None)
        self._summary.pop(workflow_id, None)
        self.active.discard(workflow_id)

    # -- reads -------------------------------------------------------------------------
    def get(self, workflow_id: str, default: S | None = None) -> S | None:
        value = self._kept.get(workflow_id)
        if value is None:
            return default
        if isinstance(value, bytes):
            recent = self._recent.get(workflow_id)
            return recent if recent is not None else self._model.state_from_dict(unpack(value))
        return value

    def __getitem__(self, workflow_id: str) -> S:
        value = self.get(workflow_id)
        if value is None:
            raise KeyError(workflow_id)
        return value

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def terminal_ages(self) -> list[tuple[int, str]]:
        """(updated_at_ms, id) of every terminal workflow."""
        return [(summary[1], workflow_id) for workflow_id, summary in self._summary.items()]

    def rows(self) -> Iterator[tuple[int, str, str, tuple[str, ...]]]:
        """(created_at_ms, id, status, services) of every kept workflow, none
        decoded (cluster/stores/listing.py selects from them)."""
        for workflow_id, value in self._kept.items():
            if isinstance(value, bytes):
                created_at_ms, _, status, services = self._summary[workflow_id]
                yield created_at_ms, workflow_id, status, services
            else:
                yield value.created_at_ms, workflow_id, value.status.value, self._services_of(value.definition)

    def packed(self) -> list[bytes]:
        """Every kept state in msgpack form, in keeping order."""
        return [
            value if isinstance(value, bytes) else pack(self._model.state_to_dict(value))
            for value in self._kept.values()
        ]
