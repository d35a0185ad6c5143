"""The state budget on a real cluster (README.md, "Security"): submissions past
``[limits] state_bytes_max`` get 429 ``overloaded`` with Retry-After, one
past ``workflow_bytes_max`` 413 ``too_large``, and after every node
restarts - from snapshots and journals - the cluster serves what it kept and
still counts it."""

import pytest

from coordinator.cluster.core.limits import Limits
from coordinator.cluster.launcher.local import LocalCluster, fast_raft

pytestmark = pytest.mark.integration

BUDGET = 2 * 1024 * 1024
PAD = 50_000


def _saga(saga_id: str, steps: int = 4) -> dict:
    """About 200 KB with four steps; it waits for a signal first, so no call is made."""
    return {
        "id": saga_id,
        "steps": [{"name": "wait", "await": "go"}]
        + [
            {"name": f"s{i}", "service": "big", "action": {"method": "POST", "path": "/x", "body": {"pad": "x" * PAD}}}
            for i in range(steps)
        ],
    }


async def test_the_state_budget_refuses_and_survives_a_whole_cluster_restart(tmp_path):
    limits = Limits(state_bytes_max=BUDGET, workflow_bytes_max=300_000)
    harness = LocalCluster(tmp_path / "c", raft=fast_raft(compaction_min_entries=10), limits=limits)
    harness.start()
    try:
        leader = await harness.wait_leader()
        assert (await harness.put_service(leader, "big", "http://127.0.0.1:9")).status == 200
        accepted = []
        for n in range(40):
            response = await harness.request("POST", leader, "/v1/sagas", _saga(f"s{n}"), follow=True)
            if response.status != 201:
                break
            accepted.append(f"s{n}")
        assert response.status == 429, response
        assert response.json["error"]["code"] == "overloaded" and "budget" in response.json["error"]["message"]
        assert int(response.headers["Retry-After"]) >= 1
        assert 6 <= len(accepted) <= 10, accepted  # about 200 KB each in 2 MiB
        too_big = await harness.request("POST", leader, "/v1/sagas", _saga("huge", steps=7), follow=True)
        assert too_big.status == 413 and too_big.json["error"]["code"] == "too_large", too_big

        for node in harness.ids:
            harness.supervisor.stop(node)
        harness.start()
        leader = await harness.wait_leader(timeout_s=40)
        for node in harness.ids:
            await harness.wait_applied(node, (await harness.cluster_view(leader))["commit_index"])
            listed = await harness.request("GET", node, "/v1/sagas?stale=true&limit=100")
            assert listed.status == 200 and sorted(s["id"] for s in listed.json["sagas"]) == sorted(accepted)
        # the restarted state still counts what it keeps
        again = await harness.request("POST", leader, "/v1/sagas", _saga("after-restart"), follow=True)
        assert again.status == 429 and again.json["error"]["code"] == "overloaded", again
    finally:
        await harness.close()
