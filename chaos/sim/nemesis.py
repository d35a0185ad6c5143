"""The simulated nemesis: faults at seeded times, each undone after a seeded while.

    crash               power loss of one node (the unsynced journal tail is
                        lost, maybe mid-record); restarted 1-6 s later
    power-loss-all      every node at once; all restarted 0.5-2 s later
    stall               one node's Raft tick stops 0.3-4 s (its executor and
                        API run on: a stale leader keeps calling participants)
    partition           the nodes split in two random groups for 1-5 s
    partition-leader    the leader cut from every other node for 1-5 s
    participant-outage  one participant refuses connections for 0.5-4 s

Message-level faults (delays, resets, lost, late and duplicated participant
calls) run all along, in the network and the participant links.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Awaitable, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .world import World

__all__ = ["FAULTS", "SimNemesis"]

FAULTS = ("crash", "power-loss-all", "stall", "partition", "partition-leader", "participant-outage")
# How often each fault is drawn, relative to the others.
WEIGHTS = {"crash": 4, "power-loss-all": 1, "stall": 3, "partition": 3, "partition-leader": 3, "participant-outage": 2}
FAULTS_PER_RUN_MAX = 10_000


class SimNemesis:
    def __init__(self, world: "World", rng: random.Random, faults: tuple[str, ...],
                 interval_s: tuple[float, float]) -> None:
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
        self.world = world
        self.rng = rng
        self.faults = tuple(f for f in FAULTS if f in faults)
        self.interval_s = interval_s
        self.count = 0
        self._undo: list[asyncio.Task] = []

    def _record(self, kind: str, node: str | None = None, **details: object) -> None:
        self.count += 1
        self.world.trace.event("fault", kind, node, details)
        self.world.history.record_fault(kind, node, **details)

    async def run(self, until_s: float) -> None:
        loop = asyncio.get_running_loop()
        while self.faults and self.count < FAULTS_PER_RUN_MAX:
            await asyncio.sleep(self.rng.uniform(*self.interval_s))
            if loop.time() >= until_s:
                return
            kind = self.rng.choices(self.faults, weights=[WEIGHTS[f] for f in self.faults])[0]
            await self.inject(kind)

    async def inject(self, kind: str) -> None:
        cluster, rng = self.world.cluster, self.rng
        if kind == "crash":
            running = cluster.running()
            if running:
                node_id = rng.choice(running)
                await cluster.crash(node_id)
                self._record(kind, node_id)
                self._later(rng.uniform(1.0, 6.0), lambda: cluster.restart(node_id))
        elif kind == "power-loss-all":
            for node_id in cluster.running():
                await cluster.crash(node_id)
            self._record(kind)
            self._later(rng.uniform(0.5, 2.0), cluster.start_all)
        elif kind == "stall":
            running = [i for i in cluster.running() if not cluster.slots[i].stalled]
            if running:
                node_id = rng.choice(running)
                cluster.stall(node_id)
                self._record(kind, node_id)
                self._later(rng.uniform(0.3, 4.0), lambda: cluster.resume(node_id))
        elif kind == "partition":
            ids = list(cluster.ids)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
            groups = [sorted(ids[:cut]), sorted(ids[cut:])]
            cluster.partition(groups)
            self._record(kind, None, groups=groups)
            self._later(rng.uniform(1.0, 5.0), cluster.heal)
        elif kind == "partition-leader":
            leader = cluster.leader()
            if leader is not None:
                cluster.partition([[leader], [i for i in cluster.ids if i != leader]])
                self._record(kind, leader)
                self._later(rng.uniform(1.0, 5.0), cluster.heal)
        elif kind == "participant-outage":
            name = rng.choice(sorted(self.world.participants))
            self.world.participants[name].down = True
            self._record(kind, None, service=name)
            self._later(rng.uniform(0.5, 4.0), lambda: self._participant_up(name))

    def _participant_up(self, name: str) -> None:
        self.world.participants[name].down = False

    def _later(self, delay_s: float, undo: Callable[[], Awaitable[None] | None]) -> None:
        async def later() -> None:
            await asyncio.sleep(delay_s)
            result = undo()
            if result is not None:
                await result

        self._undo = [t for t in self._undo if not t.done()]
        self._undo.append(asyncio.ensure_future(later()))

    async def stop(self) -> None:
        """Cancel what is still to be undone (healing follows) and return."""
        for task in self._undo:
            task.cancel()
        await asyncio.gather(*self._undo, return_exceptions=True)
        self._undo = []
        for participant in self.world.participants.values():
            participant.down = False
