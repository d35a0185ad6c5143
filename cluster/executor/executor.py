"""The leader's executor: turns committed workflow state into participant
calls, and their answers back into log entries.

It never decides anything that is not first in the log. On gaining
leadership (after the first barrier of its term, so every committed entry
is applied) each driver (sagas, transactions) loads its unfinished
workflows and issues what the pure machine's ``pending_effects`` says; after
each applied entry about a workflow it does the same for that workflow; on
losing leadership every call is cancelled at once. An outcome is proposed
until it commits (the machines ignore duplicates), so a new leader repeats
at most a call with the same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from coordinator.cluster.core.errors import InvalidInput, Overloaded, Unavailable
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.dispatch import Dispatcher
from coordinator.cluster.executor.http_caller import CallOutcome, CallSpec
from coordinator.cluster.executor.reconciler import Reconciler
from coordinator.cluster.executor.saga import SagaDriver
from coordinator.cluster.executor.twopc import TransactionDriver
from coordinator.cluster.stores.workflows import PRUNE_BATCH_MAX
from coordinator.consensus import Applied, Command, ConsensusError, LeadershipChange, NotLeader, ReplicatedLog

__all__ = ["Executor"]

log = logging.getLogger(__name__)
PROPOSE_BACKOFF_S = 0.05
PROPOSE_BACKOFF_MAX_S = 1.0


class Executor:
    """The executor of one node, from its parts: the log it proposes to and
    reads under, the state the log applies, its settings, the participant
    callers (which record answers on ``breakers``, the same the executor
    admits by), the wall clock its stamps and deadlines read (``time.time``
    in a node process) and the random source of its backoff jitter.
    ``workers`` and ``node_id``: whom its dispatcher admits as transition
    workers and what it calls itself to them, when ``settings.mode`` is not
    ``local`` (cluster/executor/dispatch.py)."""

    def __init__(
        self,
        log: ReplicatedLog,
        state: ClusterState,
        settings: ExecutorSettings,
        *,
        callers: ParticipantCallers,
        breakers: Breakers,
        clock: Callable[[], float],
        rng: random.Random,
        workers: WorkerSettings | None = None,
        node_id: str = "",
    ) -> None:
        self.log = log
        self.state = state
        self.settings = settings
        self.callers = callers
        self.breakers = breakers
        self.clock = clock
        self.rng = rng
        self.dispatcher = Dispatcher(settings, workers or WorkerSettings(), callers, node_id=node_id, clock=clock)
        self.leading = False
        self.fence = ""
        self.generation = 0
        self.sagas = SagaDriver(self)
        self.transactions = TransactionDriver(self)
        self.drivers: dict[str, Reconciler] = {"saga": self.sagas, "tx": self.transactions}
        self._housekeeping: asyncio.Task | None = None

    def now_ms(self) -> int:
        """The wall clock in milliseconds: what commands are stamped with."""
        return int(self.clock() * 1000)

    def monotonic_s(self) -> float:
        """The event loop's clock, in seconds: what call durations are
        measured on, as the calls' timeouts and backoffs run on it. Not the
        wall ``clock``, which may step (NTP; in the simulator the skew
        nemesis jumps a node's) where a duration must not; in the simulator
        it is the virtual loop's time, so durations stay deterministic."""
        return asyncio.get_running_loop().time()

    # -- leadership -----------------------------------------------------------------------------
    def on_leadership(self, change: LeadershipChange) -> None:
        if change.is_leader:
            self._start(change.term, change.index)
        else:
            self._stop()

    def _start(self, term: int, index: int) -> None:
        self._stop()
        self.leading = True
        self.generation += 1
        self.fence = f"{term}:{index}"
        self.dispatcher.start_leading(self.fence)
        for driver in self.drivers.values():
            with self.log.reading():
                active = sorted(driver.active_ids())
            log.info("executor: leading at fence %s, resuming %d %s workflows", self.fence, len(active), driver.kind)
            for workflow_id in active:
                driver.reconcile(workflow_id)
        self._housekeeping = asyncio.ensure_future(self._retention_loop(self.generation))

    def _stop(self) -> None:
        if not self.leading:
            return
        self.leading = False
        self.generation += 1
        for driver in self.drivers.values():
            driver.stop()
        self.dispatcher.stop_leading()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        log.info("executor: stopped issuing calls")

    async def close(self) -> None:
        """Stop issuing calls and close the callers."""
        self._stop()
        await self.callers.close()

    def on_applied(self, index: int, command: Command, result: Any) -> None:
        if not self.leading or not isinstance(result, Applied):
            return
        driver = self.drivers.get(command.kind.split(".", 1)[0])
        value = result.value
        if driver is not None and isinstance(value, dict) and isinstance(value.get("id"), str):
            driver.reconcile(value["id"])

    # -- calls and proposals ------------------------------------------------------------------------
    async def call(self, service: dict | None, spec: CallSpec, operation: str) -> CallOutcome:
        """Call a registered participant: over its transport from here, or
        through a worker (``[executor] mode``; cluster/executor/dispatch.py)."""
        return await self.dispatcher.call(service, spec, operation)

    async def propose(self, command: Command, generation: int) -> None:
        """Propose until the entry commits or this node stops leading."""
        backoff_s = PROPOSE_BACKOFF_S
        while generation == self.generation:
            try:
                await self.log.propose(command)
                return
            except NotLeader:
                return
            except ConsensusError as exc:
                log.info("executor: %s not committed (%s); retrying", command.kind, exc)
            await asyncio.sleep(backoff_s * self.rng.uniform(0.5, 1.5))
            backoff_s = min(PROPOSE_BACKOFF_MAX_S, backoff_s * 2)

    # -- retention --------------------------------------------------------------------------------
    async def _retention_loop(self, generation: int) -> None:
        while generation == self.generation:
            await asyncio.sleep(self.settings.retention_check_s)
            await self.prune_retained(generation)

    async def prune_retained(self, generation: int) -> int:
        """Propose prunes of every terminal workflow past retention, in
        commands of at most PRUNE_BATCH_MAX ids; the number of ids proposed.

        Everything past retention goes at each check: one batch per check
        capped pruning at 200 workflows/s, below what a leader completes, so
        the kept workflows - and every node's memory and snapshot - grew
        without bound under sustained load."""
        proposed = 0
        for driver in self.drivers.values():
            ids = driver.prunable(self.now_ms())
            for start in range(0, len(ids), PRUNE_BATCH_MAX):
                if generation != self.generation:
                    return proposed
                batch = ids[start : start + PRUNE_BATCH_MAX]
                await self.propose(Command(f"{driver.kind}.prune", {"ids": batch}, self.now_ms()), generation)
                proposed += len(batch)
        return proposed

    def retained(self, terminal: list[tuple[int, str]], at_ms: int) -> list[str]:
        """Of (updated_at_ms, id) pairs of terminal workflows, those past retention."""
        terminal.sort()
        cutoff_ms = at_ms - int(self.settings.retention_s * 1000)
        excess = max(0, len(terminal) - self.settings.retention_count)
        return [workflow_id for n, (updated, workflow_id) in enumerate(terminal) if n < excess or updated < cutoff_ms]

    # -- admission and views ------------------------------------------------------------------------
    def inflight(self) -> int:
        state = self.state
        return len(state.sagas.active) + len(state.transactions.active)

    def admission(self, services: set[str], release: str | None = None) -> None:
        """Raise the API error that refuses a new workflow, if any. A
        workflow that names a ``release`` runs only on workers of it: refused
        in local mode (no worker ever runs it) and for a release ``[workers]
        releases`` does not admit (none ever could)."""
        if release is not None:
            if self.dispatcher.mode == "local":
                raise InvalidInput(
                    "release",
                    "this cluster's executor mode is local: only workers run a workflow pinned to a release "
                    "([executor] mode = remote or auto)",
                )
            if not self.dispatcher.workers.admits(release):
                raise InvalidInput("release", f"{release!r} is not one of [workers] releases")
        if self.inflight() >= self.settings.inflight_workflows_max:
            raise Overloaded(f"{self.settings.inflight_workflows_max} workflows are in flight", retry_after_s=1)
        suspended = sorted(services & (set(self.breakers.open_services()) | self.dispatcher.open_services()))
        if suspended:
            raise Unavailable(
                f"intake suspended: the circuit of {', '.join(suspended)} is open",
                code="suspended",
                retry_after_s=self.settings.breaker_slow_interval_s,
                services=suspended,
            )

    def workers_view(self) -> dict:
        return self.dispatcher.view()

    def view(self) -> dict:
        return {
            "leading": self.leading,
            "fence": self.fence if self.leading else None,
            "calls_in_flight": sum(d.calls_in_flight() for d in self.drivers.values()),
            "breakers": self.breakers.view(),
            "mode": self.dispatcher.mode,
            "workers": self.dispatcher.counters(),
        }
