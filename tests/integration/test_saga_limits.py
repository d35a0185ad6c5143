"""Admission and retention: 429 at the in-flight limit, 503 suspended while a
breaker is open, terminal sagas pruned by a replicated command."""

import asyncio
import time

import pytest

from coordinator.chaos.orders import order_saga, participants
from coordinator.chaos.participants import Flaky, Script, Slow
from coordinator.client import Coordinator, NotFound, Overloaded, Suspended
from coordinator.cluster.core.executor_settings import ExecutorSettings
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def limited(tmp_path):
    settings = ExecutorSettings(
        inflight_workflows_max=2,
        breaker_failures_to_open=2,
        breaker_slow_interval_s=0.2,
        retention_count=1,
        retention_check_s=0.2,
    )
    local = LocalCluster(tmp_path / "c", executor=settings)
    local.start()
    try:
        await local.wait_leader()
        yield local
    finally:
        await local.close()


async def test_in_flight_limit_answers_429_with_retry_after(limited):
    scripts = {"orders": Script(default=Slow(delay_s=1.0))}
    async with participants(limited, scripts), Coordinator([limited.url(i) for i in limited.ids]) as c:
        await c.submit_saga(order_saga("a"))
        await c.submit_saga(order_saga("b"))
        with pytest.raises(Overloaded) as info:
            await c.submit_saga(order_saga("c"))
        assert info.value.status == 429 and info.value.retry_after_s >= 1
        with pytest.raises(NotFound):
            await c.get_saga("c")
        # A resubmission of an accepted saga is not new work: still answered.
        assert (await c.submit_saga(order_saga("a"))).id == "a"


async def test_an_open_breaker_suspends_intake_of_sagas_that_use_the_service(limited):
    scripts = {"inventory": Script(default=Flaky(failures=8, status=503))}
    async with participants(limited, scripts), Coordinator([limited.url(i) for i in limited.ids]) as c:
        await c.submit_saga(order_saga("x", attempts=3))
        deadline = time.monotonic() + 10
        while True:
            info = await limited.cluster_view(await limited.wait_leader())
            if info["executor"]["breakers"].get("inventory", {}).get("open"):
                break
            assert time.monotonic() < deadline, info["executor"]
            await asyncio.sleep(0.05)
        with pytest.raises(Suspended) as suspended:
            await c.submit_saga(order_saga("y"))
        assert suspended.value.status == 503
        # The running saga keeps retrying at the slow interval and completes once
        # the service recovers; then the breaker closes.
        saga = await c.wait_saga("x", timeout=30)
        assert saga.state == "completed" and saga.step("reserve")["attempts"] == 9
        info = await limited.cluster_view(await limited.wait_leader())
        assert info["executor"]["breakers"]["inventory"]["open"] is False


async def test_terminal_sagas_beyond_retention_are_pruned(limited):
    async with participants(limited), Coordinator([limited.url(i) for i in limited.ids]) as c:
        for saga_id in ("old-1", "old-2", "old-3"):
            await c.submit_saga(order_saga(saga_id))
            await c.wait_saga(saga_id, timeout=20)
        deadline = time.monotonic() + 10
        while len(await c.list_sagas()) > 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert [s.id for s in await c.list_sagas()] == ["old-3"]
        for node in limited.ids:  # pruned on every replica, through the log
            view = await limited.request("GET", node, "/v1/sagas?stale=true")
            while [s["id"] for s in view.json["sagas"]] != ["old-3"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
                view = await limited.request("GET", node, "/v1/sagas?stale=true")
