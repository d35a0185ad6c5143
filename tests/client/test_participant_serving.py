"""The kit serves a participant over TLS: serve_http and serve_participant
with a ServerTls, and a client CA that makes the certificate mandatory."""

from __future__ import annotations

import json
import ssl

import aiohttp
import grpc
import pytest
from aiohttp import web

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant import MemoryStore, ParticipantServicer, ServerTls, serve_http, serve_participant
from coordinator.cluster.launcher.certs import issue, make_ca


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root / "ca")
    issue(ca, root / "p.crt", root / "p.key", common_name="p", names=["127.0.0.1"], client=False)
    issue(ca, root / "c.crt", root / "c.key", common_name="coordinator", server=False)
    return ca.cert_file, root


def _client(ca, root, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if with_cert:
        context.load_cert_chain(root / "c.crt", root / "c.key")
    return context


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": True})


async def test_serve_http_is_plain_by_default_and_https_with_tls(files):
    ca, root = files
    app = web.Application()
    app.router.add_get("/", _hello)
    runner, url = await serve_http(app)
    try:
        assert url.startswith("http://127.0.0.1:")
    finally:
        await runner.cleanup()
    app = web.Application()
    app.router.add_get("/", _hello)
    runner, url = await serve_http(app, tls=ServerTls(root / "p.crt", root / "p.key", client_ca_file=ca))
    try:
        assert url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=_client(ca, root, with_cert=True)) as response:
                assert await response.json() == {"hello": True}
            with pytest.raises(aiohttp.ClientError):  # the client CA makes a certificate mandatory
                async with session.get(url, ssl=_client(ca, root, with_cert=False)) as response:
                    await response.read()
    finally:
        await runner.cleanup()


class Echo(ParticipantServicer):
    async def execute(self, path, body):
        return {"path": path}


async def test_serve_participant_over_tls_requires_the_client_certificate_of_its_ca(files):
    ca, root = files
    tls = ServerTls(root / "p.crt", root / "p.key", client_ca_file=ca)
    server, port = await serve_participant(Echo(MemoryStore()), tls=tls)
    request = coordinator_pb2.ParticipantCall(idempotency_key="s/a/action", path="/x")

    async def call(credentials):
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            return await coordinator_pb2_grpc.ParticipantStub(channel).Execute(request, timeout=5)

    try:
        chain, key = (root / "c.crt").read_bytes(), (root / "c.key").read_bytes()
        answer = await call(grpc.ssl_channel_credentials(ca.read_bytes(), key, chain))
        assert json.loads(answer.output_json) == {"path": "/x"}
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(grpc.ssl_channel_credentials(ca.read_bytes()))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
