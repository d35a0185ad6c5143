import threading

import pytest
from pysyncobj import pickle as pysyncobj_pickle

from coordinator.consensus.snapshot import SnapshotHooks


def regular(payload: bytes) -> bytes:
    return b"\x00" + pysyncobj_pickle.dumps((0, (payload,)))


def test_snapshot_round_trip_restores_state_and_entries(tmp_path):
    state = {"services": {"a": 1}}
    restored = {}
    hooks = SnapshotHooks(lambda: state, restored.update, threading.RLock())
    last, prev = (regular(b"x"), 10, 2), (b"\x01", 9, 2)
    hooks.serialize(str(tmp_path / "snap"), (last, prev, set()))
    assert b"\x80\x02" not in (tmp_path / "snap").read_bytes()

    result = hooks.deserialize(str(tmp_path / "snap"))
    assert result == (last, prev, [])
    assert restored == state
    assert (hooks.taken, hooks.restored) == (1, 1)


def test_an_unreadable_snapshot_is_fatal(tmp_path):
    (tmp_path / "snap").write_bytes(b"garbage")
    reasons = []
    hooks = SnapshotHooks(dict, lambda s: None, threading.RLock(), on_fatal=reasons.append)
    with pytest.raises(ValueError):  # msgpack's ExtraData: not one msgpack document
        hooks.deserialize(str(tmp_path / "snap"))
    assert reasons and "cannot load snapshot" in reasons[0]
