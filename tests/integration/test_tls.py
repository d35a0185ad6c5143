"""A cluster with [tls]: the APIs speak TLS only, and say https; with
peer = true the Raft port speaks mutual TLS.

Real node processes with certificates from their own CA; the client over
HTTP and gRPC with the right CA works, a wrong CA, plain HTTP or plain gRPC
to a TLS port and, under mutual TLS, a client without a certificate are
refused with an error that says why.
"""

import asyncio
import socket
import ssl

import aiohttp
import pytest
import pytest_asyncio

from coordinator.client import Coordinator, CoordinatorError, TlsRefused, Unavailable
from coordinator.cluster.launcher.certs import issue, make_ca
from coordinator.cluster.launcher.local import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def _fast(**kw):
    return {"attempts": 2, "retry_budget_s": 5.0, "timeout_s": 3.0, **kw}


async def _refused(make, error_class, *words):
    """``make()`` builds a client; its first call fails with ``error_class``,
    naming each of ``words`` (case-insensitive)."""
    with pytest.raises(error_class) as caught:
        async with make() as client:
            await client.cluster()
    text = str(caught.value).lower()
    assert all(w.lower() in text for w in words), text
    return caught.value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_cluster(tmp_path_factory):
    local = LocalCluster(tmp_path_factory.mktemp("tls") / "c", tls=True, peer_tls=True)
    local.start()
    try:
        await local.wait_leader()
        yield local
    finally:
        await local.close()


async def test_the_client_over_https_and_grpc_with_the_right_ca(tls_cluster):
    local = tls_cluster
    leader = await local.wait_leader()
    urls = [local.url(i) for i in local.ids]
    assert all(u.startswith("https://") for u in urls)
    async with Coordinator(urls, **local.tls_files) as c:
        info = await c.cluster()
        assert info.leader["http"].startswith("https://")  # the advertised URLs say https
        assert all(n.http.startswith("https://") for n in info.nodes)
        await c.put_service("orders", "http://127.0.0.1:9001")
    grpc_targets = [local.config.node(i).grpc for i in local.ids]
    async with Coordinator(grpc_targets, transport="grpc", **local.tls_files) as c:
        assert [s.name for s in await c.list_services()] == ["orders"]
    # A follower's 307 names the leader with https.
    follower = next(i for i in local.ids if i != leader)
    response = await local.request("PUT", follower, "/v1/services/x", {"url": "http://127.0.0.1:9002"})
    assert response.status == 307
    assert response.headers["Location"] == f"{local.url(leader)}/v1/services/x"


async def test_a_wrong_ca_plain_http_and_plain_grpc_are_refused(tls_cluster, tmp_path):
    local = tls_cluster
    url = local.url(local.ids[0])
    other_ca = make_ca(tmp_path / "other")
    await _refused(lambda: Coordinator([url], ca_file=str(other_ca.cert_file), **_fast()), TlsRefused, "not trusted")
    # The system's CAs do not know this cluster's CA either.
    await _refused(lambda: Coordinator([url], tls=True, **_fast()), TlsRefused, "ca-file")
    plain = url.replace("https://", "http://")
    await _refused(lambda: Coordinator([plain], **_fast()), Unavailable, "use https://")
    grpc_target = local.config.node(local.ids[0]).grpc
    await _refused(
        lambda: Coordinator([grpc_target], transport="grpc", ca_file=str(other_ca.cert_file), **_fast()),
        TlsRefused,
        "not trusted",
    )
    await _refused(lambda: Coordinator([grpc_target], transport="grpc", **_fast()), Unavailable, "tls")
    # A raw plain HTTP request gets no answer at all: nothing is served in clear text.
    async with aiohttp.ClientSession() as plain_session:
        with pytest.raises(aiohttp.ClientError):
            async with plain_session.get(plain + "/v1/cluster") as r:
                await r.read()


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path):
    local = LocalCluster(tmp_path / "c", client_certs=True)
    local.start()
    try:
        await local.wait_leader()  # the run's own session presents the client certificate
        urls = [local.url(i) for i in local.ids]
        grpc_targets = [local.config.node(i).grpc for i in local.ids]
        ca = local.tls_files["ca_file"]
        for make in (
            lambda: Coordinator(urls, ca_file=ca, **_fast()),
            lambda: Coordinator(grpc_targets, transport="grpc", ca_file=ca, **_fast()),
        ):
            await _refused(make, CoordinatorError, "certificate")
        # A certificate from another CA is refused as well.
        other = make_ca(tmp_path / "other")
        issue(other, tmp_path / "x.crt", tmp_path / "x.key", common_name="intruder", server=False)
        stranger = {"ca_file": ca, "cert_file": str(tmp_path / "x.crt"), "key_file": str(tmp_path / "x.key")}
        await _refused(lambda: Coordinator(urls, **stranger, **_fast()), CoordinatorError, "")
        async with Coordinator(urls, **local.tls_files) as c:
            assert (await c.cluster()).leader is not None
        async with Coordinator(grpc_targets, transport="grpc", **local.tls_files) as c:
            assert (await c.cluster()).leader is not None
    finally:
        await local.close()


async def test_a_node_refuses_to_start_with_a_key_others_can_read(tmp_path):
    local = LocalCluster(tmp_path / "c", nodes=1, tls=True)
    key = local.root / "tls" / "n1.key"
    key.chmod(0o640)
    local.start()
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while local.supervisor.alive("n1") and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert not local.supervisor.alive("n1")
        log = local.supervisor.log_path("n1").read_text()
        assert f"{key}: the key is readable by others; run chmod 600" in log
        assert "Traceback" not in log
    finally:
        await local.close()


async def test_the_raft_port_speaks_mutual_tls_only(tls_cluster):
    """The nodes elected a leader over it (the fixture). A client without a
    certificate is refused once the handshake ends; with a peer's
    certificate it gets a TLS 1.3 session, over which the node reads
    PySyncObj's framing (a zero-length frame is garbage: it closes)."""
    local = tls_cluster
    host, port = local.config.node("n2").raft.rsplit(":", 1)
    tls = local.config.tls.for_node("n1")

    def session(certificate: bool) -> tuple[str | None, object]:
        context = ssl.create_default_context(cafile=str(tls.peer_ca_file))
        if certificate:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="n2") as wrapped:
                version = wrapped.version()
                try:
                    wrapped.sendall(b"\0" * 4)
                    return version, wrapped.recv(1)
                except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                    return version, exc

    _, refused = await asyncio.to_thread(session, False)
    assert isinstance(refused, ssl.SSLError) and "certificate required" in str(refused), refused
    version, answer = await asyncio.to_thread(session, True)
    assert version == "TLSv1.3"
    assert not isinstance(answer, ssl.SSLError), answer
