"""PySyncObjLog's constructor arguments for the deterministic simulation
(chaos/sim/node.py): what they set, and the one they may not unset."""

import pytest
from pysyncobj.transport import Transport

from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import PySyncObjLog


def _log(tmp_path, **options):
    return PySyncObjLog(
        self_address="127.0.0.1:1",
        partner_addresses=[],
        data_dir=str(tmp_path),
        state_machine=ClusterState(),
        **options,
    )


def test_a_tcp_transport_always_runs_with_the_secret(tmp_path):
    with pytest.raises(ValueError, match="cluster secret"):
        _log(tmp_path, secret=None)
    with pytest.raises(ValueError, match="cluster secret"):
        _log(tmp_path, secret="")


def test_only_a_transport_that_is_not_tcp_goes_without_a_password(tmp_path):
    conf = _log(tmp_path, secret=None, transport_base=Transport, auto_tick=False, poller="select")._conf()
    assert (conf.password, conf.autoTick, conf.pollerType) == (None, False, "select")


def test_a_real_node_keeps_pysyncobjs_defaults(tmp_path):
    conf = _log(tmp_path, secret="s" * 32)._conf()
    assert (conf.password, conf.bindAddress, conf.autoTick, conf.pollerType) == ("s" * 32, "127.0.0.1:1", True, "auto")
