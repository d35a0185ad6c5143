"""A node's files hold every body, output and signal: the data directory and
everything in it are the owner's alone (README.md, "Security")."""

import argparse
import os
import stat
from pathlib import Path

import pytest

from coordinator.cluster.cli import _prepare_data_dir
from coordinator.cluster.launcher.local import LocalCluster, fast_raft

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def usual_umask():
    """The usual umask: what the code does not make owner-only, others can read."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that group or others can use."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


async def test_a_clusters_data_dir_is_owner_only(tmp_path):
    root = tmp_path / "c"
    harness = LocalCluster(root, raft=fast_raft(compaction_min_entries=20))
    harness.start()
    try:
        leader = await harness.wait_leader()
        follower = next(i for i in harness.ids if i != leader)
        harness.supervisor.stop(follower)
        for n in range(60):  # compactions, and the stopped follower gets the snapshot sent
            assert (await harness.put_service(leader, f"s{n}", f"http://127.0.0.1:{20000 + n}")).status == 200
        harness.supervisor.start(follower)
        deadline_view = await harness.wait_applied(follower, (await harness.cluster_view(leader))["applied_index"])
        assert deadline_view is not None
        for node in harness.ids:
            files = {p.name for p in (root / node).iterdir()}
            assert {"raft.journal", "raft.snapshot", "node.log"} <= files, files
    finally:
        await harness.close()
    assert _open_to_others(root) == []


def test_coordinator_up_writes_owner_only_files(tmp_path):
    data_dir = tmp_path / "up"
    args = argparse.Namespace(
        data_dir=str(data_dir), nodes=3, host="127.0.0.1", base_port=24000, token=True, tls=False, mtls=True
    )
    cluster_file = _prepare_data_dir(args)
    assert cluster_file.exists() and (data_dir / "cluster.secret").exists() and (data_dir / "api.token").exists()
    assert (data_dir / "tls" / "ca.key").exists() and (data_dir / "tls" / "client.key").exists()
    assert _open_to_others(data_dir) == []
