"""N simulated node processes, their ticks, faults and invariants.

    cluster = SimCluster(world, node_ids=["n1", "n2", "n3"])
    await cluster.start_all()
    await cluster.crash("n2")            # power loss: the unsynced journal tail is gone
    await cluster.restart("n2")          # a new process on the same disk
    cluster.stall("n1"); cluster.resume("n1")    # the Raft tick stops and restarts
    cluster.partition([["n1"], ["n2", "n3"]]); cluster.heal()

Each live node is ticked with ``doTick(0)`` when something arrives in its
inbox or a proposal wakes it, and every ``TICK_PERIOD_S`` otherwise (what
PySyncObj's own tick thread does with ``autoTickPeriod``).

Invariants checked as the run goes (``violations``): at most one leader
per term, one entry per log index across every node and every restart
(what was applied at an index never changes), and a power loss never
takes an entry the node had acknowledged to its leader (the last
acknowledgement that left it, if that entry is still in its log, must be
in what it synced). Each node has a :class:`~coordinator.chaos.sim.disk.SimDisk`; a
node inside a slow sync is not ticked before the sync completes.

Elections: every term a node stands in (``candidacies``), for the
election-storm invariant under link flaps (:mod:`coordinator.chaos.sim.invariants`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coordinator.cluster.core.config import ClusterConfig, NodeAddress, NodeConfig
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.core.node import Node
from coordinator.consensus import RaftSettings

from .clock import Process, VirtualClock
from .disk import SimDisk
from .network import Network
from .node import sim_node
from .participants import ParticipantLinks, SimSession
from .settings import sim_worker_settings
from .trace import Trace

__all__ = ["SimCluster", "SimWorld", "TICK_PERIOD_S"]

log = logging.getLogger(__name__)
TICK_PERIOD_S = 0.05
VIOLATIONS_MAX = 100
_CANDIDATE, _LEADER = 1, 2


class _Settings(Protocol):
    raft: RaftSettings
    executor: ExecutorSettings
    planted_bug: str | None
    workers: int | None


class SimWorld(Protocol):
    """What the cluster needs of the World that builds it (chaos/sim/world.py)."""

    settings: _Settings
    clock: VirtualClock
    loop: asyncio.AbstractEventLoop
    trace: Trace
    network: Network
    links: ParticipantLinks
    journal_class: type
    rng_disks: random.Random
    rng_faults: random.Random
    rng_nodes: random.Random


@dataclass
class _Slot:
    id: str
    config: NodeConfig
    process: Process | None = None
    node: Node | None = None
    incarnation: int = 0
    stalled: bool = False
    tick_handle: asyncio.TimerHandle | None = None
    tick_at: float = 0.0
    lost_bytes: list[int] = field(default_factory=list)
    disk: SimDisk | None = None
    stood_in: int = -1  # the last term this node stood in

    @property
    def address(self) -> str:
        return self.config.node.raft


class SimCluster:
    def __init__(self, world: SimWorld, node_ids: list[str], data_dir: Path) -> None:
        self.world = world
        settings = world.settings
        addresses = tuple(NodeAddress(i, f"{i}:7000", f"{i}:8000", f"{i}:9000") for i in node_ids)
        self.config = ClusterConfig(
            nodes=addresses,
            secret_file=data_dir / "cluster.secret",
            data_dir=data_dir,
            raft=settings.raft,
            executor=settings.executor,
            workers=sim_worker_settings(settings.workers) if settings.workers else WorkerSettings(),
        )
        self.slots = {a.id: _Slot(a.id, NodeConfig(self.config, a, secret="simulated")) for a in addresses}
        self._by_address = {slot.address: slot for slot in self.slots.values()}
        self.ids = list(node_ids)
        self.leaders_by_term: dict[int, str] = {}
        self.applied_at: dict[int, tuple[bytes, str]] = {}
        self.applied_count = 0
        self.violations: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.candidacies: list[tuple[float, str, int]] = []  # (virtual time, node, term)
        self.stamps: dict[int, tuple[float, float]] = {}  # at_ms proposed -> (first, last) virtual time
        # What the dispatchers of crashed node processes had counted (cluster/executor/dispatch.py).
        self.dispatcher_totals: dict[str, int] = {}
        for slot in self.slots.values():
            slot.disk = SimDisk(
                random.Random(world.rng_disks.getrandbits(64)),
                world.clock.monotonic,
                lambda until, s=slot: self._busy(s, until),
                returns_early=settings.planted_bug == "sync_returns_early",
            )

    # -- lifecycle -------------------------------------------------------------
    async def start_all(self) -> None:
        for node_id in self.ids:
            await self.restart(node_id)

    async def restart(self, node_id: str) -> None:
        """Start a new process of ``node_id`` on its disk (no-op while one runs)."""
        slot = self.slots[node_id]
        if slot.process is not None:
            return
        world = self.world
        slot.incarnation += 1
        process = Process(f"{node_id}#{slot.incarnation}")
        node = sim_node(
            slot.config,
            observer=self,
            journal_class=world.journal_class,
            transport_base=world.network.transport_class(),
            session=SimSession(world.links, node_id),
            rng=random.Random(world.rng_nodes.getrandbits(64)),
            clock=world.clock.wall,
        )
        slot.process, slot.node, slot.stalled = process, node, False
        world.trace.event("start", node_id, slot.incarnation)
        await self.world.loop.create_task(node.start(), context=process.context)
        journal = getattr(node.log, "journal", None)
        if journal is not None and hasattr(journal, "disk"):
            journal.disk, journal.loop = slot.disk, world.loop
        self._schedule_tick(slot, 0.0)

    async def crash(self, node_id: str, *, power_loss: bool = True) -> None:
        """Kill the process; with ``power_loss`` the unsynced journal tail is lost too."""
        slot = self.slots[node_id]
        process, node = slot.process, slot.node
        if process is None or node is None:
            return
        process.kill()
        self.bank_dispatcher_counts(node)
        slot.process, slot.node, slot.tick_handle = None, None, None
        if slot.disk is not None:
            slot.disk.busy_until = 0.0  # the sync in progress dies with the process
        journal = getattr(node.log, "journal", None)
        lost = 0
        # Acknowledgements held behind a slow sync die with the process: they never
        # left, so a later incarnation is not held to them (found on seed 4531).
        self.world.network.drop_unsent_acks(slot.address)
        if journal is not None and power_loss:
            held = {(e[1], e[2]) for e in journal._entries}
            lost = journal.power_loss(self.world.rng_faults)
            self._check_acknowledged_kept(node_id, held, journal)
        elif journal is not None:
            journal._destroy()  # a killed process: what it wrote is in the page cache, and stays
        slot.lost_bytes.append(lost)
        self.world.network.set_stalled(slot.address, False)
        await node.log.stop()  # detaches the transport; the journal is already closed
        self.world.trace.event("crash", node_id, slot.incarnation, "power-loss" if power_loss else "kill", lost)

    def bank_dispatcher_counts(self, node: Node) -> None:
        """Add what ``node``'s dispatcher counted to ``dispatcher_totals`` (its process ends)."""
        for name, value in node.executor.dispatcher.counters().items():
            if name.endswith("_total"):
                self.dispatcher_totals[name] = self.dispatcher_totals.get(name, 0) + value

    def _check_acknowledged_kept(self, node_id: str, held: set[tuple[int, int]], journal: Any) -> None:
        ack = self.world.network.last_ack(self.slots[node_id].address)
        if ack is None or ack not in held:
            return  # nothing acknowledged, or the entry left the log since (truncated, compacted)
        kept = journal.durable_entries()
        if ack not in kept and (not kept or kept[-1][0] < ack[0] or ack[0] >= kept[0][0]):
            self.violation(
                "acknowledged_entry_lost",
                f"{node_id} acknowledged entry {ack[0]} (term {ack[1]}) "
                f"and lost it in a power loss (it kept up to {kept[-1] if kept else None})",
                node=node_id,
                index=ack[0],
                term=ack[1],
            )

    def _busy(self, slot: _Slot, until: float) -> None:
        """The node is inside a slow sync until ``until``: its tick and sends wait."""
        self.world.network.busy_until[slot.address] = until
        self.world.trace.event("disk-stall", slot.id, f"{until:.6f}")

    def stall(self, node_id: str) -> None:
        """The node's Raft tick stops (GIL starvation, a long GC); its event loop runs on."""
        slot = self.slots[node_id]
        if slot.process is None or slot.stalled:
            return
        slot.stalled = True
        if slot.tick_handle is not None:
            slot.tick_handle.cancel()
            slot.tick_handle = None
        self.world.network.set_stalled(slot.address, True)
        self.world.trace.event("stall", node_id)

    def resume(self, node_id: str) -> None:
        slot = self.slots[node_id]
        if slot.process is None or not slot.stalled:
            return
        slot.stalled = False
        self.world.network.set_stalled(slot.address, False)
        self.world.trace.event("resume", node_id)
        self._schedule_tick(slot, 0.0)

    def partition(self, groups: list[list[str]]) -> None:
        self.world.network.partition([[self.slots[i].address for i in group] for group in groups])
        self.world.trace.event("partition", groups)

    def heal(self) -> None:
        self.world.network.heal()
        self.world.trace.event("heal")

    async def heal_all(self) -> None:
        """Every node running and ticking, the network whole."""
        self.heal()
        for node_id in self.ids:
            self.resume(node_id)
            await self.restart(node_id)

    async def stop_all(self) -> None:
        for slot in self.slots.values():
            if slot.process is not None and slot.node is not None:
                node = slot.node
                await node.stop()
                slot.process.kill()
                slot.process, slot.node = None, None

    # -- ticking ------------------------------------------------------------------
    def wake_address(self, address: str) -> None:
        slot = self._by_address.get(address)
        if slot is not None and slot.process is not None and not slot.stalled:
            self._schedule_tick(slot, 0.0)

    def _schedule_tick(self, slot: _Slot, delay_s: float) -> None:
        process = slot.process
        if process is None or slot.stalled:
            return
        loop = self.world.loop
        at = max(loop.time() + delay_s, slot.disk.busy_until if slot.disk is not None else 0.0)
        if slot.tick_handle is not None and not slot.tick_handle.cancelled() and slot.tick_at <= at:
            return
        if slot.tick_handle is not None:
            slot.tick_handle.cancel()
        slot.tick_at = at
        slot.tick_handle = loop.call_at(at, self._tick, slot, process, context=process.context)

    def _tick(self, slot: _Slot, process: Process) -> None:
        slot.tick_handle = None
        if process is not slot.process or slot.stalled or slot.node is None:
            return
        raft = slot.node.log.raft()
        if raft is None:
            return
        try:
            raft._poller.poll(0)  # what arrived while waiting is read first, as PySyncObj's poll returns
            raft.doTick(0)
        except Exception as exc:  # noqa: BLE001 - PySyncObj's tick thread logs and goes on; here it is a finding
            self._error(f"{slot.id}: tick failed: {exc!r}")
            log.exception("%s: tick failed", slot.id)
        if raft._SyncObj__raftState == _CANDIDATE and raft.raftCurrentTerm != slot.stood_in:
            slot.stood_in = raft.raftCurrentTerm
            self.candidacies.append((self.world.clock.now_s, slot.id, slot.stood_in))
        if process is slot.process:
            self._schedule_tick(slot, TICK_PERIOD_S)

    # -- views -----------------------------------------------------------------------
    def node(self, node_id: str) -> Node | None:
        return self.slots[node_id].node

    def running(self) -> list[str]:
        return [i for i in self.ids if self.slots[i].process is not None]

    def leader(self) -> str | None:
        """The node leading at the highest term whose executor runs, if any."""
        best: tuple[int, str] | None = None
        for node_id in self.ids:
            slot = self.slots[node_id]
            node = slot.node
            if node is None or slot.stalled or not node.log.is_leader() or node.leader_term is None:
                continue
            if best is None or node.log.term() > best[0]:
                best = (node.log.term(), node_id)
        return best[1] if best else None

    def applied_index(self, node_id: str) -> int:
        node = self.slots[node_id].node
        raft = node.log.raft() if node is not None else None
        return raft.raftLastApplied if raft is not None else -1

    # -- the Observer of every node ---------------------------------------------------------
    def applied(self, node_id: str, index: int, data: bytes) -> None:
        digest = hashlib.blake2b(data, digest_size=8).digest()
        self.applied_count += 1
        known = self.applied_at.get(index)
        if known is None:
            self.applied_at[index] = (digest, node_id)
        elif known[0] != digest:
            self.violation(
                "applied_entry_changed",
                f"{node_id} applied another entry at index {index} than {known[1]} did",
                index=index,
                nodes=[known[1], node_id],
            )
        self.world.trace.event("apply", node_id, index, digest.hex())

    def role(self, node_id: str, old: int, new: int, term: int) -> None:
        self.world.trace.event("role", node_id, old, new, term)
        if new != _LEADER:
            return
        other = self.leaders_by_term.setdefault(term, node_id)
        if other != node_id:
            self.violation(
                "two_leaders", f"{other} and {node_id} both led term {term}", term=term, nodes=[other, node_id]
            )

    def stamped(self, at_ms: int) -> None:
        now = self.world.clock.now_s
        first, _ = self.stamps.get(at_ms, (now, now))
        self.stamps[at_ms] = (first, now)

    def fatal(self, node_id: str, message: str) -> None:
        self._error(f"{node_id}: fatal: {message}")

    def violation(self, kind: str, message: str, **details: Any) -> None:
        self.world.trace.event("VIOLATION", kind, message)
        if len(self.violations) < VIOLATIONS_MAX:
            self.violations.append(
                {
                    "kind": kind,
                    "message": message,
                    "at_s": self.world.clock.now_s,
                    **details,
                    **self.world.trace.around(),
                }
            )

    def _error(self, message: str) -> None:
        self.world.trace.event("ERROR", message)
        if len(self.errors) < VIOLATIONS_MAX:
            self.errors.append(f"{self.world.clock.now_s:.3f}s {message}")
