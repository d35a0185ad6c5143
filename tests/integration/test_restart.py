"""Stop every node at once, after more entries than a log compaction needs."""

import os

import pytest

from coordinator.cluster.launcher.local import LocalCluster, fast_raft

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
async def test_every_acknowledged_write_survives_a_whole_cluster_restart(tmp_path, how):
    harness = LocalCluster(tmp_path / "c", raft=fast_raft(compaction_min_entries=40))
    harness.start()
    try:
        leader = await harness.wait_leader()
        acknowledged = {}
        for n in range(120):  # three compactions' worth of entries
            name = f"s{n % 50}"
            url = f"http://127.0.0.1:{20000 + n}"
            response = await harness.put_service(leader, name, url)
            assert response.status == 200, response
            acknowledged[name] = url
        for node in harness.ids:
            assert os.path.exists(harness.config.data_dir / node / "raft.snapshot"), "no log compaction happened"

        for node in harness.ids:
            if how == "sigkill":
                harness.supervisor.kill(node)
            else:
                harness.supervisor.stop(node)
        harness.start()

        leader = await harness.wait_leader()
        listed = await harness.request("GET", leader, "/v1/services", follow=True)
        assert {s["name"]: s["url"] for s in listed.json["services"]} == acknowledged
        # And the restarted cluster takes new writes.
        assert (await harness.put_service(leader, "fresh", "http://127.0.0.1:9999")).status == 200
        metrics = (await harness.request("GET", leader, "/metrics")).text
        assert "coordinator_snapshots_restored_total" in metrics
    finally:
        await harness.close()
