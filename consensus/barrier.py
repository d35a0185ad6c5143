"""Linearizable reads: a barrier entry through the log, shared by waiting reads.

PySyncObj has no ReadIndex and a cut-off leader may believe it leads for a
while, so a read is only safe after an entry proposed *after the read
arrived* has committed in the current term. One barrier serves every read
that arrived before it was proposed; reads that arrive while it is in flight
wait for the next one, which is proposed as soon as the current one ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["ReadBarrier"]


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class ReadBarrier:
    def __init__(self, propose_barrier: Callable[[], Awaitable[int]]) -> None:
        self._propose_barrier = propose_barrier
        self._open: asyncio.Future | None = None  # reads joining the next barrier
        self._runner_active = False
        self.barriers = 0
        self.reads = 0

    async def wait(self) -> int:
        """Return the log index after which this read may be served."""
        self.reads += 1
        if self._open is None:
            self._open = asyncio.get_running_loop().create_future()
            self._open.add_done_callback(_consume)
            if not self._runner_active:
                self._runner_active = True
                asyncio.ensure_future(self._run())
        return await asyncio.shield(self._open)

    async def _run(self) -> None:
        """Propose one barrier per batch of joined reads, one at a time."""
        try:
            while self._open is not None:
                future, self._open = self._open, None  # later reads join the next one
                self.barriers += 1
                try:
                    index = await self._propose_barrier()
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting read
                    if not future.done():
                        future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    if not future.done():
                        future.set_result(index)
        finally:
            self._runner_active = False
