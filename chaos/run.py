"""``coordinator chaos``: a real cluster under a real workload while faults
are injected, then every checker on what the clients and participants saw.

The seed decides the fault schedule and the workload; it is printed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from client import Coordinator, CoordinatorError
from cluster.local import LocalCluster

from .checkers import render_table, report_json, run_all, run_passed
from .history import History
from .nemesis import UNSUPPORTED, Nemesis
from .orders import SERVICES
from .participants import Chaos, Fail, Script, Vote, start_recording_service
from .workload import Workload

__all__ = ["ChaosSettings", "run_chaos"]

SETTLE_S_MAX = 90.0
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


def _say(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def _scripts(seed: int) -> dict[str, Script]:
    flaky = Chaos(seed=seed, error_rate=0.05, slow_rate=0.05, slow_s=0.3)
    scripts = {name: Script(default=flaky) for name in SERVICES}
    scripts["payments"] = scripts["payments"].with_path("/charges/declined", Fail(status=402)).with_path("/prepare-no", Vote("no"))
    return scripts


async def _progress(history: History, nemesis: Nemesis, cluster: LocalCluster, started: float, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(1.0)
        counts = history.outcome_counts()
        leader = "-"
        with contextlib.suppress(AssertionError):
            leader = await cluster.wait_leader(timeout_s=0.3)
        _say(f"\r{time.monotonic() - started:5.1f}s  ops ok {counts.get('ok', 0)} fail {counts.get('fail', 0)} "
             f"unknown {counts.get('unknown', 0)}  faults {len(nemesis.log)}  leader {leader}   ", end="")


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


async def _settle(client: Coordinator, workload: Workload) -> None:
    """Once faults stop: every workflow reaches a terminal state (bounded)."""
    async def finish(kind: str, workflow_id: str) -> None:
        with contextlib.suppress(CoordinatorError):
            if kind == "saga":
                await client.wait_saga(workflow_id, timeout=SETTLE_S_MAX)
            else:
                await client.wait_transaction(workflow_id, timeout=SETTLE_S_MAX)

    await asyncio.gather(*(finish("saga", i) for i in workload.sagas), *(finish("tx", i) for i in workload.transactions))


async def _digests(cluster: LocalCluster, history: History) -> None:
    deadline = time.monotonic() + 30
    while True:
        views = {}
        for node_id in cluster.ids:
            try:
                response = await cluster.request("GET", node_id, "/v1/cluster?digest=true")
                views[node_id] = response.json.get("state_digest") if response.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError):
                views[node_id] = None
        if (None not in views.values() and len(set(views.values())) == 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    for node_id, digest in views.items():
        history.record_digest(node_id, digest)


async def run_chaos(settings: ChaosSettings) -> tuple[bool, dict]:
    rng = random.Random(settings.seed)
    _say(f"chaos: seed {settings.seed}, {settings.nodes} nodes, {settings.duration_s:g} s, faults {','.join(settings.faults)}")
    for fault in settings.faults:
        if fault in UNSUPPORTED:
            _say(f"chaos: skipping {fault}: {UNSUPPORTED[fault]}")
    history = History()
    failover_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="coordinator-chaos-") as root:
        cluster = LocalCluster(Path(root) / "cluster", nodes=settings.nodes, base_port=settings.base_port)
        services = {name: await start_recording_service(name, script) for name, script in _scripts(settings.seed).items()}
        cluster.start()
        try:
            await cluster.wait_leader()
            endpoints = [cluster.url(i) for i in cluster.ids]
            async with Coordinator(endpoints, attempts=3, timeout_s=5, retry_budget_s=8) as client, \
                    Coordinator(endpoints, attempts=30, timeout_s=10, retry_budget_s=120) as patient:
                for name, service in services.items():
                    await patient.put_service(name, service.url)
                started = time.monotonic()
                until = started + settings.duration_s
                nemesis = Nemesis(cluster, random.Random(rng.random()), settings.faults, settings.fault_interval_s, started)
                workload = Workload(client, history, random.Random(rng.random()), rate_per_s=settings.rate_per_s, processes=settings.processes)
                await asyncio.gather(
                    workload.run(until),
                    nemesis.run(until),
                    _progress(history, nemesis, cluster, started, until),
                    _failover_probe(patient, nemesis, until, failover_ms),
                )
                _say("")
                nemesis.heal()
                await cluster.wait_leader(timeout_s=60)
                _say("chaos: faults stopped; waiting for every workflow to finish")
                await _settle(patient, workload)
                for saga in await patient.list_sagas(limit=LIST_LIMIT):
                    history.record_workflow(saga.raw)
                for tx in await patient.list_transactions(limit=LIST_LIMIT):
                    history.record_workflow(tx.raw)
                history.add_effects(e for s in services.values() for e in s.service.effects)
                await _digests(cluster, history)
                for fault in nemesis.log:
                    history.record_fault(fault["kind"], fault["node"], at_s=fault["at_s"])
                elapsed = time.monotonic() - started
        finally:
            await cluster.close()
            for service in services.values():
                await service.close()
    results = run_all(history, min_ok_operations=settings.min_ok_operations)
    passed = run_passed(results)
    report = report_json(history, results, settings.seed, round(elapsed, 1), failover_ms)
    print(render_table(results))
    if failover_ms:
        print(f"leader kill -> next committed write (ms): {', '.join(f'{m:g}' for m in failover_ms)}")
    for result in results:
        for violation in result.violations[:5]:
            print(f"  {result.name}: {json.dumps(violation)[:400]}")
    print(f"chaos: {'PASSED' if passed else 'FAILED'} (seed {settings.seed})")
    if settings.report:
        Path(settings.report).write_text(json.dumps(report, indent=2) + "\n")
    return passed, report
