"""``coordinator chaos``: a real cluster under a real workload while faults
are injected, then every checker on what the clients and participants saw.

The seed decides the fault schedule and the workload; it is printed first.
When ``partition`` is among the faults and this process may create network
namespaces (root), each node runs in its own (coordinator.chaos.netns) and the
participants listen on the run's bridge; otherwise everything stays on
loopback and the run says that it skipped partitions, and why.

The flags are parsed by ``coordinator chaos`` (coordinator.cluster.cli);
``--aim``, ``--fault-interval`` and ``--partition-s`` tune the nemesis.

``--workers N`` runs the cluster in remote executor mode with N transition
workers (w1..wN, in this process's network namespace: they reach the nodes
and the participants as the clients do), adds ``worker-kill`` and
``worker-pause`` to the default faults, and adds the ``workers`` checker:
calls were leased to workers, and no participant call came from a node
process (each call's sender is found by its connection:
coordinator.chaos.callers). Without ``--workers`` the worker faults, when
named (``make soak`` names every fault), are skipped: said first and kept
in the report's ``skipped_faults``, as partitions without namespaces are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from coordinator.client import Coordinator, CoordinatorError
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.launcher.local import LocalCluster

from . import netns
from .callers import UNKNOWN, CallerLookup
from .checkers import check_workers, render_table, report_json, run_all, run_passed
from .history import History
from .nemesis import NO_WORKERS, WORKER_FAULTS, Nemesis
from .orders import SERVICES
from .participants import Chaos, Fail, Script, Vote, start_recording_service
from .workload import Workload

__all__ = ["ChaosSettings", "run_chaos", "seconds_range"]

SETTLE_S_MAX = 90.0
# Workers heartbeat often and lose their leases quickly, so that a killed or
# paused worker's calls move within the run's fault spacing.
WORKER_HEARTBEAT_S = 0.25
WORKER_LEASE_S = 1.5
DIGEST_WAIT_S = 30.0
LIST_LIMIT = 1000


@dataclass(frozen=True)
class ChaosSettings:
    nodes: int = 3
    duration_s: float = 60.0
    faults: tuple[str, ...] = ("kill", "pause", "restart-all", "partition")
    seed: int = 0
    rate_per_s: float = 20.0
    base_port: int | None = None
    report: str | None = None
    processes: int = 8
    fault_interval_s: tuple[float, float] = (4.0, 8.0)
    min_ok_operations: int = 20
    aim: str = "mixed"  # see coordinator.chaos.nemesis.AIMS
    partition_s: tuple[float, float] = (2.0, 6.0)
    tls: bool = False  # the APIs (and Raft) over TLS, with a CA of the run's own
    workers: int = 0  # transition workers: the cluster runs in remote executor mode


def _say(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def _scripts(seed: int) -> dict[str, Script]:
    flaky = Chaos(seed=seed, error_rate=0.05, slow_rate=0.05, slow_s=0.3)
    scripts = {name: Script(default=flaky) for name in SERVICES}
    scripts["payments"] = (
        scripts["payments"].with_path("/charges/declined", Fail(status=402)).with_path("/prepare-no", Vote("no"))
    )
    return scripts


class WorkerCounts:
    """What the nodes' dispatchers counted (GET /v1/cluster executor.workers),
    the largest value each node showed: a node's counters start again when
    its process does, so the sums are lower bounds. And who sent each
    participant call (filled at the end of the run)."""

    FIELDS = ("dispatched_total", "redispatches_total", "leases_lost_total", "reports_dropped_total")

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, int]] = {}
        self.calls_by_caller: dict[str, int] = {}
        self.caller_lookups = 0

    async def sample(self, cluster: LocalCluster) -> None:
        for node_id in cluster.ids:
            view = await _quick_view(cluster, node_id)
            counts = (view or {}).get("executor", {}).get("workers") or {}
            seen = self.by_node.setdefault(node_id, dict.fromkeys(self.FIELDS, 0))
            for name in self.FIELDS:
                seen[name] = max(seen[name], int(counts.get(name, 0)))

    def totals(self) -> dict[str, int]:
        return {name: sum(node[name] for node in self.by_node.values()) for name in self.FIELDS}


def _running_pids(cluster: LocalCluster, process_ids: tuple[str, ...]) -> dict[str, int]:
    processes = cluster.supervisor.processes
    return {i: processes[i].pid for i in process_ids if i in processes and processes[i].poll() is None}


async def _quick_view(cluster: LocalCluster, node_id: str) -> dict | None:
    try:
        return await asyncio.wait_for(cluster.cluster_view(node_id), 1.0)
    except TimeoutError:  # a paused node
        return None


async def _progress(
    history: History,
    nemesis: Nemesis,
    cluster: LocalCluster,
    started: float,
    until: float,
    worker_counts: WorkerCounts | None = None,
) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(1.0)
        if worker_counts is not None:
            await worker_counts.sample(cluster)
        counts = history.outcome_counts()
        leader = await nemesis.leader() or "-"
        _say(
            f"\r{time.monotonic() - started:5.1f}s  ops ok {counts.get('ok', 0)} fail {counts.get('fail', 0)} "
            f"unknown {counts.get('unknown', 0)}  faults {len(nemesis.log)}  leader {leader}   ",
            end="",
        )


async def _failover_probe(client: Coordinator, nemesis: Nemesis, until: float, failover_ms: list[float]) -> None:
    """After each leader kill, time until the next committed write."""
    seen = 0
    while time.monotonic() < until:
        await asyncio.sleep(0.05)
        if len(nemesis.killed_leader_at) > seen:
            killed_at = nemesis.killed_leader_at[seen]
            seen += 1
            while time.monotonic() < until + 30:
                try:
                    await client.put_service("failover-probe", f"http://127.0.0.1:{1 + seen}")
                    failover_ms.append(round((time.monotonic() - killed_at) * 1000, 1))
                    break
                except CoordinatorError:
                    await asyncio.sleep(0.01)


async def _settle(client: Coordinator, workload: Workload, history: History) -> None:
    """Once faults stop: every workflow reaches a terminal state (bounded),
    recorded as it ends (the lists read afterwards stop at LIST_LIMIT)."""

    async def finish(kind: str, workflow_id: str) -> None:
        with contextlib.suppress(CoordinatorError):
            if kind == "saga":
                workflow = await client.wait_saga(workflow_id, timeout=SETTLE_S_MAX)
            else:
                workflow = await client.wait_transaction(workflow_id, timeout=SETTLE_S_MAX)
            history.record_workflow(workflow.raw)

    await asyncio.gather(
        *(finish("saga", i) for i in workload.sagas), *(finish("tx", i) for i in workload.transactions)
    )


async def _digests(cluster: LocalCluster, history: History) -> None:
    deadline = time.monotonic() + DIGEST_WAIT_S
    while True:
        views: dict[str, dict | None] = {}
        for node_id in cluster.ids:
            try:
                response = await cluster.request("GET", node_id, "/v1/cluster?digest=true")
                views[node_id] = response.json if response.status == 200 else None
            except (TimeoutError, aiohttp.ClientError):
                views[node_id] = None
        digests = {node_id: view and view.get("state_digest") for node_id, view in views.items()}
        if (None not in digests.values() and len(set(digests.values())) == 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if len(set(digests.values())) != 1:
        _say(
            "chaos: the nodes' digests differ: "
            + ", ".join(
                f"{node_id} {view.get('role')} term {view.get('term')} commit {view.get('commit_index')} applied {view.get('state_applied_index')} digest {str(view.get('state_digest'))[:12]}"
                if view
                else f"{node_id} unreachable"
                for node_id, view in views.items()
            )
        )
    for node_id, digest in digests.items():
        history.record_digest(node_id, digest)


def _network(settings: ChaosSettings) -> tuple[netns.Network | None, dict[str, str]]:
    """Namespaces for the nodes when a partition or a link flap is asked for
    and possible; else None and why they are skipped."""
    wanted = [f for f in ("partition", "link-flap") if f in settings.faults]
    if not wanted:
        return None, {}
    reason = netns.unavailable()
    if reason is None:
        try:
            node_ids = [f"n{i}" for i in range(1, settings.nodes + 1)]
            return netns.Network.create(node_ids), {}
        except netns.NetnsError as error:
            reason = f"network namespaces failed: {error}"
    return None, {kind: reason for kind in wanted}


@contextlib.contextmanager
def _sigterm_cancels():
    """SIGTERM cancels the run, so its finally blocks stop the nodes and
    remove the namespaces; SIGTERM's default action would skip them."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run_chaos(settings: ChaosSettings) -> tuple[bool, dict]:
    rng = random.Random(settings.seed)
    _say(
        f"chaos: seed {settings.seed}, {settings.nodes} nodes, {settings.duration_s:g} s, faults {','.join(settings.faults)}, "
        f"aim {settings.aim}" + (", TLS" if settings.tls else "")
    )
    network, skipped = _network(settings)
    if not settings.workers:
        skipped.update({kind: NO_WORKERS for kind in WORKER_FAULTS if kind in settings.faults})
    for fault, reason in skipped.items():
        _say(f"chaos: skipping {fault}: {reason}")
    if network is not None:
        _say(
            f"chaos: nodes in network namespaces {', '.join(map(network.namespace, network.node_ids))}, "
            f"bridge {network.bridge} {network.subnet}"
        )
    history = History()
    failover_ms: list[float] = []
    worker_counts = WorkerCounts() if settings.workers else None
    try:
        with _sigterm_cancels():
            elapsed = await _run(settings, rng, network, skipped, history, failover_ms, worker_counts)
    finally:
        if network is not None:
            network.close()
    results = run_all(history, min_ok_operations=settings.min_ok_operations)
    if worker_counts is not None:  # remote mode that never used a worker, or not only workers, fails
        totals = worker_counts.totals()
        results.append(
            check_workers(
                dispatched_total=totals["dispatched_total"],
                calls_by_caller=worker_counts.calls_by_caller,
                workers=[f"w{i}" for i in range(1, settings.workers + 1)],
                unknown=UNKNOWN,
            )
        )
    passed = run_passed(results)
    report = report_json(history, results, settings.seed, round(elapsed, 1), failover_ms)
    report["skipped_faults"] = skipped
    report["tls"] = settings.tls
    print(render_table(results))
    if worker_counts is not None:
        report["workers"] = {
            "workers": settings.workers,
            **totals,
            "calls_by_caller": worker_counts.calls_by_caller,
            "caller_lookups": worker_counts.caller_lookups,
        }
        print(
            f"workers: {settings.workers}, calls leased {totals['dispatched_total']}, leased again "
            f"{totals['redispatches_total']}, leases lost {totals['leases_lost_total']}, reports dropped "
            f"{totals['reports_dropped_total']} (at least: a restarted node counts afresh); participant calls by "
            + ", ".join(f"{caller} {n}" for caller, n in sorted(worker_counts.calls_by_caller.items()))
        )
    if failover_ms:
        print(f"leader kill -> next committed write (ms): {', '.join(f'{m:g}' for m in failover_ms)}")
    for result in results:
        for violation in result.violations[:5]:
            print(f"  {result.name}: {json.dumps(violation)[:400]}")
    print(f"chaos: {'PASSED' if passed else 'FAILED'} (seed {settings.seed})")
    if settings.report:
        Path(settings.report).write_text(json.dumps(report, indent=2) + "\n")
    return passed, report


