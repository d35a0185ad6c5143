"""The event loop a node runs on: uvloop when installed, asyncio's otherwise.

uvloop makes socket IO and ``call_soon_threadsafe`` (every Raft callback
crosses from PySyncObj's tick thread) cheaper. ``COORDINATOR_EVENT_LOOP=asyncio``
picks the standard loop, e.g. to compare the two.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Coroutine

__all__ = ["loop_name", "run"]

ENV = "COORDINATOR_EVENT_LOOP"


def _uvloop():
    if os.environ.get(ENV, "uvloop") != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_name() -> str:
    return "uvloop" if _uvloop() is not None else "asyncio"


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    uvloop = _uvloop()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop is not None else None) as runner:
        return runner.run(coroutine)
