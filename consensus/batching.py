"""Group commit: commands proposed while the pipeline is full share one entry.

Every log entry costs the same fixed work however small it is: one
AppendEntries message per follower (pickled, compressed, encrypted), one
journal record, one fdatasync on a majority. So at most
``pipeline_entries_max`` entries are in flight at once; a command proposed
while the pipeline is full waits in a queue, and when an entry commits the
whole queue goes out as a single batch entry (at most ``BATCH_COMMANDS_MAX``
commands and :data:`ENTRY_BYTES_MAX` bytes). One proposer alone never waits:
with the pipeline empty its command is sent at once, as a plain entry.

A batch entry is a command of kind :data:`BATCH_KIND` whose body is the list
of the encoded commands; the applier applies them in order at the entry's
index, and the entry's result is the list of their results. Each proposer
gets its own command's result, or the entry's error.

A command still queued when its proposer stopped waiting (timeout,
cancellation) is dropped, never sent: it was not written. When this node
stops leading, everything queued fails with :class:`NotLeader` and every
entry in flight with an outcome-unknown error at once (PySyncObj would hold
them until the proposal timeout).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from .codec import COMMAND_FORMAT_VERSION, ENTRY_BYTES_MAX, pack

__all__ = ["BATCH_KIND", "BATCH_COMMANDS_MAX", "Batcher", "encode_batch"]

BATCH_KIND = "raft.batch"
BATCH_COMMANDS_MAX = 512
_ITEM_OVERHEAD_BYTES = 5  # msgpack bin32 header of one encoded command
_ENVELOPE_BYTES = 64

# send(data, on_done) hands one entry to the log; on_done(result, error) is
# then called on the event loop exactly once, error None on success.
Send = Callable[[bytes, Callable[[Any, BaseException | None], None]], None]


def encode_batch(items: list[bytes]) -> bytes:
    return pack({"v": COMMAND_FORMAT_VERSION, "k": BATCH_KIND, "at": 0, "b": items})


class Batcher:
    def __init__(
        self,
        send: Send,
        is_leader: Callable[[], bool],
        not_leader: Callable[[], BaseException],
        pipeline_entries_max: int,
    ) -> None:
        if pipeline_entries_max < 1:
            raise ValueError("pipeline_entries_max must be at least 1")
        self._send = send
        self._is_leader = is_leader
        self._not_leader = not_leader
        self._pipeline_max = pipeline_entries_max
        self._inflight: dict[int, list[tuple[bytes, asyncio.Future]]] = {}  # entry number -> its proposers
        self._queue: collections.deque[tuple[bytes, asyncio.Future]] = collections.deque()
        self.entries = 0
        self.commands = 0

    def submit(self, data: bytes) -> asyncio.Future:
        """Queue one encoded command; the future gets its result or error."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((data, future))
        if len(self._inflight) < self._pipeline_max:
            self._flush()
        return future

    def fail_queued(self, error: BaseException) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(error)

    def abandon(self, queued_error: BaseException, inflight_error: BaseException) -> None:
        """This node stopped leading: what is queued was never sent
        (``queued_error``); what was sent may still commit under the next
        leader, and PySyncObj may hold it until its timeout - its proposers
        learn ``inflight_error`` (outcome unknown) now. Late callbacks of the
        abandoned entries are ignored."""
        self.fail_queued(queued_error)
        inflight, self._inflight = self._inflight, {}
        for taken in inflight.values():
            for _, future in taken:
                if not future.done():
                    future.set_exception(inflight_error)

    def _take(self) -> list[tuple[bytes, asyncio.Future]]:
        taken: list[tuple[bytes, asyncio.Future]] = []
        size = _ENVELOPE_BYTES
        while self._queue and len(taken) < BATCH_COMMANDS_MAX:
            data, future = self._queue[0]
            if future.done():  # its proposer stopped waiting: never sent, not written
                self._queue.popleft()
                continue
            if taken and size + len(data) + _ITEM_OVERHEAD_BYTES > ENTRY_BYTES_MAX:
                break
            self._queue.popleft()
            taken.append((data, future))
            size += len(data) + _ITEM_OVERHEAD_BYTES
        return taken

    def _flush(self) -> None:
        while self._queue and len(self._inflight) < self._pipeline_max:
            if not self._is_leader():
                self.fail_queued(self._not_leader())
                return
            taken = self._take()
            if not taken:
                return
            data = taken[0][0] if len(taken) == 1 else encode_batch([d for d, _ in taken])
            self.entries += 1
            number = self.entries
            self._inflight[number] = taken
            self.commands += len(taken)
            try:
                self._send(data, lambda result, error, number=number: self._done(number, result, error))
            except BaseException as exc:  # noqa: BLE001 - handed to every proposer of the entry
                self._done(number, None, exc)

    def _done(self, number: int, result: Any, error: BaseException | None) -> None:
        taken = self._inflight.pop(number, None)
        if taken is None:  # abandoned when this node stopped leading
            return
        if len(taken) == 1:
            results = [result]
        elif error is None and (not isinstance(result, list) or len(result) != len(taken)):
            error, results = RuntimeError(f"a batch of {len(taken)} commands returned {result!r}"), []
        else:
            results = result if error is None else []
        for n, (_, future) in enumerate(taken):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[n])
        self._flush()
