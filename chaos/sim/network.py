"""The simulated Raft network: a PySyncObj ``Transport`` over seeded links.

Each pair of nodes has one connection, as PySyncObj's TCP transport keeps
one per pair, and the links keep TCP's promises: a message sent on a
connection arrives after a seeded delay, in order, or not at all when the
connection breaks first. What the seed decides:

- delays (a base latency, now and then a slow message);
- connection resets (every message in flight on it is lost; both ends are
  told ``disconnected``, and reconnect after up to ``connection_retry_s``);
- partitions (a blocked direction holds every message, as TCP would keep
  retransmitting it: delivered in order if the partition heals while the
  connection lives, lost with it when an end gives up after
  ``connection_timeout_s`` without a message, as PySyncObj's read timeout
  does);
- crashes (a dead end is noticed within ``crash_detect_s``) and stalls (a
  node whose Raft tick is stalled reads nothing; its peers time out).

A node busy in a slow fsync (:mod:`coordinator.chaos.sim.disk`) sends what it sends
after the sync once the sync completes (``busy_until``); if it dies first,
those messages never leave. Every acknowledgement of appended entries that
left a node is noted (``last_ack``), for the durability invariant.

``LinkFaults(fifo=False, duplicate_probability=...)`` drops the TCP promises
(reordering and duplicates inside a connection) for exploring; PySyncObj
was written for TCP and does not claim to survive that.

Received messages and connection changes wait in the node's inbox until its
next tick polls (:class:`SimPoller`), as they would in the socket until
PySyncObj's poller reads them.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysyncobj.node import TCPNode
from pysyncobj.transport import Transport

from .trace import Trace

__all__ = ["LinkFaults", "Network", "SimNodeId", "SimTransport"]

INBOX_MAX = 100_000
HELD_MAX = 100_000  # messages held on blocked directions


@dataclass(frozen=True)
class LinkFaults:
    delay_s: tuple[float, float] = (0.0005, 0.003)
    slow_probability: float = 0.01
    slow_delay_s: tuple[float, float] = (0.02, 0.3)
    reset_probability: float = 0.0005
    connection_timeout_s: float = 2.0
    connection_retry_s: float = 0.5
    crash_detect_s: float = 0.05
    fifo: bool = True
    duplicate_probability: float = 0.0
    bytes_per_s: float = 50e6  # a message takes its size over this to arrive whole, after the one before

    def __post_init__(self) -> None:
        assert 0 < self.delay_s[0] <= self.delay_s[1], self.delay_s
        assert 0 <= self.slow_probability <= 1 and 0 <= self.reset_probability <= 1
        assert 0 <= self.duplicate_probability <= 1
        assert self.connection_timeout_s > 0 and self.connection_retry_s > 0 and self.crash_detect_s > 0
        assert self.bytes_per_s > 0


class SimNodeId(TCPNode):
    """PySyncObj's node, hashed by a stable function of its address: the
    order PySyncObj walks its set of peers no longer depends on PYTHONHASHSEED."""

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self._stable_hash = sum((i + 1) * ord(c) for i, c in enumerate(address))

    def __hash__(self) -> int:
        return self._stable_hash


class _Pair:
    __slots__ = ("up", "epoch", "timer", "want")

    def __init__(self) -> None:
        self.up = False
        self.epoch = 0
        self.timer: asyncio.TimerHandle | None = None
        self.want: bool | None = None


def _copy(message: dict) -> dict:
    """What the receiver gets: its own dict and lists (entries are tuples of bytes and ints)."""
    return {key: list(value) if isinstance(value, list) else value for key, value in message.items()}


def size_bytes(message: dict) -> int:
    """About what the message weighs on the wire: its entries or snapshot chunk, plus a header."""
    size = 100
    for entry in message.get("entries", ()):
        size += len(entry[0]) + 16
    serialized = message.get("serialized")
    if serialized:
        size += len(serialized[0])
    return size + len(message.get("data") or b"") + len(message.get("command") or b"")


def summary(message: dict) -> str:
    """The trace line of a Raft message: its fields, entries by (index, term)."""
    parts = []
    for key in sorted(message):
        value = message[key]
        if key == "entries":
            value = [(e[1], e[2], len(e[0])) for e in value]
        elif key == "serialized":
            value = (
                None if value is None else f"{len(value[0])}{'/first' if value[1] else ''}{'/last' if value[2] else ''}"
            )
        elif key in ("data", "command"):
            value = len(value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


class Network:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        trace: Trace,
        faults: LinkFaults,
        addresses: list[str],
        on_wake: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.faults = faults
        self.addresses = list(addresses)
        self.on_wake = on_wake
        self.endpoints: dict[str, SimTransport] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.stalled: set[str] = set()
        self._pairs = {(a, b): _Pair() for i, a in enumerate(self.addresses) for b in self.addresses[i + 1 :]}
        self._last_arrival: dict[tuple[str, str], float] = {}
        # FIFO links: each arrival timer delivers the oldest message of its
        # direction (timers due at the same instant may fire in any order).
        self._in_flight: dict[tuple[str, str], collections.deque] = {}
        self._held: dict[tuple[str, str], list[tuple[int, dict]]] = {}
        self._root = contextvars.Context()  # deliveries belong to no process
        self.sent = self.lost = self.delivered = 0
        self.quiet = False  # after the faults: no resets, no slow messages, no duplicates
        self.busy_until: dict[str, float] = {}  # a node in a slow fsync sends nothing before
        self._departing: dict[str, list[tuple[float, int]]] = {}  # held until busy_until: (departure, id)
        self._cancelled: set[int] = set()  # ids of held messages whose sender died first
        self.acks: dict[str, list[tuple[float, int, int]]] = {}  # (departure, index, term) acknowledged
        self.elect_on_every_reset = False  # the planted bug election_on_every_reset

    def transport_class(self) -> type:
        """The transport of one node process, bound to this network."""
        network = self

        class BoundTransport(SimTransport):
            pass

        BoundTransport.network = network
        return BoundTransport

    # -- topology ------------------------------------------------------------------
    def attach(self, endpoint: SimTransport) -> None:
        assert endpoint.address not in self.endpoints, endpoint.address
        self.endpoints[endpoint.address] = endpoint
        self.refresh()

    def detach(self, endpoint: SimTransport) -> None:
        if self.endpoints.get(endpoint.address) is endpoint:
            del self.endpoints[endpoint.address]
            now = self.loop.time()
            for departure, message_id in self._departing.pop(endpoint.address, ()):
                if departure > now:
                    self._cancelled.add(message_id)  # held for a sync that never completed
            self.busy_until.pop(endpoint.address, None)
            self.refresh()

    def last_ack(self, address: str) -> tuple[int, int] | None:
        """(index, term) of the last entry ``address`` acknowledged, of what left it by now."""
        now = self.loop.time()
        gone = [a for a in self.acks.get(address, ()) if a[0] <= now]
        return gone[-1][1:] if gone else None

    def drop_unsent_acks(self, address: str) -> None:
        """``address`` died: its acknowledgements still held behind a slow sync
        never leave, so they acknowledged nothing."""
        now = self.loop.time()
        acks = self.acks.get(address)
        if acks:
            acks[:] = [a for a in acks if a[0] <= now]

    def note_ack(self, address: str, index: int, term: int) -> None:
        departure = max(self.loop.time(), self.busy_until.get(address, 0.0))
        acks = self.acks.setdefault(address, [])
        acks.append((departure, index, term))
        now = self.loop.time()
        while len(acks) > 1 and acks[1][0] <= now:
            acks.pop(0)  # only the latest that left, and those still to leave, matter

    def partition(self, groups: list[list[str]]) -> None:
        """Block every direction between two different groups (nodes in no group are cut from all)."""
        group_of: dict[str, object] = {address: n for n, group in enumerate(groups) for address in group}
        side = {address: group_of.get(address, ("alone", address)) for address in self.addresses}
        self.blocked = {(a, b) for a in self.addresses for b in self.addresses if side[a] != side[b]}
        self.refresh()

    def heal(self) -> None:
        self.blocked = set()
        self.refresh()

    def set_stalled(self, address: str, stalled: bool) -> None:
        (self.stalled.add if stalled else self.stalled.discard)(address)
        self.refresh()

    def reachable(self, a: str, b: str) -> bool:
        return (
            a in self.endpoints
            and b in self.endpoints
            and a not in self.stalled
            and b not in self.stalled
            and (a, b) not in self.blocked
            and (b, a) not in self.blocked
        )

    def refresh(self) -> None:
        """Schedule the connection changes the topology now asks for; release held messages."""
        for direction in [d for d in self._held if d not in self.blocked]:
            for epoch, message in self._held.pop(direction):
                if epoch == self.epoch(*direction):
                    self._schedule(direction[0], direction[1], epoch, message)
        for (a, b), pair in self._pairs.items():
            want = self.reachable(a, b)
            if want == pair.up:
                if pair.timer is not None:
                    pair.timer.cancel()
                    pair.timer, pair.want = None, None
                continue
            if pair.timer is not None and pair.want == want:
                continue
            if pair.timer is not None:
                pair.timer.cancel()
            if want:
                delay_s = self.rng.uniform(0.01, self.faults.connection_retry_s)
            elif a not in self.endpoints or b not in self.endpoints:
                delay_s = self.faults.crash_detect_s
            else:
                delay_s = self.faults.connection_timeout_s
            pair.want = want
            pair.timer = self.loop.call_later(delay_s, self._settle_pair, a, b, context=self._root)

    def _settle_pair(self, a: str, b: str) -> None:
        pair = self._pairs[(a, b)]
        pair.timer, pair.want = None, None
        want = self.reachable(a, b)
        if want != pair.up:
            self._set_pair(a, b, want)

    def _set_pair(self, a: str, b: str, up: bool) -> None:
        pair = self._pairs[(a, b)]
        pair.up = up
        pair.epoch += 1
        for direction in ((a, b), (b, a)):
            self.lost += len(self._held.pop(direction, ()))
        self.trace.event("link", a, b, "up" if up else "down", pair.epoch)
        kind = "connected" if up else "disconnected"
        for me, peer in ((a, b), (b, a)):
            endpoint = self.endpoints.get(me)
            if endpoint is not None:
                endpoint.enqueue((kind, peer, pair.epoch, None))

    def reset_node(self, address: str) -> int:
        """Break every connection of ``address`` (its links flap; the process lives). How many."""
        count = 0
        for peer in self.addresses:
            if peer != address and self.is_up(address, peer):
                self.trace.event("reset", address, peer, "flap")
                self.reset(address, peer)
                count += 1
        return count

    def reset(self, a: str, b: str) -> None:
        """Break the connection between a and b: what is in flight is lost; they reconnect."""
        key = (a, b) if (a, b) in self._pairs else (b, a)
        if self._pairs[key].up:
            self._set_pair(*key, False)
            self.refresh()

    def epoch(self, a: str, b: str) -> int:
        return self._pairs[(a, b) if (a, b) in self._pairs else (b, a)].epoch

    def is_up(self, a: str, b: str) -> bool:
        return self._pairs[(a, b) if (a, b) in self._pairs else (b, a)].up

    # -- messages --------------------------------------------------------------------
    def send(self, source: str, target: str, message: dict) -> bool:
        if not self.is_up(source, target):
            return False
        self.sent += 1
        faults, rng = self.faults, self.rng
        if not self.quiet and rng.random() < faults.reset_probability:
            self.trace.event("reset", source, target)
            self.reset(source, target)
            return True
        epoch = self.epoch(source, target)
        if (source, target) in self.blocked:
            held = self._held.setdefault((source, target), [])
            assert len(held) < HELD_MAX, f"over HELD_MAX ({HELD_MAX}) messages held from {source} to {target}"
            held.append((epoch, _copy(message)))
            return True
        copies = 2 if not self.quiet and rng.random() < faults.duplicate_probability else 1
        for _ in range(copies):
            self._schedule(source, target, epoch, _copy(message))
        return True

    def _schedule(self, source: str, target: str, epoch: int, message: dict) -> None:
        faults, rng = self.faults, self.rng
        delay_s = rng.uniform(*faults.delay_s)
        if not self.quiet and rng.random() < faults.slow_probability:
            delay_s += rng.uniform(*faults.slow_delay_s)
        now = self.loop.time()
        departure = self.busy_until.get(source, 0.0)
        if departure > now:
            self._departing.setdefault(source, []).append((departure, id(message)))
            self._departing[source] = [d for d in self._departing[source] if d[0] > now]
        arrival = max(now, departure) + delay_s
        if faults.fifo:
            arrival = (
                max(arrival, self._last_arrival.get((source, target), 0.0)) + size_bytes(message) / faults.bytes_per_s
            )
            self._last_arrival[(source, target)] = arrival
            self._in_flight.setdefault((source, target), collections.deque()).append((epoch, message))
            self.loop.call_at(arrival, self._arrive_in_order, source, target, context=self._root)
        else:
            self.loop.call_at(arrival, self._arrive, source, target, epoch, message, context=self._root)

    def _arrive_in_order(self, source: str, target: str) -> None:
        self._arrive(source, target, *self._in_flight[(source, target)].popleft())

    def _arrive(self, source: str, target: str, epoch: int, message: dict) -> None:
        endpoint = self.endpoints.get(target)
        if self._cancelled and id(message) in self._cancelled:
            self._cancelled.discard(id(message))
            self.lost += 1
            return
        if endpoint is None or self.epoch(source, target) != epoch:
            self.lost += 1
            return
        endpoint.enqueue(("message", source, epoch, message))

    def wake(self, address: str) -> None:
        self.on_wake(address)


class SimPoller:
    """PySyncObj's poller for one simulated node: polling reads its inbox."""

    def __init__(self, transport: SimTransport) -> None:
        self._transport = transport

    def subscribe(self, descr: Any, callback: Any, event_mask: Any) -> None:
        raise AssertionError("nothing is polled for real in the simulation")

    def unsubscribe(self, descr: Any) -> None:
        pass

    def poll(self, timeout: float) -> None:
        self._transport.deliver_inbox()

    def wake(self) -> None:
        self._transport.network.wake(self._transport.address)


