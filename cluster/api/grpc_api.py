"""The node's gRPC API: the `Coordinator` service of `proto/coordinator.proto`.

Every RPC decodes its message, calls the function of :mod:`coordinator.cluster.api.operations`
that the HTTP handler calls, and answers the object as JSON text written as
aiohttp's ``json_response`` writes it (``json.dumps``), so both transports
answer the same bytes. The server listens on the node's configured gRPC
address only.

Errors are mapped in one place, :func:`abort_details`: the status of the
error's code, and the trailing metadata ``coordinator-error-code`` (the HTTP
API's code), ``coordinator-leader`` (not_leader: the leader's gRPC address),
``coordinator-error-field`` (invalid) and ``retry-after`` (seconds).

| code                                             | status               | HTTP    |
| ------------------------------------------------ | -------------------- | ------- |
| invalid                                          | INVALID_ARGUMENT     | 400     |
| unauthorized                                     | UNAUTHENTICATED      | 401     |
| forbidden (the token's role is too low)          | PERMISSION_DENIED    | 403     |
| not_found                                        | NOT_FOUND            | 404     |
| conflict                                         | ALREADY_EXISTS       | 409     |
| too_large                                        | RESOURCE_EXHAUSTED   | 413     |
| overloaded                                       | RESOURCE_EXHAUSTED   | 429     |
| not_leader                                       | FAILED_PRECONDITION  | 307     |
| no_leader, suspended, not_written, outcome_unknown | UNAVAILABLE        | 503     |
| watch_expired (a Watch reached ``watch_life_s``)  | UNAVAILABLE          | 503     |
| internal                                         | INTERNAL             | 500     |

Choices: conflict is ALREADY_EXISTS, the status google.rpc pairs with 409
(a second definition for an existing id is the common case; a redrive of a
saga that is not stuck answers it too). too_large is RESOURCE_EXHAUSTED, the
status gRPC itself answers for a message over its size limit (which carries
no ``coordinator-error-code``: clients read a bare RESOURCE_EXHAUSTED as
too_large). not_leader is FAILED_PRECONDITION, as etcd answers "not leader":
retrying the same node is useless, retrying the leader is right; no_leader
is UNAVAILABLE (retry the same request later). A code not in the table gets
the status of its HTTP status (:data:`STATUS_BY_HTTP`), else UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.client.grpc_gen import coordinator_pb2_grpc
from coordinator.cluster.api import operations, roles
from coordinator.cluster.api.grpc_workers import first_message, serve_worker
from coordinator.cluster.api.operations import LeaderElsewhere
from coordinator.cluster.api.selection import FILTER_FIELDS
from coordinator.cluster.core.client_slots import ClientSlots, grpc_peer_host
from coordinator.cluster.core.errors import ApiError, Overloaded
from coordinator.cluster.core.node import Node
from coordinator.cluster.core.tokens import Token

__all__ = [
    "CODE_METADATA",
    "FIELD_METADATA",
    "LEADER_METADATA",
    "RETRY_AFTER_METADATA",
    "STATUS_BY_CODE",
    "STATUS_BY_HTTP",
    "WATCH_STREAMS_MAX",
    "CoordinatorService",
    "GrpcApi",
    "abort_details",
]

log = logging.getLogger(__name__)

CODE_METADATA = "coordinator-error-code"
LEADER_METADATA = "coordinator-leader"
FIELD_METADATA = "coordinator-error-field"
RETRY_AFTER_METADATA = "retry-after"
# A registry write's request id, the same on every retry (cluster/stores/requests.py).
IDEMPOTENCY_METADATA = "idempotency-key"

STATUS_BY_CODE: dict[str, grpc.StatusCode] = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.ALREADY_EXISTS,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "not_leader": grpc.StatusCode.FAILED_PRECONDITION,
    "no_leader": grpc.StatusCode.UNAVAILABLE,
    "suspended": grpc.StatusCode.UNAVAILABLE,
    "not_written": grpc.StatusCode.UNAVAILABLE,
    "outcome_unknown": grpc.StatusCode.UNAVAILABLE,
    "watch_expired": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
}
STATUS_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Watch streams open at once on one node; beyond it a Watch is overloaded.
WATCH_STREAMS_MAX = 1000
# Room in a request for what surrounds its JSON (names, ids): the JSON
# itself is held to the HTTP body limit, with the HTTP API's error.
ENVELOPE_BYTES = 64 * 1024
# On stop, calls in progress (watches) get this long before they are cancelled.
STOP_GRACE_S = 1.0
# Concurrent calls on one HTTP/2 connection (gRPC's default is unlimited).
STREAMS_PER_CONNECTION_MAX = 256
# Pings on an idle connection find a client that went away.
KEEPALIVE_TIME_S = 60.0
KEEPALIVE_TIMEOUT_S = 20.0


def abort_details(error: ApiError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status, message and trailing metadata that answer ``error``."""
    status = STATUS_BY_CODE.get(error.code) or STATUS_BY_HTTP.get(error.status, grpc.StatusCode.UNKNOWN)
    trailers = [(CODE_METADATA, error.code)]
    if isinstance(error, LeaderElsewhere):
        trailers.append((LEADER_METADATA, error.leader.grpc))
    if isinstance(error.extra.get("field"), str):
        trailers.append((FIELD_METADATA, error.extra["field"]))
    if error.retry_after_s is not None:
        trailers.append((RETRY_AFTER_METADATA, str(max(1, round(error.retry_after_s)))))
    return status, error.message, tuple(trailers)


