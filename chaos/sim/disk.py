"""The simulated disk: the real journal, and a power loss that keeps only
what it synced.

:class:`CrashableJournal` is :class:`consensus.journal.MsgpackJournal`
unchanged (its records, its sync points, its torn-tail recovery), on a
per-run scratch directory, with the real fsync replaced by a note of how
many bytes a sync would have made durable. :meth:`CrashableJournal.power_loss`
then cuts the file to those bytes plus a seeded part of the unsynced tail
(possibly in the middle of a record: a torn write), which is what a machine
losing power would find on restart. Snapshots are replaced atomically by
the real code and survive whole.

``sync_is_a_lie`` plants a bug for the checkers' self-test: syncs make
nothing durable (only rewrites do), as with a disk that ignores fsync.
"""

from __future__ import annotations

import os
import random

from consensus.journal import MsgpackJournal

__all__ = ["CrashableJournal", "journal_class"]


class CrashableJournal(MsgpackJournal):
    sync_is_a_lie = False

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        super().__init__(path, fsync=False)  # never a real fsync: durability is simulated
        self.durable_bytes = os.path.getsize(path)
        self.lost_bytes = 0

    def _size(self) -> int:
        return os.fstat(self._fd).st_size

    def sync(self) -> None:
        dirty = self._dirty and self._fd >= 0
        super().sync()
        if dirty and not self.sync_is_a_lie:
            self.durable_bytes = self._size()

    def _reopen_after_rewrite(self) -> None:
        super()._reopen_after_rewrite()  # a rewrite is fsynced as a whole and renamed into place
        self.durable_bytes = self._size()

    def power_loss(self, rng: random.Random, *, torn: bool = True) -> int:
        """Close the file as a power loss would leave it; the bytes lost."""
        if self._fd < 0:
            return 0
        size = self._size()
        keep = self.durable_bytes + (rng.randint(0, size - self.durable_bytes) if torn else 0)
        os.close(self._fd)
        self._fd = -1
        os.truncate(self._path, keep)
        self.lost_bytes = size - keep
        return self.lost_bytes


def journal_class(*, sync_is_a_lie: bool) -> type:
    """The journal class of one run (the planted bug is a class attribute of its own subclass)."""
    return type("RunJournal", (CrashableJournal,), {"sync_is_a_lie": sync_is_a_lie})
