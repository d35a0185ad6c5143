"""Sagas for the executor: committed saga state -> action and compensation calls."""

from __future__ import annotations

from typing import Any

from coordinator import saga as machine
from coordinator.cluster.executor.http_caller import CallSpec
from coordinator.cluster.executor.reconciler import Plan, Reconciler

__all__ = ["SagaDriver"]


def _key(effect: Any) -> tuple:
    if isinstance(effect, machine.CallCompensation):
        return ("compensation", effect.step, effect.redrives)
    return ("action", effect.step)


class SagaDriver(Reconciler):
    kind = "saga"

    @property
    def store(self):
        return self.executor.state.sagas

    def active_ids(self) -> list[str]:
        return list(self.store.active)

    def plan(self, workflow_id: str) -> Plan:
        if workflow_id not in self.store.active:  # unknown, or terminal: nothing to do (and no decoding)
            return {}, None
        state = self.store.sagas[workflow_id]
        registry = self.executor.state.registry
        release = state.definition.release  # only workers of this release make its calls
        calls = {}
        for effect in machine.pending_effects(state):
            if isinstance(effect, (machine.CallAction, machine.CallCompensation)):
                service = registry.get(effect.service)
                calls[_key(effect)] = lambda e=effect, s=service: self._perform(e, s, release)
        deadline = machine.next_deadline(state)
        if deadline is not None:
            at_ms, event = deadline
            body = machine.event_to_dict(event)
            body.pop("at_ms")
            deadline = (at_ms, body)
        return calls, deadline

    def prunable(self, at_ms: int) -> list[str]:
        with self.executor.log.reading():
            terminal = self.store.terminal_ages()
        return self.executor.retained(terminal, at_ms)

    async def _perform(self, effect: Any, service: dict | None, release: str | None = None) -> dict:
        compensating = isinstance(effect, machine.CallCompensation)
        spec = CallSpec(
            service=effect.service,
            url=(service or {}).get("url") or (service or {}).get("grpc") or "",
            method=effect.method,
            path=effect.path,
            body=effect.body,
            idempotency_key=effect.idempotency_key,
            fence=self.executor.fence,
            timeout_s=effect.timeout_s,
            max_attempts=effect.retry.max_attempts,
            backoff_s=effect.retry.backoff_s,
            max_backoff_s=effect.retry.max_backoff_s,
            release=release,
        )
        started_s = self.executor.monotonic_s()
        outcome = await self.executor.call(service, spec, "compensate" if compensating else "execute")
        measured = self.measured(spec.fence, started_s)
        if compensating:
            base = {"step": effect.step, "attempts": outcome.attempts, "redrives": effect.redrives, **measured}
            if outcome.kind == "ok":
                return {"type": "compensation_succeeded", **base}
            return {"type": "compensation_exhausted", "error": outcome.error, **base}
        base = {"step": effect.step, "attempts": outcome.attempts, **measured}
        if outcome.kind == "ok":
            return {"type": "action_succeeded", "output": outcome.output, **base}
        if outcome.kind == "failed":
            return {"type": "action_failed", "error": outcome.error, **base}
        return {"type": "action_unknown", "error": outcome.error, **base}
