"""``coordinator bench --workload failover --runs N``: SIGKILL the leader N
times under load; how long until the cluster writes again, and until an
in-flight saga moves again.

Load, all the time: SAGA_CLIENTS closed-loop clients run four-step sagas
whose steps each take STEP_DELAY_S at the participant (so sagas are always
in flight), and PROBE_CLIENTS registry writers (``PUT /v1/services``, one
try each with a short timeout, again at once on failure).

Per run: note the leader and its term, SIGKILL it (``kill_at``), then

- failover_ms: ``kill_at`` to the answer of the first registry write sent
  after ``kill_at`` that succeeded (at the client);
- resume_ms: ``kill_at`` to the arrival at a participant of the first call
  for a saga that was in flight at the kill, fenced with a later term
  (``Coordinator-Fence: term:index``), i.e. the new leader's first step.

then restart the killed node, wait until it applied the leader's commit
index and let the load run SETTLE_S before the next kill. Every clock is
this process's ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from coordinator.client import Coordinator, CoordinatorError
from coordinator.cluster.bench.stats import distribution_ms, latency_summary_ms, proc_stats
from coordinator.cluster.launcher.local import LocalCluster, serve_on_loopback

__all__ = ["Observations", "render_failover", "run_failover"]

SAGA_CLIENTS = 8
SAGA_STEPS = 4
STEP_DELAY_S = 0.1
PROBE_CLIENTS = 4
PROBE_TIMEOUT_S = 0.5
PROBE_PAUSE_S = 0.05
FAILURE_PAUSE_S = 0.01
# Per run: the longest wait for either figure, and for the restarted node.
OBSERVE_S_MAX = 30.0
CATCH_UP_S_MAX = 60.0
SETTLE_S = 1.0
CALLS_MAX = 1_000_000
WRITES_MAX = 1_000_000
SERVICES = ("f1", "f2", "f3", "f4")


@dataclass
class Observations:
    """What the load saw, in this process's monotonic time."""

    calls: list[tuple[float, int, str]] = field(default_factory=list)  # (arrival, fence term, saga id)
    writes: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered) of successful probe writes
    in_flight: set[str] = field(default_factory=set)  # sagas acknowledged and not yet seen terminal
    sagas_completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def record_error(self, error: Exception) -> None:
        name = getattr(error, "code", None) or error.__class__.__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def first_write_after(self, kill_at: float) -> float | None:
        return min((answered for sent, answered in self.writes if sent >= kill_at), default=None)

    def first_resumed_call(self, kill_at: float, term: int, sagas: set[str]) -> float | None:
        return min(
            (at for at, fence_term, saga in self.calls if at >= kill_at and fence_term > term and saga in sagas),
            default=None,
        )


def fence_term(fence: str | None) -> int:
    """The term of a ``Coordinator-Fence`` header (``term:index``); -1 if absent or malformed."""
    head = (fence or "").split(":", 1)[0]
    return int(head) if head.isdigit() else -1


def _participant_app(seen: Observations) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        if len(seen.calls) < CALLS_MAX:
            seen.calls.append(
                (time.monotonic(), fence_term(request.headers.get("Coordinator-Fence")), key.split("/", 1)[0])
            )
        await asyncio.sleep(STEP_DELAY_S)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _saga() -> dict:
    steps = [
        {
            "name": f"s{i}",
            "service": SERVICES[i],
            "action": {"method": "POST", "path": "/do"},
            "compensation": {"method": "POST", "path": "/undo"},
        }
        for i in range(SAGA_STEPS)
    ]
    return {"id": uuid.uuid4().hex, "steps": steps}


async def _saga_client(endpoints: list[str], seen: Observations, stop: asyncio.Event) -> None:
    async with Coordinator(endpoints, attempts=30, timeout_s=10, retry_budget_s=60) as client:
        while not stop.is_set():
            definition = _saga()
            try:
                await client.submit_saga(definition)
                seen.in_flight.add(definition["id"])
                saga = await client.wait_saga(definition["id"], timeout=60)
                seen.sagas_completed += saga.state == "completed"
            except CoordinatorError as error:
                seen.record_error(error)
                await asyncio.sleep(FAILURE_PAUSE_S)
            finally:
                seen.in_flight.discard(definition["id"])


async def _probe_client(number: int, endpoints: list[str], seen: Observations, stop: asyncio.Event) -> None:
    async with Coordinator(endpoints, attempts=1, timeout_s=PROBE_TIMEOUT_S, retry_budget_s=PROBE_TIMEOUT_S) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                await client.put_service(f"probe-{number}", f"http://127.0.0.1:{1 + int(sent * 1000) % 60000}")
            except CoordinatorError as error:
                seen.record_error(error)
                await asyncio.sleep(FAILURE_PAUSE_S)
                continue
            if len(seen.writes) < WRITES_MAX:
                seen.writes.append((sent, time.monotonic()))
            await asyncio.sleep(PROBE_PAUSE_S)


