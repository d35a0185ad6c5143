"""Participants over TLS through a real three-node cluster: a saga whose
steps call an HTTPS participant that requires the coordinator's client
certificate and a gRPC participant registered with ``tls`` (and that
requires it too), both verified against ``[services]`` ``ca_file``."""

from __future__ import annotations

import asyncio
import sys

import pytest
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.client.participant import (
    MemoryStore,
    ParticipantServicer,
    ServerTls,
    participant_route,
    saga_participant,
    serve_http,
    serve_participant,
)
from coordinator.cluster.core.tls import ParticipantTls
from coordinator.cluster.launcher.certs import issue, make_ca
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration


class Ledger:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[saga_participant(MemoryStore())])
        app.router.add_post("/entries", self.add)
        return app

    @participant_route
    async def add(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        return web.json_response({"entry": len(self.calls)})


class Warehouse(ParticipantServicer):
    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.calls: list[str] = []

    async def execute(self, path, body):
        self.calls.append(path)
        return {"pick": len(self.calls)}


async def _cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode()


async def test_a_saga_over_an_https_participant_with_our_client_certificate_and_a_grpc_tls_one(tmp_path):
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    issue(ca, pki / "p.crt", pki / "p.key", common_name="participant", names=["127.0.0.1", "localhost"], client=False)
    issue(ca, pki / "leader.crt", pki / "leader.key", common_name="coordinator", server=False)
    participant = ServerTls(pki / "p.crt", pki / "p.key", client_ca_file=ca.cert_file)  # mutual: ours is required

    cluster = LocalCluster(
        tmp_path / "cluster", participant_tls=ParticipantTls(ca.cert_file, pki / "leader.crt", pki / "leader.key")
    )
    assert "client_cert_file" in cluster.cluster_file.read_text()
    ledger, warehouse = Ledger(), Warehouse()
    runner, url = await serve_http(ledger.app(), tls=participant)
    server, port = await serve_participant(warehouse, tls=participant)
    cluster.start()
    try:
        await cluster.wait_leader(timeout_s=40)
        endpoints = ",".join(cluster.url(i) for i in cluster.ids)
        code, out = await _cli(
            "services", "add", "warehouse", "--grpc", f"127.0.0.1:{port}", "--tls", "--endpoints", endpoints
        )
        assert code == 0 and f"grpcs://127.0.0.1:{port}" in out, out
        async with Coordinator([cluster.url(i) for i in cluster.ids]) as client:
            assert url.startswith("https://")
            await client.put_service("ledger", url)
            assert (await client.get_service("warehouse")).tls is True
            retry = {"max_attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.1}
            steps = [
                {"name": "book", "service": "ledger", "action": {"method": "POST", "path": "/entries"}, "retry": retry},
                {
                    "name": "pick",
                    "service": "warehouse",
                    "action": {"method": "POST", "path": "/picks"},
                    "retry": retry,
                },
            ]
            await client.submit_saga({"id": "tls-1", "steps": steps})
            saga = await client.wait_saga("tls-1", timeout=30)
        assert saga.state == "completed", saga
        assert saga.step("book")["output"] == {"entry": 1} and saga.step("pick")["output"] == {"pick": 1}
        assert ledger.calls == ["/entries"] and warehouse.calls == ["/picks"]
        code, out = await _cli("services", "list", "--endpoints", endpoints)
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
        assert code == 0 and rows["warehouse"][3] == "yes" and rows["ledger"][3] == "yes", out
    finally:
        await cluster.close()
        await server.stop(None)
        await runner.cleanup()
