"""Participant calls are signed by the leader and verified by the kit (README.md, "Security").

A LocalCluster signs with its participant key (``[cluster]
participant_key_file``); a participant given that key (``keys=``) runs the
call, one given another key refuses it (401) before it stores or runs
anything, so the step fails definitely and nothing happened there.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.client.participant import MemoryStore, participant_route, saga_participant
from coordinator.cluster.launcher.local import serve_on_loopback

pytestmark = pytest.mark.integration


class Ledger:
    def __init__(self, keys: dict[str, bytes]) -> None:
        self.keys = keys
        self.calls: list[tuple[str, str | None]] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[saga_participant(MemoryStore(), keys=self.keys)])
        app.router.add_post("/entries", self.add)
        app.router.add_post("/entries/undo", self.add)
        return app

    @participant_route
    async def add(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, request.headers.get("Coordinator-Signature")))
        return web.json_response({"entry": len(self.calls)})


def _saga(saga_id: str) -> dict:
    step = {
        "service": "ledger",
        "action": {"method": "POST", "path": "/entries", "body": {"n": 1}},
        "compensation": {"method": "POST", "path": "/entries/undo", "body": {}},
        "retry": {"max_attempts": 2, "backoff_s": 0.05, "max_backoff_s": 0.1},
    }
    return {"id": saga_id, "steps": [{"name": "add", **step}]}


async def _run(cluster, keys: dict[str, bytes], saga_id: str):
    ledger = Ledger(keys)
    runner, url = await serve_on_loopback(ledger.app())
    try:
        async with Coordinator([cluster.url(i) for i in cluster.ids]) as client:
            await client.put_service("ledger", url)
            await client.submit_saga(_saga(saga_id))
            return await client.wait_saga(saga_id, timeout=20), ledger
    finally:
        await runner.cleanup()


async def test_a_participant_with_the_cluster_key_runs_signed_calls_and_another_key_refuses_them(cluster):
    assert set(cluster.participant_keys) == {"k1"}
    saga, ledger = await _run(cluster, cluster.participant_keys, "signed-1")
    assert saga.state == "completed", saga
    assert len(ledger.calls) == 1 and ledger.calls[0][1].startswith("t=") and ",k=k1,v1=" in ledger.calls[0][1]

    wrong = {"k1": b"another key of at least thirty-two bytes"}
    saga, ledger = await _run(cluster, wrong, "signed-2")
    assert saga.state == "compensated", saga
    step = saga.steps[0]
    assert step["state"] == "failed" and "401" in (step["error"] or ""), step
    assert ledger.calls == [], "an unsigned or wrongly signed call must not reach the handler"
