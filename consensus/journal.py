"""A Raft journal for PySyncObj that stores msgpack records, never pickle.

PySyncObj's own ``FileJournal`` keeps its entries in an mmap and never calls
fsync. This one appends length- and CRC-framed msgpack records to a plain
file, and with ``fsync=True`` (the default of the node) makes every entry
and every term/vote change durable before PySyncObj answers the message
that caused it, so an acknowledged entry survives a power loss on a
majority, not only a process kill.

File: ``MAGIC`` then records ``[u32 length][u32 crc32][msgpack]``:

    ["a", index, term, body]   append an entry (body: see frames.py)
    ["d", index]               delete the entries from log index ``index`` on
    ["c", index]               the commit index
    ["m", term, voted_for]     the current term and the vote

A torn or corrupt tail (a crash mid-write) is cut off on load. Clearing or
compacting the front of the log rewrites the file atomically.

Truncation only where the logs conflict (Raft's rule): PySyncObj 0.3.17
answers every AppendEntries that finds the follower's log longer than
``prevLogIdx`` by deleting everything after it and appending the message's
entries again - also when they are the very entries the follower already
holds and acknowledged. The ``d`` record then reached the disk before the
re-appended entries were synced, and a power loss in between lost entries
this node had acknowledged (found by the simulation's slow disks and power
losses); a shorter resend even dropped acknowledged entries past its end
until the next message. Here ``deleteEntriesFrom`` only marks where a
truncation *may* start; the ``add`` calls that follow skip every entry
already held with the same index and term, and the log is cut (``d``
record) at the first entry whose term differs. Entries past the message
stay until a later message conflicts with them; the transport caps the
commit index a message may set at its last entry
(``coordinator.consensus.pysyncobj_log._commit_cap``), as Raft does, so a follower
never commits such an entry on the leader's word alone.

Group commit: appended entries are written at once but made durable by
:meth:`MsgpackJournal.sync`, which the node calls before a follower
acknowledges entries and at the end of every tick (before the leader can
count its own copy toward a commit): one fsync covers every entry written
since the last. Term and vote changes are durable before ``setCurrentTerm``
returns.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib

from pysyncobj.journal import Journal

from .codec import pack, unpack
from .frames import entry_to_record, record_to_entry

__all__ = ["MsgpackJournal", "JOURNAL_RECORD_BYTES_MAX"]

log = logging.getLogger(__name__)

MAGIC = b"COORDJ01"
_HEADER = struct.Struct("<II")
JOURNAL_RECORD_BYTES_MAX = 64 * 1024 * 1024
# The journal holds every body and output: the owner's alone.
JOURNAL_FILE_MODE = 0o600


def fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MsgpackJournal(Journal):
    def __init__(self, path: str, *, fsync: bool = True) -> None:
        self._path = path
        self._fsync = fsync
        self._entries: list[tuple[bytes, int, int]] = []
        self._commit_index = 1
        self._term = 0
        self._voted_for: str | None = None
        self._dirty = False
        self.syncs = 0
        # Position from which PySyncObj asked to delete; cut lazily (module docstring).
        self._truncate_from: int | None = None
        self.truncations_avoided = 0  # entries PySyncObj would have deleted and appended again
        if os.path.exists(path):
            self._load()
        else:
            self._rewrite()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.fchmod(self._fd, JOURNAL_FILE_MODE)  # one written before journals were owner-only

    # -- loading ------------------------------------------------------------
    @classmethod
    def entries_in(cls, path: str) -> list[tuple[bytes, int, int]]:
        """The entries a restart would load from the journal at ``path`` as it
        is now, read as a node's start reads them (a torn tail is cut)."""
        reader = cls.__new__(cls)
        reader._path, reader._entries = path, []
        reader._commit_index, reader._term, reader._voted_for = 1, 0, None
        reader._load()
        return reader._entries

    def _load(self) -> None:
        with open(self._path, "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            raise ValueError(f"{self._path} is not a coordinator journal")
        offset, good = len(MAGIC), len(MAGIC)
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            start, end = offset + _HEADER.size, offset + _HEADER.size + length
            if length > JOURNAL_RECORD_BYTES_MAX or end > len(data):
                break
            payload = data[start:end]
            if zlib.crc32(payload) != crc:
                break
            self._replay(unpack(payload, max_bytes=JOURNAL_RECORD_BYTES_MAX))
            offset = good = end
        if good != len(data):
            log.warning("journal %s: cutting a torn tail of %d bytes", self._path, len(data) - good)
            with open(self._path, "r+b") as f:
                f.truncate(good)

    def _replay(self, record: list) -> None:
        kind = record[0]
        if kind == "a":
            self._entries.append(record_to_entry(record[1:]))
        elif kind == "d":
            self._drop_from_index(record[1])
        elif kind == "c":
            self._commit_index = record[1]
        elif kind == "m":
            self._term, self._voted_for = record[1], record[2]
        else:
            raise ValueError(f"unknown journal record {kind!r}")

    def _drop_from_index(self, index: int) -> None:
        while self._entries and self._entries[-1][1] >= index:
            self._entries.pop()

    # -- writing ------------------------------------------------------------
    @staticmethod
    def _frame(record: list) -> bytes:
        payload = pack(record)
        return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload

    def _write(self, record: list, *, durable: bool) -> None:
        os.write(self._fd, self._frame(record))
        if durable:
            self._dirty = True

    def sync(self) -> None:
        """Make every record written so far durable (one fdatasync for all)."""
        if self._dirty and self._fd >= 0:
            if self._fsync:
                os.fdatasync(self._fd)
                self.syncs += 1
            self._dirty = False

    def _rewrite(self) -> None:
        tmp = self._path + ".tmp"
        parts = [MAGIC, self._frame(["m", self._term, self._voted_for]), self._frame(["c", self._commit_index])]
        parts.extend(self._frame(["a", *entry_to_record(entry)]) for entry in self._entries)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, JOURNAL_FILE_MODE)
        os.fchmod(fd, JOURNAL_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(parts))
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self._path)
        if self._fsync:
            fsync_directory(self._path)

    def _reopen_after_rewrite(self) -> None:
        os.close(self._fd)
        self._dirty = False  # the rewrite is fsynced as a whole
        self._rewrite()
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)

    # -- the PySyncObj Journal interface ------------------------------------
    def add(self, command, idx, term):
        position = self._truncate_from
        if position is not None and position < len(self._entries):
            held = self._entries[position]
            if held[1] == idx and held[2] == term:  # the same entry (Raft's log matching)
                self._truncate_from = position + 1
                self.truncations_avoided += 1
                return
            self._cut(position)
        self._truncate_from = None
        entry = (bytes(command), idx, term)
        self._write(["a", *entry_to_record(entry)], durable=True)
        self._entries.append(entry)

    def _cut(self, position: int) -> None:
        """Delete the entries from ``position`` on: they conflict with the leader's."""
        self._write(["d", self._entries[position][1]], durable=True)
        del self._entries[position:]
        self._truncate_from = None

    def end_of_message(self) -> None:
        """PySyncObj has handled one message: forget a truncation mark it left
        (the entries past the message's are kept, see the module docstring)."""
        self._truncate_from = None

    def clear(self):
        self._truncate_from = None
        self._entries = []
        self._reopen_after_rewrite()

    def deleteEntriesFrom(self, entryFrom):
        """Mark; the cut happens in :meth:`add` at the first conflicting entry."""
        if entryFrom < len(self._entries):
            self._truncate_from = entryFrom

    def deleteEntriesTo(self, entryTo):
        self._truncate_from = None
        self._entries = self._entries[entryTo:]
        self._reopen_after_rewrite()

    def __getitem__(self, item):
        return self._entries[item]

    def __len__(self):
        return len(self._entries)

    def _destroy(self):
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    def setRaftCommitIndex(self, raftCommitIndex):
        if raftCommitIndex != self._commit_index:
            self._commit_index = raftCommitIndex
            # Not durable on purpose: a lower commit index after a crash is
            # safe (Raft re-learns it from the leader).
            self._write(["c", raftCommitIndex], durable=False)

    def getRaftCommitIndex(self):
        return self._commit_index

    def setCurrentTerm(self, term, votedForNodeId):
        self._term, self._voted_for = term, votedForNodeId
        self._write(["m", term, votedForNodeId], durable=True)
        self.sync()  # a vote must be durable before the message that carries it

    def getCurrentTerm(self):
        return self._term

    def getVotedForNodeId(self):
        return self._voted_for

    def onOneSecondTimer(self):
        pass
