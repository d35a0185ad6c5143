"""One node process: the replicated log, the state machine and the API."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time

from aiohttp import web

from coordinator.cluster.api.http_api import build_app
from coordinator.cluster.core.client_slots import ClientSlots
from coordinator.cluster.core.config import NodeAddress, NodeConfig
from coordinator.cluster.core.files import private_dir
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.executor import Executor
from coordinator.cluster.executor.grpc_caller import GrpcCaller
from coordinator.cluster.executor.http_caller import HttpCaller, Signer, participant_session
from coordinator.consensus import LeadershipChange, PySyncObjLog

__all__ = ["Node", "serve"]

log = logging.getLogger(__name__)
CONNECTIONS_MAX = 256  # participant connections of the leader's HTTP session


class _TruncationCounter(logging.Filter):
    """PySyncObj logs CRITICAL when a follower re-receives entries it already
    applied (the leader resends unacknowledged entries after a lagging
    acknowledgement): the entries are the same, so we count these instead of
    alarming operators, and keep the count on /metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("truncating already-applied log entries"):
            self.count += 1
            return False
        return True


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.state = ClusterState()
        self.log = PySyncObjLog(
            self_address=config.node.raft,
            partner_addresses=[peer.raft for peer in config.peers],
            secret=config.secret,
            data_dir=str(config.data_dir),
            state_machine=self.state,
            settings=config.cluster.raft,
        )
        self.http_responses: dict[int, int] = {}
        self.truncations = _TruncationCounter()
        logging.getLogger("pysyncobj.syncobj").addFilter(self.truncations)
        self.leader_term: int | None = None  # set while this node leads, after its first barrier
        self.leader_fence_index = 0
        self._runner: web.AppRunner | None = None
        self._grpc = None  # the gRPC API (coordinator.cluster.api.grpc_api.GrpcApi) while started
        rng = random.Random()
        settings = config.cluster.executor
        breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s, rng=rng)
        self.executor = Executor(
            self.log,
            self.state,
            settings,
            callers=_participant_callers(config, breakers, rng),
            breakers=breakers,
            clock=time.time,
            rng=rng,
        )
        self._watchers: dict[str, list[asyncio.Future]] = {}
        # Long polls (HTTP ?wait=, gRPC wait_s) one client may hold (cluster/core/limits.py).
        self.long_polls = ClientSlots("long polls", config.cluster.limits.long_polls_per_client_max)
        self.log.add_leadership_listener(self._on_leadership)
        self.log.add_leadership_listener(self.executor.on_leadership)
        self.log.add_apply_listener(self.executor.on_applied)
        self.log.add_apply_listener(self._wake_watchers)

    # -- long polls ------------------------------------------------------------
    WATCHERS_MAX = 10_000

    def _wake_watchers(self, index: int, command, result) -> None:
        value = getattr(result, "value", None)
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            for future in self._watchers.pop(value["id"], ()):
                if not future.done():
                    future.set_result(None)

    async def wait_change(self, workflow_id: str, timeout_s: float) -> None:
        """Return when an entry about ``workflow_id`` is applied here, or after ``timeout_s``."""
        if sum(len(w) for w in self._watchers.values()) >= self.WATCHERS_MAX:
            await asyncio.sleep(min(timeout_s, 1.0))
            return
        future = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(workflow_id, []).append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
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
        private_dir(self.config.data_dir)
        await self.log.start()
        self._runner = web.AppRunner(
            build_app(self),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.config.cluster.limits.idle_connection_s,
        )
        await self._runner.setup()
        host, port = self.config.node.http.rsplit(":", 1)
        await web.TCPSite(self._runner, host, int(port), reuse_address=True).start()
        from coordinator.cluster.api.grpc_api import GrpcApi

        self._grpc = GrpcApi(self)
        await self._grpc.start()
        node = self.config.node
        log.info("%s: raft %s, http %s, grpc %s", node.id, node.raft, node.http_url, node.grpc)

    async def stop(self) -> None:
        await self.executor.close()
        if self._grpc is not None:
            await self._grpc.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.log.stop()


def _participant_callers(config: NodeConfig, breakers: Breakers, rng: random.Random) -> ParticipantCallers:
    """HTTP and gRPC, both checked against [services] and signed when the
    cluster file names a participant key."""
    policy = config.cluster.services
    signer = None
    if config.participant_key is not None:
        signer = Signer(config.cluster.participant_key_id, config.participant_key)
    session = participant_session(policy, connections_max=CONNECTIONS_MAX)
    grpc = GrpcCaller(breakers, policy=policy, signer=signer, rng=rng)
    return ParticipantCallers(
        HttpCaller(session, breakers, policy, signer, rng=rng), grpc, on_close=(grpc.close, session.close)
    )


async def serve(config: NodeConfig) -> None:
    """Run one node until SIGTERM or SIGINT."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    try:
        await stop.wait()
    finally:
        log.info("%s stopping", config.node.id)
        await node.stop()
