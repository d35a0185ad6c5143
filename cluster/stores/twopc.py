"""The two-phase commit part of the replicated state: submissions, votes,
the decision (made by the pure machine when it applies the deciding vote or
deadline), phase-2 acknowledgements and pruning are log entries applied here.

Once a transaction's decision is in the state it never changes: checked on
every apply, not only inside the machine (an InvariantError, raised
explicitly: it stays under `python -O`).
"""

from __future__ import annotations

from typing import Any

from coordinator import twopc as machine
from coordinator.cluster.stores.kept import KeptWorkflows
from coordinator.cluster.stores.workflows import WorkflowStore
from coordinator.consensus import Rejection

__all__ = ["TransactionStore", "event_from_body"]


def event_from_body(raw: Any, at_ms: int) -> machine.Event:
    """``{"type": "vote", "service", "vote"}``, ``{"type": "ack", "service",
    "phase"}`` or ``{"type": "deadline"}`` as a machine event. A vote and an
    ack may carry the call's ``fence`` and ``duration_ms`` (entries written
    before them do not)."""
    if not isinstance(raw, dict):
        raise ValueError("event: must be an object")
    kind = raw.get("type")
    call = {"fence": raw.get("fence"), "duration_ms": raw.get("duration_ms")}
    if kind == "vote":
        return machine.VoteReceived(service=raw.get("service"), vote=raw.get("vote"), at_ms=at_ms, **call)
    if kind == "ack":
        return machine.Acknowledged(service=raw.get("service"), phase=raw.get("phase"), at_ms=at_ms, **call)
    if kind == "deadline":
        return machine.DeadlineReached(at_ms=at_ms)
    raise ValueError(f"event: unknown type {kind!r}")


class TransactionStore(WorkflowStore[machine.TransactionDefinition, machine.TxState]):
    noun = "transaction"
    model = machine

    @property
    def transactions(self) -> KeptWorkflows[machine.TransactionDefinition, machine.TxState]:
        return self.items

    @staticmethod
    def state_id(state: machine.TxState) -> str:
        return state.tx_id

    @staticmethod
    def services_of(definition: machine.TransactionDefinition) -> tuple[str, ...]:
        return tuple(sorted(definition.services))

    def event(self, index: int, at_ms: int, body: Any) -> dict:
        tx_id, state = self.lookup(body)
        try:
            event = event_from_body(body.get("event"), at_ms)
        except (ValueError, TypeError) as error:
            raise Rejection("invalid", str(error)) from None
        new_state, _effects = machine.step(state, event)
        if state.decision is not None and new_state.decision != state.decision:
            raise machine.InvariantError(
                f"transaction {tx_id}: decision {state.decision} replaced by {new_state.decision}"
            )
        changed = new_state is not state
        if changed:
            self.store(new_state)
        decision = None if new_state.decision is None else str(new_state.decision)
        return {"id": tx_id, "state": str(new_state.status), "decision": decision, "changed": changed}

    def uses_service(self, name: str) -> bool:
        return any(name in self.items[i].definition.services for i in self.active)

    def snapshot(self) -> dict:
        return {"transactions": self.packed_states()}

    def restore(self, data: dict) -> None:
        self.restore_packed(data["transactions"])
