"""Every replica that applied the same entries has the same state digest,
including one that was killed, restarted and caught up."""

import asyncio
import time

import aiohttp
import pytest

from coordinator.chaos.orders import order_saga, participants
from coordinator.client import Coordinator

pytestmark = pytest.mark.integration


async def digests(cluster):
    """node -> its view with the digest; a node still starting maps to None."""
    views = {}
    for node_id in cluster.ids:
        try:
            response = await cluster.request("GET", node_id, "/v1/cluster?digest=true")
        except (TimeoutError, aiohttp.ClientError):
            views[node_id] = None
            continue
        assert response.status == 200, response
        views[node_id] = response.json
    return views


async def test_replicas_converge_to_the_same_digest(cluster):
    async with participants(cluster), Coordinator([cluster.url(i) for i in cluster.ids], attempts=20) as c:
        await asyncio.gather(*(c.submit_saga(order_saga(f"conv-{n}")) for n in range(10)))
        leader = await cluster.wait_leader()
        follower = next(i for i in cluster.ids if i != leader)
        cluster.supervisor.kill(follower)
        await asyncio.gather(*(c.wait_saga(f"conv-{n}", timeout=30) for n in range(10)))
        await c.put_service("late", "http://127.0.0.1:9999")
        cluster.supervisor.start(follower)
        deadline = time.monotonic() + 20
        while True:
            views = await digests(cluster)
            if None not in views.values() and len({v["state_digest"] for v in views.values()}) == 1:
                break
            assert time.monotonic() < deadline, {
                k: v and (v["state_applied_index"], v["state_digest"][:12]) for k, v in views.items()
            }
            await asyncio.sleep(0.1)
        assert len({v["state_applied_index"] for v in views.values()}) == 1
    bad = await cluster.request("GET", cluster.ids[0], "/v1/cluster?digest=maybe")
    assert bad.status == 400 and bad.json["error"]["message"].startswith("digest")
