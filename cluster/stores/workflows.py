"""What the replicated saga and transaction stores share: submission with
idempotent resubmission, the set of unfinished workflows, lookup and pruning.

A subclass names its pure model (``saga`` or ``twopc``: what a store needs
of it is ``WorkflowModel`` in cluster/stores/model.py) and how to read a
state's id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic

from coordinator.cluster.stores.admission import check_admission
from coordinator.cluster.stores.kept import KeptWorkflows
from coordinator.cluster.stores.model import D, S, WorkflowModel
from coordinator.cluster.stores.registry import ServiceRegistry
from coordinator.cluster.stores.who import command_by
from coordinator.consensus import Rejection, unpack

__all__ = ["WorkflowStore", "WORKFLOWS_KEPT_MAX", "PRUNE_BATCH_MAX"]

WORKFLOWS_KEPT_MAX = 200_000  # per kind, terminal or not; retention prunes terminal ones
PRUNE_BATCH_MAX = 1_000


class WorkflowStore(Generic[D, S]):
    """The workflows of one pure model, whose definitions are D and states S."""

    noun = "workflow"
    model: WorkflowModel[D, S]  # the pure package: coordinator.saga or coordinator.twopc

    def __init__(self, registry: ServiceRegistry) -> None:
        self.registry = registry
        # id -> state; terminal states kept packed (see kept.py): a snapshot
        # (Raft log compaction, on PySyncObj's tick thread, where a long stall
        # costs heartbeats) reuses their bytes, and the garbage collector
        # never walks them.
        self.items = KeptWorkflows(self.model, self.services_of)
        # The bytes charged to the whole state (cluster/stores/admission.py); the
        # cluster state sets it to count every store.
        self.charged_bytes: Callable[[], int] = lambda: self.items.bytes

    @property
    def active(self) -> set[str]:
        """Ids of the unfinished workflows (do not change the set)."""
        return self.items.active

    @staticmethod
    def state_id(state: S) -> str:
        raise NotImplementedError

    @staticmethod
    def services_of(definition: D) -> tuple[str, ...]:
        """The services a definition calls, sorted (for listing by service)."""
        raise NotImplementedError

    @staticmethod
    def is_terminal(state: S) -> bool:
        return state.terminal

    # -- commands ---------------------------------------------------------------------
    def submit(self, index: int, at_ms: int, body: Any) -> dict:
        """A new workflow, or ``created: False`` for the same id and definition
        again: then nothing changes, and ``by`` stays the first submitter's."""
        by = command_by(body)
        raw = body.get("definition") if isinstance(body, dict) else None
        try:
            definition = self.model.parse_definition(raw, known_services=self.registry.names())
        except self.model.DefinitionError as error:
            raise Rejection("invalid", str(error)) from None
        if definition.id is None:
            raise Rejection("invalid", "id: required in a replicated submission")
        existing = self.items.get(definition.id)
        if existing is not None:
            if self.model.same_definition(existing.definition, definition):
                return {"id": definition.id, "created": False}
            raise Rejection("conflict", f"id: {self.noun} {definition.id!r} exists with another definition")
        if len(self.items) >= WORKFLOWS_KEPT_MAX:
            raise Rejection(
                "overloaded", f"{WORKFLOWS_KEPT_MAX} {self.noun}s are kept; wait for retention to prune terminal ones"
            )
        state, _effects = self.model.start(definition, at_ms, by)
        charge = self.items.charge_of_new(state.definition)
        check_admission(body.get("limits"), self.noun, charge, self.charged_bytes())
        self.items.put(self.state_id(state), state, charge=charge)
        return {"id": definition.id, "created": True}

    def prune(self, index: int, at_ms: int, body: Any) -> dict:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) > PRUNE_BATCH_MAX:
            raise Rejection("invalid", f"ids: a list of at most {PRUNE_BATCH_MAX} {self.noun} ids")
        pruned = [i for i in ids if isinstance(i, str) and i in self.items and i not in self.active]
        for workflow_id in pruned:
            del self.items[workflow_id]
        if pruned:
            self.forget(set(pruned))
        return {"pruned": len(pruned)}

    def forget(self, pruned: set[str]) -> None:
        """Drop what else the subclass keeps about pruned workflows."""

    # -- helpers ------------------------------------------------------------------------
    def lookup(self, body: Any) -> tuple[str, S]:
        workflow_id = body.get("id") if isinstance(body, dict) else None
        state = self.items.get(workflow_id) if isinstance(workflow_id, str) else None
        if state is None or not isinstance(workflow_id, str):
            raise Rejection("not_found", f"no {self.noun} {workflow_id!r}")
        return workflow_id, state

    def store(self, state: S, packed: bytes | None = None) -> None:
        self.items.put(self.state_id(state), state, packed)

    def terminal_ages(self) -> list[tuple[int, str]]:
        """(updated_at_ms, id) of every terminal workflow, for retention."""
        return self.items.terminal_ages()

    # -- snapshots ------------------------------------------------------------------------
    def packed_states(self) -> list[bytes]:
        """Every kept state in msgpack form, in store order."""
        return self.items.packed()

    def restore_packed(self, packed: list) -> None:
        self.items = KeptWorkflows(self.model, self.services_of)
        for data in packed:
            if not isinstance(data, bytes):
                raise ValueError("a kept workflow in a snapshot must be msgpack bytes")
            self.store(self.model.state_from_dict(unpack(data)), packed=data)
