"""SIGKILL the leader while 50 sagas are in flight: every one finishes on the
new leader, with exactly one effect per idempotency key."""

import asyncio

import pytest

from coordinator.chaos.orders import SERVICES, order_saga, participants
from coordinator.chaos.participants import Script, Slow, effects_by_key
from coordinator.client import Coordinator

pytestmark = pytest.mark.integration

SAGAS = 50


async def test_leader_killed_with_50_sagas_in_flight(cluster):
    slow = Script(default=Slow(delay_s=0.2))
    scripts = {name: slow for name in SERVICES}
    async with (
        participants(cluster, scripts) as services,
        Coordinator([cluster.url(i) for i in cluster.ids], attempts=20) as c,
    ):
        ids = [f"f-{n}" for n in range(SAGAS)]
        await asyncio.gather(*(c.submit_saga(order_saga(saga_id, timeout_s=2, attempts=10)) for saga_id in ids))
        await asyncio.sleep(0.3)  # every saga is inside a slow step now
        leader = await cluster.wait_leader()
        in_flight = [s for s in await c.list_sagas(limit=1000) if not s.terminal]
        assert len(in_flight) >= SAGAS // 2, "the kill must land while sagas are in flight"
        cluster.supervisor.kill(leader)

        finished = await asyncio.gather(*(c.wait_saga(saga_id, timeout=90) for saga_id in ids))
        assert {s.state for s in finished} == {"completed"}, {s.id: s.state for s in finished if s.state != "completed"}
        new_leader = await cluster.wait_leader(among=[i for i in cluster.ids if i != leader])
        assert new_leader != leader

        effects = effects_by_key(services.values())
        doubled = {key: len(v) for key, v in effects.items() if len(v) != 1}
        assert not doubled, doubled
        expected = {f"{i}/{step}/action" for i in ids for step in ("create-order", "reserve", "charge", "ship")}
        assert set(effects) == expected  # no completed step was run again under a new key
        fences = {e.fence.split(":")[0] for v in effects.values() for e in v}
        assert len(fences) >= 2, fences  # calls came from the old and the new leaders
