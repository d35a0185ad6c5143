"""Saga participant middleware for aiohttp: exactly-once answers per key.

    store = SQLiteStore("orders.db")
    app = web.Application(middlewares=[saga_participant(store, path_prefixes=["/orders"])])

    @participant_route                  # or list its path under path_prefixes
    async def create_order(request): ...

Which requests the middleware handles:

- a request carrying `Idempotency-Key` on any route (but the 2PC routes of
  `add_twopc_routes`, which keep their own state);
- a request without the key on a *participant route* is refused with 400.
  A route is a participant route when its handler is decorated with
  `@participant_route` (a function or a `web.View` class) or when the
  request path equals one of `path_prefixes` or lies below it
  (`"/orders"` covers `/orders` and `/orders/cancel`, not `/orders-x`);
- any other request without the key passes through untouched (and is not
  verified even with `keys`: it is not a participant call), and so does
  every request that matches no route (404/405 are not stored).

For a request it handles, in this order:

0. With `keys` (a dict key id -> secret), the `Coordinator-Signature`
   header must be valid (`signing.py`: HMAC-SHA256 over method, path,
   key, fence, body and time, within `signature_window_s`), else 401
   `unauthorized`, before anything is stored or answered. With
   `require_fence=True` a request without `Coordinator-Fence` is 400
   `invalid` (a call could otherwise skip the fence check). Without keys
   nothing is verified, as before. With keys the middleware reads the body
   first, so handlers read it through `request.read()`, `json()` or
   `text()` (aiohttp keeps the bytes), not `request.content`.
1. `Coordinator-Fence: TERM:INDEX` malformed -> 400 `invalid`; a TERM lower
   than the highest term seen -> 409 `stale_fence` (not stored: the new
   leader retrying the same key gets through); a higher TERM is recorded.
   A request without the fence header is not fenced.
2. Requests whose keys share a saga branch (`{saga}/{step}/action` and
   `{saga}/{step}/compensation`), or the same key, run one at a time
   (an asyncio lock per branch; at most `locks_max` in flight, beyond -> 503
   `overloaded`).
3. A key already answered -> the stored answer (status, body, content type)
   again, with header `Idempotent-Replayed: true`; the handler is not called.
   With keys, answers are bound to the request's method, path and body
   (`signing.request_digest`): the key replayed with another one is 422
   `key_reused` (not stored), not the stored answer.
4. `.../compensation` whose `.../action` left no trace (null compensation:
   never received, or its handler answered non-definitely or raised, below)
   -> a tombstone is stored and answered: 200
   `{"compensated": false, "reason": "action never seen"}`; one whose action
   answered a definite failure (a stored 4xx: it did nothing) -> 200
   `{"compensated": false, "reason": "action was refused"}`. The coordinator
   sends these when the action's answer was lost and the step ended unknown.
   `.../action` after its compensation was answered or started (hanging
   action) -> 409 `compensated`, stored. The handler is not called.
5. Otherwise the key is marked *attempted* and the handler runs. A 2xx or a
   4xx other than 408/429 is stored before it is sent; 408, 429, 3xx, 5xx
   and exceptions are not stored, so the coordinator's retry runs the
   handler again, and they clear the attempted mark this call made.

The rule: an action whose handler *returned* a non-definite answer (3xx,
408, 429, 5xx) or raised an `Exception` leaves no trace, so a compensation
arriving after it is a null compensation (the tombstone of step 4): the
compensation handler is not called. Without this, a compensation would undo
what never happened (refund a charge never made). Handlers must therefore
make a 5xx or an exception mean "no effect", e.g. by doing their work in one
database transaction that the error rolls back; a handler that cannot
promise it must answer a definite error only after undoing its partial work.
A handler that never came back (the process crashed mid-handler, or the
request task was cancelled: `asyncio.CancelledError`, a BaseException) keeps
its mark, as does an earlier such attempt when a later one fails: it may
have had effects, so the compensation handler is called, and compensation
handlers must still tolerate "nothing to undo".

Handlers must return a `web.Response` (e.g. `web.json_response`) of at
most BODY_BYTES_MAX bytes; a definite
answer that cannot be replayed (bigger, or streamed) is replaced by a stored
500 `not_replayable`, so retries neither re-run the handler nor see a
different answer, and the coordinator ends up compensating the step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import hdrs, web

from coordinator.client.participant._http import (
    IDEMPOTENCY_KEY_HEADER,
    MARK_ATTRIBUTE,
    MARK_EXEMPT,
    MARK_PARTICIPANT,
    KeyedLocks,
    LocksExhausted,
    RequestAuth,
    RequestRefused,
    check_fence,
    error_response,
    is_definite,
    key_reused,
    limit_exceeded,
    parse_key,
    response_from_record,
    store_full,
)
from coordinator.client.participant.errors import LimitExceededError, StoreFullError
from coordinator.client.participant.limits import BODY_BYTES_MAX, LOCKS_MAX_DEFAULT
from coordinator.client.participant.signing import SIGNATURE_WINDOW_S_DEFAULT
from coordinator.client.participant.store import IdempotencyStore, Record

__all__ = ["NULL_COMPENSATION_BODY", "NULL_COMPENSATION_REFUSED_BODY", "participant_route", "saga_participant"]

ACTION = "action"
COMPENSATION = "compensation"
NULL_COMPENSATION_BODY = {"compensated": False, "reason": "action never seen"}
NULL_COMPENSATION_REFUSED_BODY = {"compensated": False, "reason": "action was refused"}


def is_refusal(status: int) -> bool:
    """A definite failure the kit stores: 4xx but 408 and 429 (the business said no)."""
    return 400 <= status < 500 and status not in (408, 429)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
H = TypeVar("H")


def participant_route(handler: H) -> H:
    """Mark an aiohttp handler (function or web.View class) as a saga
    participant route: requests to it must carry an Idempotency-Key."""
    setattr(handler, MARK_ATTRIBUTE, MARK_PARTICIPANT)
    return handler


def saga_participant(
    store: IdempotencyStore,
    *,
    path_prefixes: Iterable[str] = (),
    locks_max: int = LOCKS_MAX_DEFAULT,
    keys: Mapping[str, bytes] | None = None,
    require_fence: bool = False,
    signature_window_s: float = SIGNATURE_WINDOW_S_DEFAULT,
    clock: Callable[[], float] = time.time,
) -> Middleware:
    """The aiohttp middleware described in the module docstring."""
    prefixes = tuple(_normalise_prefix(prefix) for prefix in path_prefixes)
    locks = KeyedLocks(locks_max)
    auth = RequestAuth(keys, require_fence=require_fence, window_s=signature_window_s, clock=clock)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await handler(request)  # no such route (404/405): nothing to keep
        mark = getattr(request.match_info.handler, MARK_ATTRIBUTE, None)
        if mark == MARK_EXEMPT:
            return await handler(request)
        raw_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if raw_key is None and mark != MARK_PARTICIPANT and not _under(request.path, prefixes):
            return await handler(request)
        try:
            digest = await auth.check(request, BODY_BYTES_MAX)
            key = parse_key(raw_key)
            check_fence(request, store)
            branch = Branch.of(key)
            async with locks.hold(key if branch is None else branch.prefix):
                return await _answer(request, handler, store, key, branch, digest)
        except RequestRefused as refused:
            return refused.response
        except LimitExceededError as error:
            return limit_exceeded(error)
        except StoreFullError as error:
            return store_full(error)
        except LocksExhausted as error:
            return error_response(503, "overloaded", str(error))

    return middleware


def _normalise_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError(f"path prefix must start with '/': {prefix!r}")
    return prefix.rstrip("/")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


@dataclass(frozen=True)
class Branch:
    """One saga step as seen by a participant: its action and compensation."""

    prefix: str
    phase: str

    @staticmethod
    def of(key: str) -> Branch | None:
        prefix, separator, phase = key.rpartition("/")
        if separator and prefix and phase in (ACTION, COMPENSATION):
            return Branch(prefix, phase)
        return None

    @property
    def action_key(self) -> str:
        return f"{self.prefix}/{ACTION}"

    @property
    def compensation_key(self) -> str:
        return f"{self.prefix}/{COMPENSATION}"


async def _answer(
    request: web.Request, handler: Handler, store: IdempotencyStore, key: str, branch: Branch | None, digest: str
) -> web.StreamResponse:
    stored = store.get(key)
    if stored is not None:
        if not matches(stored, digest):
            return key_reused(key)
        return response_from_record(stored, replayed=True)
    if branch is not None:
        early = answer_without_handler(store, branch)
        if early is not None:
            early = dataclasses.replace(early, request_digest=digest)
            return response_from_record(store.put_if_absent(key, early), replayed=False)
    marked = store.mark_attempted(key)
    try:
        response = await _call(handler, request)
    except Exception:
        # A handler that raised made no change (module docstring); a
        # BaseException (CancelledError: a cancel or a dying process) keeps
        # the mark, since the handler may have been stopped half-way.
        if marked:
            store.clear_attempted(key)
        raise
    if not is_definite(response.status):
        if marked:
            store.clear_attempted(key)
        return response
    record, replaced = _record_of(response)
    record = dataclasses.replace(record, request_digest=digest)
    stored = store.put_if_absent(key, record)
    assert stored is record, f"{key} answered twice under its lock"
    return response_from_record(record, replayed=False) if replaced else response


def matches(stored: Record, digest: str) -> bool:
    """Whether a stored answer may be replayed for a request with `digest`
    (an answer or a request that is not bound matches any)."""
    return not stored.request_digest or not digest or stored.request_digest == digest


def answer_without_handler(store: IdempotencyStore, branch: Branch) -> Record | None:
    """The null-compensation tombstone or the hanging-action refusal, if due."""
    if branch.phase == COMPENSATION:
        answered = store.get(branch.action_key)
        if answered is not None and is_refusal(answered.status):
            # The action answered a definite failure: it did nothing, so there is
            # nothing to undo (the coordinator compensates it when that answer
            # was lost on the way and the step ended unknown).
            return Record.from_json(200, NULL_COMPENSATION_REFUSED_BODY)
        action_seen = answered is not None or store.was_attempted(branch.action_key)
        return None if action_seen else Record.from_json(200, NULL_COMPENSATION_BODY)
    compensation_seen = store.get(branch.compensation_key) is not None or store.was_attempted(branch.compensation_key)
    if not compensation_seen:
        return None
    return Record.from_json(
        409,
        {
            "error": {
                "code": "compensated",
                "message": f"{branch.compensation_key} was already received; the action will not run",
            }
        },
    )


async def _call(handler: Handler, request: web.Request) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exception:
        if not is_definite(exception.status):
            raise
        return web.Response(status=exception.status, body=exception.body, headers=exception.headers)


def _record_of(response: web.StreamResponse) -> tuple[Record, bool]:
    """The record to store for a definite answer, and whether it replaces it."""
    body: Any = response.body if isinstance(response, web.Response) else None
    if isinstance(response, web.Response) and body is None:
        body = b""
    if isinstance(body, (bytes, bytearray)):
        content_type = response.headers.get(hdrs.CONTENT_TYPE) or response.content_type
        try:
            return Record(response.status, bytes(body), content_type), False
        except LimitExceededError as error:
            reason = str(error)
    else:
        reason = "the handler did not return a web.Response with a bytes body"
    replacement = Record.from_json(
        500, {"error": {"code": "not_replayable", "message": f"answer cannot be stored: {reason}"}}
    )
    return replacement, True
