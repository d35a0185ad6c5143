"""Re-pointing a service that running workflows use is a 409 unless forced,
over HTTP and gRPC; a forced re-point is recorded in the service (who, when,
from what) - the check is the state machine's (cluster/stores/registry.py)."""

import pytest

from coordinator.client import Conflict, Coordinator

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_a_service_in_use_is_re_pointed_only_with_force_and_it_is_recorded(cluster, transport):
    leader = await cluster.wait_leader()
    endpoints = [cluster.url(i) for i in cluster.ids]
    if transport == "grpc":
        endpoints = [cluster.config.node(i).grpc for i in cluster.ids]
    async with Coordinator(endpoints, transport=transport) as c:
        await c.put_service("pay", "http://127.0.0.1:9")
        await c.put_service("idle", "http://127.0.0.1:9")
        waiting = {
            "id": "hold",
            "steps": [
                {"name": "gate", "await": "go", "timeout_s": 60},
                {"name": "charge", "service": "pay", "action": {"method": "POST", "path": "/c"}},
            ],
        }
        await c.submit_saga(waiting)
        with pytest.raises(Conflict) as info:
            await c.put_service("pay", "http://127.0.0.1:10")
        assert "force" in str(info.value)
        assert (await c.get_service("pay")).url == "http://127.0.0.1:9"
        assert (
            await c.put_service("pay", "http://127.0.0.1:9")
        ).url == "http://127.0.0.1:9"  # same target: no re-point
        assert (await c.put_service("idle", "http://127.0.0.1:11")).url == "http://127.0.0.1:11"  # not in use
        moved = await c.put_service("pay", "http://127.0.0.1:10", force=True)
        assert moved.url == "http://127.0.0.1:10"
    r = await cluster.request("GET", leader, "/v1/services/pay", follow=True)
    forced = r.json["forced_repoint"]
    assert forced["remote"] == "127.0.0.1" and forced["token"] is False
    assert forced["previous"] == {"url": "http://127.0.0.1:9", "grpc": None} and forced["at"].endswith("Z")
    r = await cluster.request("PUT", leader, "/v1/services/pay", {"url": "http://127.0.0.1:12"}, follow=True)
    assert r.status == 409 and r.json["error"]["code"] == "conflict"
    r = await cluster.request("PUT", leader, "/v1/services/pay?force=true", {"url": "http://127.0.0.1:12"}, follow=True)
    assert r.status == 200 and r.json["forced_repoint"]["previous"]["url"] == "http://127.0.0.1:10"
    r = await cluster.request("GET", leader, "/v1/services/idle", follow=True)
    assert r.json["forced_repoint"] is None
