"""Registry writes answered once per request id (cluster/stores/requests.py).

Found by the simulation (seed 413): a PUT whose answer was lost was sent
again; the first attempt had committed, another client's PUT came between,
and the retry applied the older value again over it - a registry read then
answered a value that no linearization allows.
"""

import pytest

from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.stores.requests import REQUEST_AGE_MS_MAX, REQUEST_IDS_MAX, RequestLog
from coordinator.consensus import Command, Rejection


def put(state: ClusterState, index: int, url: str, request: str | None = None, at_ms: int = 1_000) -> dict:
    body = {"name": "orders", "url": url}
    if request is not None:
        body["request"] = request
    return state.apply(index, Command("service.put", body, at_ms))


def test_a_retried_put_is_answered_not_applied_again_over_a_later_write():
    state = ClusterState()
    first = put(state, 2, "http://127.0.0.1:1", "r-1")
    put(state, 3, "http://127.0.0.1:2", "r-2")  # another client's write
    sequence = state.sequence
    again = put(state, 4, "http://127.0.0.1:1", "r-1")  # the first client's retry
    assert again == first
    assert state.registry.get("orders")["url"] == "http://127.0.0.1:2"
    assert state.sequence == sequence, "a repeated request changes nothing"


def test_without_a_request_id_the_retry_is_applied_again():
    state = ClusterState()
    put(state, 2, "http://127.0.0.1:1")
    put(state, 3, "http://127.0.0.1:2")
    put(state, 4, "http://127.0.0.1:1")
    assert state.registry.get("orders")["url"] == "http://127.0.0.1:1"


def test_a_retried_delete_does_not_delete_what_was_put_after_it():
    state = ClusterState()
    put(state, 2, "http://127.0.0.1:1")
    deleted = state.apply(3, Command("service.delete", {"name": "orders", "request": "d-1"}, 1_000))
    put(state, 4, "http://127.0.0.1:2", "r-2")
    assert state.apply(5, Command("service.delete", {"name": "orders", "request": "d-1"}, 1_000)) == deleted
    assert state.registry.get("orders")["url"] == "http://127.0.0.1:2"


def test_a_rejected_write_is_not_kept_so_its_retry_may_take_effect():
    state = ClusterState()
    with pytest.raises(Rejection):
        state.apply(2, Command("service.delete", {"name": "orders", "request": "d-1"}, 1_000))
    put(state, 3, "http://127.0.0.1:1")
    state.apply(4, Command("service.delete", {"name": "orders", "request": "d-1"}, 1_000))
    assert state.registry.get("orders") is None


def test_a_malformed_request_id_is_refused_and_changes_nothing():
    state = ClusterState()
    before = state.digest()
    with pytest.raises(Rejection):
        put(state, 2, "http://127.0.0.1:1", "has space")
    assert state.digest() == before


def test_the_request_log_is_in_the_snapshot_and_old_snapshots_still_load():
    state = ClusterState()
    first = put(state, 2, "http://127.0.0.1:1", "r-1")
    put(state, 3, "http://127.0.0.1:2")
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.digest() == state.digest()
    assert put(restored, 4, "http://127.0.0.1:1", "r-1") == first
    old = state.snapshot()
    old["format"] = 3
    del old["requests"]
    again = ClusterState()
    again.restore(old)
    assert len(again.requests) == 0 and again.registry.get("orders")["url"] == "http://127.0.0.1:2"


def test_ids_are_forgotten_by_age_and_by_count_in_apply_order():
    log = RequestLog()
    log.record("old", 0, "a")
    log.record("new", REQUEST_AGE_MS_MAX, "b")
    assert log.answer("old", REQUEST_AGE_MS_MAX) == (True, "a")
    assert log.answer("old", REQUEST_AGE_MS_MAX + 1) == (False, None)
    assert log.answer("new", REQUEST_AGE_MS_MAX + 1) == (True, "b")
    for n in range(REQUEST_IDS_MAX + 5):
        log.record(f"id-{n}", REQUEST_AGE_MS_MAX + 2, n)
    assert len(log) == REQUEST_IDS_MAX and log.answer("id-0", REQUEST_AGE_MS_MAX + 2) == (False, None)
