"""Transition workers on a real cluster: three node processes in ``remote``
executor mode with an API token, worker processes (``coordinator worker``)
over gRPC, a participant over HTTP that applies each idempotency key once.

- the seed sagas (happy, compensated) and 2PC (commit, abort) run through
  the workers; GET /v1/workers and ``coordinator workers`` show them;
- SIGKILL of the worker holding a call: the call finishes on the other
  worker, one effect for its key;
- SIGKILL of the leader while a worker holds a lease: the new leader
  re-dispatches (a higher fence), one effect;
- a saga pinned to release 2.0 waits (queued, the participant sees nothing)
  while only 1.0 workers are connected, and runs once a 2.0 worker joins;
- bad input: an unknown id and a refused release are shown with the reason,
  a worker with a wrong token exits 1 with one line, a report for a call it
  does not hold and a malformed message get an error, the stream stays open.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import grpc
import pytest
import pytest_asyncio
from aiohttp import web

from coordinator.client import Conflict, Coordinator, InvalidRequest
from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.client.grpc_gen import coordinator_pb2_grpc
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.launcher.local import LocalCluster, fast_raft, free_base_port, serve_on_loopback

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 30.0
LEASE_S = 1.5


class Participant:
    """Applies each idempotency key once; a body with "hold" waits until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (key, fence) of every request
        self.effects: Counter[str] = Counter()
        self.released = asyncio.Event()

    def keyed(self, key: str) -> list[str]:
        return [fence for k, fence in self.calls if k == key]

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            key = request.headers["Idempotency-Key"]
            self.calls.append((key, request.headers.get("Coordinator-Fence", "")))
            body = await request.json() if request.can_read_body else None
            if isinstance(body, dict) and body.get("hold"):
                await self.released.wait()
            if isinstance(body, dict) and body.get("fail"):
                return web.json_response({"error": "declined"}, status=422)
            if key not in self.effects:
                self.effects[key] += 1
            if request.path == "/prepare":
                return web.json_response({"vote": "no" if isinstance(body, dict) and body.get("no") else "yes"})
            return web.json_response({"key": key})

        app = web.Application()
        app.router.add_post("/{op}", handle)
        return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory):
    participant = Participant()
    runner, url = await serve_on_loopback(participant.app(), shutdown_timeout_s=1)
    cluster = LocalCluster(
        tmp_path_factory.mktemp("workers"),
        raft=fast_raft(),
        executor=ExecutorSettings(mode="remote"),
        workers=WorkerSettings(
            ids=("w1", "w2", "w3", "w4"), releases=("1.0", "2.0"), heartbeat_s=0.25, lease_s=LEASE_S
        ),
        token=True,
    )
    cluster.start()
    try:
        await cluster.wait_leader()
        for worker_id in ("w1", "w2"):
            cluster.supervisor.start_worker(worker_id, ["--release", "1.0", "--capacity", "8"])
        async with Coordinator([cluster.url(i) for i in cluster.ids], token=cluster.token) as client:
            await client.put_service("shop", url)
            await until(lambda: admitted(client, {"w1", "w2"}))
            yield cluster, client, participant
    finally:
        await cluster.close()
        await runner.cleanup()


