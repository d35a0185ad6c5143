"""Bounds on PySyncObj's Raft port that hold before its password check.

PySyncObj 0.3.17's TCP connection (``pysyncobj.tcp_connection``) reads
everything a socket has into one ``bytes`` buffer - growing by copying - and
only then parses frames: a 4-byte signed length, then zlib'd pickle
encrypted with the cluster secret (consensus/peer_frames.py). Any length up to 2 GiB is
buffered before a byte of it is decrypted, its server accepts any number of
connections, and a connection that sends nothing is never closed. 24 MiB of
garbage cost a leader 24 MB and its leadership (README.md, "Security").

:func:`guarded_tcp_transport` wraps the transport class with:

- a frame cap: a length prefix over :data:`RAFT_FRAME_BYTES_MAX` (over
  :data:`RAFT_HELLO_FRAME_BYTES_MAX` while the connection has not
  authenticated) closes the connection as soon as its 4 bytes arrive, and a
  connection stops reading once a whole frame waits to be parsed, so no
  more than one frame and one read are ever buffered;
- an authentication deadline: an incoming connection that has not sent its
  valid hello (the key exchange and its node address, which need the
  secret; with peer TLS, the TLS handshake before them) within
  :data:`RAFT_AUTH_TIMEOUT_S` is closed;
- connection caps: at most :data:`RAFT_FOREIGN_PER_ADDRESS_MAX` connections
  from one address that is not a cluster peer and
  :data:`RAFT_FOREIGN_CONNECTIONS_MAX` from all of them (more are closed at
  once), and at most :data:`RAFT_PENDING_PER_PEER_ADDRESS_MAX`
  unauthenticated ones from a peer's address (the oldest goes first: a real
  peer authenticates within a round trip).

The read step takes its bytes from a source (:func:`socket_source`, or
the plaintext of a TLS connection: :mod:`coordinator.consensus.peer_tls`
subclasses the guarded transport and gives its own source), so the same
frame checks hold with and without peer TLS.

Everything runs on PySyncObj's tick thread, like the transport itself.
"""

from __future__ import annotations

import logging
import socket
import struct

import pysyncobj.syncobj as _syncobj_module
from pysyncobj import SyncObjConf
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from .codec import ENTRY_BYTES_MAX

__all__ = [
    "RAFT_AUTH_TIMEOUT_S",
    "RAFT_FOREIGN_CONNECTIONS_MAX",
    "RAFT_FOREIGN_PER_ADDRESS_MAX",
    "RAFT_FRAME_BYTES_MAX",
    "RAFT_HELLO_FRAME_BYTES_MAX",
    "RAFT_PENDING_PER_PEER_ADDRESS_MAX",
    "frame_bytes_for",
    "guarded_tcp_transport",
    "socket_source",
]

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("i")  # PySyncObj's frame prefix: native signed int
# PySyncObj's own batch size (we keep its default): an AppendEntries carries
# entries up to this many bytes, then one more, so the largest holds a batch
# of small entries and one entry of ENTRY_BYTES_MAX (consensus/batching.py).
_APPEND_ENTRIES_BATCH_BYTES = SyncObjConf().appendEntriesBatchSizeBytes
# Pickle framing of the message dict and of each entry tuple, the random key
# tuple around it: generous, a batch of tiny entries is mostly framing.
_MESSAGE_OVERHEAD_BYTES = 4 * _APPEND_ENTRIES_BATCH_BYTES
# PySyncObj pickles with protocol 2, which writes bytes as latin-1 text in
# UTF-8: up to two bytes per byte. An entry is pickled twice (its frame,
# consensus/frames.py, then the message that carries it): up to 4 x.
_PICKLE_GROWTH_MAX = 4


