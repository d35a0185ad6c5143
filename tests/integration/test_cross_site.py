"""Cross-site and DNS-rebinding requests from a browser page are refused
(cluster/api/http_api.py): a text/plain or form POST (a "simple" request a page
may send anywhere without a preflight), a request whose Origin is not
allowed, and a request whose Host is a name the node does not have."""

import aiohttp
import pytest

from coordinator.client import Coordinator, NotFound

pytestmark = pytest.mark.integration

SAGA = '{"id": "csrf-1", "steps": [{"name": "a", "service": "orders", "action": {"method": "POST", "path": "/x"}}]}'


async def test_browser_style_requests_are_refused_and_tools_still_work(cluster):
    leader = await cluster.wait_leader()
    url = cluster.url(leader)
    port = url.rsplit(":", 1)[1]
    r = await cluster.request("PUT", leader, "/v1/services/orders", {"url": "http://127.0.0.1:9"}, follow=True)
    assert r.status == 200, r
    async with aiohttp.ClientSession() as browser:
        # What <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) sends.
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            async with browser.post(url + "/v1/sagas", data=SAGA, headers={"Content-Type": content_type}) as response:
                assert response.status == 415, (content_type, await response.text())
                error = (await response.json())["error"]
                assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
        async with browser.put(url + "/v1/services/evil", data=b'{"url": "http://127.0.0.1:1"}') as response:
            assert response.status == 415  # octet-stream is not JSON either
        # A page on another origin, even with the right content type.
        headers = {"Content-Type": "application/json", "Origin": "https://evil.example"}
        async with browser.post(url + "/v1/sagas", data=SAGA, headers=headers) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "forbidden"
        async with browser.get(url + "/v1/services", headers={"Origin": "null"}) as response:
            assert response.status == 403
        # DNS rebinding: evil.example now resolves to this node; the Host says so.
        async with browser.get(url + "/v1/services", headers={"Host": f"evil.example:{port}"}) as response:
            assert response.status == 421
            assert (await response.json())["error"]["code"] == "misdirected_request"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            async with browser.get(url + "/v1/services", headers={"Host": host}) as response:
                assert response.status == 200, host
        # A bodiless write without a Content-Type carries nothing to forge: allowed.
        async with browser.delete(url + "/v1/services/nope") as response:
            assert response.status == 404
    async with Coordinator([cluster.url(i) for i in cluster.ids]) as c:
        assert [s.name for s in await c.list_services()] == ["orders"]
        with pytest.raises(NotFound):
            await c.get_saga("csrf-1")  # never created
        await c.delete_service("orders")  # through a follower's 307 too
