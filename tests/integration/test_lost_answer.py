"""The leader is killed between committing a submission and answering it:
the client retries with the same id and exactly one saga exists."""

import aiohttp
import pytest
from aiohttp import web

from coordinator.chaos.orders import order_saga, participants
from coordinator.client import Coordinator

pytestmark = pytest.mark.integration


async def test_a_lost_answer_is_retried_and_creates_exactly_one_saga(cluster):
    leader = await cluster.wait_leader()
    dropped = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                cluster.url(leader) + request.path_qs,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as upstream:
                status = upstream.status
                payload = await upstream.read()
        if request.method == "POST" and request.path == "/v1/sagas" and not dropped:
            dropped.append(status)  # committed on the leader: now lose the answer
            cluster.supervisor.kill(leader)
            request.transport.close()
            return web.Response(status=204)
        return web.Response(status=status, body=payload, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with participants(cluster):
            others = [cluster.url(i) for i in cluster.ids if i != leader]
            async with Coordinator([proxy_url, *others], attempts=20) as c:
                saga = await c.submit_saga(order_saga("lost-1"))
                assert dropped == [201], "the first answer must have been a committed 201 that was lost"
                assert saga.id == "lost-1"
                done = await c.wait_saga("lost-1", timeout=30)
                assert done.state == "completed"
                assert [s.id for s in await c.list_sagas()] == ["lost-1"]
    finally:
        await runner.cleanup()