def frame_bytes_for(message_bytes: int) -> int:
    """The largest frame PySyncObj sends for a pickled message of this size:
    zlib's worst case (stored blocks), then a Fernet token (version,
    timestamp, IV, padded ciphertext, HMAC) in base64 - the larger of the
    two sealings a node reads (consensus/peer_frames.py: an AES-GCM frame
    adds 49 bytes and no base64)."""
    compressed = message_bytes + message_bytes // 16000 * 5 + 64
    token = 1 + 8 + 16 + (compressed // 16 + 1) * 16 + 32
    return 4 * ((token + 2) // 3)


# The largest frame a peer can send (an AppendEntries; a snapshot chunk is
# _APPEND_ENTRIES_BATCH_BYTES): about 12 MiB, though random entries measure
# 4 MB and text far less (tests/consensus/test_raft_guard.py). Only a
# connection that authenticated with the secret gets this far.
RAFT_FRAME_BYTES_MAX = frame_bytes_for(
    _PICKLE_GROWTH_MAX * (ENTRY_BYTES_MAX + _APPEND_ENTRIES_BATCH_BYTES + _MESSAGE_OVERHEAD_BYTES)
)
# Before it authenticates, a connection sends a random key (32 bytes) and a
# node address: a few hundred bytes as frames.
RAFT_HELLO_FRAME_BYTES_MAX = 4096
RAFT_AUTH_TIMEOUT_S = 2.0
RAFT_FOREIGN_PER_ADDRESS_MAX = 2
RAFT_FOREIGN_CONNECTIONS_MAX = 16
RAFT_PENDING_PER_PEER_ADDRESS_MAX = 8
_LOG_EVERY_S = 10.0


def _frames_verdict(buffer: bytes, limit: int) -> bool | None:
    """None: the length prefix of the first frame in ``buffer`` is over
    ``limit`` (or negative); True: that frame is whole; False: not yet.

    Only the first frame counts: a read starts with no whole frame buffered
    (PySyncObj parses them all after each round of reads) and stops as soon
    as one is whole, so what follows it is less than one read, and its
    prefix is checked when it comes first - by then against the limit of
    that moment: a peer's hello and its first AppendEntries can arrive in
    one read, the AppendEntries to be judged after the hello authenticated.
    """
    if len(buffer) < 4:
        return False
    (length,) = _LENGTH.unpack_from(buffer, 0)
    if length < 0 or length > limit:
        return None
    return len(buffer) >= 4 + length


def socket_source(conn):
    """The plain bytes source of ``conn``: one ``recv`` from its socket per
    call (PySyncObj's own read), the bytes read, or None when there is
    nothing more to read now or the connection closed (then it has been
    disconnected). The socket is looked up on every call: an outgoing
    connection gets a new one on each reconnect."""

    def read() -> bytes | None:
        sock = conn._TcpConnection__socket
        try:
            incoming = sock.recv(conn._TcpConnection__recvBufferSize)
        except OSError as e:
            if e.errno not in (socket.errno.EAGAIN, socket.errno.EWOULDBLOCK):
                conn.disconnect()
            return None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not incoming:
            conn.disconnect()
            return None
        return incoming

    return read


def _bound_reads(conn, limit, source=None) -> None:
    """Replace ``conn``'s read step (``TcpConnection.__processRead``) by one
    that takes bytes from ``source`` (by default :func:`socket_source`; peer
    TLS gives the plaintext of one socket read, consensus/peer_tls.py),
    checks every length prefix as it arrives and stops reading while a whole
    frame waits to be parsed. PySyncObj's poller is level-triggered: what
    stays in the socket is read on the next round.

    ``source()`` returns the bytes of one read (possibly none: a TLS
    handshake record carries no plaintext), or None to stop reading - the
    socket has nothing more now, or the source closed the connection."""
    source = source if source is not None else socket_source(conn)

    def process_read() -> bool:
        incoming = source()
        if incoming is None:
            return False
        buffer = conn._TcpConnection__readBuffer + incoming
        verdict = _frames_verdict(buffer, limit())
        if verdict is None:
            log.warning("Raft port: a frame over %d bytes announced; connection closed", limit())
            conn.disconnect()
            return False
        conn._TcpConnection__readBuffer = buffer
        return not verdict

    conn._TcpConnection__processRead = process_read


def _peer_address(conn) -> str | None:
    try:
        return conn._TcpConnection__socket.getpeername()[0]
    except (OSError, AttributeError, IndexError):
        return None


def guarded_tcp_transport(base: type) -> type:
    """``base`` (a TCPTransport) with the bounds of this module."""
    if not issubclass(base, TCPTransport):
        return base

    class GuardedTransport(base):
        def __init__(self, syncObj, selfNode, otherNodes):
            self._guard_pending: dict = {}  # conn -> (address, deadline), oldest first
            self._guard_foreign: dict = {}  # conn -> address, while open
            self._guard_peer_ips: frozenset | None = None
            self._guard_refused = 0
            self._guard_logged_at = 0.0
            super().__init__(syncObj, selfNode, otherNodes)

        def _read_source(self, conn):
            """Where ``conn``'s bounded reads take their bytes: the socket
            (a subclass reads through TLS, consensus/peer_tls.py)."""
            return socket_source(conn)

        def _guard_is_peer(self, address: str) -> bool:
            if self._guard_peer_ips is None:
                ips = set()
                for node in self._nodes:
                    ips.update({node.host, node.ip} - {None})
                self._guard_peer_ips = frozenset(ips)
            return address in self._guard_peer_ips

        def _guard_refuse(self, conn, why: str) -> None:
            self._guard_refused += 1
            now = _syncobj_module.monotonicTime()
            if now - self._guard_logged_at >= _LOG_EVERY_S:
                self._guard_logged_at = now
                log.warning("Raft port: closed a connection (%s); %d so far", why, self._guard_refused)
            conn.disconnect()

        def _guard_admit(self, conn, address: str | None) -> bool:
            if address is None:
                self._guard_refuse(conn, "no peer address")
                return False
            if not self._guard_is_peer(address):
                same = sum(1 for a in self._guard_foreign.values() if a == address)
                if same >= RAFT_FOREIGN_PER_ADDRESS_MAX or len(self._guard_foreign) >= RAFT_FOREIGN_CONNECTIONS_MAX:
                    self._guard_refuse(conn, f"too many connections from non-peer addresses ({address})")
                    return False
                self._guard_foreign[conn] = address
                return True
            unknown = self._unknownConnections
            pending = [c for c, (a, _) in self._guard_pending.items() if a == address and c in unknown]
            for oldest in pending[: max(0, len(pending) + 1 - RAFT_PENDING_PER_PEER_ADDRESS_MAX)]:
                self._guard_refuse(oldest, f"too many unauthenticated connections from {address}")
            return True

        def _onNewIncomingConnection(self, conn):
            address = _peer_address(conn)
            if not self._guard_admit(conn, address):
                return
            self._guard_pending[conn] = (address, _syncobj_module.monotonicTime() + RAFT_AUTH_TIMEOUT_S)
            unknown = self._unknownConnections
            _bound_reads(
                conn,
                lambda: RAFT_HELLO_FRAME_BYTES_MAX if conn in unknown else RAFT_FRAME_BYTES_MAX,
                self._read_source(conn),
            )
            super()._onNewIncomingConnection(conn)

        def addNode(self, node):
            super().addNode(node)
            self._guard_peer_ips = None
            conn = self._connections.get(node)
            if conn is not None:  # the outgoing connection to a peer
                _bound_reads(conn, lambda: RAFT_FRAME_BYTES_MAX, self._read_source(conn))

        def _onDisconnected(self, conn):
            self._guard_pending.pop(conn, None)
            self._guard_foreign.pop(conn, None)
            super()._onDisconnected(conn)

        def _onTick(self):
            super()._onTick()
            if not self._guard_pending:
                return
            now = _syncobj_module.monotonicTime()
            for conn, (address, deadline) in list(self._guard_pending.items()):
                if conn not in self._unknownConnections or conn.state == CONNECTION_STATE.DISCONNECTED:
                    self._guard_pending.pop(conn, None)  # authenticated (or gone)
                elif now >= deadline:
                    self._guard_pending.pop(conn, None)
                    self._guard_refuse(conn, f"no valid hello from {address} within {RAFT_AUTH_TIMEOUT_S} s")

    GuardedTransport.__name__ = GuardedTransport.__qualname__ = f"Guarded{base.__name__}"
    return GuardedTransport
