"""A registry write retried with its request id is answered, not applied again.

The essence of simulation seed 413 on a real cluster, over HTTP and gRPC:
client A's PUT commits but A never hears back; client B's PUT of another
value commits; A sends its PUT again with the same request id. The retry is
answered with A's first answer and the service keeps B's value - applied
again, it would have put A's older value back over B's (cluster/stores/requests.py).
"""

from __future__ import annotations

import aiohttp
import pytest

from coordinator.client import Coordinator

pytestmark = pytest.mark.integration

A, B = "http://127.0.0.1:20001", "http://127.0.0.1:20002"


async def test_a_retried_put_does_not_overwrite_a_later_write_over_http(cluster):
    leader = await cluster.wait_leader()
    url = cluster.url(leader) + "/v1/services/orders"
    headers = {"Content-Type": "application/json", "Idempotency-Key": "client-a-1"}
    async with aiohttp.ClientSession() as session:
        async with session.put(url, json={"url": A}, headers=headers) as first:
            assert first.status == 200
            answered = await first.json()
        async with session.put(url, json={"url": B}, headers={"Content-Type": "application/json"}) as other:
            assert other.status == 200
        async with session.put(url, json={"url": A}, headers=headers) as retry:
            assert retry.status == 200 and await retry.json() == answered
        async with session.get(url) as read:
            assert (await read.json())["url"] == B
        async with session.put(url, json={"url": A}, headers={**headers, "Idempotency-Key": "bad key"}) as bad:
            assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid"


async def test_a_retried_put_does_not_overwrite_a_later_write_over_grpc(cluster):
    await cluster.wait_leader()
    endpoints = [cluster.config.node(i).grpc for i in cluster.ids]
    async with Coordinator(endpoints, transport="grpc") as client:
        transport = client._transport
        args = {"name": "orders", "body": {"url": A}, "force": False, "request": "client-a-2"}
        answered = await transport.request("put_service", args)
        await client.put_service("orders", B)
        assert await transport.request("put_service", args) == answered
        assert (await client.get_service("orders")).url == B
