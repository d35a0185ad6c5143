"""PySyncObj's in-memory entry framing, converted to and from msgpack records.

PySyncObj frames a log entry as one type byte followed, for a regular
command, by ``pickle.dumps((method_id, (payload,)))``. That framing must
never be *read back from a file*: a file an attacker can write would run code.
So everything we store (journal, snapshot) keeps only ``[method_id, payload]``
in msgpack, and rebuilds PySyncObj's framing with PySyncObj's own
``pickle.dumps`` when loading - we only ever produce pickle bytes, never load
them from disk.

Turning a fresh in-memory frame into a record must look inside it; that
frame was produced in this process or received from an authenticated peer
(sealed with the cluster secret), the same bytes PySyncObj itself unpickles
to apply them. We check that the rebuilt frame is byte-identical, so the
conversion is exact.
"""

from __future__ import annotations

import struct

from pysyncobj import pickle as _pysyncobj_pickle

__all__ = ["frame_to_record", "record_to_frame", "entry_to_record", "record_to_entry"]

_REGULAR, _NO_OP = 0, 1


def frame_to_record(frame: bytes) -> list:
    kind = frame[0]
    if kind == _NO_OP and len(frame) == 1:
        return ["n"]
    if kind == _REGULAR:
        decoded = _pysyncobj_pickle.loads(frame[1:])
        if (
            isinstance(decoded, tuple)
            and len(decoded) == 2
            and isinstance(decoded[0], int)
            and isinstance(decoded[1], tuple)
            and len(decoded[1]) == 1
            and isinstance(decoded[1][0], bytes)
        ):
            record = ["r", decoded[0], decoded[1][0]]
            if record_to_frame(record) == frame:
                return record
    # Membership and version entries are never proposed by this project.
    raise ValueError(f"log entry of type {kind} is not one this project writes")


def record_to_frame(record: list) -> bytes:
    if record[0] == "n":
        return struct.pack("B", _NO_OP)
    if record[0] == "r":
        method_id, payload = record[1], record[2]
        if not isinstance(method_id, int) or not isinstance(payload, bytes):
            raise ValueError("malformed regular record")
        return struct.pack("B", _REGULAR) + _pysyncobj_pickle.dumps((method_id, (payload,)))
    raise ValueError(f"unknown record kind {record[0]!r}")


def entry_to_record(entry: tuple) -> list:
    frame, index, term = entry
    return [index, term, frame_to_record(frame)]


def record_to_entry(record: list) -> tuple:
    index, term, body = record
    if not isinstance(index, int) or not isinstance(term, int):
        raise ValueError("malformed entry record")
    return (record_to_frame(body), index, term)
