"""Three real nodes on loopback: one leader, redirects, linearizable reads."""

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


async def _views_once_every_peer_is_connected(cluster, timeout_s: float = 15.0) -> list[dict]:
    """A leader needs only a majority, so the fixture can hand over a cluster
    whose two followers have not connected to each other yet; wait (bounded)
    for every link before asserting on the views."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        views = [await cluster.cluster_view(i) for i in cluster.ids]
        connected = all(v and all(n["reachable"] for n in v["nodes"]) for v in views)
        if connected or asyncio.get_running_loop().time() > deadline:
            return views
        await asyncio.sleep(0.1)


async def test_exactly_one_leader_and_every_node_agrees(cluster):
    views = await _views_once_every_peer_is_connected(cluster)
    roles = [v["role"] for v in views]
    assert roles.count("leader") == 1, roles
    leader = views[roles.index("leader")]["node"]
    assert {v["leader"]["id"] for v in views} == {leader}
    assert {v["term"] for v in views} == {views[0]["term"]}
    for view in views:
        assert [n["id"] for n in view["nodes"]] == cluster.ids
        assert all(n["reachable"] for n in view["nodes"])


async def test_follower_answers_writes_with_307_to_the_leader(cluster):
    leader = await cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    response = await cluster.request("PUT", follower, "/v1/services/orders?x=1", {"url": "http://127.0.0.1:9001"})
    assert response.status == 307
    assert response.headers["Location"] == cluster.url(leader) + "/v1/services/orders?x=1"
    assert response.json["error"]["code"] == "not_leader"
    assert response.json["error"]["leader"] == cluster.url(leader)
    # Reads are linearizable by default: a follower redirects them too.
    read = await cluster.request("GET", follower, "/v1/services")
    assert read.status == 307


async def test_a_write_through_any_node_is_read_back_through_every_node(cluster):
    for i, via in enumerate(cluster.ids):
        name = f"svc-{via}"
        written = await cluster.put_service(via, name, f"http://127.0.0.1:{9000 + i}")
        assert written.status == 200, written
        assert written.json["url"] == f"http://127.0.0.1:{9000 + i}"
        for reader in cluster.ids:
            read = await cluster.request("GET", reader, f"/v1/services/{name}", follow=True)
            assert read.status == 200, read
            assert read.json["url"] == f"http://127.0.0.1:{9000 + i}"
    listed = await cluster.request("GET", cluster.ids[0], "/v1/services", follow=True)
    assert [s["name"] for s in listed.json["services"]] == sorted(f"svc-{i}" for i in cluster.ids)
    # Every replica holds the same data locally once it has applied the leader's index.
    leader = await cluster.wait_leader()
    index = (await cluster.cluster_view(leader))["commit_index"]
    for node_id in cluster.ids:
        await cluster.wait_applied(node_id, index)
        stale = await cluster.request("GET", node_id, "/v1/services?stale=true")
        assert stale.status == 200
        assert stale.json == listed.json


async def test_delete_then_read_gives_404(cluster):
    assert (await cluster.put_service(cluster.ids[1], "gone", "http://127.0.0.1:9009")).status == 200
    deleted = await cluster.request("DELETE", cluster.ids[2], "/v1/services/gone", follow=True)
    assert deleted.status == 200 and deleted.json["name"] == "gone"
    missing = await cluster.request("GET", cluster.ids[0], "/v1/services/gone", follow=True)
    assert missing.status == 404
    assert missing.json["error"]["code"] == "not_found"
    again = await cluster.request("DELETE", cluster.ids[0], "/v1/services/gone", follow=True)
    assert again.status == 404


async def test_health_readiness_and_metrics(cluster):
    for node_id in cluster.ids:
        assert (await cluster.request("GET", node_id, "/healthz")).status == 200
        ready = await cluster.request("GET", node_id, "/readyz")
        assert ready.status == 200, ready
    await cluster.put_service(cluster.ids[0], "metered", "http://127.0.0.1:9100")
    leader = await cluster.wait_leader()
    text = (await cluster.request("GET", leader, "/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The names and types of the hand-written exposition that prometheus_client replaced, and the
    # event streams
    # (the parser gives a counter's name without _total).
    assert {name: f.type for name, f in families.items()} == METRIC_TYPES

    def value(name: str, **labels: str) -> float:
        samples = [s for f in families.values() for s in f.samples]
        return next(s.value for s in samples if s.name == name and s.labels == {"node": leader, **labels})

    assert value("coordinator_raft_role", role="leader") == 1
    assert value("coordinator_raft_role", role="follower") == 0
    assert value("coordinator_proposals_total", outcome="applied") >= 1
    assert value("coordinator_services") == 1
    assert value("coordinator_raft_term") >= 1 and value("coordinator_raft_commit_index") >= 1
    assert value("coordinator_apply_seconds_count") >= 1
    assert value("coordinator_workflows_in_flight", kind="saga") == 0
    assert value("coordinator_workflows_kept", kind="saga") == 0
    assert "coordinator_breaker_open" in text


async def test_each_node_keeps_its_last_minutes_in_windows(cluster):
    """GET /v1/cluster/recent: the node process samples every 5 s; the
    leader's windows count the commands it applied and its commits."""
    leader = await cluster.wait_leader()
    for n in range(5):
        await cluster.put_service(leader, f"recent-{n}", "http://127.0.0.1:9100")
    deadline = time.monotonic() + 20
    while True:
        recent = (await cluster.request("GET", leader, "/v1/cluster/recent")).json
        assert recent["node"] == leader and recent["interval_s"] == 5
        busy = [w for w in recent["windows"] if w["commits"] > 0]
        if busy:
            break
        assert time.monotonic() < deadline, recent
        await asyncio.sleep(0.5)
    assert busy[0]["commands_per_s"] > 0 and busy[0]["commit_p99_ms"] > 0
    follower = next(i for i in cluster.ids if i != leader)
    windows = (await cluster.request("GET", follower, "/v1/cluster/recent")).json["windows"]
    assert all(w["commits"] == 0 and w["commit_p99_ms"] is None for w in windows)  # only a leader proposes


METRIC_TYPES = {
    **dict.fromkeys(
        [
            "coordinator_raft_term",
            "coordinator_raft_commit_index",
            "coordinator_raft_applied_index",
            "coordinator_raft_role",
            "coordinator_raft_has_quorum",
            "coordinator_raft_peer_connected",
            "coordinator_services",
            "coordinator_workflows_in_flight",
            "coordinator_workflows_kept",
            "coordinator_executor_calls_in_flight",
            "coordinator_breaker_open",
            "coordinator_event_streams",
            "coordinator_workers_connected",
            "coordinator_worker_commands_queued",
        ],
        "gauge",
    ),
    **dict.fromkeys(
        [
            "coordinator_proposals",
            "coordinator_applied_rejections",
            "coordinator_stale_term_entries",
            "coordinator_entries_applied",
            "coordinator_commands_applied",
            "coordinator_read_barriers",
            "coordinator_barrier_reads",
            "coordinator_snapshots_taken",
            "coordinator_snapshots_restored",
            "coordinator_raft_resent_entries",
            "coordinator_http_responses",
            "coordinator_event_streams_dropped",
            "coordinator_worker_dispatches",
            "coordinator_worker_redispatches",
            "coordinator_worker_leases_lost",
            "coordinator_worker_reports_dropped",
        ],
        "counter",
    ),
    "coordinator_apply_seconds": "histogram",
    "coordinator_commit_seconds": "histogram",
}