class SimTransport(Transport):
    network: Network  # set on the per-run subclass (Network.transport_class)

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._raft = syncObj
        self.address: str = selfNode.id
        self._peers = {node.id: node for node in otherNodes}
        self._inbox: collections.deque = collections.deque()
        syncObj._poller = SimPoller(self)  # set before PySyncObj builds its notifier on it
        self.network.attach(self)

    def enqueue(self, item: tuple) -> None:
        if len(self._inbox) >= INBOX_MAX:
            raise AssertionError(f"{self.address}: over INBOX_MAX ({INBOX_MAX}) unread items")
        self._inbox.append(item)
        self.network.wake(self.address)

    def deliver_inbox(self) -> None:
        network, trace = self.network, self.network.trace
        while self._inbox:
            kind, peer, epoch, message = self._inbox.popleft()
            node = self._peers[peer]
            if kind == "message":
                if network.epoch(self.address, peer) != epoch:
                    network.lost += 1
                    continue
                network.delivered += 1
                trace.event("recv", self.address, peer, summary(message))
                self._onMessageReceived(node, message)
            elif kind == "connected":
                self._onNodeConnected(node)
            else:
                self._onNodeDisconnected(node)
                if network.elect_on_every_reset:  # the planted bug: stand at once, whoever closed
                    self._raft._SyncObj__raftElectionDeadline = 0.0

    def send(self, node: Any, message: dict) -> bool:
        sent = self.network.send(self.address, node.id, message)
        if sent and message.get("type") == "next_node_idx" and message.get("success"):
            journal = getattr(self._raft, "_SyncObj__raftLog", None)
            if journal is not None and len(journal) and journal[-1][1] == message["next_node_idx"] - 1:
                self.network.note_ack(self.address, journal[-1][1], journal[-1][2])
        return sent

    def destroy(self) -> None:
        self.network.detach(self)