async def until(check, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {check}")
        await asyncio.sleep(0.1)


async def admitted(client: Coordinator, ids: set[str]) -> bool:
    try:
        view = await client.workers()
    except Exception:  # noqa: BLE001 - a leader change: ask again
        return False
    return ids <= {w["id"] for w in view["workers"] if w["admitted"]}


def step(name: str, **body) -> dict:
    return {
        "name": name,
        "service": "shop",
        "action": {"method": "POST", "path": "/do", "body": body},
        "compensation": {"method": "POST", "path": "/undo"},
        "retry": {"max_attempts": 3, "backoff_s": 0.05},
    }


def transaction(tx_id: str, no: bool = False) -> dict:
    return {
        "id": tx_id,
        "participants": [
            {
                "service": "shop",
                "prepare": {"path": "/prepare", "body": {"no": no}},
                "commit": {"path": "/commit"},
                "abort": {"path": "/abort"},
            }
        ],
    }


async def test_sagas_and_transactions_run_through_the_workers(setup) -> None:
    cluster, client, participant = setup
    happy = await client.submit_saga({"id": "happy", "steps": [step("a"), step("b")]})
    declined = await client.submit_saga({"id": "declined", "steps": [step("a"), step("b", fail=True)]})
    commit = await client.submit_transaction(transaction("tx-commit"))
    abort = await client.submit_transaction(transaction("tx-abort", no=True))
    assert (await client.wait_saga(happy.id, timeout=WAIT_S)).state == "completed"
    assert (await client.wait_saga(declined.id, timeout=WAIT_S)).state == "compensated"
    assert (await client.wait_transaction(commit.id, timeout=WAIT_S)).state == "committed"
    assert (await client.wait_transaction(abort.id, timeout=WAIT_S)).state == "aborted"
    assert participant.effects["declined/a/compensation"] == 1 and participant.effects["tx-commit/shop/commit"] == 1
    view = await client.workers()
    assert view["mode"] == "remote"
    served = {w["id"]: w for w in view["workers"] if w["admitted"]}
    assert {"w1", "w2"} <= set(served) and sum(w["completed"] for w in served.values()) >= 9
    assert all(w["release"] == "1.0" and w["last_heartbeat"] for w in served.values())
    leader = await cluster.wait_leader()
    workers = (await cluster.request("GET", leader, "/v1/cluster")).json["executor"]["workers"]
    assert workers["dispatched_total"] >= 9 and workers["workers_connected"] >= 2
    follower = next(i for i in cluster.ids if i != leader)
    assert (await cluster.request("GET", follower, "/v1/workers")).status == 307
    env = {**os.environ, "COORDINATOR_TOKEN": cluster.token}
    listed = subprocess.run(
        [sys.executable, "-m", "coordinator", "workers", "--endpoints", ",".join(cluster.url(i) for i in cluster.ids)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert "mode remote" in listed.stdout and "w1" in listed.stdout and "w2" in listed.stdout


async def holder(client: Coordinator) -> str:
    async def one():
        view = await client.workers()
        busy = [w["id"] for w in view["workers"] if w["admitted"] and w["in_flight"]]
        return busy[0] if busy else None

    return await until(one)


async def test_a_worker_killed_mid_call_its_call_finishes_on_the_other(setup) -> None:
    cluster, client, participant = setup
    participant.released.clear()
    saga = await client.submit_saga({"id": "killed-worker", "steps": [step("slow", hold=True)]})
    key = "killed-worker/slow/action"
    await until(lambda: _true(len(participant.keyed(key)) >= 1))
    victim = await holder(client)
    cluster.supervisor.kill(victim)
    await until(lambda: _true(len(participant.keyed(key)) >= 2))  # the other worker makes it again
    participant.released.set()
    assert (await client.wait_saga(saga.id, timeout=WAIT_S)).state == "completed"
    assert participant.effects[key] == 1
    leader = await cluster.wait_leader()
    workers = (await cluster.request("GET", leader, "/v1/cluster")).json["executor"]["workers"]
    assert workers["leases_lost_total"] >= 1 and workers["redispatches_total"] >= 1
    metrics = (await cluster.request("GET", leader, "/metrics")).text
    lost = re.search(rf'^coordinator_worker_leases_lost_total{{node="{leader}"}} (\S+)$', metrics, re.M)
    assert lost is not None and float(lost.group(1)) >= 1, metrics
    assert re.search(r"^coordinator_worker_commands_queued\{", metrics, re.M)
    cluster.supervisor.start_worker(victim, ["--release", "1.0", "--capacity", "8"])
    await until(lambda: admitted(client, {"w1", "w2"}))


async def _true(value: bool) -> bool:
    return value


async def test_the_leader_killed_while_a_worker_holds_a_lease_the_new_leader_redispatches(setup) -> None:
    cluster, client, participant = setup
    participant.released.clear()
    saga = await client.submit_saga({"id": "killed-leader", "steps": [step("slow", hold=True)]})
    key = "killed-leader/slow/action"
    await until(lambda: _true(len(participant.keyed(key)) >= 1))
    old_leader = await cluster.wait_leader()
    cluster.supervisor.kill(old_leader)
    first_fence = participant.keyed(key)[0]
    new_leader = await cluster.wait_leader(exclude=old_leader)
    assert new_leader != old_leader
    await until(lambda: _true(len(set(participant.keyed(key))) >= 2))  # the new leader's fence
    assert any(fence != first_fence for fence in participant.keyed(key))
    participant.released.set()
    assert (await client.wait_saga(saga.id, timeout=WAIT_S)).state == "completed"
    assert participant.effects[key] == 1
    cluster.supervisor.start(old_leader)
    await until(lambda: admitted(client, {"w1", "w2"}))


async def test_a_pinned_saga_waits_for_its_release(setup) -> None:
    cluster, client, participant = setup
    participant.released.set()
    saga = await client.submit_saga({"id": "pinned", "release": "2.0", "steps": [step("a")]})
    await asyncio.sleep(2 * LEASE_S)
    assert (await client.get_saga(saga.id)).state in ("started", "running")
    assert participant.keyed("pinned/a/action") == []
    assert (await client.workers())["queued"] >= 1
    leader = await cluster.wait_leader()
    shown = (await cluster.request("GET", leader, "/v1/sagas/pinned?definition=true")).json
    assert shown["definition"]["release"] == "2.0"
    for other in ({"id": "pinned", "release": "1.0", "steps": [step("a")]}, {"id": "pinned", "steps": [step("a")]}):
        with pytest.raises(Conflict):
            await client.submit_saga(other)
    with pytest.raises(InvalidRequest) as refused:  # no worker of it could ever be admitted
        await client.submit_saga({"id": "pinned-3", "release": "3.0", "steps": [step("a")]})
    assert refused.value.field == "release"
    cluster.supervisor.start_worker("w3", ["--release", "2.0"])
    assert (await client.wait_saga(saga.id, timeout=WAIT_S)).state == "completed"
    view = {w["id"]: w for w in (await client.workers())["workers"]}
    assert view["w3"]["release"] == "2.0" and view["w3"]["completed"] >= 1
    assert participant.effects["pinned/a/action"] == 1
    cluster.supervisor.stop("w3")


def _worker(cluster: LocalCluster, worker_id: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordinator",
            "worker",
            "--config",
            str(cluster.cluster_file),
            "--id",
            worker_id,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or dict(os.environ),
    )


async def test_workers_refused_say_why_and_a_wrong_token_ends_the_worker(setup, tmp_path) -> None:
    cluster, client, _ = setup
    unknown = _worker(cluster, "w9", "--release", "1.0")
    refused = _worker(cluster, "w4", "--release", "3.0")
    try:

        async def shown():
            view = {w["id"]: w for w in (await client.workers())["workers"]}
            return "w9" in view and "w4" in view and view

        view = await until(shown)
        assert view["w9"]["admitted"] is False and "not in [workers] ids" in view["w9"]["reason"]
        assert view["w4"]["admitted"] is False and "'3.0'" in view["w4"]["reason"]
        assert unknown.poll() is None and refused.poll() is None  # they keep asking
    finally:
        for process in (unknown, refused):
            process.terminate()
            process.wait(timeout=10)
    wrong = tmp_path / "wrong.token"
    wrong.write_text("x" * 32 + "\n")
    wrong.chmod(0o600)
    bad = _worker(cluster, "w4", "--release", "1.0", "--token-file", str(wrong))
    _, stderr = bad.communicate(timeout=30)
    assert bad.returncode == 1
    lines = [line for line in stderr.splitlines() if line.startswith("coordinator worker")]
    assert len(lines) == 1 and "refused its token" in lines[0], stderr


async def test_a_report_it_does_not_hold_and_a_malformed_message_get_an_error(setup) -> None:
    cluster, client, _ = setup
    leader = await cluster.wait_leader()
    target = cluster.config.node(leader).grpc
    async with grpc.aio.insecure_channel(target) as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unauthorized:
            await stub.Work(iter([pb.WorkerMessage(hello=pb.WorkerHello(id="w4", release="1.0", capacity=1))])).read()
        assert unauthorized.value.code() == grpc.StatusCode.UNAUTHENTICATED
        outgoing: asyncio.Queue = asyncio.Queue()

        async def requests():
            while (message := await outgoing.get()) is not None:
                yield message

        stream = stub.Work(requests(), metadata=(("authorization", f"Bearer {cluster.token}"),))
        outgoing.put_nowait(pb.WorkerMessage(hello=pb.WorkerHello(id="w4", release="1.0", capacity=1)))
        first = await asyncio.wait_for(stream.read(), 10)
        assert first.WhichOneof("kind") == "welcome"
        outgoing.put_nowait(pb.WorkerMessage(report=pb.WorkerReport(dispatch_id="9-9-9", fence="1:1", outcome="ok")))
        error = await asyncio.wait_for(stream.read(), 10)
        assert (error.error.code, error.error.dispatch_id) == ("not_held", "9-9-9")
        outgoing.put_nowait(pb.WorkerMessage())
        error = await asyncio.wait_for(stream.read(), 10)
        assert error.error.code == "invalid" and "empty" in error.error.message
        outgoing.put_nowait(pb.WorkerMessage(heartbeat=pb.WorkerHeartbeat()))
        view = {w["id"]: w for w in (await client.workers())["workers"]}
        assert view["w4"]["admitted"] is True  # the session stayed open
        outgoing.put_nowait(None)
        stream.cancel()
    await until(lambda: _gone(client, "w4"))


async def _gone(client: Coordinator, worker_id: str) -> bool:
    return worker_id not in {w["id"] for w in (await client.workers())["workers"] if w["admitted"]}


async def test_up_with_workers_runs_remote_and_its_workers_make_the_calls(tmp_path) -> None:
    """``coordinator up --workers 2``: remote mode, w1 and w2 admitted, a saga
    runs through them; Ctrl-C stops nodes and workers (exit 0)."""
    participant = Participant()
    participant.released.set()
    runner, url = await serve_on_loopback(participant.app(), shutdown_timeout_s=1)
    data_dir = tmp_path / "up"
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "up", "--workers", "2", "--data-dir", str(data_dir)]
        + ["--base-port", str(free_base_port(3))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        endpoints: list[str] = []
        while not any(line.startswith("Ctrl-C") for line in lines):
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
            assert line, "".join(lines)
            lines.append(line)
            match = re.match(r"\s+n\d+\s+http (http://\S+)", line)
            if match:
                endpoints.append(match.group(1))
        text = "".join(lines)
        assert "executor mode remote" in text and re.search(r"^\s+w1\s+worker", text, re.M), text
        assert 'mode = "remote"' in (data_dir / "cluster.toml").read_text()
        async with Coordinator(endpoints) as client:
            await until(lambda: admitted(client, {"w1", "w2"}))
            await client.put_service("shop", url)
            saga = await client.submit_saga({"id": "up-saga", "steps": [step("a"), step("b")]})
            assert (await client.wait_saga(saga.id, timeout=WAIT_S)).state == "completed"
            view = await client.workers()
            assert sum(w["completed"] for w in view["workers"]) >= 2
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0 and "stopped every node and worker" in out, out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await runner.cleanup()
    assert participant.effects["up-saga/b/action"] == 1


async def test_a_worker_reaches_a_tls_cluster_with_the_clusters_ca(tmp_path) -> None:
    """[tls]: the nodes' APIs speak TLS only; a worker verifies them with the
    cluster file's CA and runs a saga in remote mode."""
    participant = Participant()
    participant.released.set()
    runner, url = await serve_on_loopback(participant.app(), shutdown_timeout_s=1)
    cluster = LocalCluster(
        tmp_path / "tls",
        raft=fast_raft(),
        executor=ExecutorSettings(mode="remote"),
        workers=WorkerSettings(ids=("w1",)),
        token=True,
        tls=True,
    )
    cluster.start()
    try:
        await cluster.wait_leader()
        cluster.supervisor.start_worker("w1")
        tls = cluster.client_tls()
        async with Coordinator(
            [cluster.url(i) for i in cluster.ids], token=cluster.token, ca_file=tls.ca_file
        ) as client:
            await client.put_service("shop", url)
            await until(lambda: admitted(client, {"w1"}))
            saga = await client.submit_saga({"id": "tls-saga", "steps": [step("a")]})
            assert (await client.wait_saga(saga.id, timeout=WAIT_S)).state == "completed"
    finally:
        await cluster.close()
        await runner.cleanup()
    assert participant.effects["tls-saga/a/action"] == 1
