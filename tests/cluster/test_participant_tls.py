"""Participants over TLS, at the callers, with real certificates on real
sockets on 127.0.0.1: ``https://`` and gRPC targets registered with tls,
verified against ``[services]`` ``ca_file``, with and without the client
certificate a participant may require (cluster/executor/http_caller.py,
cluster/executor/grpc_caller.py, ParticipantTls in cluster/core/tls.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coordinator.client.participant import MemoryStore, ParticipantServicer, participant_route, saga_participant
from coordinator.client.participant.grpc_servicer import serve_participant
from coordinator.client.participant.serving import ServerTls, serve_http
from coordinator.cluster.core.netpolicy import ServicePolicy
from coordinator.cluster.core.tls import ParticipantTls
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.grpc_caller import GrpcCaller
from coordinator.cluster.executor.http_caller import CallSpec, HttpCaller, participant_session
from coordinator.cluster.launcher.certs import issue, make_ca


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA the participants' certificates come from
    other_ca: Path  # a CA that signed none of them
    server: ServerTls  # a participant's certificate for 127.0.0.1 and localhost
    server_mutual: ServerTls  # the same, requiring a client certificate of `ca`
    misnamed: ServerTls  # signed by `ca` for another host name
    client_cert: Path  # the coordinator's client certificate, of `ca`
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(root / "ca"), make_ca(root / "other", name="another CA")
    issue(ca, root / "p.crt", root / "p.key", common_name="participant", names=["127.0.0.1", "localhost"], client=False)
    issue(ca, root / "x.crt", root / "x.key", common_name="elsewhere", names=["elsewhere.example"], client=False)
    issue(ca, root / "leader.crt", root / "leader.key", common_name="leader", server=False)
    return Pki(
        ca=ca.cert_file,
        other_ca=other.cert_file,
        server=ServerTls(root / "p.crt", root / "p.key"),
        server_mutual=ServerTls(root / "p.crt", root / "p.key", client_ca_file=ca.cert_file),
        misnamed=ServerTls(root / "x.crt", root / "x.key"),
        client_cert=root / "leader.crt",
        client_key=root / "leader.key",
    )


def spec(url: str, attempts: int = 3, *, tls: bool = False) -> CallSpec:
    return CallSpec(
        "orders", url, "POST", "/orders", {"qty": 1}, "s1/create/action", "2:5", 2.0, attempts, 0.01, 0.02, tls
    )


# -- HTTP --------------------------------------------------------------------------------------
class Orders:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[saga_participant(MemoryStore())])
        app.router.add_post("/orders", self.create)
        return app

    @participant_route
    async def create(self, request: web.Request) -> web.Response:
        self.seen.append(await request.json())
        return web.json_response({"order_id": f"o-{len(self.seen)}"}, status=201)


@pytest.fixture
async def https() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(tls: ServerTls | None) -> tuple[Orders, str]:
        orders = Orders()
        runner, url = await serve_http(orders.app(), tls=tls)
        runners.append(runner)
        return orders, url

    yield start
    for runner in runners:
        await runner.cleanup()


async def http_call(url: str, tls: ParticipantTls, attempts: int = 3):
    session = participant_session(ServicePolicy(), connections_max=4, ssl=tls.client_context())
    try:
        return await HttpCaller(session, Breakers(50, 0.05)).call(spec(url, attempts), "execute")
    finally:
        await session.close()


async def test_an_https_participant_verified_by_the_configured_ca_runs_the_step(https: Any, pki: Pki) -> None:
    orders, url = await https(pki.server)
    assert url.startswith("https://127.0.0.1:")
    outcome = await http_call(url, ParticipantTls(ca_file=pki.ca))
    assert (outcome.kind, outcome.output, outcome.attempts) == ("ok", {"order_id": "o-1"}, 1)
    assert orders.seen == [{"qty": 1}]
    plain, plain_url = await https(None)  # the same session still calls http:// participants as before
    assert (await http_call(plain_url, ParticipantTls(ca_file=pki.ca))).kind == "ok" and plain.seen == [{"qty": 1}]


async def test_a_certificate_of_another_ca_is_an_unknown_outcome_logged_once(
    https: Any, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    orders, url = await https(pki.server)
    with caplog.at_level(logging.WARNING, logger="coordinator.cluster.executor.http_caller"):
        outcome = await http_call(url, ParticipantTls(ca_file=pki.other_ca), attempts=3)
    assert (outcome.kind, outcome.attempts) == ("unknown", 3)
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error
    assert orders.seen == [], "no request may reach the handler over an unverified connection"
    warnings = [r for r in caplog.records if "TLS failed" in r.getMessage()]
    assert len(warnings) == 1 and "orders" in warnings[0].getMessage() and warnings[0].exc_info is None
    # the system CAs (no ca_file) do not know the local CA either
    assert (await http_call(url, ParticipantTls(), attempts=1)).kind == "unknown" and orders.seen == []


async def test_a_certificate_for_another_host_name_is_an_unknown_outcome(https: Any, pki: Pki) -> None:
    orders, url = await https(pki.misnamed)
    outcome = await http_call(url, ParticipantTls(ca_file=pki.ca), attempts=2)
    assert outcome.kind == "unknown" and "CERTIFICATE_VERIFY_FAILED" in outcome.error
    assert orders.seen == []


async def test_a_participant_requiring_a_client_certificate_gets_ours_and_refuses_none(https: Any, pki: Pki) -> None:
    orders, url = await https(pki.server_mutual)
    without = await http_call(url, ParticipantTls(ca_file=pki.ca), attempts=2)
    assert without.kind == "unknown" and orders.seen == [], without
    with_cert = await http_call(url, ParticipantTls(pki.ca, pki.client_cert, pki.client_key))
    assert (with_cert.kind, with_cert.output) == ("ok", {"order_id": "o-1"}) and orders.seen == [{"qty": 1}]


# -- gRPC --------------------------------------------------------------------------------------
class Warehouse(ParticipantServicer):
    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.seen: list[Any] = []

    async def execute(self, path: str, body: Any) -> Any:
        self.seen.append((path, body))
        return {"pick_id": f"p-{len(self.seen)}"}


@pytest.fixture
async def grpc_serve() -> AsyncIterator[Any]:
    servers: list[Any] = []

    async def start(tls: ServerTls | None) -> tuple[Warehouse, str]:
        warehouse = Warehouse()
        server, port = await serve_participant(warehouse, tls=tls)
        servers.append(server)
        return warehouse, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(None)


@pytest.fixture
async def grpc_caller() -> AsyncIterator[Any]:
    made: list[GrpcCaller] = []

    def make(tls: ParticipantTls) -> GrpcCaller:
        made.append(GrpcCaller(Breakers(50, 0.05), tls=tls))
        return made[-1]

    yield make
    for caller in made:
        await caller.close()


async def test_a_grpc_participant_over_tls_with_the_configured_ca_runs_the_step(
    grpc_serve: Any, grpc_caller: Any, pki: Pki
) -> None:
    warehouse, target = await grpc_serve(pki.server)
    plain, plain_target = await grpc_serve(None)
    caller = grpc_caller(ParticipantTls(ca_file=pki.ca))
    callers = ParticipantCallers(HttpCaller(None, Breakers(50, 0.05)), caller)  # type: ignore[arg-type]
    outcome = await callers.call({"grpc": target, "tls": True}, spec(target), "execute")
    assert (outcome.kind, outcome.output) == ("ok", {"pick_id": "p-1"}) and warehouse.seen == [("/orders", {"qty": 1})]
    # a record without tls (one written before it existed) is called in plain text, as before
    old = await callers.call({"grpc": plain_target}, spec(plain_target), "execute")
    assert old.kind == "ok" and plain.seen == [("/orders", {"qty": 1})]
    # the same target in plain text is another channel: a TLS server refuses it
    refused = await callers.call({"grpc": target}, spec(target, attempts=2), "execute")
    assert refused.kind == "unknown" and len(warehouse.seen) == 1
    assert sorted(caller.targets()) == sorted([target, plain_target])


async def test_a_grpc_certificate_of_another_ca_is_an_unknown_outcome_logged_once(
    grpc_serve: Any, grpc_caller: Any, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    warehouse, target = await grpc_serve(pki.server)
    with caplog.at_level(logging.WARNING, logger="coordinator.cluster.executor.http_caller"):
        outcome = await grpc_caller(ParticipantTls(ca_file=pki.other_ca)).call(spec(target, tls=True), "execute")
    assert (outcome.kind, outcome.attempts) == ("unknown", 3) and "UNAVAILABLE" in outcome.error
    assert warehouse.seen == []
    assert len([r for r in caplog.records if "TLS failed" in r.getMessage()]) == 1


async def test_a_grpc_participant_requiring_a_client_certificate_gets_ours_and_refuses_none(
    grpc_serve: Any, grpc_caller: Any, pki: Pki
) -> None:
    warehouse, target = await grpc_serve(pki.server_mutual)
    without = await grpc_caller(ParticipantTls(ca_file=pki.ca)).call(spec(target, 2, tls=True), "execute")
    assert without.kind == "unknown" and warehouse.seen == []
    mutual = grpc_caller(ParticipantTls(pki.ca, pki.client_cert, pki.client_key))
    outcome = await mutual.call(spec(target, tls=True), "execute")
    assert (outcome.kind, outcome.output) == ("ok", {"pick_id": "p-1"}) and len(warehouse.seen) == 1


async def test_a_grpc_certificate_for_another_host_name_is_an_unknown_outcome(
    grpc_serve: Any, grpc_caller: Any, pki: Pki
) -> None:
    """The channel connects to the checked address; the name verified is the registered one."""
    warehouse, target = await grpc_serve(pki.misnamed)
    outcome = await grpc_caller(ParticipantTls(ca_file=pki.ca)).call(spec(target, 2, tls=True), "execute")
    assert outcome.kind == "unknown" and warehouse.seen == []
