"""How Raft frames are sealed with the cluster secret: AES-GCM, not Fernet.

PySyncObj seals every frame between nodes with the object it keeps as its
``encryptor``, a ``cryptography`` Fernet made from the cluster secret
(``password``): AES-CBC, HMAC-SHA256 and base64 through a dozen Python
calls per frame - 14 us to seal and 35 us to open a 2 KB frame on this
project's test machine, where AES-GCM's one call takes about 1 us each way,
and a third fewer bytes (no base64). Under load that was 4 % of a leader's
CPU and 8-9 % of a follower's. :class:`PeerFrames` is what the node gives
PySyncObj instead (``_RaftNode.encryptor``): the same three methods
PySyncObj calls (``encrypt_at_time``, ``extract_timestamp``, ``decrypt``),
so PySyncObj's frame, its per-connection random key and its check that
timestamps never go back are unchanged around it.

A sealed frame (``aead``)::

    0xC1 | salt (16 bytes) | counter (8, big-endian) | time (8) | AES-GCM(ciphertext + tag)

- The key of a frame is HKDF-SHA256 of the secret's key (PySyncObj's own
  PBKDF2 derivation, the same bytes its Fernet key is made of) and the
  frame's ``salt``; each node process draws one random 128-bit salt at
  start and numbers its frames from 0 (``counter``, the nonce). A nonce is
  thus never used twice with one key, however long the cluster lives and
  however often nodes restart - random 96-bit nonces under one key would
  have to stop at about 2**32 frames.
- The header (marker, salt, counter, time) is the associated data: the
  time PySyncObj compares is authenticated. ``extract_timestamp`` opens
  the frame (and keeps the plaintext for the ``decrypt`` that follows), so
  nothing of a frame is believed before its tag is checked.
- A receiver derives and keeps the keys of the last ``SALTS_KEPT_MAX``
  salts it saw authenticated; a forged frame costs it one HKDF and is
  refused (PySyncObj closes the connection).

Fernet frames (base64: first byte "g") are still read, so a cluster can move from
a release that sealed with Fernet one node at a time: first every node on
this release with ``[raft] peer_frames = "fernet"`` (it reads both, seals
with Fernet, which the old nodes read), then every node with ``"aead"``.
"""

from __future__ import annotations

import base64
import itertools
import os
import struct
from collections import OrderedDict

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.encryptor import SALT as PYSYNCOBJ_SALT

__all__ = ["FRAME_OVERHEAD_BYTES", "PEER_FRAMES", "PeerFrames", "FrameRefused"]

PEER_FRAMES = ("aead", "fernet")  # what a node seals with ([raft] peer_frames); it reads both
_MARKER = b"\xc1"
# A Fernet token is base64 of 0x80 and the rest: its first byte is "g". The
# sealed marker 0xC1 is no base64 character, so neither is taken for the other.
_FERNET_MARKER = b"g"
_HEADER = struct.Struct(">16sQQ")  # salt, counter, time
_HEADER_BYTES = 1 + _HEADER.size
_TAG_BYTES = 16
FRAME_OVERHEAD_BYTES = _HEADER_BYTES + _TAG_BYTES
_INFO = b"coordinator raft frames v1"
# PySyncObj's derivation of its Fernet key from the password (pysyncobj/encryptor.py).
_PBKDF2_ITERATIONS = 100_000
SALTS_KEPT_MAX = 64


class FrameRefused(ValueError):
    """Not a frame sealed with this cluster's secret (PySyncObj closes the connection)."""


def secret_key(secret: str | bytes) -> bytes:
    """The 32 bytes PySyncObj derives from the password for its Fernet key."""
    password = secret if isinstance(secret, bytes) else secret.encode()
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=PYSYNCOBJ_SALT, iterations=_PBKDF2_ITERATIONS)
    return kdf.derive(password)


class PeerFrames:
    """The ``encryptor`` of every Raft connection of one node (see the module
    docstring). Used on PySyncObj's tick thread only."""

    def __init__(self, secret: str | bytes, send: str = "aead") -> None:
        if send not in PEER_FRAMES:
            raise ValueError(f"peer frames must be one of {', '.join(PEER_FRAMES)}")
        self._key = secret_key(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(self._key))
        self.send = send
        self._salt = os.urandom(16)
        self._sealer = AESGCM(self._frame_key(self._salt))
        self._counter = itertools.count()
        self._openers: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._opened: tuple[bytes, bytes] | None = None  # (frame, plaintext) of the last extract_timestamp

    def _frame_key(self, salt: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(self._key)

    # -- what PySyncObj calls ------------------------------------------------------------
    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        if self.send == "fernet":
            return self._fernet.encrypt_at_time(data, current_time)
        counter = next(self._counter)
        header = _MARKER + _HEADER.pack(self._salt, counter, max(0, int(current_time)))
        return header + self._sealer.encrypt(b"\0\0\0\0" + counter.to_bytes(8, "big"), data, header)

    def extract_timestamp(self, token: bytes) -> int:
        if token[:1] == _FERNET_MARKER:
            return self._fernet.extract_timestamp(token)
        plaintext = self._open(token)
        self._opened = (token, plaintext)
        return _HEADER.unpack_from(token, 1)[2]

    def decrypt(self, token: bytes) -> bytes:
        if token[:1] == _FERNET_MARKER:
            return self._fernet.decrypt(token)
        opened, self._opened = self._opened, None
        if opened is not None and opened[0] is token:
            return opened[1]
        return self._open(token)

    # -- opening -------------------------------------------------------------------------
    def _open(self, token: bytes) -> bytes:
        if len(token) < FRAME_OVERHEAD_BYTES or token[:1] != _MARKER:
            raise FrameRefused("not a sealed Raft frame")
        salt, counter, _ = _HEADER.unpack_from(token, 1)
        opener = self._openers.get(salt)
        known = opener is not None
        if opener is None:
            opener = AESGCM(self._frame_key(salt))
        try:
            plaintext = opener.decrypt(
                b"\0\0\0\0" + counter.to_bytes(8, "big"), token[_HEADER_BYTES:], token[:_HEADER_BYTES]
            )
        except Exception as exc:  # cryptography's InvalidTag
            raise FrameRefused("a Raft frame failed authentication") from exc
        if known:
            self._openers.move_to_end(salt)
        else:
            self._openers[salt] = opener
            if len(self._openers) > SALTS_KEPT_MAX:
                self._openers.popitem(last=False)
        return plaintext
