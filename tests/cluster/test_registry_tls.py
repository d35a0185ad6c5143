"""A gRPC participant registered over TLS: the body, the replicated record,
the view, and records written before ``tls`` existed."""

from __future__ import annotations

import pytest

from coordinator.cluster.api.operations import service_view
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.stores.registry import InvalidService, validate_service_body
from coordinator.consensus import Command, Rejection
from coordinator.consensus.codec import pack, unpack


def test_tls_is_a_boolean_only_beside_a_grpc_target():
    assert validate_service_body({"grpc": "h:1", "tls": True}) == {"url": None, "grpc": "h:1", "tls": True}
    assert validate_service_body({"grpc": "h:1", "tls": False}) == {"url": None, "grpc": "h:1"}
    assert validate_service_body({"grpc": "h:1"}) == {"url": None, "grpc": "h:1"}
    for body, field in (
        ({"url": "https://h:1", "tls": True}, "tls"),
        ({"url": "http://h:1", "tls": False}, "tls"),
        ({"grpc": "h:1", "tls": "yes"}, "tls"),
        ({"grpc": "h:1", "tls": 1}, "tls"),
        ({"tls": True}, "body"),
    ):
        with pytest.raises(InvalidService) as error:
            validate_service_body(body)
        assert error.value.field == field, body


def test_the_record_carries_tls_only_when_true_and_the_view_always_says_it():
    state = ClusterState()
    secure = state.apply(2, Command("service.put", {"name": "stock", "grpc": "h:1", "tls": True}, 10))
    plain = state.apply(3, Command("service.put", {"name": "pay", "grpc": "h:2"}, 11))
    web = state.apply(4, Command("service.put", {"name": "web", "url": "https://h:3"}, 12))
    assert secure["tls"] is True and "tls" not in plain and "tls" not in web
    assert [service_view(s)["tls"] for s in (secure, plain, web)] == [True, False, False]
    with pytest.raises(Rejection) as rejected:
        state.apply(5, Command("service.put", {"name": "web", "url": "https://h:3", "tls": True}, 13))
    assert rejected.value.code == "invalid"
    copy = ClusterState()
    copy.restore(unpack(pack(state.snapshot())))
    assert copy.digest() == state.digest() and copy.registry.get("stock")["tls"] is True


def test_a_record_from_before_tls_existed_reads_as_plain_and_updates_as_before():
    """A snapshot taken before ``tls`` existed holds records without it."""
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "stock", "grpc": "h:1"}, 10))
    old = unpack(pack(state.snapshot()))
    copy = ClusterState()
    copy.restore(old)
    record = copy.registry.get("stock")
    assert "tls" not in record and service_view(record)["tls"] is False
    updated = copy.apply(3, Command("service.put", {"name": "stock", "grpc": "h:1", "tls": True}, 20))
    assert updated["tls"] is True and updated["created_at_ms"] == 10  # the same service, now over TLS


def test_switching_a_service_in_use_to_or_from_tls_is_a_re_point():
    state = ClusterState()
    state.apply(2, Command("service.put", {"name": "pay", "grpc": "10.0.0.1:9001"}, 1))
    steps = [{"name": "s0", "service": "pay", "action": {"method": "POST", "path": "/do"}}]
    state.apply(3, Command("saga.submit", {"definition": {"id": "live", "steps": steps}}, 5))
    with pytest.raises(Rejection) as rejected:
        state.apply(4, Command("service.put", {"name": "pay", "grpc": "10.0.0.1:9001", "tls": True}, 6))
    assert rejected.value.code == "conflict"
    by = {"remote": "10.1.1.1", "token": False}
    body = {"name": "pay", "grpc": "10.0.0.1:9001", "tls": True, "force": True, "by": by}
    forced = state.apply(5, Command("service.put", body, 7))
    assert forced["tls"] is True and forced["forced"]["previous"] == {"url": None, "grpc": "10.0.0.1:9001"}
    back = {"name": "pay", "grpc": "10.0.0.1:9001", "force": True, "by": by}
    plain = state.apply(6, Command("service.put", back, 8))
    assert "tls" not in plain and plain["forced"]["previous"] == {"url": None, "grpc": "10.0.0.1:9001", "tls": True}
    assert service_view(plain)["forced_repoint"]["previous"]["tls"] is True
