"""The replicated state machine: deterministic, and a rejection changes nothing."""

from hypothesis import given, settings, strategies as st

from cluster.state import ClusterState
from consensus import Command, InMemoryLog, Rejected, Rejection, pack, unpack

names = st.sampled_from(["orders", "payments", "a", "Bad", "", "x" * 70, None, 5])
urls = st.sampled_from(["http://127.0.0.1:9001", "https://pay.example:443/base", "ftp://x", "http://", 7, None])
commands = st.one_of(
    st.builds(lambda n, u, at: Command("service.put", {"name": n, "url": u}, at), names, urls, st.integers(0, 10**6)),
    st.builds(lambda n, g: Command("service.put", {"name": n, "grpc": g}, 1), names, st.sampled_from(["h:1", "nope"])),
    st.builds(lambda n: Command("service.delete", {"name": n}, 2), names),
    st.builds(lambda body: Command("service.put", body, 3), st.one_of(st.none(), st.integers(), st.lists(st.integers()))),
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
    assert (service["created_at_ms"], service["updated_at_ms"], service["url"], service["grpc"]) == (100, 200, None, "h:2")


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
    assert copy.sagas.active == {"running"} and str(copy.sagas.items["done"].status) == str(state.sagas.items["done"].status)
