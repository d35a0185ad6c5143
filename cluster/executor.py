"""The leader's executor: turns committed saga state into participant calls,
and their answers back into log entries.

It never decides anything that is not first in the log. On gaining
leadership (after the first barrier of its term, so every committed entry
is applied) it loads every unfinished saga and issues what
``saga.pending_effects`` says; after each applied saga entry it does the same
for that saga; on losing leadership it cancels every call at once. An
outcome is proposed until it commits (the machine ignores duplicates), so a
new leader repeats at most a call with the same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

import saga as machine
from consensus import Applied, Command, ConsensusError, LeadershipChange, NotLeader

from .breaker import Breakers
from .participants import CallSpec, HttpCaller

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node

__all__ = ["SagaExecutor", "ExecutorSettings"]

log = logging.getLogger(__name__)
PROPOSE_BACKOFF_S = 0.05
PROPOSE_BACKOFF_MAX_S = 1.0
CONNECTIONS_MAX = 256


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    inflight_workflows_max: int = 10_000
    breaker_failures_to_open: int = 5
    breaker_slow_interval_s: float = 2.0
    retention_s: float = 24 * 3600.0
    retention_count: int = 10_000
    retention_check_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.inflight_workflows_max <= 1_000_000:
            raise ValueError("inflight_workflows_max must be in 1..1000000")
        if self.breaker_failures_to_open < 1 or self.breaker_slow_interval_s <= 0:
            raise ValueError("breaker_failures_to_open >= 1 and breaker_slow_interval_s > 0 are required")
        if self.retention_s < 0 or self.retention_count < 0 or self.retention_check_s <= 0:
            raise ValueError("retention_s, retention_count >= 0 and retention_check_s > 0 are required")


def now_ms() -> int:
    return int(time.time() * 1000)


def _effect_key(effect: Any) -> tuple:
    if isinstance(effect, machine.CallCompensation):
        return ("compensation", effect.step, effect.redrives)
    if isinstance(effect, machine.CallAction):
        return ("action", effect.step)
    return ("other",)


class SagaExecutor:
    def __init__(self, node: "Node", settings: ExecutorSettings) -> None:
        self.node = node
        self.settings = settings
        self.breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s)
        self.leading = False
        self.fence = ""
        self._generation = 0
        self._calls: dict[str, dict[tuple, asyncio.Task]] = {}  # saga id -> effect key -> task
        self._deadlines: dict[str, tuple[int, asyncio.TimerHandle]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._caller: HttpCaller | None = None
        self._housekeeping: asyncio.Task | None = None
        self.calls_started = 0

    # -- leadership ---------------------------------------------------------------
    def on_leadership(self, change: LeadershipChange) -> None:
        if change.is_leader:
            self._start(change.term, change.index)
        else:
            self._stop()

    def _start(self, term: int, index: int) -> None:
        self._stop()
        self.leading = True
        self._generation += 1
        self.fence = f"{term}:{index}"
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS_MAX))
            self._caller = HttpCaller(self._session, self.breakers)
        with self.node.log.reading():
            active = sorted(self.node.state.sagas.active)
        log.info("executor: leading at fence %s, resuming %d sagas", self.fence, len(active))
        for saga_id in active:
            self.reconcile(saga_id)
        self._housekeeping = asyncio.ensure_future(self._retention_loop(self._generation))

    def _stop(self) -> None:
        if not self.leading:
            return
        self.leading = False
        self._generation += 1
        for calls in self._calls.values():
            for task in calls.values():
                task.cancel()
        self._calls.clear()
        for _, handle in self._deadlines.values():
            handle.cancel()
        self._deadlines.clear()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        log.info("executor: stopped issuing calls")

    async def close(self) -> None:
        self._stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- from committed state to calls ----------------------------------------------------
    def on_applied(self, index: int, command: Command, result: Any) -> None:
        if self.leading and command.kind.startswith("saga.") and isinstance(result, Applied):
            value = result.value
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                self.reconcile(value["id"])

    def reconcile(self, saga_id: str) -> None:
        """Make the calls in flight for ``saga_id`` match its committed state."""
        if not self.leading:
            return
        with self.node.log.reading():
            state = self.node.state.sagas.sagas.get(saga_id)
            effects = machine.pending_effects(state) if state is not None else ()
            deadline = machine.next_deadline(state) if state is not None else None
            services = {e.service: self.node.state.registry.get(e.service) for e in effects if hasattr(e, "service")}
        calls = self._calls.setdefault(saga_id, {})
        wanted = {_effect_key(e): e for e in effects if isinstance(e, (machine.CallAction, machine.CallCompensation))}
        for key in list(calls):
            if key not in wanted:
                calls.pop(key).cancel()
        for key, effect in wanted.items():
            if key not in calls:
                task = asyncio.ensure_future(self._call(effect, services.get(effect.service), self._generation))
                calls[key] = task
                task.add_done_callback(lambda t, s=saga_id, k=key: self._forget(s, k, t))
        if not calls:
            self._calls.pop(saga_id, None)
        self._schedule_deadline(saga_id, deadline)

    def _forget(self, saga_id: str, key: tuple, task: asyncio.Task) -> None:
        calls = self._calls.get(saga_id)
        if calls is not None and calls.get(key) is task:
            del calls[key]
            if not calls:
                del self._calls[saga_id]

    def _schedule_deadline(self, saga_id: str, deadline: tuple[int, Any] | None) -> None:
        current = self._deadlines.get(saga_id)
        if deadline is None:
            if current is not None:
                current[1].cancel()
                del self._deadlines[saga_id]
            return
        at_ms, event = deadline
        if current is not None and current[0] == at_ms:
            return
        if current is not None:
            current[1].cancel()
        delay_s = max(0.0, (at_ms - now_ms()) / 1000) + 0.001
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay_s, self._deadline_passed, saga_id, event, self._generation)
        self._deadlines[saga_id] = (at_ms, handle)

    def _deadline_passed(self, saga_id: str, event: machine.DeadlineReached, generation: int) -> None:
        self._deadlines.pop(saga_id, None)
        if generation == self._generation:
            raw = machine.event_to_dict(event)
            raw.pop("at_ms")
            asyncio.ensure_future(self._propose(Command("saga.event", {"id": saga_id, "event": raw}, now_ms()), generation))

    # -- calls ------------------------------------------------------------------------------
    async def _call(self, effect: Any, service: dict | None, generation: int) -> None:
        assert self._caller is not None
        compensating = isinstance(effect, machine.CallCompensation)
        if service is None or service["url"] is None:
            outcome_kind, output, error, attempts = "failed" if not compensating else "unknown", None, f"service {effect.service!r} is not registered", 0
        else:
            retry = effect.retry
            spec = CallSpec(
                service=effect.service,
                url=service["url"],
                method=effect.method,
                path=effect.path,
                body=effect.body,
                idempotency_key=effect.idempotency_key,
                fence=self.fence,
                timeout_s=effect.timeout_s,
                max_attempts=retry.max_attempts,
                backoff_s=retry.backoff_s,
                max_backoff_s=retry.max_backoff_s,
            )
            self.calls_started += 1
            outcome = await self._caller.call(spec)
            outcome_kind, output, error, attempts = outcome.kind, outcome.output, outcome.error, outcome.attempts
        event = self._outcome_event(effect, outcome_kind, output, error, attempts)
        await self._propose(Command("saga.event", {"id": effect.saga_id, "event": event}, now_ms()), generation)

    @staticmethod
    def _outcome_event(effect: Any, kind: str, output: Any, error: str, attempts: int) -> dict:
        if isinstance(effect, machine.CallCompensation):
            if kind == "ok":
                return {"type": "compensation_succeeded", "step": effect.step, "attempts": attempts, "redrives": effect.redrives}
            return {"type": "compensation_exhausted", "step": effect.step, "error": error, "attempts": attempts, "redrives": effect.redrives}
        if kind == "ok":
            return {"type": "action_succeeded", "step": effect.step, "output": output, "attempts": attempts}
        if kind == "failed":
            return {"type": "action_failed", "step": effect.step, "error": error, "attempts": attempts}
        return {"type": "action_unknown", "step": effect.step, "error": error, "attempts": attempts}

    async def _propose(self, command: Command, generation: int) -> None:
        """Propose until the entry commits or this node stops leading."""
        backoff_s = PROPOSE_BACKOFF_S
        while generation == self._generation:
            try:
                await self.node.log.propose(command)
                return
            except NotLeader:
                return
            except ConsensusError as exc:
                log.info("executor: %s not committed (%s); retrying", command.kind, exc)
            await asyncio.sleep(backoff_s * random.uniform(0.5, 1.5))
            backoff_s = min(PROPOSE_BACKOFF_MAX_S, backoff_s * 2)

    # -- retention --------------------------------------------------------------------------
    def prunable(self, at_ms: int) -> list[str]:
        store = self.node.state.sagas
        with self.node.log.reading():
            terminal = sorted(
                ((s.updated_at_ms, i) for i, s in store.sagas.items() if i not in store.active),
            )
        cutoff_ms = at_ms - int(self.settings.retention_s * 1000)
        excess = max(0, len(terminal) - self.settings.retention_count)
        return [saga_id for n, (updated, saga_id) in enumerate(terminal) if n < excess or updated < cutoff_ms]

    async def _retention_loop(self, generation: int) -> None:
        from .sagas import PRUNE_BATCH_MAX

        while generation == self._generation:
            await asyncio.sleep(self.settings.retention_check_s)
            ids = self.prunable(now_ms())[:PRUNE_BATCH_MAX]
            if ids:
                await self._propose(Command("saga.prune", {"ids": ids}, now_ms()), generation)

    # -- admission ------------------------------------------------------------------------------
    def inflight(self) -> int:
        return len(self.node.state.sagas.active)

    def view(self) -> dict:
        return {
            "leading": self.leading,
            "fence": self.fence if self.leading else None,
            "calls_in_flight": sum(len(c) for c in self._calls.values()),
            "breakers": self.breakers.view(),
        }
