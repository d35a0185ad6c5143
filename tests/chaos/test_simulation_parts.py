"""The simulation's edges on their own: virtual time, processes, the crashable
journal and the simulated Raft network."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pysyncobj.syncobj as _syncobj_module
import pytest

from coordinator.chaos.sim import SimSettings, simulate
from coordinator.chaos.sim.clock import (
    EPOCH_S,
    Deadlock,
    Process,
    RealSleep,
    VirtualClock,
    VirtualLoop,
    simulated_runtime,
)
from coordinator.chaos.sim.disk import CrashableJournal, journal_class
from coordinator.chaos.sim.network import LinkFaults, Network
from coordinator.chaos.sim.trace import Trace

NO_OP = bytes([1])  # PySyncObj's no-op entry: the smallest frame a journal holds


def _runtime() -> dict:
    return {"random": random.Random(1).getstate()}


def test_an_hour_of_simulated_time_takes_no_real_time():
    clock = VirtualClock()
    loop = VirtualLoop(clock)
    started = time.perf_counter()
    real_monotonic = _syncobj_module.monotonicTime
    with simulated_runtime(clock, _runtime()):
        loop.run_until_complete(asyncio.sleep(3600))
        assert _syncobj_module.monotonicTime() == 3600.0  # PySyncObj's clock is the virtual one
        assert clock.wall() == EPOCH_S + 3600.0
    loop.close()
    assert clock.now_s == pytest.approx(3600.0)
    assert time.perf_counter() - started < 1.0
    assert _syncobj_module.monotonicTime is real_monotonic  # the real clock is back


def test_waiting_for_what_nothing_will_do_is_a_deadlock_and_sleeping_for_real_is_refused():
    clock = VirtualClock()
    loop = VirtualLoop(clock)
    with simulated_runtime(clock, _runtime()):
        with pytest.raises(Deadlock):
            loop.run_until_complete(loop.create_future())
        with pytest.raises(RealSleep):
            time.sleep(0.1)
    loop.close()


def test_the_global_random_of_a_run_is_its_own_and_carried_between_stretches():
    clock, state = VirtualClock(), _runtime()
    random.seed(99)
    outside = random.random()
    random.seed(99)
    with simulated_runtime(clock, state):
        first = random.random()
    assert random.random() == outside  # the outside stream is untouched
    with simulated_runtime(clock, state):
        second = random.random()
    replay = random.Random(1)
    assert [first, second] == [replay.random(), replay.random()]


def test_a_killed_process_runs_nothing_more():
    clock = VirtualClock()
    loop = VirtualLoop(clock)
    process = Process("n1#1")
    ran: list[str] = []

    async def forever() -> None:
        while True:
            await asyncio.sleep(1)
            ran.append("tick")

    async def scenario() -> None:
        task = loop.create_task(forever(), context=process.context)
        loop.call_later(5.5, lambda: ran.append("timer"), context=process.context)
        await asyncio.sleep(2.5)
        process.kill()
        await asyncio.sleep(10)
        assert task.cancelled()
        late = loop.create_task(asyncio.sleep(1), context=process.context)
        await asyncio.sleep(0)
        assert late.cancelled()

    with simulated_runtime(clock, _runtime()):
        loop.run_until_complete(scenario())
    loop.close()
    assert ran == ["tick", "tick"]


def test_a_power_loss_keeps_what_was_synced(tmp_path):
    path = str(tmp_path / "raft.journal")
    journal = CrashableJournal(path)
    for index in range(1, 6):
        journal.add(NO_OP, index, 1)
    journal.sync()
    for index in range(6, 9):
        journal.add(NO_OP, index, 1)
    assert journal.power_loss(random.Random(0), torn=False) > 0
    assert [journal_entry[1] for journal_entry in CrashableJournal(path)] == [1, 2, 3, 4, 5]


def test_a_torn_write_is_cut_on_restart_and_a_vote_is_durable_at_once(tmp_path):
    path = str(tmp_path / "raft.journal")
    journal = CrashableJournal(path)
    journal.setCurrentTerm(7, "n2:7000")
    for index in range(1, 30):
        journal.add(NO_OP, index, 7)
    assert journal.power_loss(random.Random(3), torn=True) > 0
    with open(path, "rb") as f:
        torn_size = len(f.read())
    again = CrashableJournal(path)
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (7, "n2:7000")
    assert [e[1] for e in again] == list(range(1, len(again) + 1)) and len(again) < 29
    with open(path, "rb") as f:
        assert len(f.read()) <= torn_size  # a record cut in the middle is dropped whole


def test_a_journal_that_ignores_sync_loses_everything_since_its_last_rewrite(tmp_path):
    path = str(tmp_path / "raft.journal")
    lying = journal_class(sync_is_a_lie=True)(path)
    for index in range(1, 4):
        lying.add(NO_OP, index, 1)
    lying.sync()
    lying.power_loss(random.Random(0), torn=False)
    assert len(CrashableJournal(path)) == 0


class _Endpoint:
    def __init__(self, network: Network, address: str) -> None:
        self.address = address
        self.items: list[tuple] = []
        network.attach(self)

    def enqueue(self, item: tuple) -> None:
        self.items.append(item)

    def messages(self) -> list[int]:
        return [item[3]["n"] for item in self.items if item[0] == "message"]


def _network(clock: VirtualClock, loop: VirtualLoop, **faults) -> tuple[Network, _Endpoint, _Endpoint]:
    link_faults = LinkFaults(slow_probability=0.3, reset_probability=0.0, **faults)
    network = Network(loop, random.Random(5), Trace(clock.monotonic), link_faults, ["a:1", "b:1"], lambda _: None)
    return network, _Endpoint(network, "a:1"), _Endpoint(network, "b:1")


def test_a_link_delivers_in_order_and_holds_messages_across_a_short_partition():
    clock = VirtualClock()
    loop = VirtualLoop(clock)

    async def scenario() -> None:
        network, a, b = _network(clock, loop)
        await asyncio.sleep(1.0)
        assert network.is_up("a:1", "b:1") and ("connected", "a:1") == b.items[0][:2]
        for n in range(50):
            assert network.send("a:1", "b:1", {"type": "x", "n": n})
        network.partition([["a:1"], ["b:1"]])
        for n in range(50, 60):
            network.send("a:1", "b:1", {"type": "x", "n": n})
        await asyncio.sleep(1.0)  # shorter than the connection timeout
        assert b.messages() == list(range(50))
        network.heal()
        await asyncio.sleep(1.0)
        assert b.messages() == list(range(60))

    with simulated_runtime(clock, _runtime()):
        loop.run_until_complete(scenario())
    loop.close()


def test_a_long_partition_breaks_the_connection_and_loses_what_it_held():
    clock = VirtualClock()
    loop = VirtualLoop(clock)

    async def scenario() -> None:
        network, a, b = _network(clock, loop)
        await asyncio.sleep(1.0)
        network.partition([["a:1"], ["b:1"]])
        network.send("a:1", "b:1", {"type": "x", "n": 1})
        await asyncio.sleep(3.0)  # past connection_timeout_s
        assert not network.is_up("a:1", "b:1")
        assert not network.send("a:1", "b:1", {"type": "x", "n": 2})
        network.heal()
        await asyncio.sleep(1.0)
        assert network.is_up("a:1", "b:1")
        assert b.messages() == [] and [i[0] for i in b.items] == ["connected", "disconnected", "connected"]

    with simulated_runtime(clock, _runtime()):
        loop.run_until_complete(scenario())
    loop.close()


def test_a_simulated_run_opens_no_socket(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a socket was opened inside the simulation")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "socketpair", refuse)
    result = simulate(2, SimSettings(duration_s=3.0))
    assert result.passed, result.summary()
