"""GET /v1/events on a real three-node cluster with tokens (cluster/api/http_events.py).

A saga submitted through the client shows on a follower's stream in log
order; Last-Event-ID resumes with exactly the missed events, on another
node too; an id older than the ring gets a reset; filters work and bad ones
are 400; the subscriber cap answers 429; no token is 401, a read token works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re

import aiohttp
import pytest
import pytest_asyncio

from coordinator.client import Coordinator
from coordinator.cluster.core.events import parse_id
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.core.tokens import Role
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

READER = "r" * 24
RING = 40
SUBSCRIBERS_MAX = 3
WAIT_S = 10.0


def write_private(path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    tokens_file = root / "tokens.toml"
    write_private(tokens_file, f'[[tokens]]\nname = "reader"\nrole = "{Role.READ}"\ntoken = "{READER}"\n')
    limits = Limits(events_ring_size=RING, events_subscribers_max=SUBSCRIBERS_MAX)
    cluster = LocalCluster(root / "cluster", token=True, tokens_file=tokens_file, limits=limits)
    cluster.start()
    try:
        leader = await cluster.wait_leader(timeout_s=40)
        followers = [i for i in cluster.ids if i != leader]
        cluster.roles = {"leader": leader, "follower": followers[0], "other": followers[1]}  # type: ignore[attr-defined]
        yield cluster
    finally:
        await cluster.close()


def node(local, role: str) -> str:
    return local.roles[role]


async def collect(events, until, timeout_s: float = WAIT_S) -> list[dict]:
    """Events of an async iterator until ``until(events so far)``; fails after ``timeout_s``."""
    got: list[dict] = []

    async def run() -> None:
        async for event in events:
            got.append(event)
            if until(got):
                return

    try:
        await asyncio.wait_for(run(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"stream did not reach the condition within {timeout_s} s; got {got}") from None
    return got


async def quiet(events, seconds: float) -> list[dict]:
    """What an async iterator yields within ``seconds`` (expected: nothing)."""
    got: list[dict] = []

    async def run() -> None:
        async for event in events:
            got.append(event)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run(), seconds)
    return got


async def raw_events(url: str, headers: dict, count: int, timeout_s: float = WAIT_S) -> list[tuple[str, dict]]:
    """The first ``count`` SSE events (name, data) of GET ``url``, parsed by hand."""
    out: list[tuple[str, dict]] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "text/event-stream"
            name = None
            while len(out) < count:
                line = (await response.content.readline()).decode()
                assert line, f"stream ended after {out}"
                if line.startswith("event: "):
                    name = line[7:].strip()
                elif line.startswith("data: "):
                    out.append((name, json.loads(line[6:])))
    return out


async def wait_streams(local, node_id: str, count: int) -> None:
    """Until ``node_id`` serves exactly ``count`` event streams (/metrics):
    0 before a test opens its stream (those of earlier tests end within a
    second of their reader leaving), 1 once it is open - then a write made
    after it is seen live, however loaded the machine."""
    for _ in range(100):
        text = (await local.request("GET", node_id, "/metrics")).text
        match = re.search(r"^coordinator_event_streams\{[^}]*\} ([0-9.]+)$", text, re.MULTILINE)
        if match and float(match.group(1)) == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node_id} never served {count} event streams")


def keys(events: list[dict]) -> list[tuple[int, int]]:
    return [parse_id(e["id"]) for e in events]


def await_saga(saga_id: str) -> dict:
    return {"id": saga_id, "steps": [{"name": "w", "await": "go"}, {"name": "w2", "await": "go-on"}]}


async def run_saga(local, saga_id: str) -> None:
    async with Coordinator([local.url(node(local, "leader"))], token=local.token) as admin:
        await admin.submit_saga(await_saga(saga_id))
        await admin.signal_saga(saga_id, "go")
        await admin.signal_saga(saga_id, "go-on")
        saga = await admin.wait_saga(saga_id, timeout=WAIT_S)
        assert saga.state == "completed"


async def test_each_node_streams_its_own_role_and_term_from_the_start(local):
    leader, follower = node(local, "leader"), node(local, "follower")
    term = (await local.cluster_view(leader))["term"]
    for node_id, role in ((leader, "leader"), (follower, "follower")):
        async with Coordinator([local.url(node_id)], token=READER) as reader:
            stream = reader.events(kinds=["role"], last_event_id="0")
            events = await collect(stream, lambda got, r=role: (got[-1]["role"], got[-1]["term"]) == (r, term))
            await stream.aclose()
        assert {e["kind"] for e in events} == {"role"}, events
        assert keys(events) == sorted(set(keys(events))), events


async def test_a_saga_shows_on_a_followers_stream_in_log_order_and_resumes_without_gaps(local):
    follower = local.url(node(local, "follower"))
    await wait_streams(local, node(local, "follower"), 0)
    async with Coordinator([follower], token=READER) as reader:
        stream = reader.events(workflow="ev-1")
        collecting = asyncio.ensure_future(collect(stream, lambda got: got[-1]["type"] == "completed"))
        await wait_streams(local, node(local, "follower"), 1)  # subscribed: what follows is live
        await run_saga(local, "ev-1")
        events = await collecting
        await stream.aclose()
    types = [e["type"] for e in events]
    assert types[0] == "started" and types[-1] == "completed", types
    assert types.count("signal") == 2 and "step_succeeded" in types, types
    assert keys(events) == sorted(set(keys(events))), "ids in log order, no duplicates"
    assert {(e["kind"], e["workflow"], e["workflow_type"]) for e in events} == {("workflow", "ev-1", "saga")}

    # Resume after the second event: exactly the rest, then nothing - on this follower and on the other node.
    missed = len(events) - 2
    for where in ("follower", "other"):
        async with Coordinator([local.url(node(local, where))], token=READER) as reader:
            resumed = reader.events(workflow="ev-1", last_event_id=events[1]["id"])
            rest = await collect(resumed, lambda got: len(got) == missed)
            assert rest == events[2:], where
            assert await quiet(resumed, 0.5) == []
            await resumed.aclose()


async def test_kinds_filter_and_service_events(local):
    follower = local.url(node(local, "follower"))
    await wait_streams(local, node(local, "follower"), 0)
    async with Coordinator([follower], token=READER) as reader:
        stream = reader.events(kinds=["service"])
        collecting = asyncio.ensure_future(collect(stream, lambda got: got[-1].get("service") == "ev-svc"))
        await wait_streams(local, node(local, "follower"), 1)
        await run_saga(local, "ev-2")  # workflow events: filtered out
        assert (await local.put_service(node(local, "leader"), "ev-svc", "http://127.0.0.1:9")).status == 200
        events = await collecting
        await stream.aclose()
    assert [(e["kind"], e["type"], e["service"]) for e in events] == [("service", "put", "ev-svc")]
    assert events[0]["record"]["url"] == "http://127.0.0.1:9"


async def test_an_id_older_than_the_ring_gets_a_reset_then_live_events(local):
    leader = node(local, "leader")
    puts = [local.put_service(leader, f"ev-ring-{n}", "http://127.0.0.1:9") for n in range(RING + 5)]
    assert {r.status for r in await asyncio.gather(*puts)} == {200}
    follower = node(local, "follower")
    view = await local.cluster_view(leader)
    await local.wait_applied(follower, view["applied_index"])
    url = local.url(follower) + "/v1/events"
    headers = {"Authorization": f"Bearer {READER}", "Last-Event-ID": "1.0"}

    async def read() -> list[tuple[str, dict]]:
        return await raw_events(url, headers, count=2)

    await wait_streams(local, follower, 0)
    reading = asyncio.ensure_future(read())
    await wait_streams(local, follower, 1)
    assert (await local.put_service(leader, "ev-after-reset", "http://127.0.0.1:9")).status == 200
    (reset_name, reset), (live_name, live) = await reading
    assert reset_name == "reset" and reset["lost_after"] == "1.0", reset
    assert parse_id(reset["lost_until"]) >= parse_id("2.0")
    assert live_name == "service" and live["service"] == "ev-after-reset"
    assert parse_id(live["id"]) > parse_id(reset["id"])


async def test_bad_filters_are_400_and_tokens_are_needed(local):
    url = local.url(node(local, "follower")) + "/v1/events"
    reader = {"Authorization": f"Bearer {READER}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        for query, headers in (
            ("?kinds=nope", reader),
            ("?kinds=", reader),
            ("?since=x", reader),
            ("", {**reader, "Last-Event-ID": "1.x"}),
        ):
            async with session.get(url + query, headers=headers) as response:
                body = await response.json()
                assert response.status == 400 and body["error"]["code"] == "invalid", (query, body)
        async with session.get(url) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
        async with session.get(url + "?kinds=role,service", headers=reader) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            assert (await response.content.readline()).startswith(b": events of node")


async def test_the_subscriber_cap_answers_429_and_a_closed_stream_frees_its_place(local):
    url = local.url(node(local, "leader")) + "/v1/events"
    reader = {"Authorization": f"Bearer {READER}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        # streams of the earlier tests end within a second of their reader leaving
        deadline = asyncio.get_running_loop().time() + WAIT_S
        opened: list[aiohttp.ClientResponse] = []
        while len(opened) < SUBSCRIBERS_MAX:
            response = await session.get(url, headers=reader)
            if response.status == 200:
                opened.append(response)
                continue
            assert response.status == 429, response.status
            response.release()
            assert asyncio.get_running_loop().time() < deadline, "streams of earlier tests were never released"
            await asyncio.sleep(0.3)
        async with session.get(url, headers=reader) as refused:
            body = await refused.json()
            assert refused.status == 429 and body["error"]["code"] == "overloaded", body
            assert int(refused.headers["Retry-After"]) >= 1
        opened.pop().close()
        for _ in range(int(WAIT_S / 0.2)):
            async with session.get(url, headers=reader) as again:
                if again.status == 200:
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("a closed stream did not free its place")
        for response in opened:
            response.close()
