"""Mutual TLS between Raft nodes (consensus/peer_tls.py): real PySyncObj
nodes over real TCP on 127.0.0.1, and hand-made peers speaking PySyncObj's
protocol (its key exchange, its hello) with the cluster secret."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import ssl
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pysyncobj.pickle as pickle
import pytest
from pysyncobj.encryptor import getEncryptor

from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.core.tls import NodeTls, peer_client_context, peer_server_context
from coordinator.cluster.launcher.certs import issue, local_tls, make_ca
from coordinator.consensus import Applied, Command, PeerTls, PySyncObjLog, RaftSettings
from coordinator.consensus.peer_frames import PeerFrames
from coordinator.consensus.raft_guard import RAFT_AUTH_TIMEOUT_S, RAFT_FRAME_BYTES_MAX

SECRET = "peer-tls-test-secret-0123456789abcdef"
SETTINGS = RaftSettings(fsync=False)
WAIT_S = 15.0


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_tls(directory: Path, cert: str, ca: Path) -> NodeTls:
    return NodeTls(directory / f"{cert}.crt", directory / f"{cert}.key", peer=True, peer_ca_file=ca)


@dataclass
class Cluster:
    ids: list[str]
    addresses: dict[str, str]  # id -> raft address
    tls_dir: Path
    logs: dict[str, PySyncObjLog] = field(default_factory=dict)
    states: dict[str, ClusterState] = field(default_factory=dict)
    roles: dict[str, list[int]] = field(default_factory=dict)

    @property
    def names(self) -> dict[str, str]:
        return {address: node_id for node_id, address in self.addresses.items()}

    def peer_tls(self, node_id: str) -> PeerTls:
        tls = _node_tls(self.tls_dir, node_id, self.tls_dir / "ca.crt")
        return PeerTls(peer_server_context(tls), peer_client_context(tls), self.names)

    async def start(self, node_id: str, data: Path, *, tls: bool, settings: RaftSettings = SETTINGS) -> None:
        state = ClusterState()
        roles = self.roles.setdefault(node_id, [])

        class Observer:
            def proposing(self, command):
                pass

            def applying(self, index, data):
                pass

            def role_changed(self, old, new, term):
                roles.append(new)

        log = PySyncObjLog(
            self_address=self.addresses[node_id],
            partner_addresses=[a for i, a in self.addresses.items() if i != node_id],
            secret=SECRET,
            data_dir=str(data / node_id),
            state_machine=state,
            settings=settings,
            observer=Observer(),
            peer_tls=self.peer_tls(node_id) if tls else None,
        )
        self.logs[node_id], self.states[node_id] = log, state
        await log.start()

    async def stop(self) -> None:
        for log in self.logs.values():
            await log.stop()

    async def leader(self) -> str:
        return await _eventually(lambda: next((i for i, log in self.logs.items() if log.is_leader()), None))

    def transport(self, node_id: str):
        return self.logs[node_id].raft()._SyncObj__transport


async def _eventually(probe, timeout_s: float = WAIT_S):
    """``probe()``'s first truthy value, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {probe}")
        await asyncio.sleep(0.02)


def _put(n: int) -> Command:
    return Command("service.put", {"name": f"s{n}", "url": f"http://127.0.0.1:{9000 + n}"}, 1)


@pytest.fixture
def cluster(tmp_path):
    ids = ["n1", "n2", "n3"]
    ports = _free_ports(len(ids))
    tls_dir = tmp_path / "tls"
    local_tls(tls_dir, [(i, "127.0.0.1") for i in ids])
    return Cluster(ids, {i: f"127.0.0.1:{p}" for i, p in zip(ids, ports, strict=True)}, tls_dir)


async def _started(cluster: Cluster, tmp_path: Path, *, tls: bool) -> str:
    for node_id in cluster.ids:
        await cluster.start(node_id, tmp_path / "data", tls=tls)
    leader = await cluster.leader()
    for n in range(3):
        assert isinstance(await cluster.logs[leader].propose(_put(n)), Applied)
    return leader


