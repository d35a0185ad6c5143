"""One simulated run from its seed, judged by the chaos checkers.

    result = simulate(7)                       # SimSettings() by default
    assert result.passed, result.summary()
    assert simulate(7).trace_digest == result.trace_digest    # replays exactly

The run: start the cluster, register the participants, run the workload
under the nemesis for ``duration_s`` simulated seconds, heal everything
(every node running, the network whole, no more message faults), wait
until every workflow is terminal, read them back on the leader, wait for
every node to apply the same entries and read their digests; then every
checker of :mod:`coordinator.chaos.checkers` runs on the History unchanged, next to
the simulation's own invariants (one leader per term, applied entries never
change) and errors (a tick or an API call that raised, a snapshot that
could not be loaded).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coordinator.chaos.checkers import FAIL, PASS, VIOLATIONS_MAX, CheckResult, render_table, run_all, run_passed
from coordinator.chaos.history import History
from coordinator.cluster.api import operations

from .client import SimClient, SimWorkload
from .invariants import deadline_violations, flap_violations
from .nemesis import SKEW_BOUND_S, SimNemesis
from .settings import SimSettings
from .world import World

__all__ = ["SimResult", "finish", "judge", "simulate", "simulation_results", "start"]

LIST_LIMIT = operations.LIST_LIMIT_MAX
LINEARIZABILITY_TIME_LIMIT_S = 10.0
QUIESCE_S_MAX = 60.0
# After healing, a leader must confirm its term (its first barrier commits)
# within this long, and answer the final reads within READ_BACK_S_MAX.
LEADER_AFTER_HEAL_S_MAX = 30.0
READ_BACK_S_MAX = 60.0
SETUP_S_MAX = 60.0
WORKER_SEEDS_SHARE = 1 / 3


@dataclass
class SimResult:
    seed: int
    passed: bool
    results: list[CheckResult]
    trace_digest: str
    virtual_s: float
    real_s: float
    stats: dict[str, Any]
    history: History
    trace_lines: list[str] = field(default_factory=list)

    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == FAIL]

    def executor_text(self) -> str:
        """``local mode``, or ``remote mode, 2 workers``: who made the participant calls."""
        workers = self.stats.get("workers", 0)
        if not workers:
            return "local mode"
        return f"{self.stats['executor_mode']} mode, {workers} worker{'' if workers == 1 else 's'}"

    def summary(self) -> str:
        lines = [
            f"simulation seed {self.seed}: {'PASSED' if self.passed else 'FAILED'} "
            f"({self.virtual_s:.1f} simulated s in {self.real_s:.2f} real s, {self.executor_text()}, "
            f"trace {self.trace_digest})",
            render_table(self.results),
            f"stats {self.stats}",
        ]
        for result in self.failed():
            for violation in result.violations[:5]:
                lines.append(f"  {result.name}: {str(violation)[:400]}")
        return "\n".join(lines)


def _result(name: str, checked: int, violations: list[dict[str, Any]]) -> CheckResult:
    verdict = FAIL if violations else PASS
    return CheckResult(name, verdict == PASS, checked, violations[:VIOLATIONS_MAX], verdict, len(violations))


def simulation_results(world: World) -> list[CheckResult]:
    """The simulation's own checks: invariants seen as the run went, and errors."""
    cluster = world.cluster
    errors = [{"kind": "error", "message": message} for message in cluster.errors]
    return [
        _result("sim_invariants", cluster.applied_count + len(cluster.leaders_by_term), list(cluster.violations)),
        _result("sim_errors", cluster.applied_count, errors),
    ]


async def _register_participants(world: World, workload: SimWorkload) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETUP_S_MAX
    for name, participant in world.participants.items():
        body = json.dumps({"url": participant.url})
        while True:
            outcome = await workload.record(
                "setup",
                "registry_put",
                name,
                participant.url,
                lambda n, b=body, s=name: _url(operations.put_service(n, s, b)),
            )
            if outcome == "ok":
                break
            if loop.time() > deadline:
                raise RuntimeError(f"could not register {name} within {SETUP_S_MAX:g} s: no leader")


async def _url(call: Any) -> str:
    return (await call)["url"]


async def _settle(world: World, workload: SimWorkload) -> None:
    """Until every submitted workflow that exists is terminal on the leader (bounded)."""
    loop = asyncio.get_running_loop()
    healed = loop.time()
    deadline = healed + world.settings.settle_s_max
    led = False
    while loop.time() < deadline:
        await asyncio.sleep(1.0)
        leader_id = world.cluster.leader()
        node = world.cluster.node(leader_id) if leader_id else None
        if node is None:
            if not led and loop.time() > healed + LEADER_AFTER_HEAL_S_MAX:
                world.cluster._error(
                    f"liveness: no leader confirmed its term within {LEADER_AFTER_HEAL_S_MAX:g} s "
                    f"after healing ({_leaders_view(world)})"
                )
                return
            continue
        led = True
        state = node.state
        pending = [
            i for i in workload.sagas if i in state.sagas.items and not state.sagas.is_terminal(state.sagas.items[i])
        ]
        pending += [
            i
            for i in workload.transactions
            if i in state.transactions.items and not state.transactions.is_terminal(state.transactions.items[i])
        ]
        if not pending:
            return


