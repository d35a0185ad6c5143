"""Terminal workflows are kept packed: the same answers, the same order and
digest on every replica, and nothing for the garbage collector to walk."""

import gc

import pytest

from coordinator import saga, twopc
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.stores.kept import RECENT_TERMINAL_MAX
from coordinator.cluster.stores.listing import Filter, select
from coordinator.cluster.stores.model import WorkflowDefinition, WorkflowModel, WorkflowState
from coordinator.consensus import Command, unpack

SERVICES = ("p1", "p2")


def _state() -> tuple[ClusterState, list[int]]:
    state, index = ClusterState(), [0]
    for name in SERVICES:
        _apply(state, index, "service.put", {"name": name, "url": f"http://127.0.0.1:1/{name}"})
    return state, index


def _apply(state: ClusterState, index: list[int], kind: str, body: dict):
    index[0] += 1
    return state.apply(index[0], Command(kind, body, 1_000 + index[0]))


def _saga(saga_id: str) -> dict:
    steps = [
        {
            "name": f"s{i}",
            "service": service,
            "action": {"method": "POST", "path": "/do"},
            "compensation": {"method": "POST", "path": "/undo"},
        }
        for i, service in enumerate(SERVICES)
    ]
    return {"id": saga_id, "steps": steps}


def _complete(state: ClusterState, index: list[int], saga_id: str, steps: int = 2) -> None:
    _apply(state, index, "saga.submit", {"definition": _saga(saga_id)})
    for step in range(steps):
        event = {"type": "action_succeeded", "step": step, "output": {"n": step}, "attempts": 1}
        _apply(state, index, "saga.event", {"id": saga_id, "event": event})


def test_a_terminal_saga_reads_back_as_it_was_and_keeps_its_place():
    state, index = _state()
    _complete(state, index, "a", steps=1)  # still running
    _complete(state, index, "b")
    running = state.sagas.items["a"]
    _apply(
        state,
        index,
        "saga.event",
        {"id": "a", "event": {"type": "action_succeeded", "step": 1, "output": None, "attempts": 1}},
    )
    done = state.sagas.items["a"]
    assert done.status.value == "completed" and running.status.value == "running"
    assert done.id == "a" and done.steps[0].output == {"n": 0}
    assert state.sagas.items["a"] == done  # decoded again, equal
    assert list(state.sagas.items) == ["a", "b"]  # insertion order, not completion order
    statuses = {"completed", "running"}
    assert select(state.sagas.items.rows(), Filter(status="completed"), statuses=statuses, limit=10).ids == ["a", "b"]
    assert select(state.sagas.items.rows(), Filter(status="running"), statuses=statuses, limit=10).ids == []
    assert sorted(i for _, i in state.sagas.terminal_ages()) == ["a", "b"]


def test_a_replica_restored_from_a_snapshot_agrees_and_goes_on_agreeing():
    state, index = _state()
    for n in range(5):
        _complete(state, index, f"s{n}", steps=1 + n % 2)
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.digest() == state.digest()
    for replica in (state, restored):
        replica_index = [index[0]]
        _apply(
            replica,
            replica_index,
            "saga.event",
            {"id": "s0", "event": {"type": "action_succeeded", "step": 1, "output": 1, "attempts": 1}},
        )
        _apply(replica, replica_index, "saga.prune", {"ids": ["s1", "s0"]})
    assert restored.digest() == state.digest()
    assert list(restored.sagas.items) == list(state.sagas.items) == ["s2", "s3", "s4"]


def test_resubmitting_a_terminal_saga_answers_it_without_a_new_one():
    state, index = _state()
    _complete(state, index, "a")
    assert _apply(state, index, "saga.submit", {"definition": _saga("a")}) == {"id": "a", "created": False}
    assert len(state.sagas.items) == 1


def test_kept_terminal_sagas_add_nothing_for_the_garbage_collector_to_walk():
    state, index = _state()
    # past RECENT_TERMINAL_MAX: the few most recent are kept as objects too, a bounded number
    for n in range(RECENT_TERMINAL_MAX + 200):
        _complete(state, index, f"warm{n}")
    gc.collect()
    before = len(gc.get_objects())
    for n in range(2_000):
        _complete(state, index, f"s{n}")
    gc.collect()
    grown = len(gc.get_objects()) - before
    # As objects, each completed saga was about 25 tracked objects (50,000
    # here); what is left is its outcome record per step, for outcome replay.
    assert grown <= 2 * 2_000, grown
    assert len(state.sagas.items) == RECENT_TERMINAL_MAX + 2_200


def test_a_workflow_that_just_ended_is_read_without_decoding_and_equal_to_its_bytes():
    state, index = _state()
    for n in range(RECENT_TERMINAL_MAX + 5):
        _complete(state, index, f"s{n}")
    items = state.sagas.items
    newest, oldest = items.get(f"s{RECENT_TERMINAL_MAX + 4}"), items.get("s0")
    assert items.get(f"s{RECENT_TERMINAL_MAX + 4}") is newest  # kept as the object
    assert items.get("s0") is not oldest  # past the bound: decoded again at each read
    for workflow_id in (f"s{RECENT_TERMINAL_MAX + 4}", "s0"):
        decoded = saga.state_from_dict(unpack(dict(zip(items, items.packed(), strict=True))[workflow_id]))
        assert items.get(workflow_id) == decoded
    del items[f"s{RECENT_TERMINAL_MAX + 4}"]
    assert items.get(f"s{RECENT_TERMINAL_MAX + 4}") is None


@pytest.mark.parametrize("kind", ["sagas", "transactions"])
def test_both_machines_are_what_a_store_needs(kind):
    """cluster/stores/model.py: the package itself, its definitions and its states."""
    state, index = _state()
    if kind == "sagas":
        _apply(state, index, "saga.submit", {"definition": _saga("w")})
    else:
        call = {"path": "/p"}
        participants = [{"service": s, "prepare": call, "commit": call, "abort": call} for s in SERVICES]
        _apply(state, index, "tx.submit", {"definition": {"id": "w", "participants": participants}})
    store = getattr(state, kind)
    assert store.model in (saga, twopc)
    assert isinstance(store.model, WorkflowModel)
    workflow = store.items["w"]
    assert isinstance(workflow, WorkflowState) and isinstance(workflow.definition, WorkflowDefinition)
    assert store.state_id(workflow) == workflow.definition.id == "w"
