"""The replicated state machine: deterministic, and a rejection changes nothing."""

import ast
import pathlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import twopc
from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command, Rejected, Rejection, pack, unpack
from coordinator.consensus.testing import InMemoryLog

names = st.sampled_from(["orders", "payments", "a", "Bad", "", "x" * 70, None, 5])
urls = st.sampled_from(["http://127.0.0.1:9001", "https://pay.example:443/base", "ftp://x", "http://", 7, None])
commands = st.one_of(
    st.builds(lambda n, u, at: Command("service.put", {"name": n, "url": u}, at), names, urls, st.integers(0, 10**6)),
    st.builds(lambda n, g: Command("service.put", {"name": n, "grpc": g}, 1), names, st.sampled_from(["h:1", "nope"])),
    st.builds(lambda n: Command("service.delete", {"name": n}, 2), names),
    st.builds(
        lambda body: Command("service.put", body, 3), st.one_of(st.none(), st.integers(), st.lists(st.integers()))
    ),
    st.just(Command("no.such.kind", {}, 4)),
)


def apply_all(state: ClusterState, sequence) -> list:
    results = []
    for index, command in enumerate(sequence, start=2):
        try:
            results.append(("ok", state.apply(index, command)))
        except Rejection as rejection:
            results.append(("rejected", rejection.code))
    return results


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=30))
def test_every_replica_reaches_the_same_state(sequence):
    a, b = ClusterState(), ClusterState()
    assert apply_all(a, sequence) == apply_all(b, sequence)
    assert a.digest() == b.digest()
    restored = ClusterState()
    restored.restore(a.snapshot())
    assert restored.digest() == a.digest()


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=20), commands)
def test_a_rejected_command_changes_nothing(prefix, command):
    state = ClusterState()
    apply_all(state, prefix)
    before = state.digest()
    try:
        state.apply(len(prefix) + 2, command)
    except Rejection:
        assert state.digest() == before


async def test_through_the_log_rejections_are_recorded_results_and_replicas_agree():
    state, replica = ClusterState(), ClusterState()
    log = InMemoryLog(state, replicas=(replica,))
    await log.start()
    ok = await log.propose(Command("service.put", {"name": "orders", "url": "http://127.0.0.1:9001"}, 10))
    assert ok.value["url"] == "http://127.0.0.1:9001" and ok.value["revision"] == 1
    bad = await log.propose(Command("service.put", {"name": "orders", "url": "file:///etc/passwd"}, 11))
    assert isinstance(bad, Rejected) and bad.code == "invalid" and "url" in bad.message
    gone = await log.propose(Command("service.delete", {"name": "missing"}, 12))
    assert isinstance(gone, Rejected) and gone.code == "not_found"
    assert state.registry.get("orders")["url"] == "http://127.0.0.1:9001"
    assert state.digest() == replica.digest()


def test_update_keeps_created_at_and_moves_updated_at():
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "s", "url": "http://h:1"}, 100))
    service = state.apply(3, Command("service.put", {"name": "s", "grpc": "h:2"}, 200))
    assert (service["created_at_ms"], service["updated_at_ms"], service["url"], service["grpc"]) == (
        100,
        200,
        None,
        "h:2",
    )


def test_terminal_workflows_are_packed_once_and_a_snapshot_round_trips():
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1))
    steps = [{"name": "s0", "service": "a", "action": {"method": "POST", "path": "/do"}}]
    for n, saga_id in enumerate(("done", "running")):
        state.apply(3 + 2 * n, Command("saga.submit", {"definition": {"id": saga_id, "steps": steps}}, 5))
    event = {"type": "action_succeeded", "step": 0, "output": {"ok": True}, "attempts": 1, "at_ms": 6}
    state.apply(9, Command("saga.event", {"id": "done", "event": event}, 6))
    first = state.sagas.packed_states()
    assert state.sagas.packed_states()[0] is first[0], "a terminal saga must be packed once"
    assert state.sagas.packed_states()[1] is not first[1], "an unfinished saga is packed afresh"
    copy = ClusterState()
    copy.restore(unpack(pack(state.snapshot())))
    assert copy.digest() == state.digest()
    assert copy.sagas.active == {"running"} and str(copy.sagas.items["done"].status) == str(
        state.sagas.items["done"].status
    )


def _running_saga_on(state, service="pay", index=3):
    steps = [{"name": "s0", "service": service, "action": {"method": "POST", "path": "/do"}}]
    state.apply(index, Command("saga.submit", {"definition": {"id": "live", "steps": steps}}, 5))


def test_re_pointing_a_service_in_use_is_a_conflict_in_the_state_machine():
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "pay", "url": "http://10.0.0.1:9001"}, 1))
    _running_saga_on(state)
    before = state.digest()
    for target in ({"url": "http://10.6.6.6:80"}, {"grpc": "10.0.0.1:9001"}):
        try:
            state.apply(4, Command("service.put", {"name": "pay", **target}, 6))
        except Rejection as rejection:
            assert rejection.code == "conflict" and "force" in str(rejection)
        else:
            raise AssertionError("a service in use was re-pointed without force")
    assert state.digest() == before and state.registry.get("pay")["url"] == "http://10.0.0.1:9001"
    same = state.apply(4, Command("service.put", {"name": "pay", "url": "http://10.0.0.1:9001"}, 7))
    assert same["url"] == "http://10.0.0.1:9001"  # the same target again is no re-point


