"""The simulated disk: the real journal, and a power loss that keeps only
what it synced.

:class:`CrashableJournal` is :class:`coordinator.consensus.journal.MsgpackJournal`
unchanged (its records, its sync points, its torn-tail recovery), on a
per-run scratch directory, with the real fsync replaced by a note of how
many bytes a sync would have made durable. :meth:`CrashableJournal.power_loss`
then cuts the file to those bytes plus a seeded part of the unsynced tail
(possibly in the middle of a record: a torn write), which is what a machine
losing power would find on restart. Snapshots are replaced atomically by
the real code and survive whole.

``sync_is_a_lie`` plants a bug for the checkers' self-test: syncs make
nothing durable (only rewrites do), as with a disk that ignores fsync.

A slow disk (:class:`SimDisk`, one per node, kept across its restarts):
while ``slow_until`` is ahead, each sync that has something to write
stalls for a seeded 50 ms - 2 s of virtual time. The data is durable when
the stall ends; until then the node's tick waits (the cluster ticks it no
earlier than ``busy_until``) and whatever it sends after the sync leaves
when the sync completes (the network holds it; a power loss first and it
never leaves). Syncs queue: a second one starts when the first ends.
``returns_early`` plants a bug: the sync returns at once (nothing waits,
acknowledgements leave) while the data only becomes durable at the end
of the stall, so a power loss inside it loses entries the node already
acknowledged.
"""

from __future__ import annotations

import contextvars
import math
import os
import random
from collections.abc import Callable

from coordinator.consensus.journal import MsgpackJournal

__all__ = ["CrashableJournal", "SimDisk", "journal_class", "STALL_S"]

STALL_S = (0.05, 2.0)  # one slow sync, drawn log-uniformly


class SimDisk:
    """The disk of one node: healthy, or slow until ``slow_until``."""

    def __init__(
        self,
        rng: random.Random,
        now: Callable[[], float],
        on_busy: Callable[[float], None],
        *,
        returns_early: bool = False,
    ) -> None:
        self.rng = rng
        self.now = now
        self.on_busy = on_busy  # the node waits (ticks and sends) until this virtual time
        self.returns_early = returns_early
        self.slow_until = 0.0
        self.busy_until = 0.0
        self.stalls = 0

    def sync_done_at(self) -> float | None:
        """When a sync starting now completes (None: at once, the disk is healthy)."""
        now = self.now()
        if now >= self.slow_until:
            return None
        stall_s = math.exp(self.rng.uniform(math.log(STALL_S[0]), math.log(STALL_S[1])))
        self.stalls += 1
        done = max(self.busy_until, now + stall_s)  # the device queues: syncs issued together overlap
        if not self.returns_early:
            self.busy_until = done
            self.on_busy(done)
        return done


class CrashableJournal(MsgpackJournal):
    sync_is_a_lie = False

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        super().__init__(path, fsync=False)  # never a real fsync: durability is simulated
        self.durable_bytes = os.path.getsize(path)
        self.lost_bytes = 0
        self.disk: SimDisk | None = None  # set by the cluster once the node started
        self.loop = None
        self._rewrites = 0

    def _size(self) -> int:
        return os.fstat(self._fd).st_size

    def sync(self) -> None:
        dirty = self._dirty and self._fd >= 0
        super().sync()
        if not dirty or self.sync_is_a_lie:
            return
        done = self.disk.sync_done_at() if self.disk is not None and self.loop is not None else None
        if done is None:
            self.durable_bytes = self._size()
            return
        size, rewrites = self._size(), self._rewrites
        self.loop.call_at(done, self._synced, size, rewrites, context=_ROOT)

    def _synced(self, size: int, rewrites: int) -> None:
        """A slow sync completed: what it covered is durable (unless the file closed or was rewritten)."""
        if self._fd >= 0 and rewrites == self._rewrites:
            self.durable_bytes = max(self.durable_bytes, size)

    def _reopen_after_rewrite(self) -> None:
        super()._reopen_after_rewrite()  # a rewrite is fsynced as a whole and renamed into place
        self._rewrites += 1
        self.durable_bytes = self._size()

    def durable_entries(self) -> list[tuple[int, int]]:
        """(index, term) of the entries a restart would load from the file as it is now."""
        return [(entry[1], entry[2]) for entry in MsgpackJournal.entries_in(self._path)]

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


_ROOT = contextvars.Context()  # a sync completing belongs to the disk, not to a process


def journal_class(*, sync_is_a_lie: bool) -> type:
    """The journal class of one run (the planted bug is a class attribute of its own subclass)."""
    return type("RunJournal", (CrashableJournal,), {"sync_is_a_lie": sync_is_a_lie})