# -- a hand-made peer: PySyncObj's protocol over a blocking socket -----------------
class _Peer:
    """Dials a node, optionally over TLS with a certificate, and speaks
    PySyncObj's key exchange and hello with the cluster secret."""

    def __init__(
        self, address: str, context: ssl.SSLContext | None = None, server_hostname: str | None = None, encryptor=None
    ):
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=server_hostname)
        self.sock = sock
        # A node's own frames (consensus/peer_frames.py) unless told otherwise
        # (PySyncObj's Fernet: a node of an older release).
        self.encryptor = encryptor if encryptor is not None else PeerFrames(SECRET)
        self.markers: set[int] = set()  # the first byte of each frame read: 0xC1 sealed, "g" Fernet (base64)
        self.my_key = os.urandom(32)
        self.their_key: bytes | None = None
        self.buffer = b""
        self.closed = False

    def send(self, message) -> None:
        if self.their_key is not None:
            message = (self.their_key, message)
        self.send_raw_frame(self.encryptor.encrypt_at_time(zlib.compress(pickle.dumps(message), 3), int(time.time())))

    def send_raw_frame(self, data: bytes) -> None:
        self.sendall(struct.pack("i", len(data)) + data)

    def sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def _frames(self) -> list:
        messages = []
        while len(self.buffer) >= 4:
            (length,) = struct.unpack_from("i", self.buffer)
            if len(self.buffer) < 4 + length:
                break
            data, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
            self.markers.add(data[0])
            messages.append(pickle.loads(zlib.decompress(self.encryptor.decrypt(data))))
        return messages

    def receive(self, timeout_s: float, until=lambda messages: False) -> list:
        """Messages read until ``until(messages)``, the connection closes,
        or ``timeout_s`` passes."""
        messages: list = []
        deadline = time.monotonic() + timeout_s
        while not self.closed and not until(messages):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            self.buffer += data
            messages += self._frames()
        return messages

    def hello(self, claim) -> None:
        """The key exchange, then the hello ``claim`` (a node address or 'readonly')."""
        self.send(self.my_key)
        answer = self.receive(WAIT_S, until=bool)
        if not answer:
            return
        tag, self.their_key = answer[0]
        assert tag == self.my_key
        self.send(claim)

    def close(self) -> None:
        self.sock.close()


def _client_context(tls: NodeTls) -> ssl.SSLContext:
    return peer_client_context(tls)


def _entries(messages: list) -> list:
    return [
        entry
        for _, message in messages
        if isinstance(message, dict) and message.get("type") == "append_entries"
        for entry in message.get("entries", ())
    ]


