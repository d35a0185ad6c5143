"""The simulation with transition workers (chaos/sim/workers.py): the real
dispatcher and worker agent on simulated links, under worker kills and
pauses besides the node faults. Every checker still holds; the calls are
made by the workers (never by a node in remote mode); leases are lost and
their calls leased again; a seed replays exactly; and the seed decides the
mode when the settings leave it open."""

from __future__ import annotations

from coordinator.chaos.sim import SimSettings, simulate
from coordinator.chaos.sim.run import seed_workers
from coordinator.cluster.core.executor_settings import ExecutorSettings

REMOTE = ExecutorSettings(mode="remote")
WORKER_FAULTS = ("worker-kill", "worker-pause", "crash", "partition-leader")


def test_remote_mode_with_worker_faults_passes_every_checker_and_loses_leases():
    settings = SimSettings(
        duration_s=20.0, workers=2, executor=REMOTE, faults=WORKER_FAULTS, fault_interval_s=(0.5, 1.5)
    )
    result = simulate(21, settings)
    assert result.passed, result.summary()
    stats = result.stats
    assert stats["executor_mode"] == "remote" and stats["workers"] == 2
    assert sum(stats["worker_calls"].values()) > 50 and stats["node_calls"] == {}, stats
    kinds = {fault["kind"] for fault in result.history.faults}
    assert {"worker-kill", "worker-pause"} <= kinds, kinds
    assert stats["leases_lost_total"] >= 1 and stats["redispatches_total"] >= 1, stats


def test_auto_mode_falls_back_to_the_leader_while_no_worker_can_take_a_call():
    settings = SimSettings(
        duration_s=15.0,
        workers=1,
        executor=ExecutorSettings(mode="auto"),
        faults=("worker-kill",),
        fault_interval_s=(0.5, 1.0),
    )
    result = simulate(22, settings)
    assert result.passed, result.summary()
    assert result.stats["worker_calls"] and result.stats["node_calls"], result.stats  # both made calls


def test_a_seed_with_workers_replays_exactly():
    settings = SimSettings(duration_s=6.0, workers=2, executor=REMOTE, trace_lines=1_000_000)
    first, second = simulate(23, settings), simulate(23, settings)
    assert first.trace_digest == second.trace_digest
    assert any("worker-session" in line for line in first.trace_lines)


def test_the_seed_decides_the_workers_when_the_settings_leave_it_open():
    decided = [seed_workers(seed, SimSettings(workers=None)) for seed in range(300)]
    with_workers = [s for s in decided if s.workers]
    assert 60 <= len(with_workers) <= 140  # about one in three
    assert {s.executor.mode for s in with_workers} == {"remote", "auto"}
    assert all(s.executor.mode == "local" for s in decided if not s.workers)
    assert seed_workers(5, SimSettings()) == SimSettings()  # given: unchanged
    assert seed_workers(5, SimSettings(workers=None)) == seed_workers(5, SimSettings(workers=None))
