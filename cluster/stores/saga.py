"""The sagas part of the replicated state: submissions, outcomes, signals,
deadlines, redrives and pruning are log entries applied here.

The pure machine (`saga/`) decides; this module keeps every saga's state by
id, checks what only the replicated state can check (the services are
registered, the id is not reused for another definition), and records each
successful action and compensation per service for outcome replay.
"""

from __future__ import annotations

from typing import Any

from coordinator import saga as machine
from coordinator.cluster.stores.kept import KeptWorkflows
from coordinator.cluster.stores.who import command_by
from coordinator.cluster.stores.workflows import WorkflowStore
from coordinator.consensus import Rejection, pack

__all__ = ["SagaStore", "OUTCOMES_PER_SERVICE_MAX"]

OUTCOMES_PER_SERVICE_MAX = 200_000
# The index, ids and kind of a recorded outcome, beyond its output.
OUTCOME_OVERHEAD_BYTES = 128


def outcome_bytes(outcome: dict) -> int:
    """What a recorded outcome is charged for the state budget (cluster/core/limits.py)."""
    return len(pack(outcome["output"])) + OUTCOME_OVERHEAD_BYTES


class SagaStore(WorkflowStore[machine.SagaDefinition, machine.SagaState]):
    noun = "saga"
    model = machine

    def __init__(self, registry) -> None:
        super().__init__(registry)
        self.outcomes: dict[str, list[dict]] = {}  # service -> outcomes in log order
        self.outcome_bytes = 0  # charged for the state budget

    @property
    def sagas(self) -> KeptWorkflows[machine.SagaDefinition, machine.SagaState]:
        return self.items

    @staticmethod
    def state_id(state: machine.SagaState) -> str:
        return state.id

    @staticmethod
    def services_of(definition: machine.SagaDefinition) -> tuple[str, ...]:
        return tuple(sorted({s.service for s in definition.steps if isinstance(s, machine.ActionStep)}))

    # -- commands ------------------------------------------------------------------
    def event(self, index: int, at_ms: int, body: Any) -> dict:
        saga_id, state = self.lookup(body)
        raw = body.get("event")
        if not isinstance(raw, dict):
            raise Rejection("invalid", "event: must be an object")
        if "by" in raw:
            raise Rejection("invalid", "event.by: only the API's signal and redrive commands name who sent them")
        try:
            event = machine.event_from_dict({**raw, "at_ms": at_ms})
        except ValueError as error:
            raise Rejection("invalid", f"event: {error}") from None
        return self._step(index, saga_id, state, event)

    def signal(self, index: int, at_ms: int, body: Any) -> dict:
        saga_id, state = self.lookup(body)
        name, payload = body.get("name"), body.get("payload")
        if not isinstance(name, str):
            raise Rejection("invalid", "name: must be a string")
        by = command_by(body)
        return self._step(index, saga_id, state, machine.SignalReceived(name=name, payload=payload, at_ms=at_ms, by=by))

    def redrive(self, index: int, at_ms: int, body: Any) -> dict:
        saga_id, state = self.lookup(body)
        by = command_by(body)
        if state.status is not machine.SagaStatus.STUCK:
            raise Rejection("conflict", f"saga {saga_id!r} is {state.status.value}, not stuck")
        return self._step(index, saga_id, state, machine.Redrive(at_ms=at_ms, by=by))

    def forget(self, pruned: set[str]) -> None:
        for service, outcomes in self.outcomes.items():
            kept = []
            for o in outcomes:
                if o["saga"] in pruned:
                    self.outcome_bytes -= outcome_bytes(o)
                else:
                    kept.append(o)
            self.outcomes[service] = kept

    # -- helpers ---------------------------------------------------------------------
    def _step(self, index: int, saga_id: str, state: machine.SagaState, event: machine.Event) -> dict:
        new_state, _effects = machine.step(state, event)
        changed = new_state is not state
        if changed:
            self.store(new_state)
            self._record_outcome(index, new_state, event)
        return {"id": saga_id, "state": new_state.status.value, "changed": changed}

    def _record_outcome(self, index: int, state: machine.SagaState, event: machine.Event) -> None:
        if isinstance(event, machine.ActionSucceeded):
            kind, output = "action", event.output
        elif isinstance(event, machine.CompensationSucceeded):
            kind, output = "compensation", None
        else:
            return
        step = state.definition.steps[event.step]
        if not isinstance(step, machine.ActionStep) or (kind == "compensation" and step.compensation is None):
            return
        outcomes = self.outcomes.setdefault(step.service, [])
        if len(outcomes) >= OUTCOMES_PER_SERVICE_MAX:
            self.outcome_bytes -= outcome_bytes(
                outcomes.pop(0)
            )  # bounded: the oldest goes; retention normally prunes first
        outcome = {"index": index, "saga": state.id, "step": step.name, "kind": kind, "output": output}
        outcomes.append(outcome)
        self.outcome_bytes += outcome_bytes(outcome)

    # -- reads ---------------------------------------------------------------------------
    def uses_service(self, name: str) -> bool:
        return any(
            getattr(step, "service", None) == name for i in self.active for step in self.items[i].definition.steps
        )

    def outcomes_after(self, service: str, after: int, limit: int) -> list[dict]:
        return [o for o in self.outcomes.get(service, []) if o["index"] > after][:limit]

    # -- snapshots ----------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"sagas": self.packed_states(), "outcomes": self.outcomes}

    def restore(self, data: dict) -> None:
        self.restore_packed(data["sagas"])
        self.outcomes = {service: list(items) for service, items in data["outcomes"].items()}
        self.outcome_bytes = sum(outcome_bytes(o) for items in self.outcomes.values() for o in items)