def test_a_forced_re_point_is_recorded_with_who_and_when():
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "pay", "url": "http://10.0.0.1:9001"}, 1))
    _running_saga_on(state)
    by = {"remote": "10.1.2.3", "token": True}
    service = state.apply(
        4, Command("service.put", {"name": "pay", "url": "http://10.0.0.2:9001", "force": True, "by": by}, 77)
    )
    assert service["url"] == "http://10.0.0.2:9001"
    assert service["forced"] == {
        "at_ms": 77,
        "remote": "10.1.2.3",
        "token": True,
        "previous": {"url": "http://10.0.0.1:9001", "grpc": None},
    }
    later = state.apply(5, Command("service.put", {"name": "pay", "url": "http://10.0.0.2:9001"}, 80))
    assert later["forced"]["at_ms"] == 77  # kept until the next forced re-point
    for bad in ({"force": "yes"}, {"force": True, "by": "me"}, {"force": True, "by": {"remote": 5, "token": True}}):
        try:
            state.apply(6, Command("service.put", {"name": "pay", "url": "http://10.0.0.3:1", **bad}, 81))
        except Rejection as rejection:
            assert rejection.code == "invalid"
        else:
            raise AssertionError(f"accepted {bad}")


def test_the_stores_check_without_assert():
    """`python -O` drops asserts: what the stores check, they check with an explicit raise."""
    stores = pathlib.Path(__file__).resolve().parents[2] / "cluster" / "stores"
    for path in sorted(stores.glob("*.py")):
        asserts = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
        assert not asserts, f"{path.name}: assert on lines {asserts}"


def test_a_replaced_decision_is_refused_on_apply(monkeypatch):
    """Checked by the store too, not only inside the machine (cluster/stores/twopc.py)."""
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1))
    call = {"path": "/p"}
    participants = [{"service": "a", "prepare": call, "commit": call, "abort": call}]
    state.apply(3, Command("tx.submit", {"definition": {"id": "t", "participants": participants}}, 2))
    state.apply(4, Command("tx.event", {"id": "t", "event": {"type": "vote", "service": "a", "vote": "no"}}, 3))
    real_step = twopc.step

    def flipping_step(tx, event):
        after, effects = real_step(tx, event)
        return replace(after, decision=twopc.Decision.COMMIT), effects

    monkeypatch.setattr(twopc, "step", flipping_step)
    with pytest.raises(twopc.InvariantError, match="replaced"):
        state.apply(5, Command("tx.event", {"id": "t", "event": {"type": "deadline"}}, 99_000))


def test_writes_record_the_token_name_and_entries_without_it_still_apply():
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "pay", "url": "http://10.0.0.1:9001", "by": "ops"}, 1))
    _running_saga_on(state)
    service = state.apply(
        4,
        Command(
            "service.put",
            {"name": "pay", "url": "http://10.0.0.2:9001", "force": True, "remote": "10.1.2.3", "by": "ops"},
            77,
        ),
    )
    assert service["forced"] == {
        "at_ms": 77,
        "remote": "10.1.2.3",
        "by": "ops",
        "previous": {"url": "http://10.0.0.1:9001", "grpc": None},
    }
    definition = {"id": "s-by", "steps": [{"name": "w", "await": "go"}]}
    assert state.apply(5, Command("saga.submit", {"definition": definition, "by": "ci"}, 80))["created"]
    again = state.apply(6, Command("saga.submit", {"definition": definition, "by": "someone-else"}, 81))
    assert again == {"id": "s-by", "created": False}
    state.apply(7, Command("saga.signal", {"id": "s-by", "name": "go", "payload": None, "by": "ops"}, 82))
    history = [(r.event.value, r.by) for r in state.sagas.items["s-by"].history]
    assert ("started", "ci") in history and ("signal", "ops") in history and ("started", "someone-else") not in history
    before = state.digest()
    for kind, body in (
        ("saga.submit", {"definition": {**definition, "id": "s-2"}, "by": "Not A Name"}),
        ("saga.signal", {"id": "s-by", "name": "go", "payload": None, "by": 5}),
        ("saga.redrive", {"id": "s-by", "by": "x" * 65}),
        ("service.delete", {"name": "unused", "by": ""}),
        ("service.put", {"name": "q", "url": "http://10.0.0.9:1", "by": "-dash"}),
        ("saga.event", {"id": "s-by", "event": {"type": "redrive", "by": "ops"}}),
    ):
        try:
            state.apply(8, Command(kind, body, 83))
        except Rejection as rejection:
            assert rejection.code == "invalid" and "by" in rejection.message, (kind, rejection)
        else:
            raise AssertionError(f"accepted {kind} {body}")
    assert state.digest() == before
