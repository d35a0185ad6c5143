"""Transactions for the executor: committed 2PC state -> prepare, commit and
abort calls.

Prepare: 2xx ``{"vote": "yes"}`` is yes, anything else answered (``no``, a
4xx) is no; an unknown outcome is retried until the transaction's deadline
decides abort (the deadline's entry makes the prepare call no longer
pending, which cancels it). Commit and abort are retried until the
participant answers 2xx.
"""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator import twopc as machine
from coordinator.cluster.executor.http_caller import ATTEMPTS_HARD_MAX, CallSpec
from coordinator.cluster.executor.reconciler import Plan, Reconciler

__all__ = ["TransactionDriver", "TX_CALL_TIMEOUT_S"]

TX_CALL_TIMEOUT_S = 5.0
PHASE_TWO_BACKOFF_S = 0.05
PHASE_TWO_BACKOFF_MAX_S = 2.0
PHASE_TWO_ROUNDS_MAX = 100_000


class TransactionDriver(Reconciler):
    kind = "tx"

    @property
    def store(self):
        return self.executor.state.transactions

    def active_ids(self) -> list[str]:
        return list(self.store.active)

    def plan(self, workflow_id: str) -> Plan:
        if workflow_id not in self.store.active:  # unknown, or terminal: nothing to do (and no decoding)
            return {}, None
        state = self.store.transactions[workflow_id]
        registry = self.executor.state.registry
        release = state.definition.release  # only workers of this release make its calls
        calls = {}
        for effect in machine.pending_effects(state):
            if isinstance(effect, (machine.CallPrepare, machine.CallCommit, machine.CallAbort)):
                phase = _phase(effect)
                service = registry.get(effect.service)
                calls[(phase, effect.service)] = lambda e=effect, s=service, p=phase: self._perform(e, s, p, release)
        deadline = machine.next_deadline(state)
        return calls, ((deadline[0], {"type": "deadline"}) if deadline is not None else None)

    def prunable(self, at_ms: int) -> list[str]:
        with self.executor.log.reading():
            terminal = self.store.terminal_ages()
        return self.executor.retained(terminal, at_ms)

    def _spec(self, effect: Any, service: dict | None, attempts: int, release: str | None) -> CallSpec:
        return CallSpec(
            service=effect.service,
            url=(service or {}).get("url") or (service or {}).get("grpc") or "",
            method="POST",
            path=effect.path,
            body=effect.body,
            idempotency_key=effect.idempotency_key,
            fence=self.executor.fence,
            timeout_s=TX_CALL_TIMEOUT_S,
            max_attempts=attempts,
            backoff_s=PHASE_TWO_BACKOFF_S,
            max_backoff_s=PHASE_TWO_BACKOFF_MAX_S,
            release=release,
        )

    async def _perform(self, effect: Any, service: dict | None, phase: str, release: str | None = None) -> dict | None:
        """The vote or the ack to propose, with the call's fence and its
        duration from the first attempt (phase two: of every round)."""
        started_s = self.executor.monotonic_s()
        if phase == "prepare":
            spec = self._spec(effect, service, ATTEMPTS_HARD_MAX, release)
            outcome = await self.executor.call(service, spec, "prepare")
            if outcome.kind == "unknown":
                return None  # only the deadline decides now
            yes = outcome.kind == "ok" and isinstance(outcome.output, dict) and outcome.output.get("vote") == "yes"
            measured = self.measured(spec.fence, started_s)
            return {"type": "vote", "service": effect.service, "vote": "yes" if yes else "no", **measured}
        backoff_s = PHASE_TWO_BACKOFF_S
        for _ in range(PHASE_TWO_ROUNDS_MAX):
            spec = self._spec(effect, service, ATTEMPTS_HARD_MAX, release)
            outcome = await self.executor.call(service, spec, phase)
            if outcome.kind == "ok":
                measured = self.measured(spec.fence, started_s)
                return {"type": "ack", "service": effect.service, "phase": phase, **measured}
            await asyncio.sleep(backoff_s * self.executor.rng.uniform(0.5, 1.5))  # a 4xx: keep asking
            backoff_s = min(PHASE_TWO_BACKOFF_MAX_S, backoff_s * 2)
        return None


def _phase(effect: Any) -> str:
    if isinstance(effect, machine.CallPrepare):
        return "prepare"
    return "commit" if isinstance(effect, machine.CallCommit) else "abort"
