"""Linearizable reads: a barrier entry through the log, shared by waiting reads.

PySyncObj has no ReadIndex and a cut-off leader may believe it leads for a
while, so a read is only safe after an entry proposed *after the read
arrived* has committed in the current term. One barrier serves every read
that arrived before it was proposed; reads that arrive while it is in flight
wait for the next one, which starts as soon as the current one ends.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

__all__ = ["ReadBarrier"]


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class ReadBarrier:
    def __init__(self, propose_barrier: Callable[[], Awaitable[int]]) -> None:
        self._propose_barrier = propose_barrier
        self._running: asyncio.Future | None = None
        self._queued: asyncio.Future | None = None
        self.barriers = 0
        self.reads = 0

    async def wait(self) -> int:
        """Return the log index after which this read may be served."""
        self.reads += 1
        loop = asyncio.get_running_loop()
        if self._running is None:
            self._running = loop.create_future()
            self._running.add_done_callback(_consume)
            self._start(self._running)
            return await asyncio.shield(self._running)
        if self._queued is None:
            self._queued = loop.create_future()
            self._queued.add_done_callback(_consume)
        return await asyncio.shield(self._queued)

    def _start(self, future: asyncio.Future) -> None:
        self.barriers += 1
        asyncio.ensure_future(self._run(future))

    async def _run(self, future: asyncio.Future) -> None:
        try:
            index = await self._propose_barrier()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting read
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(index)
        finally:
            self._running = None
            if self._queued is not None:
                self._running, self._queued = self._queued, None
                self._start(self._running)
