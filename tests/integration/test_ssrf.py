"""SSRF: a service whose address the [services] policy refuses is never
called, and a literal refused address cannot even be registered
(cluster/core/netpolicy.py)."""

import pytest
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.cluster.core.netpolicy import ServicePolicy
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration


async def test_a_name_resolving_outside_the_policy_is_not_called_and_literals_are_refused(tmp_path):
    seen = []

    async def handle(request):
        seen.append(request.path)
        return web.json_response({"AccessKeyId": "instance-credentials"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    # Only 10.0.0.0/8 may be called: "localhost" resolves to 127.0.0.1, outside it.
    local = LocalCluster(tmp_path / "c", services=ServicePolicy.parse(["10.0.0.0/8"], []))
    local.start()
    try:
        leader = await local.wait_leader()
        for body, field in (
            ({"url": "http://169.254.169.254/latest"}, "url"),
            ({"url": "http://[::ffff:169.254.169.254]/"}, "url"),
            ({"url": "http://[fe80::1]:80"}, "url"),
            ({"url": f"http://127.0.0.1:{port}"}, "url"),
            ({"grpc": "169.254.169.254:80"}, "grpc"),
        ):
            r = await local.request("PUT", leader, "/v1/services/meta", body, follow=True)
            assert r.status == 400, (body, r)
            assert r.json["error"]["code"] == "invalid" and r.json["error"]["field"] == field
        r = await local.request("PUT", leader, "/v1/services/meta", {"url": f"http://localhost:{port}"}, follow=True)
        assert r.status == 200, r
        definition = {
            "id": "ssrf-1",
            "steps": [
                {
                    "name": "read",
                    "service": "meta",
                    "action": {"method": "GET", "path": "/latest/meta-data/iam"},
                    "timeout_s": 1,
                    "retry": {"max_attempts": 2, "backoff_s": 0.05, "max_backoff_s": 0.1},
                }
            ],
        }
        async with Coordinator([local.url(i) for i in local.ids]) as c:
            await c.submit_saga(definition)
            saga = await c.wait_saga("ssrf-1", timeout=20)
        assert saga.state in ("compensated", "failed"), saga.raw
        step = saga.step("read")
        assert step["state"] == "failed" and "refused by the [services] address policy" in str(step.get("error")), step
        assert "instance-credentials" not in str(saga.raw)
        r = await local.request("GET", leader, "/v1/services/meta/outcomes", follow=True)
        assert r.status == 200 and "instance-credentials" not in r.text
        assert seen == []
    finally:
        await local.close()
        await runner.cleanup()
