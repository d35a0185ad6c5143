import pytest
import pytest_asyncio

from coordinator.cluster.launcher.local import LocalCluster


async def _running(root):
    local = LocalCluster(root)
    local.start()
    try:
        await local.wait_leader(timeout_s=40)
    except BaseException:
        await local.close()
        raise
    return local


@pytest.fixture
async def cluster(tmp_path):
    """A fresh three-node cluster of real processes for one test."""
    local = await _running(tmp_path / "cluster")
    try:
        yield local
    finally:
        await local.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_cluster(tmp_path_factory):
    """One three-node cluster for a module whose tests leave it as they found it
    (the module must run its tests in the module's event loop)."""
    local = await _running(tmp_path_factory.mktemp("shared") / "cluster")
    try:
        yield local
    finally:
        await local.close()
