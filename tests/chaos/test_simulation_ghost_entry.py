"""A command that outlives its leader must not take effect later (seed 1016).

Found by ``coordinator simulate --seed 1016``: a registry PUT was proposed
by a leader at the very moment it stepped down (cut off by a partition).
PySyncObj 0.3.17 keeps a command in its queue while no leader is known and
forwards it to the next leader it learns of; the client, told "outcome
unknown", had meanwhile retried the PUT on the new leader (ok) and then
deleted the service (ok). When the partition healed, the old node forwarded
the queued PUT, the new leader appended it in its own term, and a
linearizable read answered the deleted value: a stale read after an
acknowledged write.

The fix puts every entry in the envelope of the term its leader proposed it
in (``coordinator.consensus.codec.encode_in_term``); the applier refuses an envelope
whose term is not the term of the log entry holding it, on every node alike.

The scenario drives that schedule's essence on the real PySyncObj nodes of
the simulator: the ghost is handed to the old leader's PySyncObj exactly as
``PySyncObjLog._send_entry`` hands over a command while it leads in term T
(the race it lost - the tick that would have appended it came after the
step-down - is what the partition and the injection stand for). The same
ghost without the envelope, as entries were written before the fix, shows
the hazard is real: PySyncObj forwards it and it is applied.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from coordinator.chaos.sim import SimSettings, World
from coordinator.chaos.sim.run import start
from coordinator.cluster.api import operations
from coordinator.cluster.core.errors import NotFound
from coordinator.consensus import Command, encode_command
from coordinator.consensus.codec import encode_in_term

NODES = ("n1", "n2", "n3")
NAME = "ghost"
OLD_URL, NEW_URL = "http://127.0.0.1:20004", "http://127.0.0.1:20039"


def _until(world: World, condition, timeout_s: float, what: str) -> None:
    if not world.run_until(condition, timeout_s):
        pytest.fail(f"scenario: {what} did not happen within {timeout_s:g} simulated s")


def _on(world: World, node_id: str, call):
    """Run an API operation inside ``node_id``'s process; its answer or error code."""
    node = world.cluster.node(node_id)

    async def run():
        try:
            return await call(node)
        except Exception as error:  # noqa: BLE001 - the answer is what the scenario checks
            return getattr(error, "code", repr(error))

    return world.run(world.loop.create_task(run(), context=world.cluster.slots[node_id].process.context))


def _ghost_read(enveloped: bool, seed: int = 3) -> tuple[object, list[int]]:
    """The schedule; returns the linearizable read after it and each node's stale-entry count."""
    data_dir = Path(tempfile.mkdtemp(prefix="coordinator-sim-ghost-"))
    world = World(seed, SimSettings(faults=(), min_ok_operations=0), data_dir)
    try:
        world.quiet()
        world.run(start(world))
        cluster = world.cluster
        _until(world, lambda: cluster.leader() is not None, 10, "a first leader")
        old = cluster.leader()
        raft = cluster.node(old).log.raft()
        term = raft.raftCurrentTerm
        others = [n for n in NODES if n != old]
        cluster.partition([[old], others])
        _until(world, lambda: not cluster.node(old).log.is_leader(), 10, "the cut-off leader stepping down")
        # What _send_entry handed PySyncObj while `old` led in `term`; its tick came too late.
        put = encode_command(Command("service.put", {"name": NAME, "url": OLD_URL}, at_ms=1))
        raft.apply_entry(encode_in_term(term, put) if enveloped else put, callback=None)
        _until(world, lambda: cluster.leader() in others, 15, "a leader on the majority side")
        new = cluster.leader()
        body = json.dumps({"url": NEW_URL})
        assert _on(world, new, lambda n: operations.put_service(n, NAME, body))["url"] == NEW_URL
        assert _on(world, new, lambda n: operations.delete_service(n, NAME))["url"] == NEW_URL
        cluster.heal()
        world.run_for(5.0)  # the old node learns the leader and forwards what it queued
        leader = cluster.leader()
        assert leader is not None
        read = _on(world, leader, lambda n: operations.get_service(n, NAME, stale=None))
        stale = [cluster.node(n).log.stats.stale_term_entries for n in NODES]
        assert world.cluster.errors == [], world.cluster.errors
        return read, stale
    finally:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_command_queued_past_its_leadership_is_refused_by_every_node():
    read, stale = _ghost_read(enveloped=True)
    assert read == NotFound.code, f"a linearizable read after the acknowledged delete answered {read!r}"
    assert stale == [1, 1, 1], "the ghost must reach the log and be refused on every node"


def test_without_the_term_envelope_the_ghost_is_applied():
    """The hazard the envelope closes, kept visible: PySyncObj forwards the
    queued command to the later leader, which applies it."""
    read, stale = _ghost_read(enveloped=False)
    assert isinstance(read, dict) and read["url"] == OLD_URL, read
    assert stale == [0, 0, 0]