async def _wait_for(probe, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        await asyncio.sleep(0.005)
    return None


async def _one_kill(cluster: LocalCluster, seen: Observations, run: int) -> tuple[float | None, float | None]:
    """Kill the leader once, observe, restart it and wait until it caught up: (failover_ms, resume_ms)."""
    leader = await cluster.wait_leader(timeout_s=CATCH_UP_S_MAX)
    term = (await cluster.cluster_view(leader) or {}).get("term", 0)
    await _wait_for(lambda: True if seen.in_flight else None, time.monotonic() + OBSERVE_S_MAX)
    sagas = set(seen.in_flight)
    kill_at = time.monotonic()
    cluster.supervisor.kill(leader)
    deadline = kill_at + OBSERVE_S_MAX
    write_at = await _wait_for(lambda: seen.first_write_after(kill_at), deadline)
    resume_at = await _wait_for(lambda: seen.first_resumed_call(kill_at, term, sagas), deadline)
    failover_ms = None if write_at is None else round((write_at - kill_at) * 1000, 1)
    resume_ms = None if resume_at is None else round((resume_at - kill_at) * 1000, 1)
    print(
        f"run {run}: killed {leader} (term {term}, {len(sagas)} sagas in flight): "
        f"next write {failover_ms} ms, first resumed step {resume_ms} ms",
        file=sys.stderr,
        flush=True,
    )
    cluster.supervisor.start(leader)
    new_leader = await cluster.wait_leader(timeout_s=CATCH_UP_S_MAX)
    index = (await cluster.cluster_view(new_leader) or {}).get("commit_index", 0)
    await cluster.wait_applied(leader, index, timeout_s=CATCH_UP_S_MAX)
    await asyncio.sleep(SETTLE_S)
    return failover_ms, resume_ms


async def run_failover(options) -> dict:
    """``options`` is a :class:`coordinator.cluster.bench.run.BenchOptions` with workload "failover"."""
    seen = Observations()
    runners, urls = [], {}
    for name in SERVICES:
        runner, urls[name] = await serve_on_loopback(_participant_app(seen), shutdown_timeout_s=2.0)
        runners.append(runner)
    tmp = tempfile.TemporaryDirectory(prefix="coordinator-bench-failover-")
    cluster = LocalCluster(Path(tmp.name) / "cluster", nodes=options.nodes)
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    failover_ms: list[float] = []
    resume_ms: list[float] = []
    missed = {"failover": 0, "resume": 0}
    try:
        cluster.start()
        await cluster.wait_leader()
        endpoints = [cluster.url(i) for i in cluster.ids]
        async with Coordinator(endpoints, attempts=10, timeout_s=10) as client:
            for name, url in urls.items():
                await client.put_service(name, url)
        started = time.monotonic()
        tasks = [asyncio.ensure_future(_saga_client(endpoints, seen, stop)) for _ in range(SAGA_CLIENTS)]
        tasks += [asyncio.ensure_future(_probe_client(i, endpoints, seen, stop)) for i in range(PROBE_CLIENTS)]
        await asyncio.sleep(options.warmup_s)
        for run in range(1, options.runs + 1):
            failover, resume = await _one_kill(cluster, seen, run)
            for value, figures, name in ((failover, failover_ms, "failover"), (resume, resume_ms, "resume")):
                if value is None:
                    missed[name] += 1
                else:
                    figures.append(value)
        elapsed = time.monotonic() - started
        nodes = [
            {
                "id": n,
                "cpu_s_total": round(proc_stats(cluster.supervisor.pid(n))[0], 2),
                "rss_mb_max": round(proc_stats(cluster.supervisor.pid(n))[1], 1),
            }
            for n in cluster.ids
        ]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.close()
        for runner in runners:
            await runner.cleanup()
        tmp.cleanup()
    return {
        "workload": "failover",
        "runs": options.runs,
        "concurrency": SAGA_CLIENTS + PROBE_CLIENTS,
        "duration_s": round(elapsed, 2),
        "completed": seen.sagas_completed,
        "writes": len(seen.writes),
        "errors": seen.errors,
        "throughput_per_s": round(seen.sagas_completed / elapsed, 1) if elapsed else 0.0,
        "latency_ms": latency_summary_ms([answered - sent for sent, answered in seen.writes]),
        "entries_per_workflow": None,
        "nodes": nodes,
        "baseline": None,
        "ratio": None,
        "failover_ms": failover_ms,
        "resume_ms": resume_ms,
        "failover_summary_ms": distribution_ms(failover_ms),
        "resume_summary_ms": distribution_ms(resume_ms),
        "missed": missed,
        "load": {
            "saga_clients": SAGA_CLIENTS,
            "saga_steps": SAGA_STEPS,
            "step_delay_s": STEP_DELAY_S,
            "probe_clients": PROBE_CLIENTS,
            "probe_timeout_s": PROBE_TIMEOUT_S,
        },
    }


def render_failover(result: dict) -> str:
    failover, resume = result["failover_summary_ms"], result["resume_summary_ms"]
    return "\n".join(
        [
            f"failover: {result['runs']} leader kills in {result['duration_s']} s; {result['completed']} sagas completed, "
            f"{result['writes']} registry writes, errors {result['errors'] or 0}",
            f"kill -> next committed write ms:      p50 {failover['p50']}  p99 {failover['p99']}  max {failover['max']}  "
            f"(missed {result['missed']['failover']})",
            f"kill -> first resumed saga step ms:   p50 {resume['p50']}  p99 {resume['p99']}  max {resume['max']}  "
            f"(missed {result['missed']['resume']})",
            "registry write latency ms (all runs): " + "  ".join(f"{k} {v}" for k, v in result["latency_ms"].items()),
        ]
        + [
            f"node {n['id']}: cpu {n['cpu_s_total']} s (process life), peak rss {n['rss_mb_max']} MB"
            for n in result["nodes"]
        ]
    )