def _leaders_view(world: World) -> str:
    views = []
    for node_id in world.cluster.ids:
        node = world.cluster.node(node_id)
        if node is not None:
            views.append(
                f"{node_id}: raft leader {node.log.is_leader()}, term {node.log.term()}, confirmed {node.leader_term}"
            )
    return "; ".join(views)


async def _read_back(world: World, client: SimClient) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READ_BACK_S_MAX
    for kind, plural in (("saga", "sagas"), ("tx", "transactions")):
        while True:
            outcome, value = await client.call(lambda n, k=kind: operations.list_workflows(n, k, limit=LIST_LIMIT))
            if outcome == "ok":
                for workflow in value[plural]:
                    world.history.record_workflow(workflow)
                break
            if loop.time() > deadline:
                world.cluster._error(
                    f"liveness: the {plural} could not be read within {READ_BACK_S_MAX:g} s after "
                    f"healing ({_leaders_view(world)})"
                )
                return


async def _digests(world: World) -> None:
    """Once every node applied the leader's commit index (bounded), each node's digest."""
    loop = asyncio.get_running_loop()
    cluster = world.cluster
    deadline = loop.time() + QUIESCE_S_MAX
    while loop.time() < deadline:
        leader_id = cluster.leader()
        raft = cluster.node(leader_id).log.raft() if leader_id else None
        if raft is not None:
            commit = raft.raftCommitIndex
            if all(cluster.applied_index(i) == commit for i in cluster.ids):
                break
        await asyncio.sleep(0.2)
    for node_id in cluster.ids:
        node = cluster.node(node_id)
        digest = node.state_digest()["state_digest"] if node is not None else None
        world.history.record_digest(node_id, digest)
        world.trace.event("digest", node_id, digest)


async def start(world: World) -> SimWorkload:
    """Start every node and register the participants; the workload of the run."""
    settings = world.settings
    client = SimClient(world, world.rng_clients, attempts=4, budget_s=8.0)
    workload = SimWorkload(
        world, client, world.rng_workload, rate_per_s=settings.rate_per_s, processes=settings.processes
    )
    await world.cluster.start_all()
    world.workers.start_all()
    await _register_participants(
        world, SimWorkload(world, _patient(world), world.rng_workload, rate_per_s=1, processes=1)
    )
    return workload


def _patient(world: World) -> SimClient:
    return SimClient(world, world.rng_clients, attempts=10, budget_s=20.0)


async def finish(world: World, workload: SimWorkload) -> None:
    """Stop the faults, let every workflow finish, and record what the checkers read."""
    world.quiet()
    await world.cluster.heal_all()
    world.workers.heal_all()
    world.trace.event("healed")
    await _settle(world, workload)
    await _read_back(world, _patient(world))
    await _digests(world)
    world.history.add_effects(e for p in world.participants.values() for e in p.service.effects)
    _check_deadlines(world)
    _check_flaps(world)
    _check_workers(world)


def _check_workers(world: World) -> None:
    """With workers: what every node process's dispatcher counted over the
    run, and in remote mode no participant call made by a node."""
    if not world.workers.workers:
        return
    counts = dict(world.cluster.dispatcher_totals)
    for node_id in world.cluster.ids:
        node = world.cluster.node(node_id)
        if node is not None:
            for name, value in node.executor.dispatcher.counters().items():
                if name.endswith("_total"):
                    counts[name] = counts.get(name, 0) + value
    world.dispatcher_counts = counts
    by_nodes = {c: n for c, n in world.links.calls_by_caller.items() if c in world.cluster.ids}
    if world.settings.executor.mode == "remote" and by_nodes:
        world.cluster.violation(
            "leader_called_participant",
            f"in remote mode the nodes made participant calls themselves: {by_nodes}",
            calls=by_nodes,
        )


def _check_deadlines(world: World) -> None:
    """Against the final state of the leader (else any node): no deadline fired too early."""
    cluster = world.cluster
    node_id = cluster.leader() or next(iter(cluster.running()), None)
    node = cluster.node(node_id) if node_id else None
    if node is None:
        return
    with node.log.reading():
        checked, violations = deadline_violations(node.state, cluster.stamps, SKEW_BOUND_S)
    world.deadlines_checked = checked
    for violation in violations:
        cluster.violation(violation.pop("kind"), violation.pop("message"), **violation)


