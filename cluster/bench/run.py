"""``coordinator bench``: throughput and latency of whole workflows.

Starts a local cluster (or uses ``--endpoints``) and fast local participants,
warms up, then runs ``--concurrency`` closed-loop clients for ``--duration``
seconds: each submits a workflow and long-polls it to its terminal state.
Reports workflows per second, submit-to-terminal latency, log entries per
workflow and per second, and each node's CPU time and peak RSS. Figures,
never assertions. The closed loop is :mod:`coordinator.cluster.bench.load`.

In the same invocation, one after the other:

- ``--baseline pysyncobj``: a raw three-process PySyncObj cluster
  (:mod:`coordinator.cluster.bench.baseline`); ``ratio`` = our log entries/s over its writes/s;
- ``--baseline etcd``: a three-member etcd driven through its JSON gateway by
  the same client code path (:mod:`coordinator.cluster.bench.etcd`); ``ratio`` = our
  registry writes/s over its puts/s;
- ``--profile FILE``: py-spy samples the leader during the measured run
  (:mod:`coordinator.cluster.bench.profile`).
- ``--dashboards N``: the workload first without, then with N dashboards
  open in headless Chromium on the followers
  (:mod:`coordinator.cluster.bench.dashboards`); ``dashboards`` compares the
  two runs (throughput, the leader's CPU per workflow) and gives the
  browser's CPU.

- ``--workers N``: the workload first with the cluster in ``local``
  executor mode (the leader calls the participants), then on a fresh
  cluster in ``remote`` mode with N worker processes (w1..wN) making the
  calls; ``workers`` compares the two runs (throughput, latency, CPU per
  workflow of every process: the leader, each follower, each worker, the
  client) and gives the leader's CPU per workflow remote over local. Each
  mode gets a cluster of its own, both started empty: the mode is read from
  the cluster file at start, and a second run on the first one's data would
  find its stores (and snapshots) fuller, and its leader warmer, than the
  first did. With ``--profile FILE`` each mode gets its own file
  (``FILE`` with ``-local`` and ``-remote`` before its suffix).

``--workload failover`` is :mod:`coordinator.cluster.bench.failover`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.client.tls import ClientTls
from coordinator.cluster.bench.baseline import run_pysyncobj_baseline
from coordinator.cluster.bench.dashboards import DASHBOARDS_MAX, Dashboards
from coordinator.cluster.bench.etcd import run_etcd_baseline
from coordinator.cluster.bench.failover import render_failover, run_failover
from coordinator.cluster.bench.load import clients, closed_loop, registry_write, summary
from coordinator.cluster.bench.profile import Profiler
from coordinator.cluster.bench.stats import commands_committed, metric_value, proc_stats, ratio
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.launcher.local import LocalCluster, serve_on_loopback

__all__ = ["BASELINES", "BenchOptions", "WORKLOADS", "dump", "render", "run", "run_bench"]

WORKLOADS = ("saga2", "saga4", "twopc3", "registry")
BASELINES = ("pysyncobj", "etcd")
PARTICIPANTS = ("p1", "p2", "p3", "p4")
CONCURRENCY_MAX = 10_000
DURATION_S_MAX = 24 * 3600.0
FAILOVER_RUNS_MAX = 1_000
WORKERS_MAX = 9
# What the leader's CPU per workflow in remote mode should be at most, as a
# fraction of local mode's (issue 16).
WORKERS_LEADER_TARGET = 0.4
WORKERS_ADMITTED_S = 30.0
WORKER_CAPACITY_MIN = 16  # a worker's own default (coordinator worker --capacity)
# Participant calls one workflow of the workload has in flight at once: a
# saga's steps run one after the other, a transaction prepares (commits,
# aborts) with its three participants together.
CALLS_AT_ONCE = {"saga2": 1, "saga4": 1, "twopc3": 3}


@dataclass(frozen=True)
class BenchOptions:
    workload: str = "saga2"
    concurrency: int = 16
    duration_s: float = 10.0
    warmup_s: float = 2.0
    nodes: int = 3
    endpoints: tuple[str, ...] | None = None
    baseline: str | None = None
    runs: int = 20  # failover only
    profile: str | None = None  # folded-stacks file for py-spy
    tls: bool = False  # the cluster's APIs and Raft over TLS (a CA of the run's own)
    dashboards: int = 0  # dashboard pages open in headless Chromium during the run
    workers: int = 0  # run local mode, then remote mode with this many workers

    def __post_init__(self) -> None:
        if not 0 <= self.workers <= WORKERS_MAX:
            raise ValueError(f"--workers: 0 to {WORKERS_MAX}")
        if self.workers and (
            self.endpoints or self.workload in ("failover", "registry") or self.dashboards or self.baseline
        ):
            raise ValueError(
                "--workers: on a cluster the bench starts, with a saga or twopc workload, "
                "without --dashboards or --baseline"
            )
        if not 0 <= self.dashboards <= DASHBOARDS_MAX:
            raise ValueError(f"--dashboards: 0 to {DASHBOARDS_MAX}")
        if self.dashboards and (self.endpoints or self.workload == "failover" or self.tls or self.nodes < 2):
            raise ValueError(
                "--dashboards: on a cluster the bench starts, of 2 or more nodes, without --tls or failover"
            )
        if self.workload not in WORKLOADS + ("failover",):
            raise ValueError(f"--workload: one of {', '.join(WORKLOADS + ('failover',))}")
        if not 1 <= self.concurrency <= CONCURRENCY_MAX:
            raise ValueError(f"--concurrency: 1 to {CONCURRENCY_MAX}")
        if not 0 < self.duration_s <= DURATION_S_MAX or not 0 <= self.warmup_s <= DURATION_S_MAX:
            raise ValueError("--duration must be positive and --warmup not negative")
        if not 1 <= self.runs <= FAILOVER_RUNS_MAX:
            raise ValueError(f"--runs: 1 to {FAILOVER_RUNS_MAX}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"--baseline: one of {', '.join(BASELINES)}")
        if self.tls and self.workload == "failover":
            raise ValueError("--tls: measured for the workloads, not for --workload failover")
        if self.baseline == "etcd" and self.workload != "registry":
            raise ValueError("--baseline etcd compares registry writes with etcd puts: use --workload registry")
        if self.workload == "failover" and (self.baseline or self.profile or self.endpoints):
            raise ValueError(
                "--workload failover starts its own cluster and takes no --baseline, --profile or --endpoints"
            )
        if self.workload == "failover" and self.nodes < 3:
            raise ValueError("--workload failover needs --nodes 3 or more: a leader is killed")


# -- the participants and the workloads ------------------------------------------------
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


async def one_workflow(client: Coordinator, workload: str) -> None:
    if workload == "registry":
        await client.put_service(*registry_write())
        return
    kind, definition = workflow(workload)
    # Submit and wait in one request, as a client that wants the outcome does.
    if kind == "saga":
        saga = await client.run_saga(definition, timeout=60)
        if saga.state != "completed":
            raise RuntimeError(f"saga ended {saga.state}")
    else:
        tx = await client.run_transaction(definition, timeout=60)
        if tx.state != "committed":
            raise RuntimeError(f"transaction ended {tx.state}")


def worker_capacity(workload: str, concurrency: int, workers: int) -> int:
    """``--capacity`` of each bench worker: the calls the clients can have in
    flight at once, shared by the workers, and at least a worker's default
    (WORKER_CAPACITY_MIN), so the workers together never hold back the run
    while none is sized far past its share."""
    calls = concurrency * CALLS_AT_ONCE.get(workload, 1)
    return max(WORKER_CAPACITY_MIN, math.ceil(calls / max(1, workers)))


# -- our run --------------------------------------------------------------------------------
async def run_bench(options: BenchOptions) -> dict:
    """Our cluster under ``options.workload``: the result without baseline."""
    runners, urls = await start_participants()
    cluster: LocalCluster | None = None
    tmp = tempfile.TemporaryDirectory(prefix="coordinator-bench-")
    profiler = Profiler(options.profile)
    endpoints = list(options.endpoints) if options.endpoints else None
    # --endpoints: the CA and client certificate of $COORDINATOR_CA_FILE and the others
    tls = ClientTls.resolve()
    dashboards: Dashboards | None = None
    capacity = worker_capacity(options.workload, options.concurrency, options.workers)
    try:
        if endpoints is None:
            remote = options.workers > 0
            cluster = LocalCluster(
                Path(tmp.name) / "cluster",
                nodes=options.nodes,
                tls=options.tls,
                peer_tls=options.tls,
                executor=ExecutorSettings(mode="remote") if remote else None,
                workers=WorkerSettings(ids=tuple(f"w{i}" for i in range(1, options.workers + 1))) if remote else None,
            )
            cluster.start()
            for worker_id in cluster.config.workers.ids:
                cluster.supervisor.start_worker(worker_id, ["--capacity", str(capacity)])
            await cluster.wait_leader()
            endpoints = [cluster.url(i) for i in cluster.ids]
            tls = cluster.client_tls()
        tls_files = dataclasses.asdict(tls) if tls is not None else {}
        marks: dict[str, Any] = {}
        async with clients(endpoints, options.concurrency, **tls_files) as pool:
            client = pool[0]
            for name, url in urls.items():
                await client.put_service(name, url)
            if cluster is not None and cluster.config.workers.ids:
                await _workers_admitted(client, set(cluster.config.workers.ids))
            if options.dashboards and cluster is not None:
                dashboards = await _open_dashboards(cluster, endpoints, options.dashboards)
                marks["dashboards_on"] = dashboards.on  # type: ignore[attr-defined]

            async def mark_start() -> None:
                info = await client.cluster()
                marks["commit_index"], marks["client_cpu_s"] = info.commit_index, time.process_time()
                marks["commands"] = await commands_on(endpoints, tls)
                if options.workers:
                    marks["dispatches"] = await dispatches_on(endpoints, tls)
                if cluster is not None:
                    processes = [*cluster.ids, *cluster.config.workers.ids]
                    marks["cpu_s"] = {n: proc_stats(cluster.supervisor.pid(n))[0] for n in processes}
                    leader = marks["leader"] = info.leader["id"] if info.leader else None
                    profiler.start(cluster.supervisor.pid(leader) if leader else None, options.duration_s)
                if dashboards is not None:
                    dashboards.mark()

            results, elapsed = await closed_loop(
                lambda n: one_workflow(pool[n % len(pool)], options.workload),
                options.concurrency,
                options.warmup_s,
                options.duration_s,
                mark_start,
            )
            client_cpu_s = time.process_time() - marks["client_cpu_s"]
            entries = (await client.cluster()).commit_index - marks["commit_index"]
            commands_after = await commands_on(endpoints, tls)
            dispatches_after = await dispatches_on(endpoints, tls) if options.workers else {}
        commands = None if commands_after is None or marks["commands"] is None else commands_after - marks["commands"]
        result = summary(options.workload, options.concurrency, results, elapsed)
        result.update(_per_workflow_and_second(result["completed"], elapsed, entries, commands))
        result["nodes"] = _node_stats(cluster, marks.get("cpu_s", {}))
        result["executor_mode"] = "remote" if options.workers else "local"
        if cluster is not None and cluster.config.workers.ids:
            result["worker_processes"] = _node_stats(cluster, marks.get("cpu_s", {}), cluster.config.workers.ids)
            result["worker_capacity"] = capacity
            result["worker_dispatches"] = {
                name: after - marks["dispatches"][name] for name, after in dispatches_after.items()
            }
        result["client_cpu_s"] = round(client_cpu_s, 2)
        result["cpu_ms_per_workflow"] = cpu_per_workflow(
            result["nodes"],
            marks.get("leader"),
            client_cpu_s,
            result["completed"],
            workers_cpu_s=sum(w["cpu_s"] for w in result.get("worker_processes", [])),
        )
        _per_process(result, marks.get("leader"))
        result["tls"] = options.tls
        if dashboards is not None:
            streams = await event_streams(endpoints)
            result["dashboards"] = {
                "count": options.dashboards,
                "on": marks["dashboards_on"],
                "event_streams_open": streams,
                "browser_cpu_s": dashboards.cpu_s(),
            }
        result["baseline"], result["ratio"] = None, None
        result["profile"] = await profiler.finish()
        return result
    finally:
        await profiler.stop()
        if dashboards is not None:
            await dashboards.stop()
        if cluster is not None:
            await cluster.close()
        for runner in runners:
            await runner.cleanup()
        tmp.cleanup()


DASHBOARD_STREAMS_S = 30.0


async def _workers_admitted(client: Coordinator, ids: set[str]) -> None:
    deadline = time.monotonic() + WORKERS_ADMITTED_S
    while True:
        view = await client.workers()
        if ids <= {w["id"] for w in view["workers"] if w["admitted"]}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"--workers: not every worker was admitted within {WORKERS_ADMITTED_S:g} s: {view}")
        await asyncio.sleep(0.1)


async def event_streams(endpoints: list[str]) -> int:
    """Event streams open on the nodes now (their ``coordinator_event_streams``)."""
    return sum(metric_value(text, "coordinator_event_streams") or 0 for text in await metrics_texts(endpoints))


async def _open_dashboards(cluster: LocalCluster, endpoints: list[str], count: int) -> Dashboards:
    """``count`` pages of /ui/, on the followers in turn; back once every
    page holds its event stream (the nodes' gauge says so)."""
    leader = await cluster.wait_leader()
    followers = [i for i in cluster.ids if i != leader]
    on = [followers[n % len(followers)] for n in range(count)]
    dashboards = Dashboards([f"{cluster.url(i)}/ui/" for i in on])
    dashboards.on = on  # type: ignore[attr-defined]
    try:
        await dashboards.start()
        deadline = time.monotonic() + DASHBOARD_STREAMS_S
        while (streams := await event_streams(endpoints)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"--dashboards: {streams} of {count} pages hold an event stream after 30 s")
            await asyncio.sleep(0.2)
    except BaseException:
        await dashboards.stop()
        raise
    return dashboards


def _per_workflow_and_second(completed: int, elapsed_s: float, entries: int, commands: int | None) -> dict:
    """Raft entries (what the commit index moved by) and commands (the nodes'
    applied-commands counter, None if they export none; group commit puts
    several commands in one entry), per workflow and per second."""

    def per(count: int | None, by: float) -> float | None:
        return round(count / by, 2) if count is not None and by else None

    return {
        "entries_per_workflow": per(entries, completed),
        "log_entries_per_s": per(entries, elapsed_s),
        "commands_per_workflow": per(commands, completed),
        "commands_per_s": per(commands, elapsed_s),
    }


def cpu_per_workflow(
    nodes: list[dict], leader: str | None, client_cpu_s: float, completed: int, *, workers_cpu_s: float = 0.0
) -> dict | None:
    """Milliseconds of CPU per completed workflow over the measured window:
    every process the run started (``total``), the leader at the start of
    the window, the followers together, the bench client, and the workers
    together (``workers``, 0 in local mode). Steadier than throughput on a
    shared machine; None without a local cluster or with nothing completed."""
    if not nodes or not completed:
        return None
    leader_s = sum(n["cpu_s"] for n in nodes if n["id"] == leader)
    followers_s = sum(n["cpu_s"] for n in nodes if n["id"] != leader)

    def ms(seconds: float) -> float:
        return round(seconds * 1000 / completed, 3)

    return {
        "total": ms(leader_s + followers_s + client_cpu_s + workers_cpu_s),
        "leader": ms(leader_s),
        "followers": ms(followers_s),
        "client": ms(client_cpu_s),
        "workers": ms(workers_cpu_s),
    }


async def metrics_texts(endpoints: list[str], tls: ClientTls | None = None) -> list[str]:
    """The ``/metrics`` text of every node that answers (with $COORDINATOR_TOKEN when set)."""
    token = os.environ.get("COORDINATOR_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    texts = []
    connector = aiohttp.TCPConnector(ssl=tls.ssl_context()) if tls is not None else None
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers, connector=connector) as session:
        for endpoint in endpoints:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                async with session.get(endpoint.rstrip("/") + "/metrics") as response:
                    if response.status == 200:
                        texts.append(await response.text())
    return texts


# The dispatchers' counters (cluster/api/metrics.py): calls leased to
# workers, leased again, and lost with their worker's lease.
DISPATCH_METRICS = {
    "dispatched": "coordinator_worker_dispatches_total",
    "redispatched": "coordinator_worker_redispatches_total",
    "leases_lost": "coordinator_worker_leases_lost_total",
}


async def dispatches_on(endpoints: list[str], tls: ClientTls | None = None) -> dict[str, int]:
    """The dispatchers' counters summed over the nodes that answer (only a
    leader's move; a node that lost the lead keeps its figures)."""
    texts = await metrics_texts(endpoints, tls)
    return {name: sum(metric_value(t, metric) or 0 for t in texts) for name, metric in DISPATCH_METRICS.items()}


def _per_process(result: dict, leader: str | None) -> None:
    """Each node (with its role over the window) and each worker gets its
    CPU per completed workflow; so does the bench client."""
    completed = result["completed"]

    def ms(seconds: float) -> float | None:
        return round(seconds * 1000 / completed, 3) if completed else None

    for node in result["nodes"]:
        node["role"] = "leader" if node["id"] == leader else "follower"
        node["cpu_ms_per_workflow"] = ms(node["cpu_s"])
    for worker in result.get("worker_processes", []):
        worker["cpu_ms_per_workflow"] = ms(worker["cpu_s"])
    result["client_cpu_ms_per_workflow"] = (result.get("cpu_ms_per_workflow") or {}).get("client")


async def commands_on(endpoints: list[str], tls: ClientTls | None = None) -> int | None:
    """Commands applied so far by the most advanced node (each node applies
    them all), from ``/metrics``; None if no node exports the counter."""
    counts = [c for text in await metrics_texts(endpoints, tls) if (c := commands_committed(text)) is not None]
    return max(counts, default=None)


def _node_stats(
    cluster: LocalCluster | None, cpu_before: dict[str, float], ids: tuple[str, ...] | None = None
) -> list[dict]:
    """CPU and peak RSS of the nodes (or of the processes ``ids`` names, such as the workers)."""
    stats = []
    for node_id in (ids if ids is not None else cluster.ids) if cluster is not None else []:
        cpu_s, rss_mb = proc_stats(cluster.supervisor.pid(node_id))
        stats.append(
            {"id": node_id, "cpu_s": round(cpu_s - cpu_before.get(node_id, 0.0), 2), "rss_mb_max": round(rss_mb, 1)}
        )
    return stats


def attach_baseline(result: dict, baseline: dict | None) -> dict:
    """Put ``baseline`` into ``result`` with its ratios. Against PySyncObj:
    ``ratio`` is our committed commands/s (log entries as the state machine
    sees them; the commit index delta when the nodes' counters are missing)
    over its writes/s (one command each), ``entry_ratio`` our Raft entries/s
    (several commands share one under group commit) and ``workflow_ratio``
    our workflows/s over the same. Against etcd: our registry writes/s over
    its puts/s."""
    result["baseline"] = baseline
    if baseline is None:
        result["ratio"] = None
        return result
    theirs = baseline["throughput_per_s"]
    if baseline["name"] == "pysyncobj":
        ours = result.get("commands_per_s")
        result["ratio_basis"] = "commands" if ours is not None else "raft entries"
        result["ratio"] = ratio(ours if ours is not None else result.get("log_entries_per_s"), theirs)
        result["entry_ratio"] = ratio(result.get("log_entries_per_s"), theirs)
        result["workflow_ratio"] = ratio(result["throughput_per_s"], theirs)
    else:
        result["ratio"] = ratio(result["throughput_per_s"], theirs)
    return result


async def run(options: BenchOptions) -> dict:
    """The whole invocation: our run, then the baseline's, one after the other."""
    if options.workload == "failover":
        return await run_failover(options)
    without = await run_bench(dataclasses.replace(options, dashboards=0)) if options.dashboards else None
    local = None
    if options.workers:
        local = await run_bench(
            dataclasses.replace(options, workers=0, profile=profile_of_mode(options.profile, "local"))
        )
        options = dataclasses.replace(options, profile=profile_of_mode(options.profile, "remote"))
    result = await run_bench(options)
    if without is not None:
        result["dashboards"].update(compare_runs(without, result))
    if local is not None:
        result["workers"] = compare_modes(local, result, options.workers)
    baseline = None
    if options.baseline == "pysyncobj":
        baseline = await run_pysyncobj_baseline(options.concurrency, options.duration_s, options.warmup_s)
    elif options.baseline == "etcd":
        baseline = await run_etcd_baseline(options.concurrency, options.duration_s, options.warmup_s)
    return attach_baseline(result, baseline)


def profile_of_mode(path: str | None, mode: str) -> str | None:
    """``--profile`` FILE of one executor mode: ``-local`` or ``-remote`` before its suffix."""
    if path is None:
        return None
    given = Path(path)
    return str(given.with_name(f"{given.stem}-{mode}{given.suffix}"))


def compare_runs(without: dict, with_: dict) -> dict:
    """The run with dashboards against the run without: throughput and the
    leader's CPU per workflow, and how they changed (a fraction)."""

    def change(before: float | None, after: float | None) -> float | None:
        return None if not before or after is None else round(after / before - 1, 3)

    cost_without, cost_with = without.get("cpu_ms_per_workflow") or {}, with_.get("cpu_ms_per_workflow") or {}
    return {
        "throughput_without_per_s": without["throughput_per_s"],
        "throughput_change": change(without["throughput_per_s"], with_["throughput_per_s"]),
        "leader_cpu_ms_per_workflow_without": cost_without.get("leader"),
        "leader_cpu_ms_per_workflow_change": change(cost_without.get("leader"), cost_with.get("leader")),
        "followers_cpu_ms_per_workflow_without": cost_without.get("followers"),
        "latency_ms_without": without["latency_ms"],
    }


def compare_modes(local: dict, remote: dict, workers: int) -> dict:
    """The remote-mode run (``remote``, with ``workers`` workers) against the
    local-mode run: both runs' throughput, latency and CPU per workflow, and
    the leader's CPU per workflow remote over local against the target."""

    def brief(run: dict) -> dict:
        return {
            "completed": run["completed"],
            "errors": run["errors"],
            "throughput_per_s": run["throughput_per_s"],
            "latency_ms": run["latency_ms"],
            "entries_per_workflow": run["entries_per_workflow"],
            "commands_per_workflow": run.get("commands_per_workflow"),
            "cpu_ms_per_workflow": run.get("cpu_ms_per_workflow"),
            "nodes": run["nodes"],
            "client_cpu_s": run.get("client_cpu_s"),
            "client_cpu_ms_per_workflow": run.get("client_cpu_ms_per_workflow"),
            "profile": (run.get("profile") or {}).get("file"),
        }

    local_leader = (local.get("cpu_ms_per_workflow") or {}).get("leader")
    remote_leader = (remote.get("cpu_ms_per_workflow") or {}).get("leader")
    leader_ratio = round(remote_leader / local_leader, 3) if local_leader and remote_leader is not None else None
    return {
        "count": workers,
        "local": brief(local),
        "remote": {
            **brief(remote),
            "worker_processes": remote.get("worker_processes", []),
            "worker_capacity": remote.get("worker_capacity"),
            "worker_dispatches": remote.get("worker_dispatches"),
        },
        "leader_cpu_ratio": leader_ratio,
        "leader_cpu_ratio_target": WORKERS_LEADER_TARGET,
        "target_met": None if leader_ratio is None else leader_ratio <= WORKERS_LEADER_TARGET,
    }


# -- output -----------------------------------------------------------------------------------
def render(result: dict) -> str:
    if result["workload"] == "failover":
        return render_failover(result)
    latency = result["latency_ms"]
    lines = [
        f"workload {result['workload']}  concurrency {result['concurrency']}  duration {result['duration_s']} s"
        + ("  TLS" if result.get("tls") else ""),
        f"completed {result['completed']}  throughput {result['throughput_per_s']}/s  errors {result['errors'] or 0}",
        f"latency ms  p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  max {latency['max']}",
        f"per workflow: raft entries {result['entries_per_workflow']}, commands {result.get('commands_per_workflow')}; "
        f"per second: raft entries {result.get('log_entries_per_s')}, commands {result.get('commands_per_s')}",
    ]
    lines += [f"node {n['id']}: cpu {n['cpu_s']} s, peak rss {n['rss_mb_max']} MB" for n in result["nodes"]]
    lines += [
        f"worker {w['id']}: cpu {w['cpu_s']} s, peak rss {w['rss_mb_max']} MB"
        for w in result.get("worker_processes", [])
    ]
    lines.append(f"bench client: cpu {result.get('client_cpu_s')} s")
    cost = result.get("cpu_ms_per_workflow")
    if cost:
        lines.append(
            f"cpu ms per workflow: total {cost['total']}  leader {cost['leader']}  "
            f"followers {cost['followers']}  client {cost['client']}"
            + (f"  workers {cost['workers']}" if cost.get("workers") else "")
        )
    lines += _render_baseline(result)
    lines += _render_workers(result.get("workers"))
    dashboards = result.get("dashboards")
    if dashboards:
        lines.append(
            f"dashboards: {dashboards['count']} open on {', '.join(dashboards['on'])} "
            f"({dashboards['event_streams_open']} event streams), browser cpu {dashboards['browser_cpu_s']} s"
        )
        if "throughput_change" in dashboards:
            lines.append(
                f"  without them: throughput {dashboards['throughput_without_per_s']}/s "
                f"(with: {_percent(dashboards['throughput_change'])}), leader cpu ms per workflow "
                f"{dashboards['leader_cpu_ms_per_workflow_without']} "
                f"(with: {_percent(dashboards['leader_cpu_ms_per_workflow_change'])})"
            )
    return "\n".join(lines)


def _render_workers(workers: dict | None) -> list[str]:
    """Local mode against remote mode with workers (``--workers``)."""
    if not workers:
        return []
    lines = [f"executor modes (same invocation; remote with {workers['count']} worker(s)):"]
    for mode in ("local", "remote"):
        run = workers[mode]
        cost = run["cpu_ms_per_workflow"] or {}
        lines.append(
            f"  {mode:<6} throughput {run['throughput_per_s']}/s  p50 {run['latency_ms']['p50']} ms  "
            f"p99 {run['latency_ms']['p99']} ms  cpu ms/workflow: leader {cost.get('leader')}  followers "
            f"{cost.get('followers')}  workers {cost.get('workers')}  client {cost.get('client')}  total {cost.get('total')}"
        )
        processes = [f"{n['id']} ({n.get('role', '?')}) {n.get('cpu_ms_per_workflow')}" for n in run["nodes"]]
        processes += [f"{w['id']} (worker) {w.get('cpu_ms_per_workflow')}" for w in run.get("worker_processes", [])]
        processes.append(f"client {run.get('client_cpu_ms_per_workflow')}")
        lines.append(f"         per process, cpu ms/workflow: {', '.join(processes)}")
    remote = workers["remote"]
    if remote.get("worker_dispatches") is not None:
        counts = remote["worker_dispatches"]
        lines.append(
            f"  remote: {counts.get('dispatched')} calls leased to the workers ({counts.get('redispatched')} again, "
            f"{counts.get('leases_lost')} leases lost), worker capacity {remote.get('worker_capacity')}"
        )
    ratio_text = "?" if workers["leader_cpu_ratio"] is None else f"{workers['leader_cpu_ratio'] * 100:.0f}%"
    verdict = {True: "met", False: "missed", None: "?"}[workers["target_met"]]
    lines.append(
        f"  leader cpu per workflow, remote over local: {ratio_text} "
        f"(target at most {workers['leader_cpu_ratio_target'] * 100:.0f}%: {verdict})"
    )
    return lines


def _percent(change: float | None) -> str:
    return "?" if change is None else f"{change * 100:+.1f}%"


def _render_baseline(result: dict) -> list[str]:
    baseline = result.get("baseline")
    if baseline is None:
        return []
    latency = baseline["latency_ms"]
    lines = [
        f"baseline {baseline['name']}: {baseline['throughput_per_s']} {baseline['unit']}/s  "
        f"p50 {latency['p50']} ms  p99 {latency['p99']} ms  errors {baseline['errors'] or 0}"
    ]
    if baseline["name"] == "pysyncobj":
        lines.append(
            f"ratio over its writes/s: our {result['ratio_basis']}/s {result['ratio']}; raft entries/s {result['entry_ratio']}; "
            f"{result['workload']} workflows/s {result['workflow_ratio']}"
        )
    else:
        lines.append(f"ratio: our registry writes/s over etcd puts/s {result['ratio']}")
    lines.append(f"note: {baseline['note']}")
    return lines


def dump(result: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
