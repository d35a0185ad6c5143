"""One node: the replicated log, the state machine it applies, and the
executor that acts on it - what the API serves and the executor reads.

A Node is given its parts (the constructor): the log, the state the log
applies, the executor, the wall clock its API stamps commands with, and
the counter of PySyncObj's resent entries. It imports neither the executor
nor the API; what it needs of the executor is :class:`NodeExecutor`. A node
process is wired in cluster/launcher/process.py (``build_node``), the
deterministic simulation's nodes in chaos/sim/node.py (``sim_node``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from coordinator.cluster.core.client_slots import ClientSlots
from coordinator.cluster.core.config import NodeAddress, NodeConfig
from coordinator.cluster.core.events import EventHub
from coordinator.cluster.core.recent import RecentStats, Sample
from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command, LeadershipChange, ReplicatedLog, TruncationCounter

__all__ = ["Node", "NodeExecutor"]

log = logging.getLogger(__name__)


class NodeExecutor(Protocol):
    """What the node needs of its executor (cluster/executor/executor.py)."""

    def on_leadership(self, change: LeadershipChange) -> None:
        """A leadership listener of the log."""

    def on_applied(self, index: int, command: Command, result: Any) -> None:
        """An apply listener of the log."""

    def admission(self, services: set[str], release: str | None = None) -> None:
        """Raise the error that refuses a new workflow using ``services`` (pinned to ``release``), if any."""

    def view(self) -> dict:
        """What /v1/cluster and /metrics show of it."""

    def workers_view(self) -> dict:
        """GET /v1/workers: the transition workers it admitted or refused."""

    async def close(self) -> None:
        """Stop issuing calls and close the callers."""


class Node:
    WATCHERS_MAX = 10_000

    def __init__(
        self,
        config: NodeConfig,
        *,
        log: ReplicatedLog,
        state: ClusterState,
        executor: NodeExecutor,
        clock: Callable[[], float],
        truncations: TruncationCounter | None = None,
    ) -> None:
        """``log`` applies to ``state``; ``clock`` is the wall clock
        (``time.time`` in a node process) the API stamps commands with;
        ``truncations`` counts PySyncObj's resent entries for /metrics (a
        fresh counter, counting nothing, by default)."""
        self.config = config
        # The API tokens, read per request; a node process swaps the whole
        # table on SIGHUP (cluster/launcher/process.py). None: the API is open.
        self.tokens = config.tokens
        self.state = state
        self.log = log
        self.executor = executor
        self.clock = clock
        self.truncations = truncations if truncations is not None else TruncationCounter()
        self.http_responses: dict[int, int] = {}  # responses by status, for /metrics
        self.leader_term: int | None = None  # set while this node leads, after its first barrier
        self.leader_fence_index = 0
        self._watchers: dict[str, list[asyncio.Future]] = {}
        self._watching = 0  # futures in _watchers (each wait_change counts its own)
        # Long polls (HTTP ?wait=, gRPC wait_s) one client may hold (cluster/core/limits.py).
        self.long_polls = ClientSlots("long polls", config.cluster.limits.long_polls_per_client_max)
        # What this replica applies, as events (GET /v1/events): fed on the
        # apply path by the state's observer hook and the log's role listener.
        limits = config.cluster.limits
        self.events = EventHub(
            ring_size=limits.events_ring_size,
            queue_size=limits.events_queue_size,
            subscribers_max=limits.events_subscribers_max,
            clock=clock,
        )
        self.event_streams = ClientSlots("event streams", limits.events_per_client_max)
        # The last minutes, sampled by the node process (sample_recent).
        self.recent = RecentStats()
        state.observer = self.events
        self.log.add_role_listener(self.events.role)
        self.log.add_leadership_listener(self._on_leadership)
        self.log.add_leadership_listener(executor.on_leadership)
        self.log.add_apply_listener(executor.on_applied)
        self.log.add_apply_listener(self._wake_watchers)

    def now_ms(self) -> int:
        """The wall clock in milliseconds: what the API stamps commands with."""
        return int(self.clock() * 1000)

    # -- long polls ------------------------------------------------------------
    def _wake_watchers(self, index: int, command, result) -> None:
        value = getattr(result, "value", None)
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            for future in self._watchers.pop(value["id"], ()):
                if not future.done():
                    future.set_result(None)

    async def wait_change(self, workflow_id: str, timeout_s: float) -> None:
        """Return when an entry about ``workflow_id`` is applied here, or after ``timeout_s``."""
        if self._watching >= self.WATCHERS_MAX:
            await asyncio.sleep(min(timeout_s, 1.0))
            return
        future = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(workflow_id, []).append(future)
        self._watching += 1
        try:
            # asyncio.timeout, not wait_for: one timer, no extra future (hot: every long poll)
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            pass
        finally:
            self._watching -= 1
            waiting = self._watchers.get(workflow_id)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._watchers[workflow_id]

    def add_leadership_listener(self, listener) -> None:
        """The hook the leader's executor uses: LeadershipChange on the event loop."""
        self.log.add_leadership_listener(listener)

    def _on_leadership(self, change: LeadershipChange) -> None:
        if change.is_leader:
            self.leader_term, self.leader_fence_index = change.term, change.index
            log.info("%s leads at term %d", self.config.node.id, change.term)
        else:
            self.leader_term = None
            log.info("%s lost leadership at term %d", self.config.node.id, change.term)

    def sample_recent(self) -> None:
        """One sample of what the node measures into ``recent`` (cluster/core/recent.py)."""
        stats = self.log.stats
        buckets, _, count = stats.commit_seconds.snapshot()
        self.recent.add(
            Sample(
                at_s=self.clock(),
                commands=stats.commands_applied,
                finished=self.events.finished,
                commit_buckets=tuple(buckets),
                commit_count=count,
                calls_in_flight=self.executor.view()["calls_in_flight"],
            )
        )

    async def sample_recent_forever(self) -> None:
        """Every ``recent.interval_s``, until cancelled (node processes only:
        the simulator's nodes take no samples)."""
        while True:
            self.sample_recent()
            await asyncio.sleep(self.recent.interval_s)

    def leader_address(self) -> NodeAddress | None:
        return self.config.cluster.by_raft_address(self.log.status().leader)

    def state_digest(self) -> dict:
        with self.log.reading():
            return {"state_digest": self.state.digest(), "state_applied_index": self.state.applied_index}

    def cluster_view(self) -> dict:
        status = self.log.status()
        leader = self.config.cluster.by_raft_address(status.leader)
        me = self.config.node
        return {
            "node": me.id,
            "role": status.role.value,
            "leader": {"id": leader.id, "http": leader.http_url, "grpc": leader.grpc} if leader else None,
            "term": status.term,
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "has_quorum": status.has_quorum,
            "executor": self.executor.view(),
            "nodes": [
                {
                    "id": n.id,
                    "raft": n.raft,
                    "http": n.http_url,
                    "grpc": n.grpc,
                    "reachable": True if n.id == me.id else status.peers.get(n.raft, False),
                }
                for n in self.config.cluster.nodes
            ],
        }

    async def start(self) -> None:
        self.events.attach(asyncio.get_running_loop())
        await self.log.start()

    async def stop(self) -> None:
        self.events.close()
        await self.executor.close()
        await self.log.stop()
