"""SIGKILL the leader: the others elect a new one; the killed node catches up."""

import asyncio
import time

import pytest

from coordinator.cluster.launcher.local import LocalCluster, fast_raft

pytestmark = pytest.mark.integration


async def test_leader_killed_new_leader_accepts_writes_and_old_one_catches_up(cluster):
    old = await cluster.wait_leader()
    assert (await cluster.put_service(old, "before", "http://127.0.0.1:9001")).status == 200

    killed_at = time.monotonic()
    cluster.supervisor.kill(old)
    survivors = [i for i in cluster.ids if i != old]
    new = await cluster.wait_leader(among=survivors, exclude=old)
    assert new != old

    written = await cluster.put_service(new, "after", "http://127.0.0.1:9002")
    assert written.status == 200, written
    elapsed = time.monotonic() - killed_at
    assert elapsed < 15, f"failover took {elapsed:.1f} s"

    cluster.supervisor.start(old)
    index = (await cluster.cluster_view(new))["commit_index"]
    view = await cluster.wait_applied(old, index)
    assert view["role"] == "follower"
    local = await cluster.request("GET", old, "/v1/services?stale=true")
    assert sorted(s["name"] for s in local.json["services"]) == ["after", "before"]


async def test_writes_in_flight_at_the_kill_are_acknowledged_or_reported_never_lost(cluster):
    leader = await cluster.wait_leader()
    acknowledged: list[str] = []

    async def writer(n: int) -> None:
        name = f"w{n}"
        try:
            response = await cluster.put_service(leader, name, f"http://127.0.0.1:{10000 + n}")
        except Exception:  # connection dropped by the kill: outcome unknown
            return
        if response.status == 200:
            acknowledged.append(name)

    tasks = [asyncio.create_task(writer(n)) for n in range(40)]
    await asyncio.sleep(0.05)
    cluster.supervisor.kill(leader)
    await asyncio.gather(*tasks)
    new = await cluster.wait_leader(among=[i for i in cluster.ids if i != leader], exclude=leader)
    listed = await cluster.request("GET", new, "/v1/services", follow=True)
    present = {s["name"] for s in listed.json["services"]}
    assert set(acknowledged) <= present, sorted(set(acknowledged) - present)


@pytest.mark.parametrize("leader_loss_election_s", [0.1, 0.0])
async def test_a_killed_leaders_closed_connections_start_the_election(tmp_path, leader_loss_election_s):
    """With election timeouts of 3-4 s, only the closed connection of the
    killed leader can explain a new leader well before 3 s; with the
    feature off (0) the followers wait out their timeouts."""
    raft = fast_raft(
        election_timeout_min_s=3.0,
        election_timeout_max_s=4.0,
        heartbeat_s=0.05,
        leader_lease_s=4.0,
        connection_timeout_s=4.0,
        leader_loss_election_s=leader_loss_election_s,
    )
    cluster = LocalCluster(tmp_path / "c", raft=raft)
    cluster.start()
    try:
        old = await cluster.wait_leader(timeout_s=40)
        survivors = [i for i in cluster.ids if i != old]
        for node in survivors:  # every follower connected to the leader before the kill
            await cluster.wait_applied(node, (await cluster.cluster_view(old))["commit_index"])
        killed_at = time.monotonic()
        cluster.supervisor.kill(old)
        new = await cluster.wait_leader(among=survivors, exclude=old, timeout_s=30)
        elected_s = time.monotonic() - killed_at
        if leader_loss_election_s:
            assert elected_s < 2.0, f"new leader {new} after {elected_s:.2f} s"
        else:
            assert elected_s >= 2.9, f"new leader {new} after {elected_s:.2f} s without the feature"
    finally:
        await cluster.close()
