"""The simulation with transition workers (chaos/sim/workers.py): the real
dispatcher and worker agent on simulated streams, under worker kills,
pauses and partitions besides the node faults. Every checker still holds;
the calls are made by the workers (never by a node in remote mode); leases
are lost, their calls leased again, and the reports that come too late are
dropped (a dispatcher that accepted one would be caught); a seed replays
exactly; and the seed decides the mode when the settings leave it open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from coordinator.chaos.sim import SimSettings, simulate
from coordinator.chaos.sim.run import seed_workers
from coordinator.cluster.core.executor_settings import ExecutorSettings
from coordinator.cluster.executor.dispatch import Dispatcher

REPO = Path(__file__).resolve().parents[2]
REMOTE = ExecutorSettings(mode="remote")
WORKER_FAULTS = ("worker-kill", "worker-pause", "worker-partition", "crash", "partition-leader")


def test_remote_mode_with_worker_faults_passes_every_checker_and_loses_leases():
    settings = SimSettings(
        duration_s=20.0, workers=2, executor=REMOTE, faults=WORKER_FAULTS, fault_interval_s=(0.5, 1.5)
    )
    result = simulate(23, settings)
    assert result.passed, result.summary()
    stats = result.stats
    assert stats["executor_mode"] == "remote" and stats["workers"] == 2
    assert sum(stats["worker_calls"].values()) > 50 and stats["node_calls"] == {}, stats
    kinds = {fault["kind"] for fault in result.history.faults}
    assert {"worker-kill", "worker-pause", "worker-partition"} <= kinds, kinds
    # What every node process's dispatcher counted (executor.dispatcher.counters()):
    assert stats["dispatched_total"] > 50 and stats["leases_lost_total"] >= 1, stats
    assert stats["redispatches_total"] >= 1, stats
    # Reports reached the leader for calls their session no longer held, and
    # were dropped (some by a session still open: reports_dropped_total).
    assert stats["late_reports"] >= 1 and stats["reports_dropped_total"] >= 1, stats
    assert stats["worker_streams_broken"] >= 1, stats
    assert stats["worker_sessions"] > stats["worker_starts"], stats  # workers connected again


def test_a_seed_the_command_runs_with_workers_leases_calls_and_loses_leases():
    """Seed 13 as ``coordinator simulate --seed 13 --duration 15`` runs it:
    the seed gives it 3 workers in remote mode, and the feature is exercised."""
    settings = SimSettings(duration_s=15.0, workers=None)
    assert (seed_workers(13, settings).workers, seed_workers(13, settings).executor.mode) == (3, "remote")
    result = simulate(13, settings)
    assert result.passed, result.summary()
    stats = result.stats
    assert "remote mode, 3 workers" in result.summary().splitlines()[0]
    assert stats["dispatched_total"] > 50 and stats["node_calls"] == {}, stats
    assert len(stats["worker_calls"]) == 3, stats
    assert stats["leases_lost_total"] >= 1 and stats["redispatches_total"] >= 1, stats


def test_a_dispatcher_that_accepts_a_late_report_is_caught(monkeypatch):
    """Plant the bug: a report whose session no longer holds its call
    completes the call wherever it now is (queued again, or leased to
    another worker). With one worker cut off and paused, its late reports
    arrive while their calls wait for it again: late_report_accepted."""
    report = Dispatcher.report

    def accepts_late_reports(self, session, message):
        if message.dispatch_id not in session.held:
            calls = [*self._queue.values(), *(c for s in self.sessions.values() for c in s.held.values())]
            for call in calls:
                if call.dispatch.dispatch_id == message.dispatch_id and not call.future.done():
                    session.completed += 1
                    call.future.set_result(message.outcome_of())
                    return
        report(self, session, message)

    monkeypatch.setattr(Dispatcher, "report", accepts_late_reports)
    settings = SimSettings(
        duration_s=20.0,
        workers=1,
        executor=REMOTE,
        faults=("worker-partition", "worker-pause"),
        fault_interval_s=(0.5, 1.5),
    )
    result = simulate(0, settings)
    assert not result.passed
    violations = [v for r in result.failed() if r.name == "sim_invariants" for v in r.violations]
    assert violations and {v["kind"] for v in violations} == {"late_report_accepted"}, result.summary()
    monkeypatch.undo()
    honest = simulate(0, settings)
    assert honest.passed, honest.summary()
    assert honest.stats["late_reports"] >= 1, honest.stats


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


def test_a_seed_with_workers_replays_under_another_hash_seed():
    """Another process, another PYTHONHASHSEED: the same trace (nothing the
    workers do follows the order of a set)."""
    settings = "SimSettings(duration_s=4.0, workers=3, executor=ExecutorSettings(mode='remote'))"
    code = (
        "import logging; logging.disable(logging.CRITICAL); from coordinator.chaos.sim import simulate, SimSettings; "
        "from coordinator.cluster.core.executor_settings import ExecutorSettings; "
        f"print(simulate(24, {settings}).trace_digest)"
    )
    digests = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
        ).stdout.split()[-1]
        for hash_seed in ("1", "2")
    ]
    assert digests[0] == digests[1]


def test_the_seed_decides_the_workers_when_the_settings_leave_it_open():
    decided = [seed_workers(seed, SimSettings(workers=None)) for seed in range(300)]
    with_workers = [s for s in decided if s.workers]
    assert 60 <= len(with_workers) <= 140  # about one in three
    assert {s.executor.mode for s in with_workers} == {"remote", "auto"}
    assert all(s.executor.mode == "local" for s in decided if not s.workers)
    assert seed_workers(5, SimSettings()) == SimSettings()  # given: unchanged
    assert seed_workers(5, SimSettings(workers=None)) == seed_workers(5, SimSettings(workers=None))
