"""The event loop a node runs on: uvloop when installed, asyncio's otherwise.

uvloop makes socket IO and ``call_soon_threadsafe`` (every Raft callback
crosses from PySyncObj's tick thread) cheaper. ``COORDINATOR_EVENT_LOOP=asyncio``
picks the standard loop, e.g. to compare the two. It also sets the GIL
switch interval (``COORDINATOR_SWITCH_INTERVAL_S``, see below) and tunes the
garbage collector (``COORDINATOR_GC_GEN0``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Coroutine
from typing import Any

__all__ = ["loop_name", "run"]

ENV = "COORDINATOR_EVENT_LOOP"
# Two threads hand work to each other all the time: PySyncObj's tick thread
# (every Raft message, apply and callback) and the event loop (HTTP, calls,
# proposals). Before group commit, 0.5 ms gave the saga2 bench at
# concurrency 16 ~1.5x the throughput of CPython's default 5 ms. Measured
# again after the CPU work of issue 17 (interleaved runs, BENCHMARKS.md),
# the default is as fast or faster at concurrency 1, 16 and 64 and costs
# 5-10 % less CPU per saga: forced switches every 0.5 ms were overhead.
SWITCH_ENV = "COORDINATOR_SWITCH_INTERVAL_S"
SWITCH_INTERVAL_S = "0.005"


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


# The cyclic garbage collector. Everything loaded at start (aiohttp, gRPC,
# PySyncObj, the modules: a few hundred thousand objects that live as long
# as the process) is frozen out of its scans, and the youngest generation
# is collected every GC_GEN0_THRESHOLD allocations instead of every 700:
# applying a command allocates hundreds of short-lived objects, and at the
# default threshold collections took about a tenth of apply's CPU.
# ``COORDINATOR_GC_GEN0=700`` restores CPython's default.
GC_ENV = "COORDINATOR_GC_GEN0"
GC_GEN0_THRESHOLD = "10000"


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(int(os.environ.get(GC_ENV, GC_GEN0_THRESHOLD)), older, oldest)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    sys.setswitchinterval(float(os.environ.get(SWITCH_ENV, SWITCH_INTERVAL_S)))
    tune_gc()
    uvloop = _uvloop()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop is not None else None) as runner:
        return runner.run(coroutine)