def _check_flaps(world: World) -> None:
    stats, violations = flap_violations(
        world.flap_episodes, world.cluster.candidacies, [(a, b) for a, b in world.fault_windows], len(world.cluster.ids)
    )
    world.flap_stats = stats
    for violation in violations:
        world.cluster.violation(violation.pop("kind"), violation.pop("message"), **violation)


def judge(world: World) -> list[CheckResult]:
    """Every chaos checker on the run's History, then the simulation's own checks."""
    return run_all(
        world.history, min_ok_operations=world.settings.min_ok_operations, time_limit_s=LINEARIZABILITY_TIME_LIMIT_S
    ) + simulation_results(world)


async def _scenario(world: World) -> None:
    settings = world.settings
    loop = asyncio.get_running_loop()
    workload = await start(world)
    until = loop.time() + settings.duration_s
    nemesis = SimNemesis(world, world.rng_faults, settings.faults, settings.fault_interval_s)
    await asyncio.gather(workload.run(until), nemesis.run(until))
    await nemesis.stop()
    await finish(world, workload)


def seed_workers(seed: int, settings: SimSettings) -> SimSettings:
    """``settings`` with its workers decided: as given, or (``workers`` None)
    by the seed, from a stream of its own - about one seed in three runs
    with 1-3 workers, three in four of those in remote mode, else auto - so
    the seed's other draws stay what they were."""
    if settings.workers is not None:
        return settings
    rng = random.Random(f"{seed}:workers")
    if rng.random() >= WORKER_SEEDS_SHARE:
        return replace(settings, workers=0)
    mode = "remote" if rng.random() < 0.75 else "auto"
    return replace(settings, workers=rng.randint(1, 3), executor=replace(settings.executor, mode=mode))


def simulate(seed: int, settings: SimSettings | None = None) -> SimResult:
    """Run the whole scenario for ``seed``; the checkers' verdicts and the trace digest."""
    settings = seed_workers(seed, settings or SimSettings())
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix=f"coordinator-sim-{seed}-"))
    world = World(seed, settings, data_dir)
    try:
        world.run(_scenario(world))
        virtual_s = world.clock.now_s
        if threading.active_count() > world.threads_at_start:
            world.cluster._error(f"a thread was started: {[t.name for t in threading.enumerate()]}")
    finally:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    results = judge(world)
    return SimResult(
        seed=seed,
        passed=run_passed(results),
        results=results,
        trace_digest=world.trace.digest(),
        virtual_s=virtual_s,
        real_s=time.perf_counter() - started,
        stats=world_stats(world),
        history=world.history,
        trace_lines=list(world.trace.lines) if settings.trace_lines else [],
    )


def world_stats(world: World) -> dict[str, Any]:
    cluster, network = world.cluster, world.network
    return {
        "operations": world.history.outcome_counts(),
        "faults": len(world.history.faults),
        "applied": cluster.applied_count,
        "terms": max(cluster.leaders_by_term, default=0),
        "messages": {"sent": network.sent, "delivered": network.delivered, "lost": network.lost},
        "participant_calls": world.links.calls,
        "effects": len(world.history.effects),
        "restarts": sum(s.incarnation - 1 for s in cluster.slots.values()),
        "lost_journal_bytes": sum(sum(s.lost_bytes) for s in cluster.slots.values()),
        "reapplied_truncations": world.truncations.count,
        "trace_events": world.trace.events,
        "elections": len(cluster.candidacies),
        "elections_per_min": round(len(cluster.candidacies) * 60 / world.clock.now_s, 1) if world.clock.now_s else 0,
        **getattr(world, "flap_stats", {}),
        "participant_crashes": sum(p.crashes for p in world.participants.values()),
        "disk_stalls": sum(s.disk.stalls for s in cluster.slots.values()),
        "deadlines_checked": getattr(world, "deadlines_checked", 0),
        "stale_reads_checked": world.register_watch.reads_checked,
        **_worker_stats(world),
    }


def _worker_stats(world: World) -> dict[str, Any]:
    """With workers: the mode, how many, and what the dispatchers counted (the nodes alive at the end)."""
    if not world.workers.workers:
        return {}
    return {
        "executor_mode": world.settings.executor.mode,
        "workers": len(world.workers.workers),
        "worker_calls": {c: n for c, n in sorted(world.links.calls_by_caller.items()) if c.startswith("w")},
        "node_calls": {c: n for c, n in sorted(world.links.calls_by_caller.items()) if not c.startswith("w")},
        **getattr(world, "dispatcher_counts", {}),
        **world.workers.counters(),
    }
