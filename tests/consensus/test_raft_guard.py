"""The Raft port's frame cap lets every frame a peer sends through
(consensus/raft_guard.py)."""

import os
import socket
import struct
import zlib

import pysyncobj.pickle as pickle
from pysyncobj.encryptor import getEncryptor

from coordinator.consensus.codec import ENTRY_BYTES_MAX
from coordinator.consensus.raft_guard import (
    RAFT_FRAME_BYTES_MAX,
    RAFT_HELLO_FRAME_BYTES_MAX,
    _bound_reads,
    _frames_verdict,
)


def _frame(message, encryptor, rand_key) -> bytes:
    """As PySyncObj's TcpConnection.send builds it."""
    data = encryptor.encrypt_at_time(zlib.compress(pickle.dumps((rand_key, message)), 3), 0)
    return struct.pack("i", len(data)) + data


def test_the_largest_append_entries_fits_under_the_cap():
    encryptor = getEncryptor("secret")
    rand_key = os.urandom(32)
    small = [(os.urandom(40), i, 7) for i in range(2000)]  # a 64 KiB batch of tiny entries, mostly framing
    # an incompressible command at the entry cap, framed by PySyncObj (consensus/frames.py)
    big = (b"\x00" + pickle.dumps((0, (os.urandom(ENTRY_BYTES_MAX),))), 2001, 7)
    message = {
        "type": "append_entries",
        "term": 7,
        "commit_index": 2000,
        "entries": small + [big],
        "prevLogIdx": 0,
        "prevLogTerm": 0,
    }
    frame = _frame(message, encryptor, rand_key)
    assert len(frame) - 4 <= RAFT_FRAME_BYTES_MAX
    assert _frames_verdict(frame, RAFT_FRAME_BYTES_MAX) is True
    assert RAFT_FRAME_BYTES_MAX < 16 * 1024 * 1024  # below the 24 MiB that cost a leader its leadership


def test_the_hello_fits_under_the_hello_cap():
    encryptor = getEncryptor("secret")
    key = _frame(os.urandom(32), encryptor, None)
    address = _frame("node-with-a-long-host-name.example.internal:65535", encryptor, os.urandom(32))
    assert max(len(key), len(address)) - 4 <= RAFT_HELLO_FRAME_BYTES_MAX


def test_verdicts_on_prefixes():
    ok = struct.pack("i", 3) + b"abc"
    assert _frames_verdict(b"", 10) is False
    assert _frames_verdict(ok[:5], 10) is False
    assert _frames_verdict(ok, 10) is True
    assert _frames_verdict(struct.pack("i", 11) + b"x" * 11, 10) is None
    assert _frames_verdict(struct.pack("i", 11), 10) is None  # refused at its prefix, before its bytes
    # A hello and the first AppendEntries in one read: the second frame is
    # judged when it comes first, after the hello authenticated.
    assert _frames_verdict(ok + struct.pack("i", RAFT_HELLO_FRAME_BYTES_MAX + 1), 10) is True
    assert _frames_verdict(struct.pack("i", -1), 10) is None
    assert _frames_verdict(struct.pack("i", 2**31 - 1), RAFT_FRAME_BYTES_MAX) is None


class _Conn:
    """What _bound_reads uses of PySyncObj's TcpConnection."""

    def __init__(self, sock):
        self._TcpConnection__socket = sock
        self._TcpConnection__recvBufferSize = 2**16
        self._TcpConnection__readBuffer = b""
        self.closed = False

    def disconnect(self):
        self.closed = True


def _reads(conn):
    """PySyncObj's read loop (TcpConnection.__tryReadBuffer)."""
    while conn._TcpConnection__processRead():
        pass


def test_a_hello_and_a_big_frame_in_one_read_keep_the_connection():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        conn = _Conn(ours)
        authenticated = []
        _bound_reads(conn, lambda: RAFT_FRAME_BYTES_MAX if authenticated else RAFT_HELLO_FRAME_BYTES_MAX)
        hello = struct.pack("i", 5) + b"hello"
        big = struct.pack("i", 100_000) + b"y" * 1000  # an AppendEntries, its first KB
        theirs.sendall(hello + big)
        _reads(conn)
        assert not conn.closed and conn._TcpConnection__readBuffer.startswith(hello)
        conn._TcpConnection__readBuffer = conn._TcpConnection__readBuffer[len(hello) :]  # parsed: it authenticated
        authenticated.append(True)
        theirs.sendall(b"y" * 99_000)
        _reads(conn)
        assert not conn.closed and len(conn._TcpConnection__readBuffer) == 4 + 100_000
    finally:
        ours.close()
        theirs.close()


def test_an_unauthenticated_big_prefix_closes_at_once():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        conn = _Conn(ours)
        _bound_reads(conn, lambda: RAFT_HELLO_FRAME_BYTES_MAX)
        theirs.sendall(struct.pack("i", 2**31 - 1) + b"z" * 1000)
        _reads(conn)
        assert conn.closed and conn._TcpConnection__readBuffer == b""
    finally:
        ours.close()
        theirs.close()
