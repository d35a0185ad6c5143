"""HTTP pieces the saga middleware and the 2PC routes share (private).

Header parsing, the fence check, error bodies, replay of stored answers and
the bounded map of per-key asyncio locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coordinator.client.participant import signing
from coordinator.client.participant.errors import LimitExceededError, SignatureError, StoreFullError
from coordinator.client.participant.limits import (
    FENCE_INDEX_MAX,
    FENCE_PATTERN,
    FENCE_TERM_MAX,
    KEY_CHARS_MAX,
    KEY_PATTERN,
)
from coordinator.client.participant.store import IdempotencyStore, Record

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
FENCE_HEADER = "Coordinator-Fence"
# Set on an answer that was replayed from the store instead of computed.
REPLAYED_HEADER = "Idempotent-Replayed"

# Attribute set on a route handler by the kit: "participant" marks a saga
# participant route, "exempt" a route the saga middleware must leave alone
# (the 2PC routes do their own bookkeeping).
MARK_ATTRIBUTE = "__participant_kit__"
MARK_PARTICIPANT = "participant"
MARK_EXEMPT = "exempt"


class RequestRefused(Exception):
    """Carries the error response a check produced; caught at the edge."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def invalid(message: str) -> RequestRefused:
    return RequestRefused(error_response(400, "invalid", message))


def store_full(error: StoreFullError) -> web.Response:
    return error_response(503, "store_full", str(error))


@dataclass(frozen=True)
class Fence:
    term: int
    index: int


def parse_key(raw: str | None) -> str:
    """The request's Idempotency-Key, or RequestRefused(400)."""
    if raw is None:
        raise invalid(f"the {IDEMPOTENCY_KEY_HEADER} header is required on this route")
    if KEY_PATTERN.fullmatch(raw) is None:
        raise invalid(
            f"{IDEMPOTENCY_KEY_HEADER} must be 1..{KEY_CHARS_MAX} visible ASCII"
            " characters without spaces (KEY_CHARS_MAX)"
        )
    return raw


def parse_fence(raw: str | None) -> Fence | None:
    """The request's Coordinator-Fence (None when absent), or RequestRefused(400)."""
    if raw is None:
        return None
    match = FENCE_PATTERN.fullmatch(raw)
    if match is None:
        raise invalid(f"{FENCE_HEADER} must be TERM:INDEX, two non-negative integers")
    term, index = int(match.group(1)), int(match.group(2))
    if term > FENCE_TERM_MAX or index > FENCE_INDEX_MAX:
        raise invalid(f"{FENCE_HEADER} values must be at most 2**63 - 1")
    return Fence(term, index)


def check_fence(request: web.Request, store: IdempotencyStore) -> None:
    """Record a higher fence term; refuse a lower one with 409 stale_fence.

    Only the term is compared: calls of one leader may arrive out of order,
    so their indexes say nothing about staleness.
    """
    fence = parse_fence(request.headers.get(FENCE_HEADER))
    if fence is None:
        return
    highest = store.observe_fence_term(fence.term)
    if fence.term < highest:
        raise RequestRefused(
            error_response(
                409,
                "stale_fence",
                f"fence term {fence.term} is lower than term {highest} already seen",
                term=fence.term,
                highest_term=highest,
            )
        )


def response_from_record(record: Record, *, replayed: bool) -> web.Response:
    response = web.Response(status=record.status, body=record.body, content_type=_mime_type(record.content_type))
    charset = _charset(record.content_type)
    if charset is not None:
        response.charset = charset
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


def _mime_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip() or "application/octet-stream"


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def is_definite(status: int) -> bool:
    """Answers the coordinator will not retry: 2xx, and 4xx but 408 and 429."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429))


async def read_body(request: web.Request, bytes_max: int) -> bytes:
    """The request's body bytes (read once; aiohttp keeps them for the
    handler's read()/json()/text()), or RequestRefused(400)."""
    if request.content_length is not None and request.content_length > bytes_max:
        raise invalid(f"body is over BODY_BYTES_MAX ({bytes_max} bytes)")
    try:
        raw = await request.read()  # bounded by the app's client_max_size too
    except web.HTTPRequestEntityTooLarge:
        raise invalid(f"body is over the app's client_max_size ({request.client_max_size} bytes)") from None
    if len(raw) > bytes_max:
        raise invalid(f"body is over BODY_BYTES_MAX ({bytes_max} bytes)")
    return raw


async def read_json_body(request: web.Request, bytes_max: int) -> Any:
    """The request's JSON body (None when empty), or RequestRefused(400)."""
    raw = await read_body(request, bytes_max)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise invalid(f"body is not valid JSON: {error}") from None


class LocksExhausted(Exception):
    """More distinct keys in flight than the lock map may hold."""


class _LockEntry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """One asyncio.Lock per key while requests for that key are in flight.

    An entry lives as long as someone holds or waits for it, so the map only
    holds keys in flight; beyond `keys_max` of them, `hold` raises
    LocksExhausted instead of growing.
    """

    def __init__(self, keys_max: int) -> None:
        assert keys_max > 0
        self._keys_max = keys_max
        self._entries: dict[str, _LockEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._keys_max:
                raise LocksExhausted(f"{self._keys_max} keys in flight (LOCKS_MAX)")
            entry = self._entries[key] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            assert entry.users >= 0
            if entry.users == 0:
                del self._entries[key]


def limit_exceeded(error: LimitExceededError) -> web.Response:
    return error_response(400, "invalid", str(error))


class RequestAuth:
    """The checks a call passes before the kit stores or answers anything:
    a required fence header, and a valid `signing` signature when keys are
    configured. `check` returns the request digest the answer is bound to
    ("" without keys: answers are not bound)."""

    def __init__(
        self,
        keys: Mapping[str, bytes] | None,
        *,
        require_fence: bool,
        window_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = None if keys is None else signing.check_keys(keys)
        self.require_fence = bool(require_fence)
        self.window_s = signing.check_window(window_s)
        self.clock = clock

    async def check(self, request: web.Request, bytes_max: int) -> str:
        fence = request.headers.get(FENCE_HEADER)
        if fence is None and self.require_fence:
            raise invalid(f"the {FENCE_HEADER} header is required on this route")
        if self.keys is None:
            return ""
        body = await read_body(request, bytes_max)
        try:
            signing.verify(
                request.headers.get(signing.SIGNATURE_HEADER),
                self.keys,
                method=request.method,
                path=request.raw_path,
                idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER, ""),
                fence=fence or "",
                body=body,
                now=self.clock(),
                window_s=self.window_s,
            )
        except SignatureError as error:
            raise RequestRefused(error_response(401, "unauthorized", str(error))) from None
        return signing.request_digest(request.method, request.raw_path, body)


def key_reused(key: str) -> web.Response:
    return error_response(422, "key_reused", f"{key} was answered for another method, path or body; use a new key")
