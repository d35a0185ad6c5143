"""The two-phase commit part of the replicated state: submissions, votes,
the decision (made by the pure machine when it applies the deciding vote or
deadline), phase-2 acknowledgements and pruning are log entries applied here.

Once a transaction's decision is in the state it never changes: asserted on
every apply, not only inside the machine.
"""

from __future__ import annotations

from typing import Any

import twopc as machine
from consensus import Rejection

from .registry import ServiceRegistry

__all__ = ["TransactionStore", "TRANSACTIONS_MAX", "event_from_body"]

TRANSACTIONS_MAX = 200_000
PRUNE_BATCH_MAX = 1_000


def event_from_body(raw: Any, at_ms: int) -> machine.Event:
    """``{"type": "vote", "service", "vote"}``, ``{"type": "ack", "service",
    "phase"}`` or ``{"type": "deadline"}`` as a machine event."""
    if not isinstance(raw, dict):
        raise ValueError("event: must be an object")
    kind = raw.get("type")
    if kind == "vote":
        return machine.VoteReceived(service=raw.get("service"), vote=raw.get("vote"), at_ms=at_ms)
    if kind == "ack":
        return machine.Acknowledged(service=raw.get("service"), phase=raw.get("phase"), at_ms=at_ms)
    if kind == "deadline":
        return machine.DeadlineReached(at_ms=at_ms)
    raise ValueError(f"event: unknown type {kind!r}")


class TransactionStore:
    def __init__(self, registry: ServiceRegistry) -> None:
        self.registry = registry
        self.transactions: dict[str, machine.TxState] = {}
        self.active: set[str] = set()

    def submit(self, index: int, at_ms: int, body: Any) -> dict:
        raw = body.get("definition") if isinstance(body, dict) else None
        try:
            definition = machine.parse_definition(raw, known_services=self.registry.names())
        except machine.DefinitionError as error:
            raise Rejection("invalid", str(error)) from None
        if definition.id is None:
            raise Rejection("invalid", "id: required in a replicated submission")
        existing = self.transactions.get(definition.id)
        if existing is not None:
            if machine.same_definition(existing.definition, definition):
                return {"id": definition.id, "created": False}
            raise Rejection("conflict", f"id: transaction {definition.id!r} exists with another definition")
        if len(self.transactions) >= TRANSACTIONS_MAX:
            raise Rejection("overloaded", f"{TRANSACTIONS_MAX} transactions are kept; wait for retention")
        state, _effects = machine.start(definition, at_ms)
        self._store(state)
        return {"id": definition.id, "created": True}

    def event(self, index: int, at_ms: int, body: Any) -> dict:
        tx_id = body.get("id") if isinstance(body, dict) else None
        state = self.transactions.get(tx_id) if isinstance(tx_id, str) else None
        if state is None:
            raise Rejection("not_found", f"no transaction {tx_id!r}")
        try:
            event = event_from_body(body.get("event"), at_ms)
        except (ValueError, TypeError) as error:
            raise Rejection("invalid", str(error)) from None
        new_state, _effects = machine.step(state, event)
        assert state.decision is None or new_state.decision == state.decision, (
            f"transaction {tx_id}: decision {state.decision} replaced by {new_state.decision}"
        )
        changed = new_state is not state
        if changed:
            self._store(new_state)
        return {"id": tx_id, "state": str(new_state.status), "decision": _text(new_state.decision), "changed": changed}

    def prune(self, index: int, at_ms: int, body: Any) -> dict:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) > PRUNE_BATCH_MAX:
            raise Rejection("invalid", f"ids: a list of at most {PRUNE_BATCH_MAX} transaction ids")
        pruned = [i for i in ids if isinstance(i, str) and i in self.transactions and i not in self.active]
        for tx_id in pruned:
            del self.transactions[tx_id]
        return {"pruned": len(pruned)}

    def _store(self, state: machine.TxState) -> None:
        self.transactions[state.tx_id] = state
        if state.terminal:
            self.active.discard(state.tx_id)
        else:
            self.active.add(state.tx_id)

    def uses_service(self, name: str) -> bool:
        return any(name in self.transactions[i].definition.services for i in self.active)

    def snapshot(self) -> dict:
        return {"transactions": [machine.state_to_dict(self.transactions[i]) for i in self.transactions]}

    def restore(self, data: dict) -> None:
        self.transactions = {}
        self.active = set()
        for raw in data["transactions"]:
            self._store(machine.state_from_dict(raw))


def _text(value: object) -> str | None:
    return None if value is None else str(value)
