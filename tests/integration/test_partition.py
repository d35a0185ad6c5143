"""A leader cut off from its peers stops leading within a bounded time."""

import time

import pytest

pytestmark = pytest.mark.integration

STEP_DOWN_BOUND_S = 5.0  # leader_lease_s is 1 s; two election timeouts are <= 2 s


async def test_leader_with_paused_peers_steps_down_and_refuses_writes(cluster):
    leader = await cluster.wait_leader()
    followers = [i for i in cluster.ids if i != leader]
    for follower in followers:
        cluster.supervisor.pause(follower)
    try:
        paused_at = time.monotonic()
        role = "leader"
        while time.monotonic() - paused_at < STEP_DOWN_BOUND_S + 5:
            role = (await cluster.cluster_view(leader))["role"]
            if role != "leader":
                break
        stepped_down_after = time.monotonic() - paused_at
        assert role != "leader", "the cut-off leader kept claiming leadership"
        assert stepped_down_after < STEP_DOWN_BOUND_S, f"stepped down after {stepped_down_after:.1f} s"

        write = await cluster.request("PUT", leader, "/v1/services/lost", {"url": "http://127.0.0.1:1"})
        assert write.status in (307, 503), write
        read = await cluster.request("GET", leader, "/v1/services")
        assert read.status in (307, 503), read
    finally:
        for follower in followers:
            cluster.supervisor.resume(follower)
    await cluster.wait_leader()
    listed = await cluster.request("GET", cluster.ids[0], "/v1/services", follow=True)
    assert "lost" not in {s["name"] for s in listed.json["services"]}