async def _run(
    settings: ChaosSettings,
    rng: random.Random,
    network: netns.Network | None,
    skipped: dict[str, str],
    history: History,
    failover_ms: list[float],
    worker_counts: WorkerCounts | None = None,
) -> float:
    """Cluster, participants, workload and nemesis; the history filled; the
    seconds from the start of the faults to the end of the checks' inputs."""
    host = network.bridge_address if network is not None else "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="coordinator-chaos-") as root:
        cluster = LocalCluster(
            Path(root) / "cluster",
            nodes=settings.nodes,
            base_port=settings.base_port,
            hosts=network.hosts() if network else None,
            launch_prefixes=network.launch_prefixes() if network else None,
            tls=settings.tls,
            peer_tls=settings.tls,
            executor=ExecutorSettings(mode="remote") if settings.workers else None,
            workers=WorkerSettings(
                ids=tuple(f"w{i}" for i in range(1, settings.workers + 1)),
                heartbeat_s=WORKER_HEARTBEAT_S,
                lease_s=WORKER_LEASE_S,
            )
            if settings.workers
            else None,
        )
        worker_ids = cluster.config.workers.ids
        # Who sent each participant call, among the processes running when its connection opened.
        caller_of = CallerLookup(lambda: _running_pids(cluster, (*worker_ids, *cluster.ids))) if worker_counts else None
        services = {}
        try:
            for name, script in _scripts(settings.seed).items():
                services[name] = await start_recording_service(name, script, host=host, caller_of=caller_of)
            cluster.start()
            for worker_id in worker_ids:  # in this namespace: they reach the nodes and participants on the bridge
                cluster.supervisor.start_worker(worker_id)
            await cluster.wait_leader()
            endpoints = [cluster.url(i) for i in cluster.ids]
            async with (
                Coordinator(endpoints, attempts=3, timeout_s=5, retry_budget_s=8, **cluster.tls_files) as client,
                Coordinator(endpoints, attempts=30, timeout_s=10, retry_budget_s=120, **cluster.tls_files) as patient,
            ):
                for name, service in services.items():
                    await patient.put_service(name, service.url)
                started = time.monotonic()
                until = started + settings.duration_s
                nemesis = Nemesis(
                    cluster,
                    random.Random(rng.random()),
                    settings.faults,
                    settings.fault_interval_s,
                    started,
                    network=network,
                    aim=settings.aim,
                    partition_s=settings.partition_s,
                    skipped=skipped,
                    services=services,
                    workers=worker_ids,
                    lease_s=WORKER_LEASE_S,
                )
                workload = Workload(
                    client,
                    history,
                    random.Random(rng.random()),
                    rate_per_s=settings.rate_per_s,
                    processes=settings.processes,
                )
                try:
                    await asyncio.gather(
                        workload.run(until),
                        nemesis.run(until),
                        _progress(history, nemesis, cluster, started, until, worker_counts),
                        _failover_probe(patient, nemesis, until, failover_ms),
                    )
                finally:
                    nemesis.heal()
                _say("")
                await cluster.wait_leader(timeout_s=60)
                _say("chaos: faults stopped; waiting for every workflow to finish")
                await _settle(patient, workload, history)
                if worker_counts is not None:
                    await worker_counts.sample(cluster)
                for saga in await patient.list_sagas(limit=LIST_LIMIT):
                    history.record_workflow(saga.raw)
                for tx in await patient.list_transactions(limit=LIST_LIMIT):
                    history.record_workflow(tx.raw)
                history.add_effects(e for s in services.values() for e in s.service.effects)
                if worker_counts is not None and caller_of is not None:
                    callers = Counter(r.caller or UNKNOWN for s in services.values() for r in s.service.requests)
                    worker_counts.calls_by_caller = dict(sorted(callers.items()))
                    worker_counts.caller_lookups = caller_of.lookups
                await _digests(cluster, history)
                for fault in nemesis.log:
                    history.record_fault(**fault)
                return time.monotonic() - started
        finally:
            await cluster.close()
            for service in services.values():
                await service.close()


def seconds_range(text: str) -> tuple[float, float]:
    """``"LOW,HIGH"`` seconds, 0 < LOW <= HIGH (``--fault-interval``, ``--partition-s``)."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected LOW,HIGH seconds, got {text!r}") from None
    if not 0 < low <= high:
        raise ValueError(f"expected 0 < LOW <= HIGH seconds, got {text!r}")
    return low, high
