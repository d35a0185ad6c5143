"""A participant left prepared asks the cluster for the decision by itself."""

import asyncio
import time

import pytest
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.client.participant import CallbackHandler, MemoryStore, TerminationResolver, add_twopc_routes
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration


async def serve(app):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_a_prepared_participant_cut_off_from_phase_two_learns_the_decision(cluster):
    await _cut_off_from_phase_two(cluster, {}, {})


async def test_the_resolver_asks_a_tls_cluster(tmp_path):
    """Over https, verified against the cluster's CA."""
    local = LocalCluster(tmp_path / "c", tls=True)
    local.start()
    try:
        await local.wait_leader()
        await _cut_off_from_phase_two(local, local.tls_files, {"ssl_context": local.client_tls().ssl_context()})
    finally:
        await local.close()


async def _cut_off_from_phase_two(cluster, client_kwargs, resolver_kwargs):
    applied = {}
    cut_off = {"on": True}

    @web.middleware
    async def lose_phase_two(request, handler):
        if cut_off["on"] and request.path.endswith("/commit"):
            return web.json_response({"error": "network"}, status=503)
        return await handler(request)

    handler = CallbackHandler(
        prepare=lambda tx_id, body: True,
        commit=lambda tx_id: applied.setdefault(tx_id, "commit"),
        abort=lambda tx_id: applied.setdefault(tx_id, "abort"),
    )
    store = MemoryStore()
    app = web.Application(middlewares=[lose_phase_two])
    participant = add_twopc_routes(app, "/tx", handler, store)
    other = web.Application()
    add_twopc_routes(
        other,
        "/tx",
        CallbackHandler(prepare=lambda t, b: True, commit=lambda t: None, abort=lambda t: None),
        MemoryStore(),
    )
    runners = [await serve(app), await serve(other)]
    follower_only = None
    try:
        async with Coordinator([cluster.url(i) for i in cluster.ids], **client_kwargs) as c:
            await c.put_service("cut-off", runners[0][1])
            await c.put_service("healthy", runners[1][1])
            definition = {
                "id": "coop-1",
                "participants": [
                    {
                        "service": s,
                        "prepare": {"path": "/tx/prepare"},
                        "commit": {"path": "/tx/commit"},
                        "abort": {"path": "/tx/abort"},
                    }
                    for s in ("cut-off", "healthy")
                ],
            }
            await c.submit_transaction(definition)
            deadline = time.monotonic() + 20
            while (await c.get_transaction("coop-1")).state != "committing":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            # Ask a follower on purpose: it redirects to the leader.
            leader = await cluster.wait_leader()
            follower_only = [cluster.url(i) for i in cluster.ids if i != leader]
            async with TerminationResolver(
                follower_only, store, participant, after_s=0.1, poll_interval_s=0.1, **resolver_kwargs
            ):
                while "coop-1" not in applied:
                    assert time.monotonic() < deadline, "the resolver never applied the decision"
                    await asyncio.sleep(0.05)
            assert applied == {"coop-1": "commit"}
            cut_off["on"] = False  # the network heals: the coordinator's retry now lands
            tx = await c.wait_transaction("coop-1", timeout=20)
            assert (tx.state, tx.decision) == ("committed", "commit")
            assert applied == {"coop-1": "commit"}  # committed once
    finally:
        for runner, _ in runners:
            await runner.cleanup()
