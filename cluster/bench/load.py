"""The load of ``coordinator bench``, the same for our cluster and for the
etcd baseline (:mod:`coordinator.cluster.bench.etcd`): closed-loop workers
sharing :class:`coordinator.client.Coordinator` clients, a warm-up, a
measured window, its summary, and the registry writes both sides put."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.client import Coordinator, CoordinatorError
from coordinator.cluster.bench.stats import latency_summary_ms

__all__ = ["Results", "clients", "closed_loop", "registry_write", "summary", "worker"]

LATENCIES_MAX = 2_000_000
REGISTRY_NAMES = 100
# aiohttp keeps at most 100 connections per session and does not serve the
# requests waiting for one in order: with more workers than connections a
# few of them starved for a whole run (p99 = the run's duration). Every
# WORKERS_PER_CLIENT workers share one client, so one session.
WORKERS_PER_CLIENT = 50


def registry_write() -> tuple[str, str]:
    """(name, url) of one registry write: a bounded set of names (the
    registry keeps at most SERVICES_MAX services). The etcd baseline puts
    the same pairs."""
    return f"bench-{uuid.uuid4().int % REGISTRY_NAMES}", f"http://127.0.0.1:{1 + uuid.uuid4().int % 60000}"


@dataclass
class Results:
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def record_error(self, error: Exception) -> None:
        name = getattr(error, "code", None) or error.__class__.__name__
        self.errors[name] = self.errors.get(name, 0) + 1


async def worker(one: Callable[[], Awaitable[None]], until: float, results: Results | None) -> None:
    """One closed-loop client: ``one()`` again and again until ``until`` (monotonic)."""
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            await one()
        except (CoordinatorError, RuntimeError) as error:
            if results is not None:
                results.record_error(error)
            continue
        if results is not None and len(results.latencies_s) < LATENCIES_MAX:
            results.latencies_s.append(time.perf_counter() - started)


@contextlib.asynccontextmanager
async def clients(endpoints: list[str], concurrency: int, **tls: str | None) -> AsyncIterator[list[Coordinator]]:
    """One :class:`Coordinator` per WORKERS_PER_CLIENT workers; worker n uses
    ``made[n % len(made)]``; ``tls``: their ``ca_file``, ``cert_file``, ``key_file``."""
    made = [
        Coordinator(endpoints, attempts=10, timeout_s=30, **tls)
        for _ in range(max(1, math.ceil(concurrency / WORKERS_PER_CLIENT)))
    ]
    try:
        yield made
    finally:
        for client in made:
            await client.close()


async def closed_loop(
    one: Callable[[int], Awaitable[None]],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    on_measure: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Results, float]:
    """Warm up, then measure ``concurrency`` workers for ``duration_s``: (results, elapsed s).
    Worker n calls ``one(n)``. ``on_measure`` runs once, between the warm-up and the measured window."""
    if warmup_s:
        print(f"warming up for {warmup_s:g} s ...", file=sys.stderr, flush=True)
        until = time.monotonic() + warmup_s
        await asyncio.gather(*(worker(lambda n=n: one(n), until, None) for n in range(concurrency)))
    if on_measure is not None:
        await on_measure()
    results = Results()
    started = time.monotonic()
    progress = asyncio.ensure_future(_progress(results, started, duration_s))
    try:
        await asyncio.gather(*(worker(lambda n=n: one(n), started + duration_s, results) for n in range(concurrency)))
    finally:
        progress.cancel()
        print(file=sys.stderr)
    return results, time.monotonic() - started


async def _progress(results: Results, started: float, duration_s: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
        done = len(results.latencies_s)
        print(
            f"\r{elapsed:5.1f}/{duration_s:g} s  {done} done  {done / elapsed:7.1f}/s  errors {sum(results.errors.values())}",
            end="",
            file=sys.stderr,
            flush=True,
        )


def summary(workload: str, concurrency: int, results: Results, elapsed_s: float) -> dict[str, Any]:
    completed = len(results.latencies_s)
    return {
        "workload": workload,
        "concurrency": concurrency,
        "duration_s": round(elapsed_s, 2),
        "completed": completed,
        "errors": results.errors,
        "throughput_per_s": round(completed / elapsed_s, 1) if elapsed_s else 0.0,
        "latency_ms": latency_summary_ms(results.latencies_s),
    }
