"""The Raft port's frame cap lets every frame a peer sends through
(consensus/raft_guard.py)."""

import os
import struct
import zlib

import pysyncobj.pickle as pickle
from pysyncobj.encryptor import getEncryptor

from consensus.codec import ENTRY_BYTES_MAX
from consensus.raft_guard import RAFT_FRAME_BYTES_MAX, RAFT_HELLO_FRAME_BYTES_MAX, _frames_verdict


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
    message = {"type": "append_entries", "term": 7, "commit_index": 2000, "entries": small + [big],
               "prevLogIdx": 0, "prevLogTerm": 0}
    frame = _frame(message, encryptor, rand_key)
    assert len(frame) - 4 <= RAFT_FRAME_BYTES_MAX
    assert _frames_verdict(frame, RAFT_FRAME_BYTES_MAX) is True
    assert RAFT_FRAME_BYTES_MAX < 16 * 1024 * 1024  # below the 24 MiB of the attack


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
    assert _frames_verdict(ok + struct.pack("i", 11), 10) is None  # the second frame's prefix is over
    assert _frames_verdict(struct.pack("i", -1), 10) is None
    assert _frames_verdict(struct.pack("i", 2**31 - 1), RAFT_FRAME_BYTES_MAX) is None
