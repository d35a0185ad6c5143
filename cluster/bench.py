"""``coordinator bench``: throughput and latency of whole workflows.

Starts a local cluster (or uses ``--endpoints``) and fast local participants,
warms up, then runs ``--concurrency`` closed-loop clients for ``--duration``
seconds: each submits a workflow and long-polls it to its terminal state.
Reports workflows per second, submit-to-terminal latency, log entries per
workflow and each node's CPU time and peak RSS. Figures, never assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from client import Coordinator, CoordinatorError

from .local import LocalCluster, serve_on_loopback

__all__ = ["run_bench", "WORKLOADS"]

WORKLOADS = ("saga2", "saga4", "twopc3", "registry")
PARTICIPANTS = ("p1", "p2", "p3", "p4")
LATENCIES_MAX = 2_000_000
REGISTRY_NAMES = 100


async def _participant(request: web.Request) -> web.Response:
    if request.path.endswith("/prepare"):
        return web.json_response({"vote": "yes"})
    return web.json_response({"ok": True, "id": request.headers.get("Idempotency-Key", "")[-12:]})


async def start_participants() -> tuple[list[web.AppRunner], dict[str, str]]:
    runners, urls = [], {}
    for name in PARTICIPANTS:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _participant)
        runner, urls[name] = await serve_on_loopback(app)
        runners.append(runner)
    return runners, urls


def workflow(workload: str) -> tuple[str, dict]:
    workflow_id = uuid.uuid4().hex
    if workload.startswith("saga"):
        steps = [
            {
                "name": f"s{i}",
                "service": PARTICIPANTS[i],
                "action": {"method": "POST", "path": "/do", "body": {"n": i}},
                "compensation": {"method": "POST", "path": "/undo"},
            }
            for i in range(int(workload[-1]))
        ]
        return "saga", {"id": workflow_id, "steps": steps}
    participants = [
        {"service": p, "prepare": {"path": "/prepare"}, "commit": {"path": "/commit"}, "abort": {"path": "/abort"}}
        for p in PARTICIPANTS[:3]
    ]
    return "tx", {"id": workflow_id, "participants": participants}


@dataclass
class Results:
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def record_error(self, error: Exception) -> None:
        name = getattr(error, "code", None) or error.__class__.__name__
        self.errors[name] = self.errors.get(name, 0) + 1


async def _one(client: Coordinator, workload: str) -> None:
    if workload == "registry":
        # A bounded set of names: the registry keeps at most SERVICES_MAX services.
        await client.put_service(f"bench-{uuid.uuid4().int % REGISTRY_NAMES}", f"http://127.0.0.1:{1 + uuid.uuid4().int % 60000}")
        return
    kind, definition = workflow(workload)
    if kind == "saga":
        await client.submit_saga(definition)
        saga = await client.wait_saga(definition["id"], timeout=60)
        if saga.state != "completed":
            raise RuntimeError(f"saga ended {saga.state}")
    else:
        await client.submit_transaction(definition)
        tx = await client.wait_transaction(definition["id"], timeout=60)
        if tx.state != "committed":
            raise RuntimeError(f"transaction ended {tx.state}")


async def _worker(client: Coordinator, workload: str, until: float, results: Results | None) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            await _one(client, workload)
        except (CoordinatorError, RuntimeError) as error:
            if results is not None:
                results.record_error(error)
            continue
        if results is not None and len(results.latencies_s) < LATENCIES_MAX:
            results.latencies_s.append(time.perf_counter() - started)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _proc_stats(pid: int) -> tuple[float, float]:
    """(cpu seconds, peak RSS in MB) of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        status = Path(f"/proc/{pid}/status").read_text()
        hwm_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return cpu_s, hwm_kb / 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0.0


async def _commit_index(client: Coordinator) -> int:
    return (await client.cluster()).commit_index


async def run_bench(workload: str, concurrency: int, duration_s: float, warmup_s: float, nodes: int, endpoints: list[str] | None) -> dict:
    runners, urls = await start_participants()
    cluster: LocalCluster | None = None
    tmp = tempfile.TemporaryDirectory(prefix="coordinator-bench-")
    try:
        if endpoints is None:
            cluster = LocalCluster(Path(tmp.name) / "cluster", nodes=nodes)
            cluster.start()
            await cluster.wait_leader()
            endpoints = [cluster.url(i) for i in cluster.ids]
        async with Coordinator(endpoints, attempts=10, timeout_s=30) as client:
            for name, url in urls.items():
                await client.put_service(name, url)
            print(f"warming up for {warmup_s:g} s ...", file=sys.stderr, flush=True)
            await asyncio.gather(*(_worker(client, workload, time.monotonic() + warmup_s, None) for _ in range(concurrency)))
            before = await _commit_index(client)
            cpu_before = {n: _proc_stats(cluster.supervisor.pid(n))[0] for n in cluster.ids} if cluster else {}
            results = Results()
            started = time.monotonic()
            until = started + duration_s
            progress = asyncio.ensure_future(_progress(results, started, duration_s))
            await asyncio.gather(*(_worker(client, workload, until, results) for _ in range(concurrency)))
            elapsed = time.monotonic() - started
            progress.cancel()
            after = await _commit_index(client)
        completed = len(results.latencies_s)
        node_stats = []
        if cluster is not None:
            for node_id in cluster.ids:
                cpu_s, rss_mb = _proc_stats(cluster.supervisor.pid(node_id))
                node_stats.append({"id": node_id, "cpu_s": round(cpu_s - cpu_before[node_id], 2), "rss_mb_max": round(rss_mb, 1)})
        return {
            "workload": workload,
            "concurrency": concurrency,
            "duration_s": round(elapsed, 2),
            "completed": completed,
            "errors": results.errors,
            "throughput_per_s": round(completed / elapsed, 1) if elapsed else 0.0,
            "latency_ms": {
                "p50": round(_percentile(results.latencies_s, 0.50) * 1000, 2),
                "p90": round(_percentile(results.latencies_s, 0.90) * 1000, 2),
                "p99": round(_percentile(results.latencies_s, 0.99) * 1000, 2),
                "max": round(max(results.latencies_s, default=0.0) * 1000, 2),
            },
            "entries_per_workflow": round((after - before) / completed, 2) if completed else None,
            "nodes": node_stats,
            "baseline": None,
            "ratio": None,
        }
    finally:
        if cluster is not None:
            await cluster.close()
        for runner in runners:
            await runner.cleanup()
        tmp.cleanup()


async def _progress(results: Results, started: float, duration_s: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
        done = len(results.latencies_s)
        print(f"\r{elapsed:5.1f}/{duration_s:g} s  {done} done  {done / elapsed:7.1f}/s  errors {sum(results.errors.values())}", end="", file=sys.stderr, flush=True)


def render(result: dict) -> str:
    latency = result["latency_ms"]
    lines = [
        f"workload {result['workload']}  concurrency {result['concurrency']}  duration {result['duration_s']} s",
        f"completed {result['completed']}  throughput {result['throughput_per_s']}/s  errors {result['errors'] or 0}",
        f"latency ms  p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  max {latency['max']}",
        f"log entries per workflow {result['entries_per_workflow']}",
    ]
    lines += [f"node {n['id']}: cpu {n['cpu_s']} s, peak rss {n['rss_mb_max']} MB" for n in result["nodes"]]
    return "\n".join(lines)


def dump(result: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
