"""Simulated participants: the chaos recording services, served in process.

Each participant is a :class:`coordinator.chaos.participants.RecordingService` - its
real aiohttp application with the participant kit (idempotency keys,
fences, null compensations, hanging actions) and its script - that gets
each request as an ``aiohttp.web.Request`` built in memory instead of read
from a socket. Its effects carry the virtual clock (the World gives the
service the virtual monotonic clock, and the kit's idempotency store the
virtual wall clock).

The executor reaches them through :class:`SimSession`, which stands in for
the ``aiohttp.ClientSession`` under the real :class:`coordinator.cluster.executor.http_caller.HttpCaller`,
so the executor's retries, timeouts, answer classification and circuit
breakers are the real ones. Between the two, :class:`ParticipantLinks`
decides from the seed: the delay each way, a request lost (the caller
times out; nothing happened), an answer lost (the caller times out; the
effect happened), a request delivered twice (a retrying proxy), and
outages (connection refused). A handler keeps running when its caller
gives up or dies, as a real server's would.

A participant can also crash and restart (:meth:`SimParticipant.crash`,
:meth:`SimParticipant.restart`): every handler running is cancelled
mid-way, every request in flight to it is lost with its connection (the
caller sees the connection reset; no answer ever arrives), new connections
are refused until it restarts; its idempotency store survives (a durable
store), its in-memory locks do not.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from coordinator.chaos.participants import RecordingService, Script
from coordinator.client.participant import MemoryStore, saga_participant

from .trace import Trace

__all__ = ["ParticipantFaults", "ParticipantLinks", "SimParticipant", "SimSession"]

REQUEST_BYTES_MAX = 1024 * 1024


@dataclass(frozen=True)
class ParticipantFaults:
    delay_s: tuple[float, float] = (0.001, 0.01)
    slow_probability: float = 0.02
    slow_delay_s: tuple[float, float] = (0.2, 3.0)
    request_loss_probability: float = 0.01
    answer_loss_probability: float = 0.02
    duplicate_probability: float = 0.02

    def __post_init__(self) -> None:
        assert 0 < self.delay_s[0] <= self.delay_s[1]
        for p in (
            self.slow_probability,
            self.request_loss_probability,
            self.answer_loss_probability,
            self.duplicate_probability,
        ):
            assert 0 <= p <= 1, p


class _Transport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.1", 40000), "sockname": ("10.0.0.2", 80)}.get(name, default)

    def is_closing(self) -> bool:
        return False


class _Protocol:
    _reading_paused = False
    max_field_size = max_line_length = 8190
    max_headers = 128
    ssl_context = None
    peername = ("10.0.0.1", 40000)
    sockname = ("10.0.0.2", 80)

    def __init__(self) -> None:
        self.transport = _Transport()
        self.writer = None

    def pause_reading(self, *args: Any, **kwargs: Any) -> None:
        pass

    def resume_reading(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Writer:
    transport = None

    async def write_headers(self, *args: Any) -> None:
        pass

    async def write(self, *args: Any) -> None:
        pass

    async def write_eof(self, *args: Any) -> None:
        pass

    async def drain(self) -> None:
        pass


class SimParticipant:
    def __init__(
        self,
        name: str,
        script: Script,
        service: RecordingService | None = None,
        store: Any = None,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``wall``: the wall clock of the kit and of a store made here (the
        virtual one in a run; ``service`` and ``store`` come with theirs)."""
        self.name = name
        self.url = f"http://{name}.sim:80"
        self._wall = wall
        self.store = store if store is not None else MemoryStore(clock=wall)
        self.service = service if service is not None else RecordingService(name, script, store=self.store, wall=wall)
        self.app = self.service.app()
        self.app.freeze()
        self.down = False  # an outage: connections refused, the process runs on
        self.crashed = False
        self.incarnation = 1
        self.crashes = 0
        self._running: dict[asyncio.Task, asyncio.Future | None] = {}

    def crash(self) -> int:
        """The process dies: handlers cancelled, requests in flight lost. How many were running."""
        self.crashed = True
        self.incarnation += 1
        self.crashes += 1
        running = list(self._running.items())
        self._running.clear()
        for task, handled in running:
            if handled is not None and not handled.done():
                handled.set_exception(aiohttp.ServerDisconnectedError("the participant crashed"))
            task.cancel()
        return len(running)

    def restart(self, *, forget: bool = False) -> None:
        """A new process on the same store (``forget``: on an empty one - a planted bug)."""
        if not self.crashed:
            return
        if forget:
            self.store = MemoryStore(clock=self._wall)
        self.service._kit = saga_participant(self.store, clock=self._wall)  # new locks, the store it had
        self.crashed = False

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """One HTTP request through the service's real application."""
        loop = asyncio.get_running_loop()
        protocol = _Protocol()
        payload = StreamReader(protocol, 2**16, loop=loop)
        if body:
            payload.feed_data(body)
        payload.feed_eof()
        all_headers = CIMultiDictProxy(CIMultiDict({**headers, "Content-Length": str(len(body))}))
        raw = tuple((k.encode(), v.encode()) for k, v in all_headers.items())
        message = RawRequestMessage(method, path, HttpVersion11, all_headers, raw, False, None, False, False, URL(path))
        request = web.Request(message, payload, protocol, _Writer(), None, loop, client_max_size=REQUEST_BYTES_MAX)
        try:
            response = await self.app._handle(request)
        except web.HTTPException as exception:
            return exception.status, (exception.text or "").encode()
        except Exception as exception:  # noqa: BLE001 - a server answers 500
            return 500, json.dumps({"error": {"code": "internal", "message": repr(exception)}}).encode()
        body_out = response.body if isinstance(response.body, bytes) else b""
        return response.status, body_out


