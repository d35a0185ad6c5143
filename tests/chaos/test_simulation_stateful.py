"""A hypothesis state machine drives a simulated cluster step by step.

Rules submit sagas and transactions, read and write the registry, crash
(with power loss), restart, stall and resume nodes, isolate one node or
heal, crash and restart participants, flap a node's links, slow a node's
disk, skew its clock, restrict the clients to some nodes, and let
simulated time pass. After every step: at most one leader per term, no
applied entry ever replaced, no acknowledged entry lost in a power loss,
no stale registry read, no error in a tick or an API call. At teardown the faults stop, every workflow finishes and every
chaos checker must pass on the recorded history.

A failing example prints its steps (the world's seed is the first) and a
blob that replays it (``@reproduce_failure``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.chaos.checkers import render_table, run_passed
from coordinator.chaos.orders import SERVICES
from coordinator.chaos.sim import SimSettings, World
from coordinator.chaos.sim.nemesis import SKEW_BOUND_S
from coordinator.chaos.sim.run import finish, judge, start

NODES = ("n1", "n2", "n3")
STEP_S = 0.3  # simulated time after each action
OPS_IN_FLIGHT_MAX = 8
BACKGROUND_WAIT_S = 30.0


class SimulatedCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.data_dir = Path(tempfile.mkdtemp(prefix="coordinator-sim-stateful-"))
        self.ops: list[asyncio.Task] = []

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start_cluster(self, seed: int) -> None:
        self.world = World(seed, SimSettings(min_ok_operations=0), self.data_dir)
        self.workload = self.world.run(start(self.world))

    def _step(self, seconds: float = STEP_S) -> None:
        assert self.world is not None
        self.world.run_for(seconds)
        self.ops = [t for t in self.ops if not t.done()]

    def _background(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        assert self.world is not None
        self.ops.append(self.world.loop.create_task(coroutine))
        self._step()

    # -- the workload ---------------------------------------------------------------
    @precondition(lambda self: len(self.ops) < OPS_IN_FLIGHT_MAX)
    @rule(declined=st.booleans(), awaiting=st.booleans())
    def submit_saga(self, declined: bool, awaiting: bool) -> None:
        saga_id, definition = self.workload.saga()
        if declined:
            definition["steps"][-2]["action"]["path"] = "/charges/declined"
        elif awaiting and all(s.get("await") is None for s in definition["steps"]):
            definition["steps"].insert(1, {"name": "approval", "await": "approved", "timeout_s": 4})
        self._background(self.workload.submit_saga("h", saga_id, definition))

    @precondition(lambda self: len(self.ops) < OPS_IN_FLIGHT_MAX)
    @rule(no_vote=st.booleans())
    def submit_transaction(self, no_vote: bool) -> None:
        self._background(self.workload.submit_transaction("h", *self.workload.transaction(no_vote)))

    @precondition(lambda self: len(self.ops) < OPS_IN_FLIGHT_MAX)
    @rule()
    def use_the_registry(self) -> None:
        self._background(self.workload.registry("h"))

    # -- faults ------------------------------------------------------------------------
    @rule(node=st.sampled_from(NODES))
    def crash(self, node: str) -> None:
        self.world.run(self.world.cluster.crash(node))
        self._step()

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: str) -> None:
        self.world.run(self.world.cluster.restart(node))
        self._step()

    @rule(node=st.sampled_from(NODES))
    def stall(self, node: str) -> None:
        self.world.cluster.stall(node)
        self._step()

    @rule(node=st.sampled_from(NODES))
    def resume(self, node: str) -> None:
        self.world.cluster.resume(node)
        self._step()

    @rule(node=st.sampled_from(NODES))
    def isolate(self, node: str) -> None:
        self.world.cluster.partition([[node], [n for n in NODES if n != node]])
        self._step()

    @rule()
    def heal(self) -> None:
        self.world.cluster.heal()
        self._step()

    @rule(service=st.sampled_from(SERVICES))
    def crash_participant(self, service: str) -> None:
        self.world.participants[service].crash()
        self._step()

    @rule(service=st.sampled_from(SERVICES))
    def restart_participant(self, service: str) -> None:
        self.world.participants[service].restart()
        self._step()

    @rule(node=st.sampled_from(NODES))
    def flap_links(self, node: str) -> None:
        self.world.network.reset_node(self.world.cluster.slots[node].address)
        self._step()

    @rule(node=st.sampled_from(NODES), seconds=st.floats(0.5, 6.0))
    def slow_disk(self, node: str, seconds: float) -> None:
        disk = self.world.cluster.slots[node].disk
        disk.slow_until = max(disk.slow_until, self.world.clock.now_s + seconds)
        self._step()

    @rule(node=st.sampled_from(NODES), offset_s=st.floats(-SKEW_BOUND_S / 2, SKEW_BOUND_S / 2))
    def skew_clock(self, node: str, offset_s: float) -> None:
        self.world.clock.offsets[node] = offset_s
        self._step()

    @rule(reach=st.sets(st.sampled_from(NODES), min_size=1, max_size=2) | st.none())
    def clients_reach(self, reach) -> None:  # type: ignore[no-untyped-def]
        self.world.client_reach = reach
        self._step()

    @rule(seconds=st.floats(0.1, 6.0))
    def let_time_pass(self, seconds: float) -> None:
        self._step(seconds)

    # -- what must hold after every step ---------------------------------------------------
    @invariant()
    def one_leader_per_term_applied_entries_never_change_no_stale_read(self) -> None:
        if self.world is not None:
            assert self.world.cluster.violations == [], self.world.cluster.violations

    @invariant()
    def no_errors(self) -> None:
        if self.world is not None:
            assert self.world.cluster.errors == [], self.world.cluster.errors

    def teardown(self) -> None:
        world = self.world
        try:
            if world is None:
                return
            world.client_reach = None
            world.clock.offsets.clear()
            for participant in world.participants.values():
                participant.restart()
            for slot in world.cluster.slots.values():
                slot.disk.slow_until = 0.0
            if self.ops:
                world.run(asyncio.wait(self.ops, timeout=BACKGROUND_WAIT_S))
            world.run(finish(world, self.workload))
            results = judge(world)
            failed = [r for r in results if not r.passed and r.verdict == "fail"]
            assert run_passed(results), f"seed {world.seed}\n{render_table(results)}\n" + "\n".join(
                f"{r.name}: {r.violations[:3]}" for r in failed
            )
        finally:
            if world is not None:
                world.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)


SimulatedCluster.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_simulated_cluster = SimulatedCluster.TestCase