# -- the cluster ---------------------------------------------------------------
async def test_three_nodes_with_peer_tls_elect_and_replicate(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        index = cluster.logs[leader].status().commit_index
        for node_id in cluster.ids:
            await _eventually(lambda node_id=node_id: cluster.logs[node_id].status().applied_index >= index)
            assert [cluster.states[node_id].registry.get(f"s{n}") is not None for n in range(3)] == [True] * 3
        # Every link is up, over TLS: the followers reach each other too.
        for node_id in cluster.ids:
            await _eventually(lambda node_id=node_id: all(cluster.logs[node_id].status().peers.values()))
            sessions = [
                getattr(c, "_coordinator_peer_tls", None) for c in cluster.transport(node_id)._connections.values()
            ]
            assert len(sessions) == 2 and all(s is not None and s.handshaken for s in sessions)
            assert all(s.sslobj.version() == "TLSv1.3" for s in sessions)
    finally:
        await cluster.stop()


async def test_a_restarted_peer_gets_a_fresh_session_on_the_same_connection(cluster, tmp_path):
    """PySyncObj reconnects with the same connection object: its TLS session
    must start over. The node with the lowest address is dialled by both others."""
    try:
        await _started(cluster, tmp_path, tls=True)
        restarted = min(cluster.ids, key=lambda i: cluster.addresses[i])
        dialers = [i for i in cluster.ids if i != restarted]

        def dialling(node_id: str):
            transport = cluster.transport(node_id)
            return next(c for n, c in transport._connections.items() if n.address == cluster.addresses[restarted])

        await _eventually(lambda: all(getattr(dialling(d), "_coordinator_peer_tls", None) for d in dialers))
        before = {d: (dialling(d), dialling(d)._coordinator_peer_tls) for d in dialers}
        await cluster.logs[restarted].stop()
        await cluster.start(restarted, tmp_path / "data", tls=True)
        leader = await cluster.leader()
        assert isinstance(await cluster.logs[leader].propose(_put(7)), Applied)
        index = cluster.logs[leader].status().commit_index
        await _eventually(lambda: cluster.logs[restarted].status().applied_index >= index)
        assert cluster.states[restarted].registry.get("s7") is not None
        for d, (conn, session) in before.items():
            await _eventually(lambda d=d: getattr(dialling(d), "_coordinator_peer_tls", None) is not None)
            assert dialling(d) is conn and conn._coordinator_peer_tls is not session
    finally:
        await cluster.stop()


# -- who is kept out ---------------------------------------------------------------
async def test_without_peer_tls_the_secret_alone_streams_the_log(cluster, tmp_path):
    """The attack, against a cluster without peer TLS: it works (so the
    tests below that it fails with peer TLS can fail)."""
    try:
        leader = await _started(cluster, tmp_path, tls=False)
        peer = _Peer(cluster.addresses[leader])
        peer.hello("readonly")
        # PySyncObj sends a read-only node the entries from the log's end when it
        # registers it: wait for its first AppendEntries (a heartbeat) before proposing.
        first = peer.receive(WAIT_S, until=lambda m: any(isinstance(x, dict) for _, x in m))
        assert first and not peer.closed
        for n in range(3, 6):
            assert isinstance(await cluster.logs[leader].propose(_put(n)), Applied)
        messages = first + peer.receive(WAIT_S, until=lambda m: len(_entries(first + m)) >= 3)
        peer.close()
        assert len(_entries(messages)) >= 3 and not peer.closed
    finally:
        await cluster.stop()


# -- how frames are sealed (consensus/peer_frames.py) -------------------------------------
async def test_frames_are_sealed_with_aes_gcm_and_fernet_frames_are_still_read(cluster, tmp_path):
    """A node seals with AES-GCM; a peer that seals with Fernet (a node of
    an older release, or one told peer_frames = "fernet") is still read."""
    try:
        leader = await _started(cluster, tmp_path, tls=False)
        peer = _Peer(cluster.addresses[leader], encryptor=PeerFrames(SECRET, send="fernet"))
        peer.hello("readonly")
        first = peer.receive(WAIT_S, until=lambda m: any(isinstance(x, dict) for _, x in m))
        assert first and not peer.closed  # its Fernet frames were read
        assert peer.markers == {0xC1}  # and the node's are sealed
        stranger = _Peer(cluster.addresses[leader], encryptor=PeerFrames("another-secret-0123456789abcdef"))
        stranger.hello("readonly")
        assert stranger.receive(WAIT_S) == [] and stranger.closed
        peer.close()
    finally:
        await cluster.stop()


async def test_a_cluster_moves_from_fernet_to_sealed_frames_one_node_at_a_time(cluster, tmp_path):
    """During an upgrade, nodes told peer_frames = "fernet" talk with an
    older release (Fernet only) and with nodes already sealing."""
    fernet = dataclasses.replace(SETTINGS, peer_frames="fernet")
    try:
        await cluster.start("n1", tmp_path / "data", tls=False, settings=fernet)
        for node_id in ("n2", "n3"):
            await cluster.start(node_id, tmp_path / "data", tls=False)
        leader = await cluster.leader()
        for n in range(3):
            assert isinstance(await cluster.logs[leader].propose(_put(n)), Applied)
        await _eventually(lambda: all(len(state.registry.services) == 3 for state in cluster.states.values()))
    finally:
        await cluster.stop()


async def test_a_node_told_fernet_is_read_by_an_older_release(cluster, tmp_path):
    """The first step of that move: every node on this release, sealing with
    Fernet, and a node of the older release (Fernet only) reads them."""
    fernet = dataclasses.replace(SETTINGS, peer_frames="fernet")
    try:
        for node_id in cluster.ids:
            await cluster.start(node_id, tmp_path / "data", tls=False, settings=fernet)
        leader = await cluster.leader()
        old_release = _Peer(cluster.addresses[leader], encryptor=getEncryptor(SECRET))  # Fernet only
        old_release.hello("readonly")
        first = old_release.receive(WAIT_S, until=lambda m: any(isinstance(x, dict) for _, x in m))
        assert first and not old_release.closed
        assert old_release.markers == {ord("g")}
        old_release.close()
    finally:
        await cluster.stop()


async def test_the_secret_without_a_certificate_gets_nothing(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        refused = cluster.transport(leader)._guard_refused
        peer = _Peer(cluster.addresses[leader])  # plain PySyncObj TCP with the secret
        peer.hello("readonly")
        for n in range(3, 6):
            assert isinstance(await cluster.logs[leader].propose(_put(n)), Applied)
        messages = peer.receive(WAIT_S)
        peer.close()
        assert peer.closed and messages == []
        assert cluster.transport(leader)._guard_refused > refused
    finally:
        await cluster.stop()


async def test_a_certificate_of_another_ca_is_refused(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        other = make_ca(tmp_path / "other")
        issue(other, tmp_path / "other" / "n2.crt", tmp_path / "other" / "n2.key", common_name="n2", names=["n2"])
        # It trusts the cluster's CA, so it can check the node; its own certificate is the outsider's.
        tls = NodeTls(
            tmp_path / "other" / "n2.crt",
            tmp_path / "other" / "n2.key",
            peer=True,
            peer_ca_file=cluster.tls_dir / "ca.crt",
        )
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.hello(cluster.addresses["n2"])
        messages = peer.receive(WAIT_S)
        peer.close()
        assert peer.closed and messages == []
    finally:
        await cluster.stop()


async def test_a_certificate_of_the_ca_naming_no_node_is_refused(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        ca = make_ca(cluster.tls_dir)
        issue(ca, tmp_path / "ops.crt", tmp_path / "ops.key", common_name="ops", names=["ops", "127.0.0.1"])
        tls = NodeTls(tmp_path / "ops.crt", tmp_path / "ops.key", peer=True, peer_ca_file=cluster.tls_dir / "ca.crt")
        refused = cluster.transport(leader)._guard_refused
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.hello(cluster.addresses["n2"])
        messages = peer.receive(WAIT_S)
        peer.close()
        assert peer.closed and messages == []
        assert cluster.transport(leader)._guard_refused > refused
    finally:
        await cluster.stop()


async def test_a_node_certificate_speaks_only_for_its_node(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        others = [i for i in cluster.ids if i != leader]
        holder, victim = others
        tls = _node_tls(cluster.tls_dir, holder, cluster.tls_dir / "ca.crt")
        # The certificate of `holder`, claiming the address of `victim`: refused after the key exchange.
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.hello(cluster.addresses[victim])
        assert peer.their_key is not None  # TLS and the secret were accepted ...
        messages = peer.receive(WAIT_S)
        peer.close()
        assert peer.closed and messages == []  # ... the identity was not
        # Claiming its own address, the same certificate is a node of the cluster.
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.hello(cluster.addresses[holder])
        messages = peer.receive(WAIT_S, until=bool)
        peer.close()
        assert messages and not peer.closed
    finally:
        await cluster.stop()


async def test_a_readonly_hello_is_refused_even_with_a_node_certificate(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        holder = next(i for i in cluster.ids if i != leader)
        tls = _node_tls(cluster.tls_dir, holder, cluster.tls_dir / "ca.crt")
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.hello("readonly")
        assert peer.their_key is not None
        messages = peer.receive(WAIT_S)
        peer.close()
        assert peer.closed and messages == []
    finally:
        await cluster.stop()


async def test_a_node_refuses_a_peer_presenting_another_nodes_certificate(tmp_path):
    """Node a dials b (PySyncObj dials from the greater address); what
    answers at b's address presents c's certificate, of the cluster's CA: a
    fails its check that the certificate names b, and closes."""
    ports = sorted(_free_ports(2), key=str)
    addresses = {"b": f"127.0.0.1:{ports[0]}", "a": f"127.0.0.1:{ports[1]}"}
    tls_dir = tmp_path / "tls"
    local_tls(tls_dir, [(i, "127.0.0.1") for i in ("a", "b", "c")])
    impostor = peer_server_context(_node_tls(tls_dir, "c", tls_dir / "ca.crt"))
    listener = socket.create_server(("127.0.0.1", ports[0]))
    listener.settimeout(WAIT_S)

    def answer() -> str:
        sock, _ = listener.accept()
        sock.settimeout(WAIT_S)
        try:
            with impostor.wrap_socket(sock, server_side=True) as tls_sock:
                return f"handshake done: {tls_sock.recv(1)!r}"
        except ssl.SSLError as exc:
            return exc.reason or str(exc)

    pair = Cluster(["a", "b"], addresses, tls_dir)
    try:
        outcome = asyncio.get_running_loop().run_in_executor(None, answer)
        await pair.start("a", tmp_path / "data", tls=True)
        assert "CERTIFICATE" in (await asyncio.wait_for(outcome, WAIT_S)).upper()
        await _eventually(lambda: pair.transport("a")._guard_refused >= 1)
    finally:
        listener.close()
        await pair.stop()


@pytest.mark.parametrize("with_tls", ["a", "b"])
async def test_a_node_with_peer_tls_and_one_without_form_no_quorum(tmp_path, caplog, with_tls):
    """a dials b. TLS on a: b's guard closes the ClientHello (a frame length
    far over the hello cap); TLS on b: b's TLS refuses a's plaintext."""
    ports = sorted(_free_ports(2), key=str)
    addresses = {"b": f"127.0.0.1:{ports[0]}", "a": f"127.0.0.1:{ports[1]}"}
    tls_dir = tmp_path / "tls"
    local_tls(tls_dir, [(i, "127.0.0.1") for i in addresses])
    pair = Cluster(["a", "b"], addresses, tls_dir)

    def closed() -> int:
        frames = sum(1 for r in caplog.records if "frame over" in r.getMessage())
        return frames + pair.transport("b")._guard_refused

    try:
        for node_id in ("a", "b"):
            await pair.start(node_id, tmp_path / "data", tls=node_id == with_tls)
        await _eventually(lambda: closed() >= 3)  # a tried three times, and each was closed
        assert all(2 not in roles for roles in pair.roles.values()), pair.roles
        for log in pair.logs.values():
            status = log.status()
            assert status.leader is None and not any(status.peers.values())
        assert [len(state.registry.snapshot()) for state in pair.states.values()] == [0, 0]
    finally:
        await pair.stop()


async def test_raft_guard_still_bounds_frames_under_tls(cluster, tmp_path):
    try:
        leader = await _started(cluster, tmp_path, tls=True)
        holder = next(i for i in cluster.ids if i != leader)
        tls = _node_tls(cluster.tls_dir, holder, cluster.tls_dir / "ca.crt")
        # Before the hello, a frame over the hello cap closes at its prefix (well before the auth deadline).
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.sendall(struct.pack("i", 8192) + b"z" * 1000)
        messages = peer.receive(RAFT_AUTH_TIMEOUT_S / 4)
        peer.close()
        assert peer.closed and messages == []
        # After it, a frame over the frame cap does too.
        peer = _Peer(cluster.addresses[leader], _client_context(tls), leader)
        peer.hello(cluster.addresses[holder])
        assert peer.receive(WAIT_S, until=bool) and not peer.closed  # authenticated: keepalives come
        peer.sendall(struct.pack("i", RAFT_FRAME_BYTES_MAX + 1) + b"z" * 1000)
        # Closed at once: well before the node would drop a silent peer (connection timeout).
        peer.receive(SETTINGS.connection_timeout_s / 4)
        peer.close()
        assert peer.closed
        # The cluster carries on.
        assert isinstance(await cluster.logs[leader].propose(_put(9)), Applied)
    finally:
        await cluster.stop()
