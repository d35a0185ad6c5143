"""The state budget (cluster/core/limits.py): charged bytes are a function of the
state - equal on a replica restored from a snapshot - and a submission over
the budget is a recorded rejection that changes nothing."""

import pytest

from coordinator.cluster.core.limits import Limits
from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command, Rejection, pack

PAD = 50_000


def _saga(saga_id: str, steps: int = 4) -> dict:
    return {
        "id": saga_id,
        "steps": [{"name": "wait", "await": "go"}]
        + [
            {"name": f"s{i}", "service": "big", "action": {"method": "POST", "path": "/x", "body": {"pad": "x" * PAD}}}
            for i in range(steps)
        ],
    }


def _submit(state: ClusterState, index: int, saga_id: str, limits: dict | None, steps: int = 4):
    body = {"definition": _saga(saga_id, steps)}
    if limits is not None:
        body["limits"] = limits
    return state.apply(index, Command("saga.submit", body, 1000 + index))


def _state() -> ClusterState:
    state = ClusterState()
    state.apply(1, Command("service.put", {"name": "big", "url": "http://127.0.0.1:9"}, 1))
    return state


def test_submissions_over_the_budget_are_refused_and_change_nothing():
    limits = Limits(state_bytes_max=1024 * 1024, workflow_bytes_max=300_000).to_command()
    state = _state()
    accepted = 0
    with pytest.raises(Rejection) as refused:
        for n in range(100):
            _submit(state, 2 + n, f"s{n}", limits)
            accepted += 1
    assert refused.value.code == "overloaded" and "budget" in refused.value.message
    assert 3 <= accepted <= 5  # about 200 KB each, 1 MiB budget
    assert 0 < state.charged_bytes() <= 1024 * 1024
    before = state.digest()
    with pytest.raises(Rejection) as big:
        _submit(state, 200, "huge", limits, steps=7)  # about 350 KB: over the per-workflow cap
    assert big.value.code == "too_large"
    assert state.digest() == before


def test_entries_without_limits_apply_as_they_did():
    state = _state()
    for n in range(30):  # 6 MB: no budget in an entry written before it existed
        _submit(state, 2 + n, f"s{n}", None)
    assert len(state.sagas.items) == 30


def test_charged_bytes_survive_a_snapshot_and_follow_completion_and_pruning():
    state = _state()
    limits = Limits(state_bytes_max=10 * 1024 * 1024).to_command()
    for n in range(3):
        _submit(state, 2 + n, f"s{n}", limits)
    unfinished = state.charged_bytes()
    assert unfinished >= 3 * 4 * PAD
    done = {"type": "action_succeeded", "step": 1, "output": {"pad": "y" * PAD}, "attempts": 1}
    state.apply(10, Command("saga.signal", {"id": "s0", "name": "go", "payload": None}, 2000))
    for step in range(1, 5):
        state.apply(10 + step, Command("saga.event", {"id": "s0", "event": {**done, "step": step}}, 2000 + step))
    assert state.sagas.items.get("s0").status.value == "completed"
    finished = state.charged_bytes()
    assert finished >= unfinished + 2 * 4 * PAD  # outputs: in the saga and in its recorded outcomes
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.charged_bytes() == finished
    assert len(pack(state.snapshot())) <= finished + 64 * 1024
    state.apply(20, Command("saga.prune", {"ids": ["s0"]}, 3000))
    assert "s0" not in state.sagas.items
    assert state.charged_bytes() < unfinished
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.charged_bytes() == state.charged_bytes()