def _json(value: Any) -> str:
    return json.dumps(value)  # what aiohttp's json_response writes


Handler = Callable[["CoordinatorService", Any, grpc.aio.ServicerContext], Awaitable[Any]]

# The token of the call being served (each RPC runs in a task of its own).
_CALLER: contextvars.ContextVar[Token | None] = contextvars.ContextVar("caller", default=None)


def _by() -> str | None:
    """The name of the call's token, what a write records as ``by``."""
    token = _CALLER.get()
    return token.name if token is not None else None


def _peer_address(context: Any) -> str | None:
    """The caller's address of a gRPC peer ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"), without the port."""
    peer = context.peer() if hasattr(context, "peer") else None
    if not isinstance(peer, str):
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.rsplit(":", 1)[0] if kind == "ipv4" else peer


def _unary(method: Handler) -> Handler:
    """Authorize, run, and answer an ApiError (or a bug) as the table says."""

    @functools.wraps(method)
    async def handler(self: CoordinatorService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _CALLER.set(self.authorize(context, method.__name__))
            return await method(self, request, context)
        except ApiError as error:
            failure = error
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - answered INTERNAL, as HTTP answers 500
            log.exception("unhandled error in %s", method.__name__)
            failure = ApiError("internal error; see the node's log")
        await context.abort(*abort_details(failure))

    return handler


def _streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """As :func:`_unary`, for a server-streaming RPC."""

    @functools.wraps(method)
    async def handler(self: CoordinatorService, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            _CALLER.set(self.authorize(context, method.__name__))
            async for message in method(self, request, context):
                yield message
            return
        except ApiError as error:
            failure = error
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("unhandled error in %s", method.__name__)
            failure = ApiError("internal error; see the node's log")
        await context.abort(*abort_details(failure))

    return handler


def _metadata(context: Any, key: str) -> str | None:
    """The first value of invocation metadata ``key``, or None."""
    return next((value for name, value in context.invocation_metadata() or () if name == key), None)


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    """The RPCs: decode, call :mod:`coordinator.cluster.api.operations`, encode."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.watches = 0
        limits = node.config.cluster.limits
        self.watch_slots = ClientSlots("watches", limits.watches_per_client_max)
        self.watch_life_s = limits.watch_life_s

    def authorize(self, context: grpc.aio.ServicerContext, rpc: str) -> Token | None:
        """With tokens configured (the node's current table): metadata
        ``authorization: Bearer TOKEN`` of a token whose role ``rpc`` needs
        (cluster/api/roles.py), else unauthorized or forbidden. The token,
        or None without tokens."""
        return roles.authorize(self.node.tokens, _metadata(context, "authorization"), roles.grpc_role(rpc), rpc)

    # -- cluster and services ------------------------------------------------------------
    @_unary
    async def Cluster(self, request: pb.ClusterRequest, context: Any) -> pb.ObjectReply:
        return pb.ObjectReply(object_json=_json(self.node.cluster_view()))

    @_unary
    async def PutService(self, request: pb.PutServiceRequest, context: Any) -> pb.ObjectReply:
        put = operations.put_service(
            self.node,
            request.name,
            request.definition_json,
            force=request.force,
            remote=_peer_address(context),
            request_id=_metadata(context, IDEMPOTENCY_METADATA),
            by=_by(),
        )
        return pb.ObjectReply(object_json=_json(await put))

    @_unary
    async def GetService(self, request: pb.GetServiceRequest, context: Any) -> pb.ObjectReply:
        return pb.ObjectReply(
            object_json=_json(await operations.get_service(self.node, request.name, stale=request.stale))
        )

    @_unary
    async def ListServices(self, request: pb.ListServicesRequest, context: Any) -> pb.ObjectReply:
        return pb.ObjectReply(object_json=_json(await operations.list_services(self.node, stale=request.stale)))

    @_unary
    async def DeleteService(self, request: pb.DeleteServiceRequest, context: Any) -> pb.ObjectReply:
        deleted = operations.delete_service(
            self.node, request.name, request_id=_metadata(context, IDEMPOTENCY_METADATA), by=_by()
        )
        return pb.ObjectReply(object_json=_json(await deleted))

    @_unary
    async def ServiceOutcomes(self, request: pb.ServiceOutcomesRequest, context: Any) -> pb.ObjectReply:
        answer = await operations.service_outcomes(
            self.node, request.name, after=request.after, limit=request.limit or None, stale=request.stale
        )
        return pb.ObjectReply(object_json=_json(answer))

    # -- sagas and transactions ---------------------------------------------------------------
    async def _submit(self, kind: str, request: pb.SubmitRequest, context: Any) -> pb.SubmitReply:
        view, created = await operations.submit_workflow(
            self.node,
            kind,
            request.definition_json,
            by=_by(),
            wait_s=request.wait_s,
            client=grpc_peer_host(context.peer()),
        )
        return pb.SubmitReply(object_json=_json(view), created=created)

    async def _get(self, kind: str, request: pb.GetWorkflowRequest, context: Any) -> pb.ObjectReply:
        view = await operations.get_workflow(
            self.node,
            kind,
            request.id,
            wait_s=request.wait_s,
            since=request.since or None,
            stale=request.stale,
            client=grpc_peer_host(context.peer()),
        )
        return pb.ObjectReply(object_json=_json(view))

    async def _list(self, kind: str, request: pb.ListWorkflowsRequest) -> pb.ObjectReply:
        views = await operations.list_workflows(
            self.node,
            kind,
            state=request.state or None,
            limit=request.limit or None,
            stale=request.stale,
            filters={name: getattr(request, name) or None for name in FILTER_FIELDS},  # "": absent
            order=request.order or None,
            after=request.after or None,
            view=request.view or None,
        )
        return pb.ObjectReply(object_json=_json(views))

    @_unary
    async def SubmitSaga(self, request: pb.SubmitRequest, context: Any) -> pb.SubmitReply:
        return await self._submit("saga", request, context)

    @_unary
    async def GetSaga(self, request: pb.GetWorkflowRequest, context: Any) -> pb.ObjectReply:
        return await self._get("saga", request, context)

    @_unary
    async def ListSagas(self, request: pb.ListWorkflowsRequest, context: Any) -> pb.ObjectReply:
        return await self._list("saga", request)

    @_unary
    async def SignalSaga(self, request: pb.SignalSagaRequest, context: Any) -> pb.ObjectReply:
        answer = await operations.signal_saga(self.node, request.id, request.name, request.payload_json, by=_by())
        return pb.ObjectReply(object_json=_json(answer))

    @_unary
    async def RedriveSaga(self, request: pb.RedriveSagaRequest, context: Any) -> pb.ObjectReply:
        return pb.ObjectReply(object_json=_json(await operations.redrive_saga(self.node, request.id, by=_by())))

    @_unary
    async def RedriveSagas(self, request: pb.RedriveSagasRequest, context: Any) -> pb.ObjectReply:
        """The body of POST /v1/sagas/redrive, from the message ("" and 0: absent)."""
        body: dict[str, Any] = {name: getattr(request, name) for name in ("state", *FILTER_FIELDS)}
        body = {name: value for name, value in body.items() if value}
        if request.limit:
            body["limit"] = request.limit
        body["dry_run"] = request.dry_run
        answer = await operations.redrive_sagas(self.node, json.dumps(body), by=_by())
        return pb.ObjectReply(object_json=_json(answer))

    @_unary
    async def SubmitTransaction(self, request: pb.SubmitRequest, context: Any) -> pb.SubmitReply:
        return await self._submit("tx", request, context)

    @_unary
    async def GetTransaction(self, request: pb.GetWorkflowRequest, context: Any) -> pb.ObjectReply:
        return await self._get("tx", request, context)

    @_unary
    async def ListTransactions(self, request: pb.ListWorkflowsRequest, context: Any) -> pb.ObjectReply:
        return await self._list("tx", request)

    @_streaming
    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.WorkflowEvent]:
        if self.watches >= WATCH_STREAMS_MAX:
            raise Overloaded(f"{WATCH_STREAMS_MAX} watches are open on this node", retry_after_s=1)
        with self.watch_slots.hold(grpc_peer_host(context.peer())):
            self.watches += 1
            try:
                watch = operations.watch_workflow(
                    self.node, request.kind, request.id, stale=request.stale, life_s=self.watch_life_s
                )
                async for view, terminal in watch:
                    yield pb.WorkflowEvent(object_json=_json(view), terminal=terminal)
            finally:
                self.watches -= 1

    # -- transition workers ---------------------------------------------------------------------
    @_unary
    async def ListWorkers(self, request: pb.ListWorkersRequest, context: Any) -> pb.ObjectReply:
        return pb.ObjectReply(object_json=_json(operations.list_workers(self.node, stale=request.stale)))

    async def Work(self, requests: AsyncIterator[pb.WorkerMessage], context: Any) -> AsyncIterator[pb.LeaderMessage]:
        """A worker's stream (cluster/api/grpc_workers.py), with a token of the role ``Work`` needs.

        The first message is read before the token is checked: ending the
        call while the client was still sending it reached the client as
        INTERNAL ("execute_batch" of its send) instead of the refusal."""
        first = await first_message(requests)
        try:
            self.authorize(context, "Work")
        except ApiError as error:
            await context.abort(*abort_details(error))
        async for message in serve_worker(self.node, first, requests, context):
            yield message


class GrpcApi:
    """The gRPC server of one node: ``start()`` after the HTTP site, ``stop()``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        address = self.node.config.node.grpc
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.node.config.cluster.http_body_bytes_max + ENVELOPE_BYTES),
                ("grpc.so_reuseport", 0),  # a taken port is an error, never a shared one
                ("grpc.max_connection_idle_ms", int(self.node.config.cluster.limits.idle_connection_s * 1000)),
                ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION_MAX),
                ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME_S * 1000)),
                ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
            ]
        )
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(self.node), server)
        tls = self.node.config.tls
        if tls is None:
            server.add_insecure_port(address)  # raises when the address cannot be bound
        else:  # [tls]: TLS only; with client_ca_file a client certificate is required
            client_ca = tls.read_client_ca()
            credentials = grpc.ssl_server_credentials(
                [(tls.read_key(), tls.read_cert())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            server.add_secure_port(address, credentials)
        await server.start()
        self._server = server

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace_s)
