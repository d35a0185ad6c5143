"""The term envelope: an entry applies only in the term it was proposed in.

See coordinator.consensus.codec.encode_in_term and tests/chaos/test_simulation_ghost_entry.py
for the schedule that needed it.
"""

import asyncio
import threading

import pytest

from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import CodecError, Command, NotLeader, PySyncObjLog, encode_command, pack
from coordinator.consensus.applier import STALE_TERM, Applier
from coordinator.consensus.batching import encode_batch
from coordinator.consensus.codec import (
    COMMAND_FORMAT_VERSION,
    TERM_KIND,
    decode_command,
    decode_in_term,
    encode_in_term,
)
from coordinator.consensus.port import Applied, Rejected
from coordinator.consensus.stats import LogStats


def put(n: int) -> bytes:
    return encode_command(Command("service.put", {"name": f"s{n}", "url": "http://127.0.0.1:1"}, 1))


def applier() -> tuple[Applier, ClusterState, LogStats]:
    state, stats = ClusterState(), LogStats()
    return Applier(state, threading.RLock(), stats), state, stats


def test_an_entry_in_its_own_term_is_applied():
    apply, state, _ = applier()
    result, applied = apply.apply_entry(5, encode_in_term(3, put(1)), 3)
    assert isinstance(result, Applied) and [c.kind for c, _ in applied] == ["service.put"]
    assert state.registry.get("s1") is not None


def test_an_entry_appended_in_a_later_term_is_refused_whole_and_changes_nothing():
    apply, state, stats = applier()
    before = state.digest()
    result, applied = apply.apply_entry(9, encode_in_term(3, encode_batch([put(1), put(2)])), 4)
    assert isinstance(result, Rejected) and result.code == STALE_TERM and result.index == 9
    assert applied == [] and state.digest() == before
    assert (stats.stale_term_entries, stats.applied_rejections, stats.commands_applied) == (1, 1, 0)


def test_a_batch_in_its_term_applies_every_command():
    apply, state, _ = applier()
    result, applied = apply.apply_entry(6, encode_in_term(2, encode_batch([put(1), put(2)])), 2)
    assert [type(r) for r in result] == [Applied, Applied] and len(applied) == 2


def test_entries_written_before_envelopes_existed_still_apply():
    apply, state, _ = applier()
    result, _ = apply.apply_entry(4, put(1), 7)
    assert isinstance(result, Applied) and state.registry.get("s1") is not None


@pytest.mark.parametrize("body", [[3], [3, "text"], ["3", b"x"], [-1, b"x"], [True, b"x"], None, [3, b"x", b"y"]])
def test_a_malformed_envelope_is_an_invalid_command(body):
    apply, state, _ = applier()
    before = state.digest()
    data = pack({"v": COMMAND_FORMAT_VERSION, "k": TERM_KIND, "at": 0, "b": body})
    result, applied = apply.apply_entry(2, data, 3)
    assert isinstance(result, Rejected) and result.code == "invalid_command" and applied == []
    assert state.digest() == before


def test_envelopes_do_not_nest_and_stay_out_of_batches():
    apply, state, _ = applier()
    nested, _ = apply.apply_entry(2, encode_in_term(3, encode_in_term(3, put(1))), 3)
    batched, _ = apply.apply_entry(3, encode_batch([encode_in_term(3, put(2))]), 3)
    assert isinstance(nested, Rejected) and nested.code == "invalid_command"
    assert isinstance(batched[0], Rejected) and batched[0].code == "invalid_command"
    assert state.registry.get("s1") is None and state.registry.get("s2") is None


@pytest.mark.parametrize("term", [-1, True, "3", None])
def test_a_bad_term_is_refused_when_encoding(term):
    with pytest.raises(CodecError):
        encode_in_term(term, put(1))


class _FakeRaft:
    """What PySyncObjLog._send_entry and _on_state_changed use of a PySyncObj node."""

    def __init__(self, term: int) -> None:
        self.raftCurrentTerm = term
        self.leader = False
        self.sent: list[bytes] = []

    def _isLeader(self) -> bool:
        return self.leader

    def _getLeader(self):
        return None

    def apply_entry(self, data, callback=None):
        self.sent.append(data)


async def test_the_stamp_is_the_term_led_in_not_a_newer_one_seen_before_stepping_down(tmp_path):
    """PySyncObj raises its term to a newer leader's a moment before it steps
    down; a command stamped in that moment with ``raftCurrentTerm`` would be
    accepted by that newer leader when forwarded. The stamp is the term the
    node became leader in."""
    log = PySyncObjLog(
        self_address="127.0.0.1:1",
        partner_addresses=[],
        secret="s" * 32,
        data_dir=str(tmp_path),
        state_machine=ClusterState(),
    )
    log._loop = asyncio.get_running_loop()
    raft = log._node = _FakeRaft(term=5)
    raft.leader = True
    log._on_state_changed(0, 2)  # became leader in term 5
    raft.raftCurrentTerm = 6  # a vote request of term 6 arrived; the role change follows
    log._send_entry(put(1), lambda result, error: None)
    assert decode_in_term(decode_command(raft.sent[0]))[0] == 5
    log._on_state_changed(2, 0)  # now it stepped down
    with pytest.raises(NotLeader):
        log._send_entry(put(2), lambda result, error: None)
    assert len(raft.sent) == 1
    log._node = None
