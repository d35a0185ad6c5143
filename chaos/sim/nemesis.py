"""The simulated nemesis: faults at seeded times, each undone after a seeded while.

    crash               power loss of one node (the unsynced journal tail is
                        lost, maybe mid-record); restarted 1-6 s later
    power-loss-all      every node at once; all restarted 0.5-2 s later
    stall               one node's Raft tick stops 0.3-4 s (its executor and
                        API run on: a stale leader keeps calling participants)
    partition           the nodes split in two random groups for 1-5 s
    partition-leader    the leader cut from every other node for 1-5 s
    participant-outage  one participant refuses connections for 0.5-4 s
    participant-crash   one participant's process dies (handlers cancelled mid-way,
                        requests in flight lost, answers never sent) and restarts
                        0.3-3 s later on the same store
    link-flap           every connection of the leader resets 2-5 times, 0.2-1 s
                        apart (the process lives); the election-storm invariant
                        judges each episode
    slow-disk           one node's fsyncs stall 50 ms - 2 s each for 1-6 s (its
                        tick waits, its acknowledgements leave when the sync ends)
    clock-skew          one node's wall clock jumps to an offset of up to +-1 s
                        (any two differ by at most SKEW_BOUND_S = 2 s); back to
                        true time 2-10 s later
    client-reach        for 1-5 s the clients reach only the followers, or only
                        the node that led when it began (a deposed leader, if
                        the leadership moves)
    worker-kill         (with workers) one worker killed, its calls stopped;
                        restarted 0.5-3 s later
    worker-pause        (with workers) one worker frozen for 1.3-2.5 leases (it
                        reads, sends and calls nothing): its calls are leased
                        again, and what it sends when it wakes must be dropped
    worker-partition    (with workers) one worker, running on, cut from the
                        leader or from every node for 0.5-3 s: the messages
                        of its stream wait (its lease is lost meanwhile) and
                        arrive when the cut heals

Message-level faults (delays, resets, lost, late and duplicated participant
calls) run all along, in the network and the participant links.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .settings import FAULTS, WORKER_FAULTS

if TYPE_CHECKING:  # pragma: no cover
    from .world import World

__all__ = ["SimNemesis"]

# How often each fault is drawn, relative to the others.
WEIGHTS = {
    "crash": 4,
    "power-loss-all": 1,
    "stall": 3,
    "partition": 3,
    "partition-leader": 3,
    "participant-outage": 2,
    "participant-crash": 2,
    "link-flap": 2,
    "slow-disk": 2,
    "clock-skew": 2,
    "client-reach": 2,
    "worker-kill": 2,
    "worker-pause": 2,
    "worker-partition": 2,
}
FAULTS_PER_RUN_MAX = 10_000
# Any two nodes' wall clocks differ by at most this (each within half of it of true time).
SKEW_BOUND_S = 2.0
# The planted bug skew_beyond_bound: offsets up to this many times the bound.
SKEW_BEYOND_FACTOR = 4.0
# Faults that start elections of their own (the flap invariant leaves their windows out).
ELECTION_FAULTS = ("crash", "power-loss-all", "stall", "partition", "partition-leader", "slow-disk")


class SimNemesis:
    def __init__(
        self, world: World, rng: random.Random, faults: tuple[str, ...], interval_s: tuple[float, float]
    ) -> None:
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
        self.world = world
        self.rng = rng
        # Worker faults only with workers: a run without draws as it always did.
        with_workers = bool(world.workers.workers)
        self.faults = tuple(f for f in FAULTS if f in faults and (with_workers or f not in WORKER_FAULTS))
        self.interval_s = interval_s
        self.count = 0
        self._undo: list[asyncio.Task] = []

    def _record(self, kind: str, node: str | None = None, **details: object) -> None:
        self.count += 1
        self.world.trace.event("fault", kind, node, details)
        self.world.history.record_fault(kind, node, **details)

    def _window(self, kind: str, until_s: float | None = None) -> list[float]:
        """[start, end] of a fault that may start elections (end: now until undone)."""
        now = self.world.clock.now_s
        window = [now, until_s if until_s is not None else now]
        if kind in ELECTION_FAULTS:
            self.world.fault_windows.append(window)
        return window

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
                self._later(rng.uniform(1.0, 6.0), lambda: cluster.restart(node_id), self._window(kind))
        elif kind == "power-loss-all":
            for node_id in cluster.running():
                await cluster.crash(node_id)
            self._record(kind)
            self._later(rng.uniform(0.5, 2.0), cluster.start_all, self._window(kind))
        elif kind == "stall":
            running = [i for i in cluster.running() if not cluster.slots[i].stalled]
            if running:
                node_id = rng.choice(running)
                cluster.stall(node_id)
                self._record(kind, node_id)
                self._later(rng.uniform(0.3, 4.0), lambda: cluster.resume(node_id), self._window(kind))
        elif kind == "partition":
            ids = list(cluster.ids)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
            groups = [sorted(ids[:cut]), sorted(ids[cut:])]
            cluster.partition(groups)
            self._record(kind, None, groups=groups)
            self._later(rng.uniform(1.0, 5.0), cluster.heal, self._window(kind))
        elif kind == "partition-leader":
            leader = cluster.leader()
            if leader is not None:
                cluster.partition([[leader], [i for i in cluster.ids if i != leader]])
                self._record(kind, leader)
                self._later(rng.uniform(1.0, 5.0), cluster.heal, self._window(kind))
        elif kind == "participant-outage":
            name = rng.choice(sorted(self.world.participants))
            self.world.participants[name].down = True
            self._record(kind, None, service=name)
            self._later(rng.uniform(0.5, 4.0), lambda: self._participant_up(name))
        elif kind == "participant-crash":
            name = rng.choice(sorted(self.world.participants))
            participant = self.world.participants[name]
            if not participant.crashed:
                cancelled = participant.crash()
                self._record(kind, None, service=name, cancelled=cancelled)
                forget = self.world.settings.planted_bug == "participant_forgets_on_crash"
                self._later(rng.uniform(0.3, 3.0), lambda: participant.restart(forget=forget))
        elif kind == "link-flap":
            leader = cluster.leader()
            if leader is not None:
                resets, gaps = rng.randint(2, 5), [rng.uniform(0.2, 1.0) for _ in range(4)]
                episode = {
                    "node": leader,
                    "start_s": self.world.clock.now_s,
                    "end_s": self.world.clock.now_s,
                    "resets": resets,
                }
                self.world.flap_episodes.append(episode)
                self._record(kind, leader, resets=resets)
                self._undo.append(asyncio.ensure_future(self._flap(leader, resets, gaps, episode)))
        elif kind == "slow-disk":
            running = cluster.running()
            if running:
                node_id = rng.choice(running)
                disk = cluster.slots[node_id].disk
                disk.slow_until = max(disk.slow_until, self.world.clock.now_s + rng.uniform(1.0, 6.0))
                self._window(kind, disk.slow_until + 2.0)  # its last stall may end up to 2 s later
                self._record(kind, node_id, until_s=round(disk.slow_until, 3))
        elif kind == "clock-skew":
            node_id = rng.choice(cluster.ids)
            half = (
                SKEW_BOUND_S
                / 2
                * (SKEW_BEYOND_FACTOR if self.world.settings.planted_bug == "skew_beyond_bound" else 1.0)
            )
            offset = rng.uniform(-half, half)
            self.world.clock.offsets[node_id] = offset
            self._record(kind, node_id, offset_s=round(offset, 3))
            self._later(rng.uniform(2.0, 10.0), lambda: self._skew(node_id, 0.0))
        elif kind == "worker-kill":
            worker = self.world.workers.workers[rng.choice(sorted(self.world.workers.workers))]
            if worker.alive:
                worker.kill()
                self._record(kind, worker.id)
                self._later(rng.uniform(0.5, 3.0), worker.start)
        elif kind == "worker-pause":
            worker = self.world.workers.workers[rng.choice(sorted(self.world.workers.workers))]
            if worker.alive and not worker.paused:
                worker.pause()
                lease_s = self.world.cluster.config.workers.lease_s
                self._record(kind, worker.id)
                self._later(lease_s * rng.uniform(1.3, 2.5), worker.resume)
        elif kind == "worker-partition":
            worker = self.world.workers.workers[rng.choice(sorted(self.world.workers.workers))]
            leader = cluster.leader()
            scope = rng.choice(("leader", "all"))
            if worker.alive and not worker.cut_from:
                nodes = {leader} if scope == "leader" and leader is not None else set(cluster.ids)
                worker.cut(nodes)
                self._record(kind, worker.id, nodes=sorted(nodes))
                self._later(rng.uniform(0.5, 3.0), worker.uncut)
        elif kind == "client-reach":
            leader = cluster.leader()
            if leader is not None:
                mode = rng.choice(("followers", "old-leader"))
                reach = {leader} if mode == "old-leader" else {i for i in cluster.ids if i != leader}
                self.world.client_reach = reach
                self._record(kind, None, mode=mode, reach=sorted(reach))
                self._later(rng.uniform(1.0, 5.0), self._clients_reach_all)

    def _participant_up(self, name: str) -> None:
        self.world.participants[name].down = False

    def _skew(self, node_id: str, offset_s: float) -> None:
        self.world.clock.offsets[node_id] = offset_s
        self.world.trace.event("skew", node_id, offset_s)

    def _clients_reach_all(self) -> None:
        self.world.client_reach = None
        self.world.trace.event("clients-reach-all")

    async def _flap(self, node_id: str, resets: int, gaps: list[float], episode: dict) -> None:
        address = self.world.cluster.slots[node_id].address
        for n in range(resets):
            if n:
                await asyncio.sleep(gaps[n - 1])
            self.world.network.reset_node(address)
            episode["end_s"] = self.world.clock.now_s

    def _later(
        self, delay_s: float, undo: Callable[[], Awaitable[None] | None], window: list[float] | None = None
    ) -> None:
        async def later() -> None:
            await asyncio.sleep(delay_s)
            result = undo()
            if result is not None:
                await result
            if window is not None:
                window[1] = self.world.clock.now_s

        self._undo = [t for t in self._undo if not t.done()]
        self._undo.append(asyncio.ensure_future(later()))

    async def stop(self) -> None:
        """Cancel what is still to be undone (healing follows) and return."""
        for task in self._undo:
            task.cancel()
        await asyncio.gather(*self._undo, return_exceptions=True)
        self._undo = []
        now = self.world.clock.now_s
        for window in self.world.fault_windows:
            window[1] = max(window[1], now) if window[1] == window[0] else window[1]
        for participant in self.world.participants.values():
            participant.down = False
            participant.restart(forget=self.world.settings.planted_bug == "participant_forgets_on_crash")
        self.world.client_reach = None
        self.world.clock.offsets.clear()
        self.world.workers.heal_all()
        for slot in self.world.cluster.slots.values():
            slot.disk.slow_until = 0.0
