"""SyncCoordinator: the async client driven from a private event loop thread.

It copies no logic: every public coroutine method of :class:`Coordinator`
is exposed as a blocking method of the same name. The event stream
(:meth:`Coordinator.events`) is not: it never ends, so it has no blocking
form; use :class:`Coordinator` for it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

from .coordinator import Coordinator

__all__ = ["SyncCoordinator"]


class SyncCoordinator:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="coordinator-client", daemon=True)
        self._thread.start()
        self._client = self._run(self._make(args, kwargs))

    @staticmethod
    async def _make(args: tuple, kwargs: dict) -> Coordinator:
        return Coordinator(*args, **kwargs)

    def _run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        if name == "events":
            raise TypeError("SyncCoordinator has no events(): the stream never ends; use the async Coordinator")
        attribute = getattr(self._client, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._run(attribute(*args, **kwargs))

        blocking.__name__ = name
        blocking.__doc__ = attribute.__doc__
        return blocking

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> SyncCoordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