class ParticipantLinks:
    """Between executors and participants: seeded delays, losses, duplicates, outages."""

    def __init__(
        self, participants: dict[str, SimParticipant], rng: random.Random, trace: Trace, faults: ParticipantFaults
    ) -> None:
        self.by_host = {URL(p.url).host: p for p in participants.values()}
        self.rng = rng
        self.trace = trace
        self.faults = faults
        self.quiet = False  # after the faults: every request and answer arrives promptly
        self._root = contextvars.Context()  # handlers belong to no node process
        self.calls = 0
        self.calls_by_caller: dict[str, int] = {}  # "n1", "w2": who made the calls

    def _delay(self) -> float:
        faults = self.faults
        delay_s = self.rng.uniform(*faults.delay_s)
        if not self.quiet and self.rng.random() < faults.slow_probability:
            delay_s += self.rng.uniform(*faults.slow_delay_s)
        return delay_s

    def _chance(self, probability: float) -> bool:
        return not self.quiet and self.rng.random() < probability

    async def exchange(
        self, caller: str, method: str, url: str, data: bytes | None, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """One HTTP exchange; raises what aiohttp would (ClientConnectionError, TimeoutError)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        target = URL(url)
        participant = self.by_host.get(target.host)
        self.calls += 1
        self.calls_by_caller[caller] = self.calls_by_caller.get(caller, 0) + 1
        key = headers.get("Idempotency-Key")
        if participant is None or participant.down or participant.crashed:
            await asyncio.sleep(self.rng.uniform(*self.faults.delay_s))
            self.trace.event("call", caller, target.host, key, "refused")
            raise aiohttp.ClientConnectionError(f"connection refused by {target.host}")
        body = data or b""
        request_delay_s, lost, answer_lost = self._delay(), self._chance(self.faults.request_loss_probability), False
        handled: asyncio.Future = loop.create_future()
        handled.add_done_callback(_retrieve)
        incarnation = participant.incarnation
        if not lost:
            answer_lost = self._chance(self.faults.answer_loss_probability)
            loop.call_later(
                request_delay_s,
                self._deliver,
                participant,
                incarnation,
                method,
                target.path,
                headers,
                body,
                handled,
                context=self._root,
            )
            if self._chance(self.faults.duplicate_probability):
                loop.call_later(
                    request_delay_s + self._delay(),
                    self._deliver,
                    participant,
                    incarnation,
                    method,
                    target.path,
                    headers,
                    body,
                    None,
                    context=self._root,
                )
        try:
            async with asyncio.timeout_at(deadline):
                if lost or answer_lost:
                    await asyncio.sleep(deadline - loop.time() + 1)
                status, answer = await asyncio.shield(handled)
                await asyncio.sleep(self._delay())
        except TimeoutError:
            self.trace.event(
                "call",
                caller,
                participant.name,
                key,
                "timeout",
                "lost" if lost else "answer-lost" if answer_lost else "late",
            )
            raise TimeoutError() from None
        except aiohttp.ClientError:
            self.trace.event("call", caller, participant.name, key, "reset")
            raise
        self.trace.event("call", caller, participant.name, key, status)
        return status, answer

    def _deliver(
        self,
        participant: SimParticipant,
        incarnation: int,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        handled: asyncio.Future | None,
    ) -> None:
        if participant.crashed or participant.incarnation != incarnation:  # lost with its connection
            self.trace.event("handled", participant.name, headers.get("Idempotency-Key"), "lost-in-crash")
            if handled is not None and not handled.done():
                handled.set_exception(aiohttp.ServerDisconnectedError("the participant crashed"))
            return
        task = asyncio.ensure_future(participant.handle(method, path, headers, body))
        participant._running[task] = handled

        def done(t: asyncio.Task) -> None:
            participant._running.pop(t, None)
            if t.cancelled():
                self.trace.event("handled", participant.name, headers.get("Idempotency-Key"), "cancelled-in-crash")
                return
            result = (500, b"") if t.exception() is not None else t.result()
            self.trace.event(
                "handled",
                participant.name,
                headers.get("Idempotency-Key"),
                result[0],
                "duplicate" if handled is None else "",
            )
            if handled is not None and not handled.done():
                handled.set_result(result)

        task.add_done_callback(done)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # an answer nobody waits for any more is not an error


class _Content:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self, n: int = -1) -> bytes:
        return self._body if n < 0 else self._body[:n]


class _Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.content = _Content(body)


class _Exchange:
    def __init__(
        self,
        links: ParticipantLinks,
        caller: str,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self._args = (caller, method, url, data, headers, timeout.total or 300.0)
        self._links = links

    async def __aenter__(self) -> _Response:
        status, body = await self._links.exchange(*self._args)
        return _Response(status, body)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class SimSession:
    """What HttpCaller needs of an aiohttp.ClientSession, over ParticipantLinks."""

    def __init__(self, links: ParticipantLinks, caller: str) -> None:
        self._links = links
        self._caller = caller

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout,
        allow_redirects: bool = False,
    ) -> _Exchange:
        return _Exchange(self._links, self._caller, method, url, data, dict(headers or {}), timeout)

    async def close(self) -> None:
        pass
