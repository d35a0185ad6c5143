"""A follower whose connection to its leader closes stands soon, ranked by address."""

from types import SimpleNamespace

import pysyncobj.syncobj as syncobj_module
from pysyncobj.syncobj import _RAFT_STATE

from coordinator.consensus.pysyncobj_log import _elect_soon_after_leader_loss


class _Raft:
    def __init__(
        self, me: str, others: list[str], leader: str | None, state=_RAFT_STATE.FOLLOWER, deadline: float = 100.0
    ):
        self._SyncObj__selfNode = SimpleNamespace(id=me)
        self._SyncObj__otherNodes = [SimpleNamespace(id=o) for o in others]
        self._SyncObj__raftState = state
        self._SyncObj__raftElectionDeadline = deadline
        self._leader = next((n for n in self._SyncObj__otherNodes if n.id == leader), None)

    def _getLeader(self):
        return self._leader

    def node(self, node_id: str):
        return next(n for n in self._SyncObj__otherNodes if n.id == node_id)


def _lost(raft: _Raft, node_id: str, monkeypatch, now: float = 10.0) -> float:
    monkeypatch.setattr(syncobj_module, "monotonicTime", lambda: now)
    _elect_soon_after_leader_loss(raft, raft.node(node_id), first_s=0.1, stagger_s=0.1)
    return raft._SyncObj__raftElectionDeadline


def test_followers_stand_one_after_the_other_by_address(monkeypatch):
    first = _Raft("a:1", ["b:1", "c:1"], leader="c:1")
    second = _Raft("b:1", ["a:1", "c:1"], leader="c:1")
    assert _lost(first, "c:1", monkeypatch) == 10.1
    assert round(_lost(second, "c:1", monkeypatch), 6) == 10.2


def test_the_rank_leaves_the_lost_leader_out(monkeypatch):
    # Leader a:1 lost: b:1 is first among b:1 and c:1.
    assert _lost(_Raft("b:1", ["a:1", "c:1"], leader="a:1"), "a:1", monkeypatch) == 10.1


def test_a_lost_peer_that_is_not_the_leader_changes_nothing(monkeypatch):
    raft = _Raft("a:1", ["b:1", "c:1"], leader="c:1", deadline=10.4)
    assert _lost(raft, "b:1", monkeypatch) == 10.4


def test_a_leader_or_candidate_is_left_alone(monkeypatch):
    for state in (_RAFT_STATE.LEADER, _RAFT_STATE.CANDIDATE):
        raft = _Raft("a:1", ["b:1", "c:1"], leader="c:1", state=state, deadline=10.4)
        assert _lost(raft, "c:1", monkeypatch) == 10.4


def test_an_earlier_deadline_is_never_pushed_back(monkeypatch):
    raft = _Raft("b:1", ["a:1", "c:1"], leader="c:1", deadline=10.05)
    assert _lost(raft, "c:1", monkeypatch) == 10.05
