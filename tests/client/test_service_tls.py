"""put_service(..., tls=True): what the client sends, and what it reads back."""

from __future__ import annotations

import pytest

from coordinator.client import Coordinator
from coordinator.client.types import Service

VIEW = {"name": "stock", "url": None, "grpc": "h:1", "created_at": "t", "updated_at": "t", "revision": 3}


async def _sent(**kwargs) -> tuple[dict, Service]:
    sent: dict = {}

    async def request(operation, args):
        sent.update(args, operation=operation)
        return {**VIEW, "tls": bool(args["body"].get("tls"))}

    client = Coordinator(["http://127.0.0.1:1"])
    client._transport.request = request  # the wire is tested elsewhere; here, the body
    try:
        service = await client.put_service("stock", **kwargs)
    finally:
        await client.close()
    return sent, service


async def test_a_grpc_service_over_tls_sends_tls_true_and_reads_it_back():
    sent, service = await _sent(grpc="h:1", tls=True)
    assert sent["operation"] == "put_service" and sent["body"] == {"grpc": "h:1", "tls": True}
    assert service.tls is True and service.grpc == "h:1"


async def test_without_tls_the_body_is_as_before():
    sent, service = await _sent(grpc="h:1")
    assert sent["body"] == {"grpc": "h:1"} and service.tls is False
    sent, _ = await _sent(url="https://h:1")
    assert sent["body"] == {"url": "https://h:1"}


async def test_tls_with_a_url_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="https:// says it"):
        await _sent(url="https://h:1", tls=True)


def test_a_view_from_a_node_without_tls_reads_as_plain():
    assert Service.from_json(VIEW).tls is False
