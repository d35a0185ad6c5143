"""Virtual time: a clock, an event loop that runs on it, processes that die.

    clock = VirtualClock()
    loop = VirtualLoop(clock)
    with simulated_runtime(clock, world_random):
        loop.run_until_complete(main())

- :class:`VirtualLoop` is an asyncio loop whose ``time()`` is the virtual
  clock. It does no IO: when no callback is ready it moves the clock to the
  next timer at once, so a simulated minute takes as long as its work.
  Waiting with nothing scheduled is a deadlock and raises :class:`Deadlock`.
- A :class:`Process` is one incarnation of a simulated node: every task and
  timer created in its context belongs to it, and :meth:`Process.kill`
  cancels them all (in creation order), as a crash would; whatever a dead
  process tries to start later is cancelled at once.
- Our code is given the virtual clock and seeded random sources through
  its constructors (chaos/sim/node.py, chaos/sim/world.py): the nodes'
  ``clock`` is ``VirtualClock.wall``, the participants' and the recording
  services' clocks are ``wall`` and ``monotonic``. Nothing of ours reads
  ``time.time``, ``time.monotonic`` or the global ``random`` in a run.
- :func:`simulated_runtime` patches, for the duration of a run only, what
  PySyncObj reads itself, which no argument of ours reaches: its
  ``monotonicTime`` (every Raft timeout) and its pipe notifier, and the
  global ``random`` state (its election timeouts call ``random.random()``).
  It also makes ``time.sleep`` raise: nothing may block for real.

Clock skew: ``VirtualClock.offsets`` holds a wall-clock offset per node
(set and changed by the nemesis: a step is a jump). ``VirtualClock.wall``
called inside a node's process reads that node's wall clock - what the
leader stamps into each command (``at_ms``) and reads its deadlines and
retention against; the monotonic clock (timers, timeouts) and everything
outside a node (clients, participants) keep the true time.

What skew can do: deadlines are a leader's stamp of when a workflow or
step started plus its timeout, and fire when a leader's wall clock (maybe
another leader's, after a failover, or the same one after a jump) passes
them. With every node's offset within +-``bound/2`` of true time, two
stamps differ from true time by at most ``bound`` relative to each other,
so a deadline fires at most ``bound`` early on the true clock (and may fire
late by as much) - nothing worse. ``coordinator.chaos.sim.invariants.deadline_violations``
checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pysyncobj.syncobj as _syncobj_module

__all__ = ["Deadlock", "EPOCH_S", "PROCESS", "Process", "RealSleep", "VirtualClock", "VirtualLoop", "simulated_runtime"]

# The simulated wall clock starts here (2023-11-14), whatever the real date.
EPOCH_S = 1_700_000_000.0
TIMERS_KEPT_MAX = 256  # a process forgets its past timers beyond this many


class Deadlock(RuntimeError):
    """The loop would wait forever: nothing is ready and no timer is set."""


class RealSleep(RuntimeError):
    """Something called time.sleep inside the simulation: it would block for real."""


class VirtualClock:
    def __init__(self) -> None:
        self.now_s = 0.0
        self.offsets: dict[str, float] = {}  # node id -> its wall clock's offset from true time

    def monotonic(self) -> float:
        return self.now_s

    def wall(self) -> float:
        if self.offsets:
            process = PROCESS.get()
            if process is not None:
                return EPOCH_S + self.now_s + self.offsets.get(process.node, 0.0)
        return EPOCH_S + self.now_s

    def true_wall(self) -> float:
        return EPOCH_S + self.now_s

    def advance(self, delta_s: float) -> None:
        assert delta_s >= 0, delta_s
        self.now_s += delta_s


PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar("sim_process", default=None)


class Process:
    """What dies with a simulated node process: its tasks and timers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.node = name.partition("#")[0]  # "n2#3": node n2, its third process
        self.alive = True
        self.context = contextvars.copy_context()
        self.context.run(PROCESS.set, self)
        self._serial = 0
        self._tasks: dict[int, asyncio.Task] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def adopt_task(self, task: asyncio.Task) -> None:
        if not self.alive:
            task.cancel()
            return
        self._serial += 1
        serial = self._serial
        self._tasks[serial] = task
        task.add_done_callback(lambda _t, s=serial: self._tasks.pop(s, None))

    def adopt_timer(self, handle: asyncio.TimerHandle, now: float) -> None:
        if not self.alive:
            handle.cancel()
            return
        self._serial += 1
        self._timers[self._serial] = handle
        if len(self._timers) > TIMERS_KEPT_MAX:  # forget the timers that already ran or were cancelled
            self._timers = {s: h for s, h in self._timers.items() if not h.cancelled() and h.when() >= now}

    def kill(self) -> None:
        self.alive = False
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks.values()):
            task.cancel()

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function`` now, inside this process."""
        return self.context.run(function, *args)


class _VirtualSelector:
    """What BaseEventLoop waits on: waiting moves the clock instead of blocking."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock

    def select(self, timeout: float | None) -> list:
        if timeout is None:
            raise Deadlock("nothing is ready and no timer is set: the simulation would wait forever")
        if timeout > 0:
            self._clock.advance(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock
        self._selector = _VirtualSelector(clock)

    def time(self) -> float:
        return self._clock.now_s

    def _process_events(self, event_list: list) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # no other thread ever wakes this loop

    def create_task(self, coro, *, name=None, context=None):  # type: ignore[override]
        context = contextvars.copy_context() if context is None else context
        task = super().create_task(coro, name=name, context=context)
        process = context.get(PROCESS)
        if process is not None:
            process.adopt_task(task)
        return task

    def call_at(self, when, callback, *args, context=None):  # type: ignore[override]
        handle = super().call_at(when, callback, *args, context=context)
        process = PROCESS.get() if context is None else context.get(PROCESS)
        if process is not None:
            process.adopt_timer(handle, self.time())
        return handle

    def run_in_executor(self, executor, func, *args):  # type: ignore[override]
        raise RuntimeError("no threads in the simulation: run_in_executor was called")


def _no_sleep(seconds: float) -> None:
    raise RealSleep(f"time.sleep({seconds!r}) inside the simulation")


class _WakeNotifier:
    """Stands in for PySyncObj's pipe notifier: a proposal wakes the node's
    next tick at once (the pipe would have woken its poll)."""

    def __init__(self, poller: Any, callback: Any = None) -> None:
        self._poller = poller

    def notify(self) -> None:
        self._poller.wake()


@contextlib.contextmanager
def simulated_runtime(clock: VirtualClock, state: dict) -> Iterator[None]:
    """For one stretch of a run, patch what PySyncObj (third-party code)
    reads itself - its monotonic clock, its pipe notifier, the global random
    - and refuse time.sleep. ``state["random"]`` carries the run's global
    random state from one stretch to the next; the outside state is restored
    afterwards. Our own code is handed its clocks and random sources."""
    saved = (time.sleep, _syncobj_module.monotonicTime, _syncobj_module.PipeNotifier)
    outside_random = random.getstate()
    random.setstate(state["random"])
    time.sleep = _no_sleep
    _syncobj_module.monotonicTime = clock.monotonic
    _syncobj_module.PipeNotifier = _WakeNotifier
    try:
        yield
    finally:
        state["random"] = random.getstate()
        random.setstate(outside_random)
        time.sleep, _syncobj_module.monotonicTime, _syncobj_module.PipeNotifier = saved
