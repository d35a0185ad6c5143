"""Faults on a LocalCluster: SIGKILL and restart, SIGSTOP/SIGCONT, restart of
every node, and a network partition that cuts one node off from its peers
while clients still reach it (needs the nodes in network namespaces:
coordinator.chaos.netns). Each is aimed at the leader or at a random node (seeded).
Two more, not in the default set: ``participant-crash`` stops one
recording participant as a killed process (handlers cancelled, connections
dropped) and serves it again 0.3-3 s later on the same address and store;
``link-flap`` resets every Raft connection of one node 2-5 times, 0.2-1 s
apart, while the process lives (``ss -K`` in its namespace).
With transition workers (``coordinator chaos --workers N``): ``worker-kill``
SIGKILLs one worker and starts it again 0.5-2 s later, ``worker-pause``
SIGSTOPs one for longer than its lease, then SIGCONTs it - the leader must
take its calls back and give them to another worker, and drop whatever the
paused one reports late.

Faults are picked at random (FAULT_WEIGHTS) and start one after the other,
each a seeded ``interval_s`` after the previous one started (or when it
ended, if it lasted longer): the spacing stays within the ``interval_s``
upper bound unless a fault outlasts it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator.cluster.launcher.local import LocalCluster

from .netns import Network

__all__ = ["AIMS", "FAULTS", "FAULT_WEIGHTS", "NO_NETWORK", "NO_PARTICIPANTS", "NO_WORKERS", "WORKER_FAULTS", "Nemesis"]

FAULTS = ("kill", "pause", "restart-all", "partition", "participant-crash", "link-flap", "worker-kill", "worker-pause")
WORKER_FAULTS = ("worker-kill", "worker-pause")
# How often each fault is picked, relative to the others: a restart of every
# node costs the cluster several seconds (processes start, journals replay,
# an election), so it comes less often than the single-node faults.
FAULT_WEIGHTS = {
    "kill": 3,
    "pause": 3,
    "partition": 2,
    "restart-all": 1,
    "participant-crash": 2,
    "link-flap": 2,
    "worker-kill": 2,
    "worker-pause": 2,
}
# "mixed": the leader LEADER_AIM of the time, else a random node;
# "leader": the leader whenever one is found within LEADER_WAIT_S.
AIMS = ("mixed", "leader", "random")
LEADER_AIM = 0.7
LEADER_WAIT_S = 3.0
VIEW_TIMEOUT_S = 1.0
NO_NETWORK = "the nodes are not in network namespaces"
NO_PARTICIPANTS = "no participants to crash were given"
NO_WORKERS = "the cluster runs no workers (--workers N)"


@dataclass
class Nemesis:
    cluster: LocalCluster
    rng: random.Random
    faults: tuple[str, ...]
    interval_s: tuple[float, float] = (4.0, 8.0)
    started_s: float = field(default_factory=time.monotonic)
    log: list[dict] = field(default_factory=list)
    killed_leader_at: list[float] = field(default_factory=list)
    network: Network | None = None
    aim: str = "mixed"
    partition_s: tuple[float, float] = (2.0, 6.0)
    # fault -> why this run cannot inject it
    skipped: Mapping[str, str] = field(default_factory=dict)
    services: Mapping[str, Any] = field(default_factory=dict)  # name -> coordinator.chaos.participants.RunningService
    workers: tuple[str, ...] = ()  # worker ids started by the supervisor (remote executor mode)
    lease_s: float = 1.5  # a paused worker stays paused longer than this
    worker_args: tuple[str, ...] = ()  # what a worker is started again with
    _target_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.aim not in AIMS:
            raise ValueError(f"aim: one of {', '.join(AIMS)}, got {self.aim!r}")
        unknown = sorted(set(self.faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"faults: unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
        for kind in ("partition", "link-flap"):
            if kind in self.faults and self.network is None and kind not in self.skipped:
                self.skipped = {**self.skipped, kind: NO_NETWORK}
        if "participant-crash" in self.faults and not self.services and "participant-crash" not in self.skipped:
            self.skipped = {**self.skipped, "participant-crash": NO_PARTICIPANTS}
        for kind in WORKER_FAULTS:
            if kind in self.faults and not self.workers and kind not in self.skipped:
                self.skipped = {**self.skipped, kind: NO_WORKERS}
        # Targets draw from their own generator: whether a leader was found
        # (timing) must not shift the seeded schedule of fault kinds.
        self._target_rng = random.Random(self.rng.random())

    def usable(self) -> tuple[str, ...]:
        return tuple(f for f in self.faults if f not in self.skipped)

    async def _target(self) -> tuple[str, bool]:
        alive = [i for i in self.cluster.ids if self.cluster.supervisor.alive(i)]
        at_leader = self.aim == "leader" or (self.aim == "mixed" and self._target_rng.random() < LEADER_AIM)
        if at_leader:
            deadline = time.monotonic() + LEADER_WAIT_S
            while time.monotonic() < deadline:
                leader = await self.leader(alive)
                if leader is not None:
                    return leader, True
                await asyncio.sleep(0.1)
        return self._target_rng.choice(alive), False

    async def leader(self, among: list[str] | None = None) -> str | None:
        """The node that says it leads at the highest term (a cut-off old
        leader may still say so at a lower one), or None."""

        async def view(node_id: str) -> dict | None:
            try:
                return await asyncio.wait_for(self.cluster.cluster_view(node_id), VIEW_TIMEOUT_S)
            except TimeoutError:  # a paused node
                return None

        views = await asyncio.gather(*(view(i) for i in among or self.cluster.ids))
        leaders = [(v["term"], v["node"]) for v in views if v and v["role"] == "leader"]
        return max(leaders)[1] if leaders else None

    def _record(self, kind: str, node: str | None, **details) -> dict:
        entry = {"at_s": self._now_s(), "kind": kind, "node": node, **details}
        self.log.append(entry)
        return entry

    def _now_s(self) -> float:
        return round(time.monotonic() - self.started_s, 3)

    async def run(self, until_s: float) -> None:
        usable = self.usable()
        if not usable:
            return
        last_start = self.started_s
        while True:
            next_start = last_start + self.rng.uniform(*self.interval_s)
            kind = self.rng.choices(usable, weights=[FAULT_WEIGHTS[f] for f in usable])[0]
            if next_start >= until_s:
                return
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))
            last_start = await self.inject(kind)

    async def inject(self, kind: str) -> float:
        """Inject one fault and undo it; when it started (monotonic s)."""
        supervisor = self.cluster.supervisor
        if kind == "restart-all":
            started = time.monotonic()
            self._record(kind, None)
            for node_id in self.cluster.ids:
                supervisor.kill(node_id)
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            for node_id in self.cluster.ids:
                supervisor.start(node_id)
            return started
        if kind == "participant-crash":
            started = time.monotonic()
            name = self.rng.choice(sorted(self.services))
            down_s = round(self.rng.uniform(0.3, 3.0), 2)
            entry = self._record(kind, None, service=name, down_s=down_s)
            await self.services[name].crash()
            try:
                await asyncio.sleep(down_s)
            finally:
                await self.services[name].restart()
                entry["restarted_at_s"] = self._now_s()
            return started
        if kind in WORKER_FAULTS:
            return await self._worker_fault(kind)
        node_id, leader = await self._target()
        started = time.monotonic()
        if kind == "kill":
            self._record(kind, node_id, leader=leader)
            if leader:
                self.killed_leader_at.append(started)
            supervisor.kill(node_id)
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            supervisor.start(node_id)
        elif kind == "pause":
            pause_s = round(self.rng.uniform(1.0, 3.0), 2)
            self._record(kind, node_id, leader=leader, pause_s=pause_s)
            supervisor.pause(node_id)
            await asyncio.sleep(pause_s)
            supervisor.resume(node_id)
        elif kind == "partition":
            await self._partition(node_id, leader)
        elif kind == "link-flap":
            await self._flap(node_id, leader)
        else:
            raise ValueError(f"unknown fault {kind!r}")
        return started

    async def _worker_fault(self, kind: str) -> float:
        supervisor = self.cluster.supervisor
        worker_id = self._target_rng.choice(self.workers)
        started = time.monotonic()
        if kind == "worker-kill":
            down_s = round(self.rng.uniform(0.5, 2.0), 2)
            entry = self._record(kind, worker_id, down_s=down_s)
            supervisor.kill(worker_id)
            await asyncio.sleep(down_s)
            supervisor.start_worker(worker_id, self.worker_args)
            entry["restarted_at_s"] = self._now_s()
        else:
            pause_s = round(self.lease_s * self.rng.uniform(1.3, 2.5), 2)
            entry = self._record(kind, worker_id, pause_s=pause_s)
            supervisor.pause(worker_id)
            await asyncio.sleep(pause_s)
            supervisor.resume(worker_id)
            entry["resumed_at_s"] = self._now_s()
        return started

    async def _partition(self, node_id: str, leader: bool) -> None:
        assert self.network is not None, "partition needs the nodes in network namespaces"
        partition_s = round(self.rng.uniform(*self.partition_s), 2)
        entry = self._record("partition", node_id, leader=leader, partition_s=partition_s)
        self.network.isolate(node_id)
        try:
            await asyncio.sleep(partition_s)
        finally:
            self.network.heal(node_id)
            entry["healed_at_s"] = self._now_s()

    async def _flap(self, node_id: str, leader: bool) -> None:
        assert self.network is not None, "link-flap needs the nodes in network namespaces"
        resets = self.rng.randint(2, 5)
        gaps = [round(self.rng.uniform(0.2, 1.0), 2) for _ in range(resets - 1)]
        entry = self._record("link-flap", node_id, leader=leader, resets=resets)
        ports = [int(n.raft.rsplit(":", 1)[1]) for n in self.cluster.config.nodes]
        for n in range(resets):
            if n:
                await asyncio.sleep(gaps[n - 1])
            self.network.reset_links(node_id, ports)
        entry["ended_at_s"] = self._now_s()

    def heal(self) -> None:
        """Every node running, resumed and connected."""
        if self.network is not None:
            self.network.heal_all()
        for node_id in self.cluster.ids:
            self.cluster.supervisor.resume(node_id)
            if not self.cluster.supervisor.alive(node_id):
                self.cluster.supervisor.start(node_id)
        for worker_id in self.workers:
            self.cluster.supervisor.resume(worker_id)
            if not self.cluster.supervisor.alive(worker_id):
                self.cluster.supervisor.start_worker(worker_id, self.worker_args)
