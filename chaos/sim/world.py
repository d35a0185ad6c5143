"""Everything one simulated run owns, built from its seed.

    world = World(seed=7, settings=SimSettings(), data_dir=tmp)
    world.run(world.cluster.start_all())   # run a coroutine on the virtual loop
    world.run_for(5.0)                     # let 5 simulated seconds pass
    world.close()

One root ``random.Random(seed)`` hands a separate stream to each source of
choices (Raft network, participant links, faults, workload, clients, the
nodes' own random sources, the global ``random`` PySyncObj uses), so a change in how one of
them draws does not shift the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from coordinator.chaos.history import History
from coordinator.chaos.orders import SERVICES
from coordinator.chaos.participants import Chaos, Fail, RecordingService, Script, Vote
from coordinator.client.participant import MemoryStore
from coordinator.consensus import PYSYNCOBJ_LOGGER, TruncationCounter

from .clock import VirtualClock, VirtualLoop, simulated_runtime
from .cluster import SimCluster
from .disk import journal_class
from .invariants import RegisterWatch
from .network import Network
from .participants import ParticipantLinks, SimParticipant
from .settings import SimSettings
from .trace import Trace
from .workers import SimWorkers

__all__ = ["World"]

CLOSE_ROUNDS_MAX = 10


def participant_scripts(seed: int) -> dict[str, Script]:
    """As `coordinator chaos` scripts them: some 5xx and slow answers, a declined charge, a no vote."""
    flaky = Chaos(seed=seed, error_rate=0.05, slow_rate=0.05, slow_s=0.3)
    scripts = {name: Script(default=flaky) for name in SERVICES}
    scripts["payments"] = (
        scripts["payments"].with_path("/charges/declined", Fail(status=402)).with_path("/prepare-no", Vote("no"))
    )
    return scripts


class _ForgetfulStore(MemoryStore):
    """An idempotency store that never finds a key: every retry runs the handler again."""

    def get(self, key):  # type: ignore[override]
        return None


class World:
    def __init__(self, seed: int, settings: SimSettings, data_dir: Path) -> None:
        self.seed = seed
        self.settings = settings
        self.clock = VirtualClock()
        self.loop = VirtualLoop(self.clock)
        root = random.Random(seed)
        (
            self.rng_network,
            self.rng_participants,
            self.rng_faults,
            self.rng_workload,
            self.rng_clients,
            self.rng_nodes,
        ) = (random.Random(root.getrandbits(64)) for _ in range(6))
        self._runtime: dict[str, Any] = {"random": random.Random(root.getrandbits(64)).getstate()}
        # Streams added later come after: the ones above draw as they did.
        self.rng_disks, self.rng_skew = (random.Random(root.getrandbits(64)) for _ in range(2))
        rng_workers = random.Random(root.getrandbits(64))
        self.trace = Trace(self.clock.monotonic, keep_lines_max=settings.trace_lines)
        self.participants = {
            name: self._participant(name, script) for name, script in participant_scripts(seed).items()
        }
        self.links = ParticipantLinks(self.participants, self.rng_participants, self.trace, settings.participant_faults)
        self.journal_class = journal_class(sync_is_a_lie=settings.planted_bug == "journal_ignores_sync")
        ids = [f"n{i}" for i in range(1, settings.nodes + 1)]
        self.cluster = SimCluster(self, ids, data_dir)
        self.register_watch = RegisterWatch(self.clock.monotonic, self.cluster.violation)
        self.network = Network(
            self.loop,
            self.rng_network,
            self.trace,
            settings.link_faults,
            [self.cluster.slots[i].address for i in ids],
            self.cluster.wake_address,
        )
        self.network.elect_on_every_reset = settings.planted_bug == "election_on_every_reset"
        self.workers = SimWorkers(self, rng_workers)
        self.history = History(clock=self.clock.monotonic)
        self.closed = False
        self.client_reach: set[str] | None = None  # the nodes clients can reach (None: all)
        self.fault_windows: list[list[float]] = []  # [start, end] of faults that start elections
        self.flap_episodes: list[dict[str, Any]] = []
        # PySyncObj logs CRITICAL when a follower re-receives entries it applied
        # (as a node process counts them, cluster/launcher/process.py); the run counts them too.
        self.truncations = TruncationCounter()
        logging.getLogger(PYSYNCOBJ_LOGGER).addFilter(self.truncations)
        self.threads_at_start = threading.active_count()

    def _participant(self, name: str, script: Script) -> SimParticipant:
        """A recording service whose participant kit keeps its answers in the
        store this run gives ``name``, on the virtual clocks."""
        store = self._store(name)
        service = RecordingService(name, script, clock=self.clock.monotonic, store=store, wall=self.clock.wall)
        return SimParticipant(name, script, service, store, wall=self.clock.wall)

    def _store(self, name: str) -> MemoryStore:
        if self.settings.planted_bug == "participant_without_idempotency" and name == "payments":
            return _ForgetfulStore(clock=self.clock.wall)
        return MemoryStore(clock=self.clock.wall)

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run the virtual loop until ``awaitable`` is done; its result."""
        with simulated_runtime(self.clock, self._runtime):
            return self.loop.run_until_complete(awaitable)

    def run_for(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))

    def run_until(self, condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
        """Let simulated time pass until ``condition()`` holds (True) or
        ``timeout_s`` simulated seconds went by (False): how a scenario waits."""

        async def wait() -> bool:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while loop.time() < deadline:
                if condition():
                    return True
                await asyncio.sleep(poll_s)
            return condition()

        return self.run(wait())

    def quiet(self) -> None:
        """No more message faults: what is sent arrives, promptly."""
        self.network.quiet = True
        self.links.quiet = True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        logging.getLogger(PYSYNCOBJ_LOGGER).removeFilter(self.truncations)
        loop = self.loop
        try:
            if not loop.is_closed():
                self.workers.stop_all()
                self.run(self.cluster.stop_all())
                for _ in range(CLOSE_ROUNDS_MAX):  # cancelling may start more (finally blocks)
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    if not pending:
                        break
                    for task in pending:
                        task.cancel()
                    self.run(asyncio.gather(*pending, return_exceptions=True))
                self.run(loop.shutdown_asyncgens())
        finally:
            loop.close()
