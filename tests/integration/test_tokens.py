"""With a token configured, requests without it get 401; with it they work."""

import aiohttp
import pytest

from coordinator.client import Coordinator, Unauthorized
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration


async def test_api_token_is_required_except_for_health_and_readiness(tmp_path):
    local = LocalCluster(tmp_path / "c", token=True)
    local.start()
    try:
        leader = await local.wait_leader()
        url = local.url(leader)
        async with aiohttp.ClientSession() as anonymous:
            for path in ("/healthz", "/readyz"):
                async with anonymous.get(url + path) as r:
                    assert r.status == 200
            for method, path in (
                ("GET", "/v1/cluster"),
                ("GET", "/v1/services"),
                ("PUT", "/v1/services/x"),
                ("GET", "/metrics"),
            ):
                async with anonymous.request(method, url + path, json={"url": "http://h:1"}) as r:
                    assert r.status == 401
                    assert r.headers["WWW-Authenticate"] == "Bearer"
                    assert (await r.json())["error"]["code"] == "unauthorized"
            async with anonymous.get(
                url + "/v1/cluster", headers={"Authorization": "Bearer wrong-token-wrong-token"}
            ) as r:
                assert r.status == 401
        with pytest.raises(Unauthorized):
            async with Coordinator([url], token="not-the-token-at-all") as c:
                await c.cluster()
        async with Coordinator([local.url(i) for i in local.ids], token=local.token) as c:
            service = await c.put_service("orders", "http://127.0.0.1:9001")
            assert service.name == "orders"
            assert [s.name for s in await c.list_services()] == ["orders"]
    finally:
        await local.close()
