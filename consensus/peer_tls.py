"""Mutual TLS between Raft nodes, under PySyncObj's own secret-keyed frames.

Every node shares the cluster secret (PySyncObj's ``password``): whoever
holds it can connect to the Raft port and join, or say hello as
``'readonly'`` and stream the log. With :class:`PeerTls` every Raft
connection is also TLS 1.3 with certificates on both sides, so the secret
alone lets no one in:

- a connection this node opens checks that the peer's certificate, signed
  by the peer CA, names the id of the node it dials (the client context's
  hostname check, ``server_hostname`` = that node's id from ``names``);
- a connection this node accepts must present a certificate of the peer
  CA naming (as a DNS subject alternative name) the id of another cluster
  node, and the node address its hello then claims must belong to one of
  the ids the certificate names: a node's certificate cannot speak for
  another node. The hello ``'readonly'`` is refused: a read-only node
  would stream the log.

Inside TLS, PySyncObj's frames are unchanged (sealed with the secret by
:mod:`coordinator.consensus.peer_frames`, its key exchange, its hello),
and :mod:`coordinator.consensus.raft_guard`'s
bounds hold on the plaintext: the TLS transport is a subclass of the
guarded one and gives its bounded read step a TLS bytes source.

Why ``ssl.MemoryBIO`` and not ``wrap_socket``: PySyncObj's poller is
level-triggered on the socket's file descriptor. An ``SSLSocket`` can hold
decrypted bytes the descriptor no longer signals, so a frame could wait
forever in OpenSSL while the poller sleeps. Here the socket stays a plain
non-blocking socket that PySyncObj reads and writes itself; each raw read is
fed to an ``ssl.SSLObject`` (``context.wrap_bio``), every byte of plaintext
it yields is taken at once, and what TLS has to send (handshake, records)
goes into PySyncObj's own write buffer - so its send path, its
``getSendBufferSize`` back pressure and its WRITE subscription all work on
the ciphertext. Per connection, as in raft_guard, instance attributes
replace the read step (``_TcpConnection__processRead``) and ``send``.

The TLS state of a connection is made when it opens (``_onOutgoingConnected``,
before PySyncObj sends its key exchange; ``_onNewIncomingConnection`` for
one accepted) and dropped when it closes: PySyncObj reconnects with the same
connection object. Until the handshake is done, frames PySyncObj sends are
held as plaintext, then encrypted in order. A TLS error or a refused
certificate closes the connection, logged at most every 10 s (raft_guard's
refusal log). A handshake that stalls is closed by raft_guard's
authentication deadline (incoming) or PySyncObj's connection timeout.

Cost: TLS adds a handshake per connection (reconnects are rare) and AES-GCM
over every frame, on PySyncObj's single tick thread.
"""

from __future__ import annotations

import logging
import ssl
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import pysyncobj.pickle as _pickle
import pysyncobj.tcp_connection as _tcp_connection
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from .raft_guard import guarded_tcp_transport, socket_source

__all__ = ["PeerTls", "peer_tls_transport"]

log = logging.getLogger(__name__)

_READ_BYTES = 1 << 16  # per SSLObject.read; a TLS record holds at most 16 KiB
_STATE = "_coordinator_peer_tls"  # the attribute of a TcpConnection holding its _TlsState


@dataclass(frozen=True)
class PeerTls:
    """What peer TLS needs: ``server_context`` for the connections this node
    accepts, ``client_context`` for those it opens (both with certificates
    required and this node's chain loaded), and ``names``: the Raft address
    ("host:port", as in the cluster file) of every cluster node, this one
    included, to its id - the name its certificate must carry."""

    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    names: Mapping[str, str]

    def __post_init__(self) -> None:
        if self.server_context.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("peer TLS: the server context must require a peer certificate")
        if self.client_context.verify_mode != ssl.CERT_REQUIRED or not self.client_context.check_hostname:
            raise ValueError("peer TLS: the client context must check the peer's certificate and name")

    def check_addresses(self, addresses) -> None:
        """ValueError unless every Raft address in ``addresses`` has a node id."""
        missing = [a for a in addresses if a not in self.names]
        if missing:
            raise ValueError(f"peer TLS: no node id for the Raft address {missing[0]}")


