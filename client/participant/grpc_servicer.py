"""gRPC participants: the kit's store semantics behind the `Participant`
service of `proto/coordinator.proto`.

    class Orders(ParticipantServicer):
        async def execute(self, path, body):       # a saga step's action
            if body["qty"] > 10:
                raise BusinessFailure("too many", code="over_limit")
            return {"order_id": "o-1"}             # any JSON value: the output

        async def compensate(self, path, body):    # its compensation
            return {"cancelled": True}

        async def prepare(self, tx_id, body):      # 2PC: do the work durably
            return True                            # True = vote yes
        async def commit(self, tx_id): ...         # idempotent
        async def abort(self, tx_id): ...          # idempotent

    server, port = await serve_participant(Orders(SQLiteStore("orders.db")))
    ...
    await server.stop(grace=1)

Over TLS: ``serve_participant(..., tls=ServerTls(cert, key,
client_ca_file=...))`` (client/participant/serving.py), registered with
``{"grpc": "host:port", "tls": true}``.

Implement the saga pair, the 2PC trio, or both; an RPC whose methods are
not overridden answers UNIMPLEMENTED (a definite failure). Methods may be
`async def` or plain functions. The idempotency key and the fence are read
from the message fields, or from the metadata `idempotency-key` /
`coordinator-fence` when a field is empty (both given and different ->
INVALID_ARGUMENT).

Every call, in this order:

0. With `keys=` (a dict key id -> secret), the metadata
   `coordinator-signature` must be a valid `signing.py` signature (method:
   the RPC name, path: the call's path, body: body_json), else
   UNAUTHENTICATED `unauthorized`, before anything else is checked, stored
   or answered; with `require_fence=True` a call without a fence is
   INVALID_ARGUMENT. Without keys nothing is verified, as before. With
   keys, Execute/Compensate answers are bound to the RPC, path and body:
   the key replayed with another one is INVALID_ARGUMENT `key_reused`.
1. The key is required (1..KEY_CHARS_MAX visible ASCII, and of the RPC's
   form: below), a non-empty body must be JSON of at most BODY_BYTES_MAX
   bytes and a fence must be TERM:INDEX, else INVALID_ARGUMENT.
   Then a TERM lower than the highest seen -> FAILED_PRECONDITION
   `stale_fence` (not stored: the new leader retrying the same key gets
   through); a higher TERM is recorded.

Execute / Compensate then do what `saga.saga_participant` does over HTTP,
with the same store records (an answer is stored as a `Record` with an
HTTP-like status, so one store may serve both transports):

2. A key ending in the other RPC's phase (`/compensation` on Execute,
   `/action` on Compensate) is INVALID_ARGUMENT. Calls of one saga branch
   (`{saga}/{step}/action|compensation`) run one at a time.
3. A key already answered -> the stored answer again, with the trailing
   metadata `idempotent-replayed: true`; the method is not called.
4. Compensate whose action left no trace (null compensation: never
   received, or its method raised, below) -> OK
   `{"compensated": false, "reason": "action never seen"}`, stored.
   Execute after its compensation started (hanging action) ->
   FAILED_PRECONDITION `compensated`, stored.
5. Otherwise the key is marked attempted and the method runs. Its return
   value (OK) or its `BusinessFailure` (the failure's status) is stored
   before it is sent. An output that cannot be stored (not JSON, over
   BODY_BYTES_MAX) is replaced by a stored INTERNAL `not_replayable`, so
   retries see the same answer and the coordinator compensates the step.
   Any other exception is not stored: gRPC answers UNKNOWN, the coordinator
   retries, and the method runs again.

As over HTTP (`saga.py`, "The rule"): an Execute whose method raised an
exception other than BusinessFailure leaves no trace (the attempted mark it
made is cleared), so a later Compensate is a null compensation and
`compensate` is not called. `execute` must therefore make an exception mean
"no effect" (e.g. one database transaction). A method that never came back
(the call cancelled, `asyncio.CancelledError`, or the process crashed) keeps
its mark: `compensate` is called and must tolerate "nothing to undo".

Prepare / Commit / Abort go through
`coordinator.client.participant.twopc.TwoPhaseParticipant` (its table:
prepare -> Vote; commit/abort -> OK `{"state": ...}` or FAILED_PRECONDITION
`not_prepared` / `aborted` / `committed`); the key must be
`{tx_id}/{service}/{phase}` with the RPC's phase. The path is not passed to
the 2PC methods: use one store (one servicer) per 2PC resource.

Kit limits answer RESOURCE_EXHAUSTED (store full, too many keys in flight),
which the coordinator retries.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant import signing
from coordinator.client.participant._http import KeyedLocks, LocksExhausted
from coordinator.client.participant.errors import (
    LimitExceededError,
    ParticipantKitError,
    SignatureError,
    StoreFullError,
)
from coordinator.client.participant.limits import (
    BODY_BYTES_MAX,
    FENCE_INDEX_MAX,
    FENCE_PATTERN,
    FENCE_TERM_MAX,
    KEY_CHARS_MAX,
    KEY_PATTERN,
    LOCKS_MAX_DEFAULT,
    TX_ID_PATTERN,
)
from coordinator.client.participant.saga import ACTION, COMPENSATION, Branch, answer_without_handler, matches
from coordinator.client.participant.serving import ServerTls
from coordinator.client.participant.store import IdempotencyStore, Record, TransactionState
from coordinator.client.participant.twopc import TwoPhaseParticipant

__all__ = [
    "BUSINESS_STATUSES",
    "FENCE_METADATA",
    "KEY_METADATA",
    "REPLAYED_METADATA",
    "BusinessFailure",
    "ParticipantServicer",
    "serve_participant",
]

KEY_METADATA = "idempotency-key"
FENCE_METADATA = "coordinator-fence"
# Trailing metadata on an answer replayed from the store.
REPLAYED_METADATA = "idempotent-replayed"

# The statuses a BusinessFailure may carry (the coordinator does not retry
# them) and the HTTP status its stored record gets.
BUSINESS_STATUSES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
}
# A stored record without a gRPC status of its own (written by the HTTP
# kit: the hanging-action refusal, an HTTP handler's answer) is replayed
# with the status of its HTTP status; another 4xx -> FAILED_PRECONDITION,
# a 5xx (not_replayable) -> INTERNAL, which the coordinator retries.
_STATUS_OF_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
}

_PHASES_2PC = ("prepare", "commit", "abort")


class BusinessFailure(ParticipantKitError):
    """Raised by a servicer method: a definite no, stored and replayed.

    `status` is one of BUSINESS_STATUSES (default FAILED_PRECONDITION);
    `code` a short word for the reason, sent before the message in the
    status details (`"{code}: {message}"`)."""

    def __init__(
        self, message: str, *, code: str = "rejected", status: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    ) -> None:
        if status not in BUSINESS_STATUSES:
            names = ", ".join(s.name for s in BUSINESS_STATUSES)
            raise ValueError(f"a business failure's status is one of {names}, not {status.name}")
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def record(self) -> Record:
        error = {"code": self.code, "message": self.message, "grpc_status": self.status.name}
        return Record.from_json(BUSINESS_STATUSES[self.status], {"error": error})


class _Refused(Exception):
    """A check's refusal, answered with `status` and not stored."""

    def __init__(self, status: grpc.StatusCode, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.details = f"{code}: {message}"


@dataclass(frozen=True)
class _Call:
    key: str
    fence_term: int | None
    path: str
    body: Any


@dataclass(frozen=True)
class _Answer:
    """What an RPC sends: `message` when OK, else `status` and `details`."""

    message: Any = None
    status: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    replayed: bool = False

    async def send(self, context: grpc.aio.ServicerContext) -> Any:
        trailing = ((REPLAYED_METADATA, "true"),) if self.replayed else ()
        if self.status is grpc.StatusCode.OK:
            if trailing:
                context.set_trailing_metadata(trailing)
            return self.message
        await context.abort(self.status, self.details, trailing_metadata=trailing)


class ParticipantServicer(coordinator_pb2_grpc.ParticipantServicer):
    """Base class of a gRPC participant (module docstring). Override
    `execute`/`compensate` and/or `prepare`/`commit`/`abort`."""

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        clock: Callable[[], float] = time.time,
        locks_max: int = LOCKS_MAX_DEFAULT,
        keys: Mapping[str, bytes] | None = None,
        require_fence: bool = False,
        signature_window_s: float = signing.SIGNATURE_WINDOW_S_DEFAULT,
    ) -> None:
        self.store = store
        self._keys = None if keys is None else signing.check_keys(keys)
        self._require_fence = bool(require_fence)
        self._signature_window_s = signing.check_window(signature_window_s)
        self._clock = clock
        self._locks = KeyedLocks(locks_max)
        # The 2PC state machine of the HTTP kit, with this servicer as its
        # handler; hand it to `TerminationResolver` to settle old prepares.
        self.twopc = TwoPhaseParticipant(self, store, clock=clock, locks_max=locks_max)

    # -- what a participant implements ------------------------------------------
    def execute(self, path: str, body: Any) -> Any | Awaitable[Any]:
        """Run the action of a saga step; return its output (JSON value)."""
        raise NotImplementedError

    def compensate(self, path: str, body: Any) -> Any | Awaitable[Any]:
        """Undo the action of a saga step (tolerate "nothing to undo")."""
        raise NotImplementedError

    def prepare(self, tx_id: str, body: Any) -> bool | Awaitable[bool]:
        """Do the transaction's work durably; True votes yes. Safe to repeat."""
        raise NotImplementedError

    def commit(self, tx_id: str) -> None | Awaitable[None]:
        """Make a prepared transaction's work visible. Idempotent."""
        raise NotImplementedError

    def abort(self, tx_id: str) -> None | Awaitable[None]:
        """Undo a transaction's prepared work. Idempotent."""
        raise NotImplementedError

    # -- the RPCs ----------------------------------------------------------------------
    async def Execute(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._saga_rpc(ACTION, request, context)

    async def Compensate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._saga_rpc(COMPENSATION, request, context)

    async def Prepare(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._twopc_rpc("prepare", request, context)

    async def Commit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._twopc_rpc("commit", request, context)

    async def Abort(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._twopc_rpc("abort", request, context)

    # -- sagas ---------------------------------------------------------------------------
    async def _saga_rpc(self, phase: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        method = "execute" if phase == ACTION else "compensate"

        async def answer() -> _Answer:
            digest = self._authenticate(method.capitalize(), request, context)
            self._check_implemented((method,))
            call = _read_call(request, context)
            branch = Branch.of(call.key)
            if branch is not None and branch.phase != phase:
                raise _invalid(f"the key ends in /{branch.phase}; {method} takes keys ending in /{phase}")
            self._check_fence(call)
            async with self._locks.hold(call.key if branch is None else branch.prefix):
                record, replayed = await self._saga_record(getattr(self, method), call, branch, digest)
            return _answer_of_record(record, replayed)

        return await _guarded(answer, context)

    async def _saga_record(
        self, method: Callable[[str, Any], Any], call: _Call, branch: Branch | None, digest: str
    ) -> tuple[Record, bool]:
        """The stored answer for the call's key (computing it if due) and
        whether it was replayed."""
        stored = self.store.get(call.key)
        if stored is not None:
            if not matches(stored, digest):
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "key_reused",
                    f"{call.key} was answered for another RPC, path or body; use a new key",
                )
            return stored, True
        if branch is not None:
            early = answer_without_handler(self.store, branch)
            if early is not None:
                early = dataclasses.replace(early, request_digest=digest)
                return self.store.put_if_absent(call.key, early), False
        marked = self.store.mark_attempted(call.key)
        try:
            output = await _maybe_await(method(call.path, call.body))
        except BusinessFailure as failure:
            record = failure.record()
        except Exception:
            # No trace (module docstring); a BaseException (CancelledError:
            # the call cancelled, the process dying) keeps the mark.
            if marked:
                self.store.clear_attempted(call.key)
            raise
        else:
            record = _record_of_output(output)
        record = dataclasses.replace(record, request_digest=digest)
        stored = self.store.put_if_absent(call.key, record)
        assert stored is record, f"{call.key} answered twice under its lock"
        return record, False

    # -- two-phase commit -------------------------------------------------------------------
    async def _twopc_rpc(self, phase: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        assert phase in _PHASES_2PC

        async def answer() -> _Answer:
            self._authenticate(phase.capitalize(), request, context)
            self._check_implemented(_PHASES_2PC)
            call = _read_call(request, context)
            tx_id = _transaction_id(call.key, phase)
            self._check_fence(call)
            if phase == "prepare":
                vote = await self.twopc.prepare(tx_id, call.body)
                return _Answer(coordinator_pb2.Vote(yes=vote))
            if phase == "commit":
                state = await self.twopc.commit(tx_id)
                if state is TransactionState.COMMITTED:
                    return _state_answer(state)
                if state is TransactionState.ABORTED:
                    raise _precondition("aborted", f"transaction {tx_id} was aborted")
                raise _precondition("not_prepared", f"transaction {tx_id} was not prepared here")
            state = await self.twopc.abort(tx_id)
            if state is TransactionState.ABORTED:
                return _state_answer(state)
            raise _precondition("committed", f"transaction {tx_id} was committed")

        return await _guarded(answer, context)

    # -- shared checks -------------------------------------------------------------------------
    def _authenticate(self, rpc: str, request: Any, context: grpc.aio.ServicerContext) -> str:
        """Check the fence is there if required and the signature if keys are
        configured, before anything else; return the request digest the
        answer is bound to ("" without keys)."""
        metadata = _metadata(context)
        fence = request.fence or metadata.get(FENCE_METADATA, "")
        if self._require_fence and not fence:
            raise _invalid(f"the fence is required (field fence or metadata {FENCE_METADATA})")
        if self._keys is None:
            return ""
        body = request.body_json.encode("utf-8", "surrogatepass")
        try:
            signing.verify(
                metadata.get(signing.SIGNATURE_METADATA),
                self._keys,
                method=rpc,
                path=request.path,
                idempotency_key=request.idempotency_key or metadata.get(KEY_METADATA, ""),
                fence=fence,
                body=body,
                now=self._clock(),
                window_s=self._signature_window_s,
            )
        except SignatureError as error:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "unauthorized", str(error)) from None
        return signing.request_digest(rpc, request.path, body)

    def _check_implemented(self, methods: Sequence[str]) -> None:
        missing = [name for name in methods if getattr(type(self), name) is getattr(ParticipantServicer, name)]
        if missing:
            raise _Refused(
                grpc.StatusCode.UNIMPLEMENTED,
                "unimplemented",
                f"{type(self).__name__} does not implement {', '.join(missing)}",
            )

    def _check_fence(self, call: _Call) -> None:
        """Record a higher fence term; refuse a lower one (not stored).

        Only the term is compared: calls of one leader may arrive out of
        order, so their indexes say nothing about staleness."""
        if call.fence_term is None:
            return
        highest = self.store.observe_fence_term(call.fence_term)
        if call.fence_term < highest:
            raise _precondition(
                "stale_fence", f"fence term {call.fence_term} is lower than term {highest} already seen"
            )


async def serve_participant(
    servicer: ParticipantServicer, host: str = "127.0.0.1", port: int = 0, *, tls: ServerTls | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start a `grpc.aio` server with `servicer` on host:port (0: any free
    port); return the server and the bound port. Stop it with
    `await server.stop(grace)`. With `tls` (`serving.ServerTls`) it serves
    over TLS only, requiring a client certificate when `tls` names a
    client CA; register it with ``{"grpc": "host:port", "tls": true}``."""
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_ParticipantServicer_to_server(servicer, server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        if tls is not None:
            bound = server.add_secure_port(address, tls.grpc_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address}: {error}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, bound


# -- pieces --------------------------------------------------------------------------------------
async def _guarded(answer: Callable[[], Awaitable[_Answer]], context: grpc.aio.ServicerContext) -> Any:
    """Run `answer`, map the kit's refusals to statuses, and send the result.

    Other exceptions propagate: gRPC answers UNKNOWN and the coordinator retries."""
    try:
        result = await answer()
    except _Refused as refused:
        result = _Answer(status=refused.status, details=refused.details)
    except BusinessFailure as failure:  # from a 2PC method: not stored
        result = _Answer(status=failure.status, details=f"{failure.code}: {failure.message}")
    except LimitExceededError as error:
        result = _Answer(status=grpc.StatusCode.INVALID_ARGUMENT, details=f"invalid: {error}")
    except StoreFullError as error:
        result = _Answer(status=grpc.StatusCode.RESOURCE_EXHAUSTED, details=f"store_full: {error}")
    except LocksExhausted as error:
        result = _Answer(status=grpc.StatusCode.RESOURCE_EXHAUSTED, details=f"overloaded: {error}")
    return await result.send(context)


def _read_call(request: Any, context: grpc.aio.ServicerContext) -> _Call:
    """The call's key, fence term and body, checked for form."""
    metadata = _metadata(context)
    key = _field_or_metadata(request.idempotency_key, metadata.get(KEY_METADATA), "idempotency key")
    if not key:
        raise _invalid(f"the idempotency key is required (field idempotency_key or metadata {KEY_METADATA})")
    if KEY_PATTERN.fullmatch(key) is None:
        raise _invalid(f"the idempotency key must be 1..{KEY_CHARS_MAX} visible ASCII characters (KEY_CHARS_MAX)")
    fence = _field_or_metadata(request.fence, metadata.get(FENCE_METADATA), "fence")
    term = _parse_fence_term(fence) if fence else None
    return _Call(key, term, request.path, _parse_body(request.body_json))


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _invalid(message: str) -> _Refused:
    return _Refused(grpc.StatusCode.INVALID_ARGUMENT, "invalid", message)


def _precondition(code: str, message: str) -> _Refused:
    return _Refused(grpc.StatusCode.FAILED_PRECONDITION, code, message)


def _field_or_metadata(field: str, metadata: str | None, name: str) -> str:
    if field and metadata and field != metadata:
        raise _invalid(f"the {name} field and its metadata differ")
    return field or metadata or ""


def _parse_body(text: str) -> Any:
    if len(text) > BODY_BYTES_MAX or len(text.encode()) > BODY_BYTES_MAX:
        raise _invalid(f"body is over BODY_BYTES_MAX ({BODY_BYTES_MAX} bytes)")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise _invalid(f"body_json is not valid JSON: {error}") from None


def _parse_fence_term(fence: str) -> int:
    match = FENCE_PATTERN.fullmatch(fence)
    if match is None:
        raise _invalid("the fence must be TERM:INDEX, two non-negative integers")
    term, index = int(match.group(1)), int(match.group(2))
    if term > FENCE_TERM_MAX or index > FENCE_INDEX_MAX:
        raise _invalid("fence values must be at most 2**63 - 1")
    return term


def _transaction_id(key: str, phase: str) -> str:
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or parts[2] != phase or not parts[1]:
        raise _invalid(f"the idempotency key must be {{tx_id}}/{{service}}/{phase} here")
    if TX_ID_PATTERN.fullmatch(parts[0]) is None:
        raise _invalid("the transaction id in the key must match [A-Za-z0-9._:-]{1,128}")
    return parts[0]


def _record_of_output(output: Any) -> Record:
    """The stored record of a method's output, or not_replayable (INTERNAL)."""
    try:
        return Record.from_json(200, output)
    except (TypeError, ValueError) as error:  # LimitExceededError is a ValueError
        reason = str(error)
    error_body = {"code": "not_replayable", "message": f"answer cannot be stored: {reason}", "grpc_status": "INTERNAL"}
    return Record.from_json(500, {"error": error_body})


def _answer_of_record(record: Record, replayed: bool) -> _Answer:
    text = record.body.decode("utf-8", "replace")
    if 200 <= record.status < 300:
        return _Answer(coordinator_pb2.CallResult(output_json=text), replayed=replayed)
    status, code, message = _status_of_record(record.status, text)
    return _Answer(status=status, details=f"{code}: {message}", replayed=replayed)


def _status_of_record(http_status: int, text: str) -> tuple[grpc.StatusCode, str, str]:
    try:
        error = json.loads(text).get("error") if text else None
    except (ValueError, AttributeError):
        error = None
    error = error if isinstance(error, dict) else {}
    status = grpc.StatusCode.__members__.get(str(error.get("grpc_status", "")))
    if status is None:
        if 400 <= http_status < 500:
            status = _STATUS_OF_HTTP.get(http_status, grpc.StatusCode.FAILED_PRECONDITION)
        else:
            status = grpc.StatusCode.INTERNAL
    return status, str(error.get("code", f"http_{http_status}")), str(error.get("message", text))


def _state_answer(state: TransactionState) -> _Answer:
    return _Answer(coordinator_pb2.CallResult(output_json=json.dumps({"state": state.value})))


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
