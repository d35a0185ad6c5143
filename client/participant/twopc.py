"""Two-phase commit participant routes for aiohttp.

    class Ledger(TwoPhaseHandler):
        async def prepare(self, tx_id, body): ...   # do the work durably; True = yes
        async def commit(self, tx_id): ...          # make it visible (idempotent)
        async def abort(self, tx_id): ...           # undo it (idempotent)

    participant = add_twopc_routes(app, "/ledger", Ledger(), SQLiteStore("ledger.db"))

mounts `POST /ledger/prepare`, `/ledger/commit` and `/ledger/abort`. Each
call must carry `Idempotency-Key: {tx_id}/{service}/{phase}` (the phase
must match the route; otherwise 400) and may carry `Coordinator-Fence`
(checked as in the saga middleware: a lower term -> 409 `stale_fence`).
With `keys=` (and `require_fence=True`), calls are verified as in the saga
middleware before anything is read into the state machine: a missing or
bad `Coordinator-Signature` is 401 `unauthorized` (`signing.py`), a
missing fence 400.
`CallbackHandler(prepare=..., commit=..., abort=...)` takes plain functions
instead of a subclass; sync and async callables both work.

The participant keeps each transaction's state in the store and answers:

    call     state before              calls       state after       answer
    prepare  none, preparing           prepare()   prepared|refused  200 {"vote": "yes"|"no"}
    prepare  prepared, committed       -           (unchanged)       200 {"vote": "yes"}
    prepare  refused, aborted          -           (unchanged)       200 {"vote": "no"}
    commit   prepared                  commit()    committed         200 {"state": "committed"}
    commit   committed                 -           committed         200 {"state": "committed"}
    commit   none, preparing, refused  -           (unchanged)       409 not_prepared
    commit   aborted                   -           aborted           409 aborted
    abort    preparing, prepared       abort()     aborted           200 {"state": "aborted"}
    abort    none, refused, aborted    -           aborted           200 {"state": "aborted"}
    abort    committed                 -           committed         409 committed

An abort for a transaction never seen is recorded (presumed abort), so a
prepare arriving after it votes no.

`preparing` is written before prepare() runs: if prepare() raises (500, the
coordinator retries) or the process dies, a retried prepare runs it again
and an abort still calls abort(). So prepare() must be safe to repeat, and
commit()/abort() must be idempotent: they may run again after a crash
between the work and the state write. A `no` vote must hold nothing.

Calls for one transaction run one at a time (an asyncio lock per tx_id).
Use one store per 2PC resource: transactions are keyed by tx_id alone (the
saga middleware may share the store; its keys live elsewhere).
`termination.TerminationResolver` settles transactions left prepared.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from aiohttp import web

from coordinator.client.participant._http import (
    IDEMPOTENCY_KEY_HEADER,
    MARK_ATTRIBUTE,
    MARK_EXEMPT,
    KeyedLocks,
    LocksExhausted,
    RequestAuth,
    RequestRefused,
    check_fence,
    error_response,
    invalid,
    limit_exceeded,
    parse_key,
    read_json_body,
    store_full,
)
from coordinator.client.participant.errors import LimitExceededError, StoreFullError
from coordinator.client.participant.limits import BODY_BYTES_MAX, LOCKS_MAX_DEFAULT, TX_ID_PATTERN
from coordinator.client.participant.signing import SIGNATURE_WINDOW_S_DEFAULT
from coordinator.client.participant.store import IdempotencyStore, Transaction, TransactionState

__all__ = ["CallbackHandler", "TwoPhaseHandler", "TwoPhaseParticipant", "add_twopc_routes"]

PHASES = ("prepare", "commit", "abort")
T = TypeVar("T")


class TwoPhaseHandler(Protocol):
    """What a 2PC participant implements (subclass it or duck-type it).

    Methods may be `async def` or plain functions."""

    def prepare(self, tx_id: str, body: Any) -> bool | Awaitable[bool]: ...

    def commit(self, tx_id: str) -> None | Awaitable[None]: ...

    def abort(self, tx_id: str) -> None | Awaitable[None]: ...


class CallbackHandler:
    """A TwoPhaseHandler made of three callables."""

    def __init__(
        self,
        *,
        prepare: Callable[[str, Any], bool | Awaitable[bool]],
        commit: Callable[[str], None | Awaitable[None]],
        abort: Callable[[str], None | Awaitable[None]],
    ) -> None:
        self._prepare, self._commit, self._abort = prepare, commit, abort

    def prepare(self, tx_id: str, body: Any) -> bool | Awaitable[bool]:
        return self._prepare(tx_id, body)

    def commit(self, tx_id: str) -> None | Awaitable[None]:
        return self._commit(tx_id)

    def abort(self, tx_id: str) -> None | Awaitable[None]:
        return self._abort(tx_id)


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class TwoPhaseParticipant:
    """The per-transaction state machine behind the routes (table above).

    `add_twopc_routes` builds one; `TerminationResolver` takes it to share
    its per-transaction locks. The methods return the state after the call
    (None for a transaction never seen)."""

    def __init__(
        self,
        handler: TwoPhaseHandler,
        store: IdempotencyStore,
        *,
        clock: Callable[[], float] = time.time,
        locks_max: int = LOCKS_MAX_DEFAULT,
    ) -> None:
        self.handler = handler
        self.store = store
        self._clock = clock
        self._locks = KeyedLocks(locks_max)

    def _record(self, tx_id: str, state: TransactionState) -> TransactionState:
        self.store.put_transaction(Transaction(tx_id, state, self._clock()))
        return state

    async def prepare(self, tx_id: str, body: Any) -> bool:
        """Run prepare() once; return the vote (True = yes)."""
        async with self._locks.hold(tx_id):
            transaction = self.store.get_transaction(tx_id)
            if transaction is not None and transaction.state is not TransactionState.PREPARING:
                return transaction.state in (TransactionState.PREPARED, TransactionState.COMMITTED)
            self._record(tx_id, TransactionState.PREPARING)
            vote = await _maybe_await(self.handler.prepare(tx_id, body))
            if not isinstance(vote, bool):
                raise TypeError(f"prepare() must return a bool, not {type(vote).__name__}")
            self._record(tx_id, TransactionState.PREPARED if vote else TransactionState.REFUSED)
            return vote

    async def commit(self, tx_id: str) -> TransactionState | None:
        """Commit a prepared transaction; anything else is left as it is."""
        async with self._locks.hold(tx_id):
            transaction = self.store.get_transaction(tx_id)
            if transaction is None or transaction.state is not TransactionState.PREPARED:
                return None if transaction is None else transaction.state
            await _maybe_await(self.handler.commit(tx_id))
            return self._record(tx_id, TransactionState.COMMITTED)

    async def abort(self, tx_id: str) -> TransactionState:
        """Abort unless committed; abort() runs only if prepare() may have."""
        async with self._locks.hold(tx_id):
            transaction = self.store.get_transaction(tx_id)
            state = None if transaction is None else transaction.state
            if state in (TransactionState.COMMITTED, TransactionState.ABORTED):
                return state
            if state in (TransactionState.PREPARING, TransactionState.PREPARED):
                await _maybe_await(self.handler.abort(tx_id))
            return self._record(tx_id, TransactionState.ABORTED)

    def state(self, tx_id: str) -> TransactionState | None:
        transaction = self.store.get_transaction(tx_id)
        return None if transaction is None else transaction.state


def add_twopc_routes(
    app: web.Application,
    resource_prefix: str,
    handler: TwoPhaseHandler,
    store: IdempotencyStore,
    *,
    clock: Callable[[], float] = time.time,
    locks_max: int = LOCKS_MAX_DEFAULT,
    keys: Mapping[str, bytes] | None = None,
    require_fence: bool = False,
    signature_window_s: float = SIGNATURE_WINDOW_S_DEFAULT,
) -> TwoPhaseParticipant:
    """Mount POST {resource_prefix}/prepare|commit|abort; return the participant."""
    if resource_prefix and not resource_prefix.startswith("/"):
        raise ValueError(f"resource prefix must start with '/': {resource_prefix!r}")
    auth = RequestAuth(keys, require_fence=require_fence, window_s=signature_window_s, clock=clock)
    prefix = resource_prefix.rstrip("/")
    participant = TwoPhaseParticipant(handler, store, clock=clock, locks_max=locks_max)

    async def prepare(request: web.Request) -> web.Response:
        tx_id = _transaction_id(request, store, "prepare")
        body = await read_json_body(request, BODY_BYTES_MAX)
        vote = await participant.prepare(tx_id, body)
        return web.json_response({"vote": "yes" if vote else "no"})

    async def commit(request: web.Request) -> web.Response:
        tx_id = _transaction_id(request, store, "commit")
        state = await participant.commit(tx_id)
        if state is TransactionState.COMMITTED:
            return web.json_response({"state": state.value})
        if state is TransactionState.ABORTED:
            return _conflict("aborted", f"transaction {tx_id} was aborted", state)
        return _conflict("not_prepared", f"transaction {tx_id} was not prepared here", state)

    async def abort(request: web.Request) -> web.Response:
        tx_id = _transaction_id(request, store, "abort")
        state = await participant.abort(tx_id)
        if state is TransactionState.ABORTED:
            return web.json_response({"state": state.value})
        return _conflict("committed", f"transaction {tx_id} was committed", state)

    for phase, route in (("prepare", prepare), ("commit", commit), ("abort", abort)):
        guarded = _guarded(route, auth)
        setattr(guarded, MARK_ATTRIBUTE, MARK_EXEMPT)
        app.router.add_post(f"{prefix}/{phase}", guarded)
    return participant


def _transaction_id(request: web.Request, store: IdempotencyStore, phase: str) -> str:
    """Check the key and fence of a 2PC call; return the key's tx_id."""
    assert phase in PHASES
    key = parse_key(request.headers.get(IDEMPOTENCY_KEY_HEADER))
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or parts[2] != phase or not parts[1]:
        raise invalid(f"{IDEMPOTENCY_KEY_HEADER} must be {{tx_id}}/{{service}}/{phase} here")
    tx_id = parts[0]
    if TX_ID_PATTERN.fullmatch(tx_id) is None:
        raise invalid("the transaction id in the key must match [A-Za-z0-9._:-]{1,128}")
    check_fence(request, store)
    return tx_id


def _conflict(code: str, message: str, state: TransactionState | None) -> web.Response:
    return error_response(409, code, message, state=None if state is None else state.value)


def _guarded(
    route: Callable[[web.Request], Awaitable[web.Response]], auth: RequestAuth
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def guarded(request: web.Request) -> web.Response:
        try:
            await auth.check(request, BODY_BYTES_MAX)
            return await route(request)
        except RequestRefused as refused:
            return refused.response
        except LimitExceededError as error:
            return limit_exceeded(error)
        except StoreFullError as error:
            return store_full(error)
        except LocksExhausted as error:
            return error_response(503, "overloaded", str(error))

    return guarded