class _TlsState:
    """One TLS session over one TCP connection, from its connect to its close."""

    __slots__ = ("handshaken", "incoming", "outgoing", "peer_ids", "pending", "server_side", "sslobj")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.server_side = server_side
        self.handshaken = False
        self.pending: list[bytes] = []  # frames sent before the handshake finished
        self.peer_ids: frozenset[str] = frozenset()  # accepted: the node ids the peer's certificate names


def _frame(conn, message) -> bytes:
    """The frame PySyncObj's ``TcpConnection.send`` builds (key-tagged,
    zlib'd pickle, sealed with the secret, length prefix), not yet sent."""
    if conn.sendRandKey:
        message = (conn.sendRandKey, message)
    data = zlib.compress(_pickle.dumps(message), 3)
    if conn.encryptor:
        data = conn.encryptor.encrypt_at_time(data, int(_tcp_connection.monotonicTime()))
    return struct.pack("i", len(data)) + data


def _dns_names(cert: dict) -> set[str]:
    return {value.lower() for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


def peer_tls_transport(base: type, peer_tls: PeerTls) -> type:
    """``base`` (a TCPTransport) guarded by raft_guard and speaking mutual
    TLS on every connection (see the module docstring); any other transport
    (the simulation's) is returned as it is."""
    if not issubclass(base, TCPTransport):
        return base

    class PeerTlsTransport(guarded_tcp_transport(base)):
        def __init__(self, syncObj, selfNode, otherNodes):
            self._tls = peer_tls
            self._tls_ids = {node_id.lower(): node_id for node_id in peer_tls.names.values()}
            super().__init__(syncObj, selfNode, otherNodes)

        # -- per connection ----------------------------------------------------
        def _read_source(self, conn):
            raw = socket_source(conn)

            def read() -> bytes | None:
                state = getattr(conn, _STATE, None)
                if state is None:  # no session: never read past TLS
                    conn.disconnect()
                    return None
                incoming = raw()
                if incoming is None:
                    return None
                state.incoming.write(incoming)
                return self._tls_pump(conn, state)

            return read

        def _tls_install(self, conn) -> None:
            conn.send = lambda message: self._tls_send(conn, message)

        def _tls_send(self, conn, message) -> None:
            state = getattr(conn, _STATE, None)
            if state is None or conn.state == CONNECTION_STATE.DISCONNECTED:
                return  # PySyncObj's own send drops it too (its buffer is cleared on connect)
            data = _frame(conn, message)
            if not state.handshaken:
                state.pending.append(data)
                return
            try:
                state.sslobj.write(data)
            except ssl.SSLError as exc:
                self._guard_refuse(conn, f"TLS: {exc}")
                return
            self._tls_flush(conn, state)

        def _tls_flush(self, conn, state: _TlsState) -> bool:
            """Move what TLS has to send into PySyncObj's write buffer and
            send it; True while the connection is open."""
            data = state.outgoing.read()
            if data and conn.state != CONNECTION_STATE.DISCONNECTED:
                conn._TcpConnection__writeBuffer += data
                conn._TcpConnection__trySendBuffer()
                if conn.state != CONNECTION_STATE.DISCONNECTED and conn._TcpConnection__writeBuffer:
                    # The socket took part of it: send the rest when writable.
                    conn._TcpConnection__poller.subscribe(
                        conn.fileno(),
                        conn._TcpConnection__processConnection,
                        POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR,
                    )
            return conn.state != CONNECTION_STATE.DISCONNECTED

        def _tls_pump(self, conn, state: _TlsState) -> bytes | None:
            """After a raw read: advance the handshake, then take every byte
            of plaintext TLS holds. None when the connection closed."""
            plaintext = []
            try:
                if not state.handshaken:
                    try:
                        state.sslobj.do_handshake()
                    except ssl.SSLWantReadError:
                        return b"" if self._tls_flush(conn, state) else None
                    state.handshaken = True
                    if not self._tls_flush(conn, state) or not self._tls_admit(conn, state):
                        return None
                    for data in state.pending:
                        state.sslobj.write(data)
                    state.pending = []
                while True:
                    try:
                        chunk = state.sslobj.read(_READ_BYTES)
                    except ssl.SSLWantReadError:
                        break
                    if not chunk:
                        break
                    plaintext.append(chunk)
            except ssl.SSLZeroReturnError:  # the peer closed its TLS session
                conn.disconnect()
                return None
            except ssl.SSLError as exc:
                self._tls_flush(conn, state)  # the alert, so the peer knows why
                self._guard_refuse(conn, f"TLS: {getattr(exc, 'verify_message', None) or exc.reason or exc}")
                return None
            if not self._tls_flush(conn, state):
                return None
            return b"".join(plaintext)

        def _tls_admit(self, conn, state: _TlsState) -> bool:
            """An accepted connection's certificate must name another node of
            the cluster (the one dialled was checked by its hostname)."""
            if not state.server_side:
                return True
            names = _dns_names(state.sslobj.getpeercert() or {})
            own = self._tls.names.get(getattr(self._selfNode, "address", None))
            ids = frozenset(self._tls_ids[n] for n in names if n in self._tls_ids) - {own}
            if not ids:
                self._guard_refuse(
                    conn, f"a peer certificate naming no other cluster node ({', '.join(sorted(names))})"
                )
                return False
            state.peer_ids = ids
            return True

        # -- PySyncObj's transport -------------------------------------------------
        def addNode(self, node):
            super().addNode(node)
            conn = self._connections.get(node)
            if conn is not None:  # the connection this node opens to a peer
                self._tls_install(conn)

        def _onOutgoingConnected(self, conn):
            node = self._connToNode(conn)
            node_id = self._tls.names.get(getattr(node, "address", None))
            if node_id is None:
                self._guard_refuse(conn, f"peer TLS: no node id for {getattr(node, 'address', None)}")
                return
            state = _TlsState(self._tls.client_context, server_side=False, server_hostname=node_id)
            setattr(conn, _STATE, state)
            try:
                state.sslobj.do_handshake()  # the ClientHello
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self._guard_refuse(conn, f"TLS: {exc}")
                return
            if self._tls_flush(conn, state):
                super()._onOutgoingConnected(conn)

        def _onNewIncomingConnection(self, conn):
            setattr(conn, _STATE, _TlsState(self._tls.server_context, server_side=True))
            self._tls_install(conn)
            super()._onNewIncomingConnection(conn)

        def _onIncomingMessageReceived(self, conn, message):
            key_exchange = self._syncObj.encryptor and not conn.sendRandKey
            if not key_exchange and not isinstance(message, list):  # the hello: who this is
                state = getattr(conn, _STATE, None)
                if message == "readonly":
                    self._guard_refuse(conn, "a read-only node's hello; peer TLS admits cluster nodes only")
                    return
                claimed = self._tls.names.get(message) if isinstance(message, str) else None
                if state is None or claimed is None or claimed not in state.peer_ids:
                    named = ", ".join(sorted(state.peer_ids)) if state is not None else "nothing"
                    self._guard_refuse(conn, f"a hello as {message!r} with a certificate naming {named}")
                    return
            super()._onIncomingMessageReceived(conn, message)

        def _onDisconnected(self, conn):
            setattr(conn, _STATE, None)  # a reconnect starts a new session
            super()._onDisconnected(conn)

    PeerTlsTransport.__name__ = PeerTlsTransport.__qualname__ = f"PeerTls{base.__name__}"
    return PeerTlsTransport
