"""What a transition worker does with what the leader sends it, whatever
carries the messages (the gRPC stream of cluster/worker/process.py, or the
simulator's link): each dispatch is one participant call, made with the
same callers a leader uses - retries with backoff and jitter, the circuit
breaker, timeouts, the address policy, signing - and answered with a report
of its outcome. A cancel stops the call (no report); a session that ends
stops every call (their reports could no longer be accepted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.dispatch import Dispatch, Heartbeat, Report, WorkerHello

__all__ = ["WorkerAgent"]

log = logging.getLogger(__name__)


class WorkerAgent:
    def __init__(self, hello: WorkerHello, callers: ParticipantCallers, breakers: Breakers) -> None:
        self.hello = hello
        self.callers = callers
        self.breakers = breakers
        self.calls: dict[str, asyncio.Task] = {}
        self.completed = 0

    def dispatched(self, dispatch: Dispatch, send: Callable[[Report], None]) -> None:
        """Start the call (once per dispatch id); ``send`` gets its report."""
        if dispatch.dispatch_id in self.calls:
            return
        task = asyncio.ensure_future(self._run(dispatch, send))
        self.calls[dispatch.dispatch_id] = task
        task.add_done_callback(lambda t, i=dispatch.dispatch_id: self._forget(i, t))

    async def _run(self, dispatch: Dispatch, send: Callable[[Report], None]) -> None:
        outcome = await self.callers.call(dispatch.registration, dispatch.spec, dispatch.operation)
        self.completed += 1
        send(
            Report(
                dispatch.dispatch_id, dispatch.spec.fence, outcome.kind, outcome.output, outcome.error, outcome.attempts
            )
        )

    def _forget(self, dispatch_id: str, task: asyncio.Task) -> None:
        if self.calls.get(dispatch_id) is task:
            del self.calls[dispatch_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: call %s failed: %r", self.hello.id, dispatch_id, task.exception())

    def cancelled(self, dispatch_id: str) -> None:
        task = self.calls.pop(dispatch_id, None)
        if task is not None:
            task.cancel()

    def drop_all(self) -> None:
        """The session ended: stop every call."""
        calls, self.calls = self.calls, {}
        for task in calls.values():
            task.cancel()

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(tuple(self.breakers.open_services()))

    async def close(self) -> None:
        self.drop_all()
        await self.callers.close()
