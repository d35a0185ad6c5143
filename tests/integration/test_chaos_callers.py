"""The sender of each participant call, as ``coordinator chaos --workers``
finds it (coordinator.chaos.callers), on real processes: in local executor
mode the calls come from the leader's process, in remote mode from the
worker's - so the run's ``workers`` checker can see a node that calls a
participant, and does not only ever say "a worker"."""

from __future__ import annotations

import sys

import pytest

from coordinator.chaos.callers import CallerLookup
from coordinator.chaos.orders import order_saga, participants
from coordinator.client import Coordinator
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _lookup(cluster: LocalCluster) -> CallerLookup:
    def running() -> dict[str, int]:
        return {i: p.pid for i, p in cluster.supervisor.processes.items() if p.poll() is None}

    return CallerLookup(running)


async def _callers(cluster: LocalCluster) -> set[str | None]:
    lookup = _lookup(cluster)
    async with participants(cluster, caller_of=lookup) as running:
        async with Coordinator([cluster.url(i) for i in cluster.ids]) as client:
            saga = await client.submit_saga(order_saga())
            assert (await client.wait_saga(saga.id, timeout=30)).state == "completed"
        return {r.caller for service in running.values() for r in service.service.requests}


@pytest.mark.parametrize("mode", ["local", "remote"])
async def test_each_call_is_put_to_the_process_that_made_it(tmp_path, mode: str) -> None:
    remote = mode == "remote"
    cluster = LocalCluster(
        tmp_path / "cluster",
        nodes=1,
        executor=ExecutorSettings(mode="remote") if remote else None,
        workers=WorkerSettings(ids=("w1",), heartbeat_s=0.25, lease_s=1.5) if remote else None,
    )
    try:
        cluster.start()
        if remote:
            cluster.supervisor.start_worker("w1")
        leader = await cluster.wait_leader()
        assert await _callers(cluster) == {"w1" if remote else leader}
    finally:
        await cluster.close()
