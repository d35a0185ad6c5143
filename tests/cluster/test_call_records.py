"""The replicated state takes the fence and duration the executor reports
with a participant call's outcome, records them in the workflow's history,
and rejects an entry with bad ones - changing nothing, on every replica."""

import pytest

from coordinator import twopc
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.stores.twopc import event_from_body
from coordinator.consensus import Command, Rejection, pack, unpack

CALL = {"fence": "3:41", "duration_ms": 125}


def running() -> ClusterState:
    """A saga and a transaction, each waiting on its first call."""
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1))
    steps = [{"name": "s0", "service": "a", "action": {"method": "POST", "path": "/do"}}]
    state.apply(3, Command("saga.submit", {"definition": {"id": "s", "steps": steps}}, 5))
    tx = {
        "id": "t",
        "participants": [
            {"service": "a", "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/x"}}
        ],
    }
    state.apply(4, Command("tx.submit", {"definition": tx}, 5))
    return state


def test_saga_and_transaction_outcomes_record_the_call():
    state = running()
    event = {"type": "action_succeeded", "step": 0, "output": {}, "attempts": 1, **CALL}
    state.apply(5, Command("saga.event", {"id": "s", "event": event}, 6))
    state.apply(
        6, Command("tx.event", {"id": "t", "event": {"type": "vote", "service": "a", "vote": "yes", **CALL}}, 7)
    )
    ack = {"type": "ack", "service": "a", "phase": "commit", "fence": "4:50", "duration_ms": 0}
    state.apply(7, Command("tx.event", {"id": "t", "event": ack}, 8))
    [succeeded] = [r for r in state.sagas.items["s"].history if r.event.value == "step_succeeded"]
    assert (succeeded.fence, succeeded.duration_ms) == ("3:41", 125)
    details = [dict(r.details) for r in state.transactions.items["t"].history if r.event in ("vote", "acknowledged")]
    assert [(d["fence"], d["duration_ms"]) for d in details] == [("3:41", 125), ("4:50", 0)]
    copy = ClusterState()
    copy.restore(unpack(pack(state.snapshot())))
    assert copy.digest() == state.digest()


@pytest.mark.parametrize("bad", [{"fence": ""}, {"fence": "f" * 65}, {"duration_ms": -1}, {"duration_ms": "1"}])
def test_an_entry_with_a_bad_fence_or_duration_is_rejected_and_changes_nothing(bad):
    state = running()
    before = state.digest()
    saga_event = {"type": "action_failed", "step": 0, "error": "no", "attempts": 1, **bad}
    vote = {"type": "vote", "service": "a", "vote": "yes", **bad}
    for kind, body in (("saga.event", {"id": "s", "event": saga_event}), ("tx.event", {"id": "t", "event": vote})):
        with pytest.raises(Rejection) as rejected:
            state.apply(5, Command(kind, body, 6))
        assert rejected.value.code == "invalid" and next(iter(bad)) in rejected.value.message
    assert state.digest() == before


def test_a_tx_entry_carries_them_into_the_event_and_old_entries_still_decode():
    body = {"type": "ack", "service": "payments", "phase": "abort", "fence": "2:9", "duration_ms": 31}
    assert event_from_body(body, 10) == twopc.Acknowledged("payments", "abort", 10, fence="2:9", duration_ms=31)
    old = {"type": "vote", "service": "payments", "vote": "no"}  # written before them
    assert event_from_body(old, 10) == twopc.VoteReceived("payments", "no", 10)
    assert event_from_body({"type": "deadline"}, 10) == twopc.DeadlineReached(10)
