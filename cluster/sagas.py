"""The sagas part of the replicated state: submissions, outcomes, signals,
deadlines, redrives and pruning are log entries applied here.

The pure machine (`saga/`) decides; this module keeps every saga's state by
id, checks what only the replicated state can check (the services are
registered, the id is not reused for another definition), and records each
successful action and compensation per service for outcome replay.
"""

from __future__ import annotations

from typing import Any

import saga as machine
from consensus import Rejection

from .registry import ServiceRegistry

__all__ = ["SagaStore", "SAGAS_MAX", "OUTCOMES_PER_SERVICE_MAX"]

SAGAS_MAX = 200_000  # kept, terminal or not; retention prunes terminal ones
OUTCOMES_PER_SERVICE_MAX = 200_000
PRUNE_BATCH_MAX = 1_000


class SagaStore:
    def __init__(self, registry: ServiceRegistry) -> None:
        self.registry = registry
        self.sagas: dict[str, machine.SagaState] = {}
        self.active: set[str] = set()  # ids of non-terminal sagas
        self.outcomes: dict[str, list[dict]] = {}  # service -> outcomes in log order

    # -- commands ------------------------------------------------------------------
    def submit(self, index: int, at_ms: int, body: Any) -> dict:
        raw = body.get("definition") if isinstance(body, dict) else None
        try:
            definition = machine.parse_definition(raw, known_services=self.registry.names())
        except machine.DefinitionError as error:
            raise Rejection("invalid", str(error)) from None
        if definition.id is None:
            raise Rejection("invalid", "id: required in a replicated submission")
        existing = self.sagas.get(definition.id)
        if existing is not None:
            if machine.same_definition(existing.definition, definition):
                return {"id": definition.id, "created": False}
            raise Rejection("conflict", f"id: saga {definition.id!r} exists with another definition")
        if len(self.sagas) >= SAGAS_MAX:
            raise Rejection("overloaded", f"{SAGAS_MAX} sagas are kept; wait for retention to prune terminal ones")
        state, _effects = machine.start(definition, at_ms)
        self._store(state)
        return {"id": definition.id, "created": True}

    def event(self, index: int, at_ms: int, body: Any) -> dict:
        saga_id, state = self._saga(body)
        raw = body.get("event")
        if not isinstance(raw, dict):
            raise Rejection("invalid", "event: must be an object")
        try:
            event = machine.event_from_dict({**raw, "at_ms": at_ms})
        except ValueError as error:
            raise Rejection("invalid", f"event: {error}") from None
        return self._step(index, saga_id, state, event)

    def signal(self, index: int, at_ms: int, body: Any) -> dict:
        saga_id, state = self._saga(body)
        name, payload = body.get("name"), body.get("payload")
        if not isinstance(name, str):
            raise Rejection("invalid", "name: must be a string")
        return self._step(index, saga_id, state, machine.SignalReceived(name=name, payload=payload, at_ms=at_ms))

    def redrive(self, index: int, at_ms: int, body: Any) -> dict:
        saga_id, state = self._saga(body)
        if state.status is not machine.SagaStatus.STUCK:
            raise Rejection("conflict", f"saga {saga_id!r} is {state.status.value}, not stuck")
        return self._step(index, saga_id, state, machine.Redrive(at_ms=at_ms))

    def prune(self, index: int, at_ms: int, body: Any) -> dict:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) > PRUNE_BATCH_MAX:
            raise Rejection("invalid", f"ids: a list of at most {PRUNE_BATCH_MAX} saga ids")
        pruned = [i for i in ids if isinstance(i, str) and i in self.sagas and i not in self.active]
        for saga_id in pruned:
            del self.sagas[saga_id]
        if pruned:
            gone = set(pruned)
            for service, outcomes in self.outcomes.items():
                self.outcomes[service] = [o for o in outcomes if o["saga"] not in gone]
        return {"pruned": len(pruned)}

    # -- helpers ---------------------------------------------------------------------
    def _saga(self, body: Any) -> tuple[str, machine.SagaState]:
        saga_id = body.get("id") if isinstance(body, dict) else None
        state = self.sagas.get(saga_id) if isinstance(saga_id, str) else None
        if state is None:
            raise Rejection("not_found", f"no saga {saga_id!r}")
        return saga_id, state

    def _store(self, state: machine.SagaState) -> None:
        self.sagas[state.id] = state
        if state.status.is_terminal:
            self.active.discard(state.id)
        else:
            self.active.add(state.id)

    def _step(self, index: int, saga_id: str, state: machine.SagaState, event: machine.Event) -> dict:
        new_state, _effects = machine.step(state, event)
        changed = new_state is not state
        if changed:
            self._store(new_state)
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
            del outcomes[0]  # bounded: the oldest outcome goes; retention normally prunes first
        outcomes.append({"index": index, "saga": state.id, "step": step.name, "kind": kind, "output": output})

    # -- reads ---------------------------------------------------------------------------
    def uses_service(self, name: str) -> bool:
        return any(
            getattr(step, "service", None) == name for saga_id in self.active for step in self.sagas[saga_id].definition.steps
        )

    def outcomes_after(self, service: str, after: int, limit: int) -> list[dict]:
        return [o for o in self.outcomes.get(service, []) if o["index"] > after][:limit]

    # -- snapshots ----------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "sagas": [machine.state_to_dict(self.sagas[i]) for i in self.sagas],
            "outcomes": self.outcomes,
        }

    def restore(self, data: dict) -> None:
        self.sagas = {}
        self.active = set()
        for raw in data["sagas"]:
            self._store(machine.state_from_dict(raw))
        self.outcomes = {service: list(items) for service, items in data["outcomes"].items()}
