"""The history recorder and its JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.chaos.history import History, NodeDigest, Operation
from coordinator.chaos.participants import Effect


class FakeClock:
    def __init__(self, now_s: float = 100.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def effect(at_s: float, service: str, key: str, output: object = None) -> Effect:
    return Effect(at_s, service, "POST", "/x", key, "3:17", key.rsplit("/", 1)[-1], {"a": 1}, output)


def test_recorder_stamps_invoke_and_completion_from_the_clock() -> None:
    clock = FakeClock()
    history = History(clock=clock)
    put = history.invoke(1, "registry_put", "orders", {"url": "http://a"})
    clock.advance(0.5)
    get = history.invoke(2, "registry_get", "orders")
    clock.advance(0.25)
    done_put = put.ok(200)
    clock.advance(1)
    done_get = get.unknown("timeout")
    assert (done_put.invoke_s, done_put.complete_s, done_put.outcome) == (100.0, 100.75, "ok")
    assert done_put.result == 200 and done_put.value == {"url": "http://a"}
    assert (done_get.invoke_s, done_get.complete_s, done_get.outcome) == (100.5, 101.75, "unknown")
    assert [op.id for op in history.operations] == [put.id, get.id] == [0, 1]
    assert history.outcome_counts() == {"ok": 1, "fail": 0, "unknown": 1}


def test_an_operation_completes_once() -> None:
    history = History(clock=FakeClock())
    handle = history.invoke(1, "submit_saga", "s1", {"steps": []})
    handle.fail(409)
    with pytest.raises(ValueError, match="already completed"):
        handle.ok(201)
    assert history.operations[0].outcome == "fail"


def test_a_pending_operation_reads_as_unknown_never_answered() -> None:
    history = History(clock=FakeClock())
    history.invoke(1, "submit_tx", "t1", {"participants": []})
    [operation] = history.operations
    assert operation.outcome == "unknown" and operation.complete_s is None
    assert History.loads(history.dumps()).operations == [operation]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"complete_s": 0.5}, "before invoke_s"),
        ({"complete_s": None}, "only an unknown"),
        ({"kind": ""}, "kind"),
        ({"invoke_s": float("nan")}, "invoke_s"),
    ],
)
def test_operation_rejects_what_cannot_happen(changes: dict, message: str) -> None:
    fields = {
        "id": 0,
        "process": 1,
        "kind": "registry_get",
        "key": "k",
        "value": None,
        "invoke_s": 1.0,
        "complete_s": 2.0,
        "outcome": "ok",
        "result": None,
    }
    with pytest.raises(ValueError, match=message):
        Operation(**{**fields, **changes})


def test_operation_ids_are_unique() -> None:
    operation = Operation(0, 1, "registry_get", "k", None, 1.0, 2.0, "ok", None)
    with pytest.raises(ValueError, match="twice"):
        History([operation, operation])


def full_history(clock: FakeClock) -> History:
    history = History(clock=clock)
    history.invoke(1, "registry_put", "orders", {"url": "http://a"}).ok(200)
    history.invoke(2, "submit_saga", "s1", {"steps": [{"name": "a"}]}).unknown("503")
    history.add_effects(
        [
            effect(100.1, "orders", "s1/a/action", {"id": "x"}),
            effect(100.2, "pay", "t1/pay/prepare", {"vote": "yes"}).to_json(),
        ]
    )
    history.record_workflow({"id": "s1", "state": "completed", "steps": []})
    history.record_workflow({"id": "t1", "state": "committed", "participants": []})
    history.record_digest("n1", "abc")
    history.record_digest("n2", None, read_at_s=5.0)
    history.record_fault("kill", "n2", at_s=3.0)
    history.record_fault("partition", None, groups=[["n1"], ["n2", "n3"]])
    return history


def test_the_whole_history_round_trips_through_json(tmp_path) -> None:
    history = full_history(FakeClock())
    path = tmp_path / "history.json"
    history.dump(path)
    loaded = History.load(path)
    assert loaded.to_json() == history.to_json()
    assert loaded.operations == history.operations
    assert loaded.effects == history.effects
    assert all(isinstance(e, Effect) for e in loaded.effects)
    assert loaded.node_digests == {"n1": NodeDigest("abc", 100.0), "n2": NodeDigest(None, 5.0)}
    assert loaded.faults[1]["groups"] == [["n1"], ["n2", "n3"]]
    assert json.loads(path.read_text())["version"] == 1


def test_the_constructor_takes_plain_digests_and_effect_dicts() -> None:
    history = History(
        effects=[effect(1.0, "orders", "s/a/action").to_json()],
        node_digests={"n1": "abc", "n2": NodeDigest("abd", 2.0)},
        workflows_final={"s": {"id": "s", "state": "completed", "steps": []}},
        faults=[{"at_s": 1.0, "kind": "kill", "node": "n1"}],
    )
    assert history.effects[0].kind == "action"
    assert history.node_digests["n1"] == NodeDigest("abc", None)
    assert history.node_digests["n2"].read_at_s == 2.0


@pytest.mark.parametrize(
    "raw",
    [
        {"version": 2},
        {"version": 1, "effects": [{"at_s": 1.0, "service": "x"}]},
        {"version": 1, "operations": [{"id": 0, "kind": "registry_get"}]},
        {"version": 1, "faults": [{"kind": "kill"}]},
        {"version": 1, "node_digests": {"n1": "abc"}},
    ],
)
def test_loading_rejects_a_malformed_history(raw: dict) -> None:
    with pytest.raises(ValueError):
        History.from_json(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    outcome = draw(st.sampled_from(["ok", "fail", "unknown"]))
    invoke_s = draw(st.floats(0, 1e6, allow_nan=False))
    never = outcome == "unknown" and draw(st.booleans())
    complete_s = None if never else invoke_s + draw(st.floats(0, 100, allow_nan=False))
    return Operation(
        draw(st.integers(0, 10**6)),
        draw(st.integers(0, 50) | st.text(min_size=1, max_size=5)),
        draw(st.sampled_from(["submit_saga", "registry_put", "registry_get"])),
        draw(st.none() | st.text(max_size=10)),
        draw(json_values),
        invoke_s,
        complete_s,
        outcome,
        draw(json_values),
    )


@given(operations())
def test_any_operation_round_trips_through_json(operation: Operation) -> None:
    assert Operation.from_json(json.loads(json.dumps(operation.to_json()))) == operation
