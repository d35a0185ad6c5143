"""A slow event-stream reader on a real cluster whose per-subscriber queue
holds one event ([limits] events_queue_size = 1): an entry that yields two
events overflows it, the reader gets a final ``dropped`` event and the node
lets go of it (its stream count drops back, the dropped counter rises). The
client's ``events()`` reconnects after a drop with Last-Event-ID and still
yields every event once, in order."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
import pytest_asyncio

from coordinator.client import Coordinator
from coordinator.cluster.core.events import parse_id
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 10.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("events-drop"), limits=Limits(events_queue_size=1))
    cluster.start()
    try:
        await cluster.wait_leader(timeout_s=40)
        yield cluster
    finally:
        await cluster.close()


def one_step_saga(saga_id: str) -> dict:
    """Signalling it applies one entry with several events (signal, step_succeeded, completed)."""
    return {"id": saga_id, "steps": [{"name": "w", "await": "go"}]}


async def metric(local, node_id: str, name: str) -> float:
    text = (await local.request("GET", node_id, "/metrics")).text
    match = re.search(rf"^{name}{{[^}}]*}} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def wait_streams(local, node_id: str, count: int = 1) -> None:
    """Until ``node_id`` serves exactly ``count`` event streams: 0 before a
    test opens one (earlier ones end within a second of their reader
    leaving), 1 after - then what is written next is seen live."""
    for _ in range(100):
        if await metric(local, node_id, "coordinator_event_streams") == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node_id} never served {count} event streams")


async def test_a_reader_that_falls_behind_is_dropped_with_a_final_event_and_released(local):
    leader = await local.wait_leader()
    follower = next(i for i in local.ids if i != leader)
    assert await metric(local, follower, "coordinator_event_streams_dropped_total") == 0
    frames: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        async with session.get(local.url(follower) + "/v1/events?workflow=drop-1") as response:
            assert response.status == 200
            assert await metric(local, follower, "coordinator_event_streams") == 1
            async with Coordinator([local.url(leader)]) as client:
                await client.submit_saga(one_step_saga("drop-1"))
                await client.signal_saga("drop-1", "go")
            while line := (await response.content.readline()).decode():
                frames.append(line)
            # the node ended the stream itself (the loop above saw its end)
    text = "".join(frames)
    assert "event: dropped\n" in text, text
    assert text.rstrip().splitlines()[-1].startswith("data: ") and '"kind":"dropped"' in text.splitlines()[-2]
    assert await metric(local, follower, "coordinator_event_streams") == 0
    assert await metric(local, follower, "coordinator_event_streams_dropped_total") == 1


async def test_the_client_resumes_after_a_drop_and_yields_every_event_once(local):
    leader = await local.wait_leader()
    follower = next(i for i in local.ids if i != leader)
    await wait_streams(local, follower, 0)
    async with Coordinator([local.url(follower)]) as reader:
        stream = reader.events(workflow="drop-2")
        got: list[dict] = []

        async def run() -> None:
            async for event in stream:
                got.append(event)
                if event["type"] == "completed":
                    return

        collecting = asyncio.ensure_future(asyncio.wait_for(run(), WAIT_S))
        await wait_streams(local, follower)
        async with Coordinator([local.url(leader)]) as client:
            await client.submit_saga(one_step_saga("drop-2"))
            await client.signal_saga("drop-2", "go")
        await collecting
        await stream.aclose()
    assert [e["type"] for e in got][0] == "started" and got[-1]["type"] == "completed", got
    assert [parse_id(e["id"]) for e in got] == sorted({parse_id(e["id"]) for e in got})
    assert all(e["kind"] == "workflow" for e in got), got  # no reset: the ring still held them
    assert await metric(local, follower, "coordinator_event_streams_dropped_total") >= 2


async def test_a_node_that_stops_ends_its_streams_and_the_client_goes_on_at_the_next(local):
    leader = await local.wait_leader()
    first, second = (i for i in local.ids if i != leader)
    await wait_streams(local, first, 0)
    async with Coordinator([local.url(first), local.url(second)]) as reader:
        stream = reader.events(workflow="drop-3")
        got: list[dict] = []

        async def run() -> None:
            async for event in stream:
                got.append(event)
                if event["type"] == "completed":
                    return

        collecting = asyncio.ensure_future(asyncio.wait_for(run(), 3 * WAIT_S))
        await wait_streams(local, first)
        async with Coordinator([local.url(leader)]) as client:
            await client.submit_saga(one_step_saga("drop-3"))
            for _ in range(int(WAIT_S / 0.1)):
                if got:
                    break
                await asyncio.sleep(0.1)
            assert [e["type"] for e in got] == ["started"]
            started = asyncio.get_running_loop().time()
            code = await asyncio.to_thread(local.supervisor.stop, first)
            assert asyncio.get_running_loop().time() - started < 5, "a node with an open stream stopped slowly"
            assert code == 0, code
            await client.signal_saga("drop-3", "go")
        await collecting
        await stream.aclose()
    assert [e["type"] for e in got] == ["started", "signal", "step_succeeded", "completed"], got
    assert [parse_id(e["id"]) for e in got] == sorted({parse_id(e["id"]) for e in got})
