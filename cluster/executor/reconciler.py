"""What the executor's drivers share (cluster/executor/saga.py and twopc.py):
keeping each workflow's calls in flight and its deadline timer equal to
what its committed state asks for.

A driver reaches the executor through :class:`DriverHost`, what it needs of
it, so this module and the drivers import nothing of
cluster/executor/executor.py, which imports them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.executor.http_caller import CallOutcome, CallSpec
from coordinator.consensus import Command, ReplicatedLog
from coordinator.grammar import fence_problem
from coordinator.grammar.limits import CALL_DURATION_MS_MAX

__all__ = ["DriverHost", "Plan", "Reconciler"]

log = logging.getLogger(__name__)


class DriverHost(Protocol):
    """What a driver needs of the executor (cluster/executor/executor.py)."""

    log: ReplicatedLog
    state: ClusterState
    rng: random.Random
    leading: bool
    generation: int  # changes whenever leadership is gained or lost
    fence: str  # "term:index" of the leadership the calls are made under

    def now_ms(self) -> int: ...

    def monotonic_s(self) -> float: ...

    async def call(self, service: dict | None, spec: CallSpec, operation: str) -> CallOutcome: ...

    async def propose(self, command: Command, generation: int) -> None: ...

    def retained(self, terminal: list[tuple[int, str]], at_ms: int) -> list[str]: ...


# What a driver plans for one workflow: the calls that must be in flight
# (by a stable key, each a factory of the outcome event to propose, or None
# for nothing to propose) and the next deadline (at_ms, event body).
Plan = tuple[dict[tuple, Callable[[], Awaitable[dict | None]]], tuple[int, dict] | None]


class Reconciler:
    """Keeps the calls in flight and the deadline timer of each workflow of
    one kind equal to what its committed state asks for."""

    kind = ""  # command prefix: "saga" or "tx"

    def __init__(self, executor: DriverHost) -> None:
        self.executor = executor
        self._calls: dict[str, dict[tuple, asyncio.Task]] = {}
        self._deadlines: dict[str, tuple[int, asyncio.TimerHandle]] = {}

    # -- what each kind provides --------------------------------------------------------------
    def active_ids(self) -> list[str]:
        raise NotImplementedError

    def plan(self, workflow_id: str) -> Plan:
        raise NotImplementedError

    def prunable(self, at_ms: int) -> list[str]:
        raise NotImplementedError

    # -- the machinery --------------------------------------------------------------------------
    def reconcile(self, workflow_id: str) -> None:
        executor = self.executor
        if not executor.leading:
            return
        with executor.log.reading():
            wanted, deadline = self.plan(workflow_id)
        calls = self._calls.setdefault(workflow_id, {})
        for key in list(calls):
            if key not in wanted:
                calls.pop(key).cancel()
        for key, factory in wanted.items():
            if key not in calls:
                task = asyncio.ensure_future(self._run(workflow_id, factory, executor.generation))
                calls[key] = task
                task.add_done_callback(lambda t, w=workflow_id, k=key: self._forget(w, k, t))
        if not calls:
            self._calls.pop(workflow_id, None)
        self._schedule_deadline(workflow_id, deadline)

    async def _run(self, workflow_id: str, factory: Callable[[], Awaitable[dict | None]], generation: int) -> None:
        event = await factory()
        if event is not None:
            await self.executor.propose(
                Command(f"{self.kind}.event", {"id": workflow_id, "event": event}, self.executor.now_ms()), generation
            )

    def _forget(self, workflow_id: str, key: tuple, task: asyncio.Task) -> None:
        calls = self._calls.get(workflow_id)
        if calls is not None and calls.get(key) is task:
            del calls[key]
            if not calls:
                del self._calls[workflow_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("executor: %s %s call failed: %r", self.kind, workflow_id, task.exception())

    def _schedule_deadline(self, workflow_id: str, deadline: tuple[int, dict] | None) -> None:
        current = self._deadlines.get(workflow_id)
        if current is not None and (deadline is None or current[0] != deadline[0]):
            current[1].cancel()
            del self._deadlines[workflow_id]
            current = None
        if deadline is None or current is not None:
            return
        at_ms, event = deadline
        delay_s = max(0.0, (at_ms - self.executor.now_ms()) / 1000) + 0.001
        handle = asyncio.get_running_loop().call_later(
            delay_s, self._deadline_passed, workflow_id, event, self.executor.generation
        )
        self._deadlines[workflow_id] = (at_ms, handle)

    def _deadline_passed(self, workflow_id: str, event: dict, generation: int) -> None:
        self._deadlines.pop(workflow_id, None)
        command = Command(f"{self.kind}.event", {"id": workflow_id, "event": event}, self.executor.now_ms())
        asyncio.ensure_future(self.executor.propose(command, generation))

    def stop(self) -> None:
        for calls in self._calls.values():
            for task in calls.values():
                task.cancel()
        self._calls.clear()
        for _, handle in self._deadlines.values():
            handle.cancel()
        self._deadlines.clear()

    def measured(self, fence: str, started_s: float) -> dict:
        """What an outcome event reports of its call (the machines record
        it in the outcome's history record): ``fence``, the fence sent, and
        ``duration_ms``, the time since ``started_s`` (``monotonic_s`` when
        the first attempt began) - retries and backoff included - clamped to
        the machines' bounds, so that the event is never refused for it."""
        elapsed_ms = round((self.executor.monotonic_s() - started_s) * 1000)
        reported: dict = {"duration_ms": min(max(0, elapsed_ms), CALL_DURATION_MS_MAX)}
        if fence_problem(fence) is None:  # always "term:index" while leading
            reported["fence"] = fence
        return reported

    def calls_in_flight(self) -> int:
        return sum(len(c) for c in self._calls.values())
