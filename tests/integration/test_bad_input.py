"""Bad input gets a 4xx naming the problem (README.md, "HTTP API"), and changes nothing."""

import asyncio
import pickle
import socket
import struct
import zlib

import pytest

from coordinator.consensus.raft_guard import RAFT_AUTH_TIMEOUT_S, RAFT_FOREIGN_PER_ADDRESS_MAX

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
def cluster(shared_cluster):
    return shared_cluster


@pytest.mark.parametrize(
    "name, body, status, field",
    [
        ("orders", b"{not json", 400, "body"),
        ("orders", b"", 400, "body"),
        ("orders", b"[1, 2]", 400, "body"),
        ("orders", b'{"url": 5}', 400, "url"),
        ("orders", b'{"url": "http://h:1", "colour": "red"}', 400, "colour"),
        ("orders", b'{"url": "http://h:1", "grpc": "h:2"}', 400, "body"),
        ("orders", b'{"url": "ftp://h/x"}', 400, "url"),
        ("orders", b'{"url": "file:///etc/passwd"}', 400, "url"),
        ("orders", b'{"url": "http://user:pw@h:1"}', 400, "url"),
        ("orders", b'{"url": "javascript:alert(1)"}', 400, "url"),
        ("orders", b'{"grpc": "no-port"}', 400, "grpc"),
        ("orders", b'{"url": NaN}', 400, "body"),
        ("Orders", b'{"url": "http://h:1"}', 400, "name"),
        ("-orders", b'{"url": "http://h:1"}', 400, "name"),
        ("o" * 64, b'{"url": "http://h:1"}', 400, "name"),
    ],
)
async def test_bad_service_writes_get_400_naming_the_field(cluster, name, body, status, field):
    leader = await cluster.wait_leader()
    before = await cluster.request("GET", leader, "/v1/services")
    response = await cluster.request("PUT", leader, f"/v1/services/{name}", data=body)
    assert response.status == status, response
    error = response.json["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith(field), error
    after = await cluster.request("GET", leader, "/v1/services")
    assert after.json == before.json


async def test_oversize_body_gets_413_and_deep_json_400(cluster):
    leader = await cluster.wait_leader()
    huge = b'{"url": "http://h:1", "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await cluster.request("PUT", leader, "/v1/services/orders", data=huge)
    assert response.status == 413 and response.json["error"]["code"] == "too_large"
    deep = b"[" * 5000 + b"]" * 5000
    response = await cluster.request("PUT", leader, "/v1/services/orders", data=deep)
    assert response.status == 400 and response.json["error"]["code"] == "invalid"
    assert (await cluster.request("GET", leader, "/v1/services")).json == {"services": []}


async def test_unknown_routes_methods_and_query_values(cluster):
    leader = await cluster.wait_leader()
    missing = await cluster.request("GET", leader, "/v1/nothing")
    assert missing.status == 404 and missing.json["error"]["code"] == "not_found"
    wrong = await cluster.request("POST", leader, "/v1/services/orders", {"url": "http://h:1"})
    assert wrong.status == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    stale = await cluster.request("GET", leader, "/v1/services?stale=maybe")
    assert stale.status == 400 and stale.json["error"]["message"].startswith("stale")


def _send_raw(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(1)
        try:
            s.recv(1024)
        except (TimeoutError, ConnectionError):
            pass


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


async def test_garbage_and_pickles_sent_to_the_raft_port_are_ignored(cluster, tmp_path):
    marker = tmp_path / "pwned"
    exploit = pickle.dumps(_Exploit(str(marker)))
    framed = zlib.compress(exploit)
    payloads = [
        b"\x00" * 64,
        b"GET / HTTP/1.1\r\n\r\n",
        exploit,
        struct.pack("i", len(framed)) + framed,  # PySyncObj's framing without the secret
    ]
    for node in cluster.config.nodes:
        port = int(node.raft.rsplit(":", 1)[1])
        for payload in payloads:
            await asyncio.to_thread(_send_raw, port, payload)
    await asyncio.sleep(0.5)
    assert not marker.exists(), "a pickle sent to the Raft port was executed"
    leader = await cluster.wait_leader()
    assert (await cluster.put_service(leader, "still-ok", "http://127.0.0.1:9001")).status == 200
    assert (await cluster.request("DELETE", leader, "/v1/services/still-ok")).status == 200
    for node_id in cluster.ids:
        assert (await cluster.request("GET", node_id, "/healthz")).status == 200


async def test_paths_that_leave_the_service_base_path_get_400_naming_the_field(cluster):
    leader = await cluster.wait_leader()
    await cluster.request("PUT", leader, "/v1/services/orders", {"url": "http://127.0.0.1:9/api"}, follow=True)
    saga = {"steps": [{"name": "a", "service": "orders", "action": {"method": "GET", "path": "/../admin"}}]}
    response = await cluster.request("POST", leader, "/v1/sagas", saga, follow=True)
    assert response.status == 400 and response.json["error"]["field"] == "steps[0].action.path", response
    call = {"path": "/%2e%2e/admin"}
    tx = {
        "participants": [{"service": "orders", "prepare": call, "commit": {"path": "/c"}, "abort": {"path": "/a?x=1"}}]
    }
    response = await cluster.request("POST", leader, "/v1/transactions", tx, follow=True)
    assert response.status == 400 and response.json["error"]["field"] == "participants[0].prepare.path", response


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _closed_by_peer(s: socket.socket, within_s: float) -> bool:
    """True when the other end closes ``s`` (EOF or reset) within the time."""
    s.settimeout(within_s)
    try:
        return s.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def _send_huge_frame(port: int, garbage_bytes: int) -> bool:
    """A length prefix announcing 2 GiB, then garbage: was the connection closed?"""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        chunk = b"\xa5" * (1024 * 1024)
        try:
            s.sendall(struct.pack("i", 2**31 - 1))
            for _ in range(garbage_bytes // len(chunk)):
                s.sendall(chunk)
        except (TimeoutError, ConnectionError):
            return True
        return _closed_by_peer(s, 3)


def _idle_connections(port: int, count: int, source: str) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        sockets.append(s)
    return sockets


async def test_the_raft_port_closes_huge_frames_and_idle_connections_before_the_password(cluster):
    """A 2 GiB length prefix and 24 MiB of garbage are not
    buffered, idle connections are dropped, and the leader keeps its term."""
    leader = await cluster.wait_leader()
    before = await cluster.cluster_view(leader)
    pid = cluster.supervisor.pid(leader)
    port = int(cluster.config.node(leader).raft.rsplit(":", 1)[1])
    rss_before = _rss_kb(pid)

    assert await asyncio.to_thread(_send_huge_frame, port, 24 * 1024 * 1024), "a 2 GiB frame was not refused"
    local = await asyncio.to_thread(_idle_connections, port, 64, "127.0.0.1")  # a peer's address
    foreign = await asyncio.to_thread(_idle_connections, port, 8, "127.0.0.2")  # not a peer's
    try:
        assert len(local) == 64 and len(foreign) == 8
        closed_at_once = [await asyncio.to_thread(_closed_by_peer, s, 0.5) for s in foreign]
        assert sum(closed_at_once) >= len(foreign) - RAFT_FOREIGN_PER_ADDRESS_MAX, closed_at_once
        for s in local + foreign:
            assert await asyncio.to_thread(_closed_by_peer, s, RAFT_AUTH_TIMEOUT_S + 2), (
                "an idle connection stayed open"
            )
    finally:
        for s in local + foreign:
            s.close()

    grown_kb = _rss_kb(pid) - rss_before
    assert grown_kb < 8 * 1024, f"the leader's RSS grew by {grown_kb} KiB"
    after = await cluster.cluster_view(leader)
    assert after["role"] == "leader" and after["term"] == before["term"], (before, after)
    assert (await cluster.put_service(leader, "after-flood", "http://127.0.0.1:9001")).status == 200
    assert (await cluster.request("DELETE", leader, "/v1/services/after-flood")).status == 200
