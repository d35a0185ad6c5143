"""Lists by filter and bulk redrive on a real three-node cluster with tokens:
GET /v1/sagas filters, counts and pages; POST /v1/sagas/redrive previews,
bounds, redrives each saga with its own log entry and who asked, is refused
to a read token and redirected by a follower; the same from the client and
the CLI (preview, confirmation, --yes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from coordinator.client import Coordinator, Forbidden
from coordinator.cluster.core.tokens import Role
from coordinator.cluster.launcher.local import LocalCluster, serve_on_loopback

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

READER, OPERATOR = "r" * 24, "o" * 24
WAIT_S = 20.0


class Shop:
    """Its refunds fail until mended: a saga through it gets stuck."""

    def __init__(self) -> None:
        self.mended = False

    def app(self) -> web.Application:
        async def pay(request):
            return web.json_response({"paid": True})

        async def refund(request):
            return web.json_response({"refunded": True}) if self.mended else web.json_response({}, status=500)

        app = web.Application()
        app.router.add_post("/pay", pay)
        app.router.add_post("/refund", refund)
        return app


def saga(saga_id: str, service: str = "shop", stuck: bool = True) -> dict:
    step = {
        "name": "pay",
        "service": service,
        "action": {"method": "POST", "path": "/pay"},
        "compensation": {"method": "POST", "path": "/refund", "retry": {"max_attempts": 1}},
    }
    steps = [step, {"name": "approval", "await": "approve", "timeout_s": 0.2}] if stuck else [step]
    return {"id": saga_id, "steps": steps}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    tokens_file = root / "tokens.toml"
    fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            f'[[tokens]]\nname = "watcher"\nrole = "{Role.READ}"\ntoken = "{READER}"\n\n'
            f'[[tokens]]\nname = "operator"\nrole = "{Role.OPERATE}"\ntoken = "{OPERATOR}"\n'
        )
    cluster = LocalCluster(root / "cluster", token=True, tokens_file=tokens_file)
    cluster.start()
    shop = Shop()
    runner, url = await serve_on_loopback(shop.app())
    try:
        await cluster.wait_leader(timeout_s=40)
        async with Coordinator([cluster.url(i) for i in cluster.ids], token=cluster.token, attempts=20) as client:
            await client.put_service("shop", url)
            await client.put_service("mall", url)
            cluster.client, cluster.shop = client, shop  # type: ignore[attr-defined]
            yield cluster
    finally:
        await runner.cleanup()
        await cluster.close()


async def until_state(client, saga_id: str, state: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while (await client.get_saga(saga_id)).state != state:
        assert time.monotonic() < deadline, f"{saga_id} not {state}"
        await asyncio.sleep(0.05)


async def call(local, method: str, node: str, path: str, token: str, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, local.url(node) + path, headers=headers, data=data, allow_redirects=False
        ) as r:
            return r.status, await r.json(content_type=None)


async def test_lists_filter_count_and_page_and_bulk_redrive_is_bounded_recorded_and_idempotent(local):
    client = local.client
    local.shop.mended = False
    for n in (1, 2, 3):
        await client.submit_saga(saga(f"bulk-{n}"))
    await client.submit_saga(saga("mall-1", service="mall"))
    await client.submit_saga(saga("done-1", stuck=False))
    for saga_id in ("bulk-1", "bulk-2", "bulk-3", "mall-1"):
        await until_state(client, saga_id, "stuck")
    await until_state(client, "done-1", "completed")
    leader = await local.wait_leader()
    follower = next(i for i in local.ids if i != leader)

    # Lists: filters, counts of every state, pages in both orders - from a follower's replica.
    status, body = await call(local, "GET", follower, "/v1/sagas?stale=true&service=shop&state=stuck", READER)
    assert status == 200 and [s["id"] for s in body["sagas"]] == ["bulk-1", "bulk-2", "bulk-3"]
    assert body["counts"]["stuck"] == 3 and body["counts"]["completed"] == 1 and body["counts"]["running"] == 0
    assert body["total"] == 3 and body["next"] is None
    page = await client.list_sagas_page("stuck", 2, order="desc", summary=True)
    assert [s["id"] for s in page.items] == ["mall-1", "bulk-3"] and page.total == 4 and page.next
    assert page.items[0]["services"] == ["mall"] and page.items[0]["steps"] == 2 and "history" not in page.items[0]
    rest = await client.list_sagas_page("stuck", 2, order="desc", after=page.next)
    assert [s.id for s in rest.items] == ["bulk-2", "bulk-1"] and rest.next is None
    assert [s.id for s in await client.list_sagas(q="mall")] == ["mall-1"]
    status, body = await call(local, "GET", leader, "/v1/sagas?created_after=soon", READER)
    assert status == 400 and body["error"]["message"].startswith("created_after:")

    # Bulk redrive: a read token may look, not act; a follower sends the writer to the leader.
    filter_ = {"service": "shop"}
    status, body = await call(local, "POST", leader, "/v1/sagas/redrive", READER, {**filter_, "dry_run": True})
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await call(local, "POST", follower, "/v1/sagas/redrive", OPERATOR, filter_)
    assert status == 307
    status, body = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, {**filter_, "state": "failed"})
    assert status == 400 and body["error"]["message"].startswith("state:")
    status, body = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, {**filter_, "limit": 0})
    assert status == 400
    status, body = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, {**filter_, "q": None})
    assert status == 400 and body["error"]["message"].startswith("q: must not be null")
    status, preview = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, {**filter_, "dry_run": True})
    assert status == 200 and preview == {
        "matched": 3,
        "ids": ["bulk-1", "bulk-2", "bulk-3"],
        "redriven": 0,
        "remaining": 0,
        "dry_run": True,
    }
    for n in (1, 2, 3):  # a preview changes nothing
        assert (await client.get_saga(f"bulk-{n}")).state == "stuck"

    local.shop.mended = True
    status, first = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, {**filter_, "limit": 2})
    assert status == 200 and first["ids"] == ["bulk-1", "bulk-2"] and first["redriven"] == 2
    assert first["matched"] == 3 and first["remaining"] == 1
    for saga_id in ("bulk-1", "bulk-2"):
        await until_state(client, saga_id, "compensated")
        history = (await client.get_saga(saga_id)).history
        assert [r.get("by") for r in history if r["event"] == "redrive"] == ["operator"]  # one log entry each
    assert (await client.get_saga("bulk-3")).state == "stuck" and (await client.get_saga("mall-1")).state == "stuck"
    status, second = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, filter_)
    assert second["ids"] == ["bulk-3"] and second["redriven"] == 1 and second["remaining"] == 0
    await until_state(client, "bulk-3", "compensated")
    status, third = await call(local, "POST", leader, "/v1/sagas/redrive", OPERATOR, filter_)
    assert third == {"matched": 0, "ids": [], "redriven": 0, "remaining": 0, "dry_run": False}  # nothing twice
    with pytest.raises(Forbidden):
        async with Coordinator([local.url(leader)], token=READER) as reader:
            await reader.redrive_sagas(service="mall")


async def test_the_same_over_grpc(local):
    """ListSagas with filters and pages, RedriveSagas: what HTTP answers."""
    client = local.client
    local.shop.mended = False
    await client.submit_saga(saga("grpc-1", service="mall"))
    await until_state(client, "grpc-1", "stuck")
    endpoints = [local.config.node(i).grpc for i in local.ids]
    async with Coordinator(endpoints, transport="grpc", token=OPERATOR) as grpc_client:
        page = await grpc_client.list_sagas_page("stuck", 10, service="mall", q="grpc-", summary=True)
        assert [s["id"] for s in page.items] == ["grpc-1"] and page.total == 1 and page.next is None
        assert page.counts["stuck"] == 1 and page.items[0]["services"] == ["mall"]
        http = await client.list_sagas_page("stuck", 10, service="mall", q="grpc-", summary=True)
        assert (http.items, http.counts, http.total, http.next) == (page.items, page.counts, page.total, page.next)
        preview = await grpc_client.redrive_sagas(service="mall", q="grpc-", dry_run=True)
        assert preview == {"matched": 1, "ids": ["grpc-1"], "redriven": 0, "remaining": 0, "dry_run": True}
        local.shop.mended = True
        done = await grpc_client.redrive_sagas(service="mall", q="grpc-", limit=5)
        assert done["redriven"] == 1
    await until_state(client, "grpc-1", "compensated")
    async with Coordinator(endpoints, transport="grpc", token=READER) as reader:
        with pytest.raises(Forbidden):
            await reader.redrive_sagas(service="mall", dry_run=True)


def cli(local, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    endpoints = ",".join(local.url(i) for i in local.ids)
    env = {**os.environ, "COORDINATOR_ENDPOINTS": endpoints, "COORDINATOR_TOKEN": OPERATOR}
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "saga", "redrive", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_the_cli_previews_asks_and_redrives_with_yes(local):
    client = local.client
    local.shop.mended = False
    for n in (1, 2):
        await client.submit_saga(saga(f"cli-{n}", service="mall"))
    for n in (1, 2):
        await until_state(client, f"cli-{n}", "stuck")
    local.shop.mended = True
    preview = await asyncio.to_thread(cli, local, "--stuck", "--match", "cli-", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.startswith("2 stuck saga(s) match; this call would redrive 2: cli-1, cli-2")
    refused = await asyncio.to_thread(cli, local, "--stuck", "--match", "cli-")  # stdin is no terminal
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--yes" in refused.stderr
    both = await asyncio.to_thread(cli, local, "cli-1", "--stuck")
    assert both.returncode == 2 and refused.stderr.count("\n") == 1
    assert (await client.get_saga("cli-1")).state == "stuck"  # nothing was done by the refused ones
    done = await asyncio.to_thread(cli, local, "--stuck", "--match", "cli-", "--yes")
    assert done.returncode == 0, done.stderr
    assert "redriven 2 of 2 matching; 0 left for another call" in done.stdout
    for n in (1, 2):
        await until_state(client, f"cli-{n}", "compensated")
