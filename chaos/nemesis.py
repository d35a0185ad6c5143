"""Faults on a LocalCluster: SIGKILL and restart, SIGSTOP/SIGCONT, restart of
every node. Each is aimed at the leader or at a random node (seeded).

A partition that isolates the leader from its peers while clients still
reach it needs the nodes in network namespaces or a fault proxy; neither is
built yet, so it is skipped and the run says so.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from cluster.local import LocalCluster

__all__ = ["FAULTS", "Nemesis", "UNSUPPORTED"]

FAULTS = ("kill", "pause", "restart-all", "partition")
UNSUPPORTED = {"partition": "needs network namespaces or a fault proxy, not built yet"}
LEADER_AIM = 0.7  # how often a fault aims at the leader rather than a random node


@dataclass
class Nemesis:
    cluster: LocalCluster
    rng: random.Random
    faults: tuple[str, ...]
    interval_s: tuple[float, float] = (4.0, 8.0)
    started_s: float = field(default_factory=time.monotonic)
    log: list[dict] = field(default_factory=list)
    killed_leader_at: list[float] = field(default_factory=list)

    def usable(self) -> tuple[str, ...]:
        return tuple(f for f in self.faults if f not in UNSUPPORTED)

    async def _target(self) -> tuple[str, bool]:
        alive = [i for i in self.cluster.ids if self.cluster.supervisor.alive(i)]
        if self.rng.random() < LEADER_AIM:
            try:
                return await self.cluster.wait_leader(among=alive, timeout_s=5), True
            except AssertionError:
                pass
        return self.rng.choice(alive), False

    def _record(self, kind: str, node: str | None, **details) -> None:
        self.log.append({"at_s": round(time.monotonic() - self.started_s, 3), "kind": kind, "node": node, **details})

    async def run(self, until_s: float) -> None:
        usable = self.usable()
        if not usable:
            return
        while time.monotonic() + self.interval_s[0] < until_s:
            await asyncio.sleep(self.rng.uniform(*self.interval_s))
            await self.inject(self.rng.choice(usable))

    async def inject(self, kind: str) -> None:
        supervisor = self.cluster.supervisor
        if kind == "restart-all":
            self._record(kind, None)
            for node_id in self.cluster.ids:
                supervisor.kill(node_id)
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            for node_id in self.cluster.ids:
                supervisor.start(node_id)
            return
        node_id, leader = await self._target()
        if kind == "kill":
            self._record(kind, node_id, leader=leader)
            if leader:
                self.killed_leader_at.append(time.monotonic())
            supervisor.kill(node_id)
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            supervisor.start(node_id)
        elif kind == "pause":
            pause_s = round(self.rng.uniform(1.0, 3.0), 2)
            self._record(kind, node_id, leader=leader, pause_s=pause_s)
            supervisor.pause(node_id)
            await asyncio.sleep(pause_s)
            supervisor.resume(node_id)

    def heal(self) -> None:
        """Every node running and resumed."""
        for node_id in self.cluster.ids:
            self.cluster.supervisor.resume(node_id)
            if not self.cluster.supervisor.alive(node_id):
                self.cluster.supervisor.start(node_id)
