"""The participant kit, for services that take part in sagas and 2PC.

What a Python/aiohttp service needs to take part in the coordinator's sagas
and two-phase commits (README.md, "How a workflow survives its leader", and
the participant protocol it describes).

    from coordinator.client.participant import SQLiteStore, saga_participant, participant_route

    store = SQLiteStore("orders.db")
    app = web.Application(middlewares=[saga_participant(store)])

    @participant_route
    async def create_order(request): ...

- `saga_participant(store, path_prefixes=...)`: middleware giving every
  request with an `Idempotency-Key` one answer per key (replayed on
  retries), fence checks, and the null-compensation / hanging-action rules.
- `add_twopc_routes(app, prefix, handler, store)`: POST
  {prefix}/prepare|commit|abort backed by a durable per-transaction state.
- `TerminationResolver`: asks the coordinator for the decision of
  transactions left prepared too long, and applies it.
- `MemoryStore` / `SQLiteStore`: the `IdempotencyStore` implementations.
- `serve_http(app, host, port, tls=ServerTls(cert, key, client_ca_file=...))`
  and `serve_participant(servicer, host, port, tls=...)`: serve a participant
  over HTTPS or gRPC over TLS, requiring the coordinator's client
  certificate when a client CA is given (client/participant/serving.py).
- `signing.sign` / `signing.verify`: the `Coordinator-Signature` HMAC both
  sides share; pass `keys={key_id: secret}` to `saga_participant`,
  `add_twopc_routes` or `ParticipantServicer` to refuse unsigned calls.
"""

from coordinator.client.participant.errors import (
    LimitExceededError,
    ParticipantKitError,
    SignatureError,
    StoreClosedError,
    StoreFullError,
)
from coordinator.client.participant.limits import BODY_BYTES_MAX, KEY_CHARS_MAX
from coordinator.client.participant.saga import (
    NULL_COMPENSATION_BODY,
    NULL_COMPENSATION_REFUSED_BODY,
    participant_route,
    saga_participant,
)
from coordinator.client.participant.serving import ServerTls, serve_http
from coordinator.client.participant.store import (
    IdempotencyStore,
    MemoryStore,
    Record,
    SQLiteStore,
    Transaction,
    TransactionState,
)
from coordinator.client.participant.termination import TerminationResolver
from coordinator.client.participant.twopc import CallbackHandler, TwoPhaseHandler, TwoPhaseParticipant, add_twopc_routes

from .grpc_servicer import BusinessFailure, ParticipantServicer, serve_participant

__all__ = [
    "BODY_BYTES_MAX",
    "BusinessFailure",
    "ParticipantServicer",
    "serve_http",
    "serve_participant",
    "ServerTls",
    "KEY_CHARS_MAX",
    "NULL_COMPENSATION_BODY",
    "NULL_COMPENSATION_REFUSED_BODY",
    "CallbackHandler",
    "IdempotencyStore",
    "LimitExceededError",
    "MemoryStore",
    "ParticipantKitError",
    "Record",
    "SQLiteStore",
    "SignatureError",
    "StoreClosedError",
    "StoreFullError",
    "TerminationResolver",
    "Transaction",
    "TransactionState",
    "TwoPhaseHandler",
    "TwoPhaseParticipant",
    "add_twopc_routes",
    "participant_route",
    "saga_participant",
]
