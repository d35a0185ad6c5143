"""Snapshots through msgpack: PySyncObj's ``serializer``/``deserializer`` hooks.

With these hooks PySyncObj never pickles the state: at log compaction it
calls :meth:`SnapshotHooks.serialize` on its tick thread (the thread that
applies entries, so the state is exactly at the last applied entry) with the
last two applied entries, and it calls :meth:`SnapshotHooks.deserialize` on
start and when a leader installs a snapshot. The file holds the state
machine's own msgpack snapshot and the two entries in the journal's record
form. A snapshot that cannot be loaded stops the node: running on with a
half-restored state would silently diverge from the cluster.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from .codec import pack_to, unpack
from .frames import entry_to_record, record_to_entry

__all__ = ["SnapshotHooks", "SNAPSHOT_FORMAT_VERSION"]

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT_VERSION = 1
SNAPSHOT_BYTES_MAX = 1024 * 1024 * 1024
SNAPSHOT_FILE_MODE = 0o600


def _fatal(message: str) -> None:  # pragma: no cover - exits the process
    log.critical(message)
    os._exit(70)


class SnapshotHooks:
    def __init__(
        self,
        snapshot: Callable[[], Any],
        restore: Callable[[Any], None],
        lock: threading.RLock,
        *,
        fsync: bool = True,
        on_fatal: Callable[[str], None] = _fatal,
    ) -> None:
        self._snapshot = snapshot
        self._restore = restore
        self._lock = lock
        self._fsync = fsync
        self._on_fatal = on_fatal
        self.taken = 0
        self.restored = 0

    def serialize(self, path: str, data: tuple) -> None:
        last, prev, _cluster = data
        with self._lock:
            doc = {
                "format": SNAPSHOT_FORMAT_VERSION,
                "last": entry_to_record(last),
                "prev": entry_to_record(prev),
                "state": self._snapshot(),
            }
        # Streamed, not packed whole: no transient copy of the state. The
        # document still refers to parts of the live state, which only this
        # thread - PySyncObj's tick thread, which applies entries - changes.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SNAPSHOT_FILE_MODE)
        os.fchmod(fd, SNAPSHOT_FILE_MODE)  # the whole state: the owner's alone
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as f:
            pack_to(doc, f.write)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        self.taken += 1

    def deserialize(self, path: str) -> tuple:
        try:
            with open(path, "rb") as f:
                doc = unpack(f.read(), max_bytes=SNAPSHOT_BYTES_MAX)
            if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT_VERSION:
                raise ValueError("not a coordinator snapshot")
            last, prev = record_to_entry(doc["last"]), record_to_entry(doc["prev"])
            with self._lock:
                self._restore(doc["state"])
        except Exception as exc:  # noqa: BLE001 - any failure here is fatal
            self._on_fatal(f"cannot load snapshot {path}: {exc!r}")
            raise
        self.restored += 1
        return (last, prev, [])
