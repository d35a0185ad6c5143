"""Bugs the simulation found, each as a scenario driven step by step.

A bug still open is marked ``xfail(strict=True)``: today the scenario shows
it; once it is fixed the test passes, strict xfail turns that into a
failure, and the marker must go. A fixed bug keeps its scenario as a
regression test. A scenario that cannot set itself up fails with
``pytest.fail`` (not an AssertionError), so it is never taken for the bug.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from coordinator.chaos.sim import SimSettings, World
from coordinator.chaos.sim.run import simulate, start
from coordinator.cluster.api import operations
from coordinator.consensus import RaftSettings

NODES = ("n1", "n2", "n3")
# Compact after 10 entries: the new leader's log soon starts past the old leader's.
COMPACT_OFTEN = RaftSettings(fsync=False, compaction_min_entries=10, compaction_min_time_s=3.0)
QUIET = dict(faults=(), min_ok_operations=0)
SERVICES = 60
LEAD_AGAIN_ROUNDS_MAX = 8


def _world(seed: int, **settings) -> tuple[World, Path]:
    data_dir = Path(tempfile.mkdtemp(prefix="coordinator-sim-bug-"))
    world = World(seed, SimSettings(raft=COMPACT_OFTEN, **QUIET, **settings), data_dir)
    world.quiet()
    world.run(start(world))
    return world, data_dir


def _until(world: World, condition, timeout_s: float, what: str) -> None:
    if not world.run_until(condition, timeout_s):
        pytest.fail(f"scenario: {what} did not happen within {timeout_s:g} simulated s")


def _put(world: World, node_id: str, name: str, url: str) -> asyncio.Task:
    """A registry write sent straight to ``node_id`` (its outcome does not matter here)."""
    node = world.cluster.node(node_id)

    async def put() -> str:
        try:
            await operations.put_service(node, name, json.dumps({"url": url}))
        except Exception as error:  # noqa: BLE001 - not leader, outcome unknown: an answer like another
            return getattr(error, "code", repr(error))
        return "ok"

    return world.loop.create_task(put(), context=world.cluster.slots[node_id].process.context)


def _stale_leader_meets_a_snapshot(world: World) -> tuple[str, str]:
    """Isolate the leader while it appends writes that cannot commit; let the
    others elect a leader, commit and compact; heal. The old leader is sent
    a snapshot. Returns (old leader, new leader)."""
    cluster = world.cluster
    _until(world, lambda: cluster.leader() is not None, 10, "a first leader")
    old = cluster.leader()
    others = [n for n in NODES if n != old]
    cluster.partition([[old], others])
    for n in range(2):
        _put(world, old, f"stale-{n}", f"http://127.0.0.1:{30000 + n}")
    world.run_for(0.3)
    _until(world, lambda: cluster.leader() not in (None, old), 15, "a leader on the majority side")
    new = cluster.leader()
    for n in range(SERVICES):  # a state of ~120 KB: its snapshot goes out in several chunks
        _put(world, new, f"fresh-{n}", f"http://127.0.0.1:{31000 + n}/{'x' * 1990}")
        world.run_for(0.05)
    _until(world, lambda: cluster.node(new).log.snapshots.taken > 0, 10, "a snapshot on the new leader")
    world.run_for(1.0)
    cluster.heal()
    _until(world, lambda: cluster.node(old).log.snapshots.restored > 0, 15, "the old leader loading a snapshot")
    world.run_for(2.0)
    return old, new


def test_a_former_leader_does_not_apply_its_uncommitted_entries():
    """Found by the simulation: PySyncObj 0.3.17 let the first chunk of a
    snapshot (an append_entries without prevLogIdx) set the follower's commit
    index to min(leader commit, its own last index), so a former leader
    applied entries of its old term that never committed. Guarded since
    coordinator.consensus.pysyncobj_log._snapshot_commit; failed before it."""
    world, data_dir = _world(21)
    try:
        _stale_leader_meets_a_snapshot(world)
        assert world.cluster.violations == [], world.cluster.violations
        assert world.cluster.errors == [], world.cluster.errors
    finally:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _lead_again(world: World, node_id: str) -> None:
    """Stall whoever else leads until ``node_id`` wins an election (bounded)."""
    cluster = world.cluster
    for _ in range(LEAD_AGAIN_ROUNDS_MAX):
        _until(
            world,
            lambda: cluster.node(node_id).log.is_leader() or cluster.leader() not in (None, node_id),
            15,
            "a leader",
        )
        if cluster.node(node_id).log.is_leader():
            return
        other = cluster.leader()
        cluster.stall(other)
        world.run_for(3.0)
        cluster.resume(other)
        world.run_for(1.0)
    pytest.fail(f"scenario: {node_id} did not lead again in {LEAD_AGAIN_ROUNDS_MAX} elections")


def test_a_leader_whose_entries_in_flight_were_lost_commits_again():
    """Found by the simulation in the group-commit Batcher while it was being
    written (fixed in 5974111, "A leader that steps down answers its in-flight
    proposals at once"): entries in flight when a leader was cut off were never
    answered once a snapshot moved its applied index past them, so the pipeline
    stayed full; when the node led again it sent nothing, its leadership
    barrier never committed and every write timed out."""
    world, data_dir = _world(21)
    try:
        old, _ = _stale_leader_meets_a_snapshot(world)
        _lead_again(world, old)
        world.run_for(10.0)
        assert world.cluster.node(old).leader_term is not None, "the leadership barrier never committed"
        outcome = world.run(_put(world, old, "after", "http://127.0.0.1:32000"))
        assert outcome == "ok"
    finally:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)


DENSE_DISK_FAULTS = dict(duration_s=10, faults=("slow-disk", "crash", "power-loss-all"), fault_interval_s=(0.5, 1.5))


@pytest.mark.parametrize("seed", [11, 20, 27])
def test_a_follower_never_loses_an_entry_it_acknowledged_when_it_is_sent_again(seed):
    """Found by the simulation's slow disks and power losses: PySyncObj 0.3.17
    answers an AppendEntries that finds the follower's log longer than
    prevLogIdx by deleting every entry past it and appending the message's
    entries again, even identical, acknowledged ones; the delete record could
    be durable while the re-appended entries were not, so a power loss lost
    entries the follower had acknowledged (``acknowledged_entry_lost`` on these
    three seeds before the fix). The journal now cuts only where the logs
    conflict (consensus/journal.py) and the transport caps the commit index at
    the message's last entry."""
    result = simulate(seed, SimSettings(**DENSE_DISK_FAULTS))
    assert result.passed, result.summary()


def test_an_acknowledgement_held_behind_a_slow_sync_dies_with_its_process():
    """Found by the sweep (seed 4531): a node in a slow fsync had noted an
    acknowledgement that was to leave when the sync ended, then lost power
    before it left; the simulator kept the note, and after the node had
    restarted and received the same entries again, the next power loss was
    judged against an acknowledgement that never left (a false
    ``acknowledged_entry_lost``). The network now drops, when a node dies,
    the acknowledgements it had not sent (chaos/sim/network.py)."""
    result = simulate(4531)
    assert result.passed, result.summary()
