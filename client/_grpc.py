"""The gRPC transport: the `Coordinator` service of `proto/coordinator.proto`
on the nodes' gRPC ports. Endpoints are gRPC targets, ``host:port`` (the
``grpc`` address of each node in ``cluster.toml``), not URLs.

A follower answers not_leader with the leader's gRPC address; the call is
sent there and the address remembered, as HTTP follows a 307. Waiting for a
workflow reads the server-streaming ``Watch``, reopened on the new leader
when the stream breaks.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ._transport import REDIRECTS_MAX, RETRYABLE, Transport, backoff_s
from .errors import CoordinatorError, NotLeader, TlsRefused, Unavailable, error_from_grpc
from .grpc_gen import coordinator_pb2 as pb
from .grpc_gen import coordinator_pb2_grpc

__all__ = ["GrpcTransport", "CHANNELS_MAX", "RECEIVE_BYTES_MAX"]

# Channels kept open at once: the endpoints and the leaders they named.
CHANNELS_MAX = 32
# Answers are read up to this size (a list of 1000 sagas is larger than gRPC's 4 MiB default).
RECEIVE_BYTES_MAX = 64 * 1024 * 1024
_TARGET = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}\Z")


def _message(operation: str, args: dict) -> tuple[str, Any]:
    """(RPC name, request message) of an operation."""
    if operation == "cluster":
        return "Cluster", pb.ClusterRequest()
    if operation == "put_service":
        request = pb.PutServiceRequest(
            name=args["name"], definition_json=json.dumps(args["body"]), force=args.get("force", False)
        )
        return "PutService", request
    if operation == "get_service":
        return "GetService", pb.GetServiceRequest(name=args["name"])
    if operation == "list_services":
        return "ListServices", pb.ListServicesRequest()
    if operation == "list_workers":
        return "ListWorkers", pb.ListWorkersRequest()
    if operation == "delete_service":
        return "DeleteService", pb.DeleteServiceRequest(name=args["name"])
    if operation == "service_outcomes":
        return "ServiceOutcomes", pb.ServiceOutcomesRequest(name=args["name"], after=args["after"])
    if operation == "signal_saga":
        payload = "" if args["payload"] is None else json.dumps(args["payload"])
        return "SignalSaga", pb.SignalSagaRequest(id=args["id"], name=args["name"], payload_json=payload)
    if operation == "redrive_saga":
        return "RedriveSaga", pb.RedriveSagaRequest(id=args["id"])
    if operation == "redrive_sagas":  # the JSON body's fields; absent ones stay "", 0, false
        return "RedriveSagas", pb.RedriveSagasRequest(**args["body"])
    verb, kind = operation.split("_", 1)  # submit|get|list _ saga|tx
    noun = {"saga": "Saga", "tx": "Transaction"}[kind]
    if verb == "submit":
        request = pb.SubmitRequest(definition_json=json.dumps(args["definition"]), wait_s=args.get("wait_s") or 0.0)
        return f"Submit{noun}", request
    if verb == "get":
        message = pb.GetWorkflowRequest(id=args["id"], wait_s=args.get("wait_s") or 0.0, since=args.get("since") or "")
        return f"Get{noun}", message
    if verb == "list":
        filters = args.get("filters", {})
        return f"List{noun}s", pb.ListWorkflowsRequest(state=args["state"] or "", limit=args["limit"], **filters)
    raise AssertionError(f"no RPC for {operation}")


class GrpcTransport(Transport):
    """Over gRPC: :mod:`coordinator.client._transport` says what a transport does."""

    def __init__(self, endpoints: list[str], **options: Any) -> None:
        super().__init__(endpoints, **options)  # the options of Transport
        tls, token = self.tls, self.token
        self._credentials = tls.grpc_credentials() if tls is not None else None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channels: OrderedDict[str, tuple[grpc.aio.Channel, coordinator_pb2_grpc.CoordinatorStub]] = OrderedDict()

    NODE_FIELD = "grpc"

    async def _cluster_view(self, target: str) -> Any:
        try:
            reply = await self._stub(target).Cluster(
                pb.ClusterRequest(), timeout=self.timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return json.loads(reply.object_json)

    def _error(self, exc: grpc.aio.AioRpcError) -> CoordinatorError:
        """The node's error; a handshake gRPC could not make is said plainly
        (gRPC reports it as UNAVAILABLE, a word for any broken connection)."""
        details = exc.details() or ""
        if "CERTIFICATE_VERIFY_FAILED" in details or "Peer name" in details:
            return TlsRefused(
                f"the node's certificate is not trusted ({details[:300]}); is --ca-file "
                "($COORDINATOR_CA_FILE) the CA that signed the nodes' certificates?"
            )
        error = error_from_grpc(exc)
        hint = ""
        if isinstance(error, Unavailable) and ("Socket closed" in details or "Connection reset" in details):
            if self._credentials is None:
                hint = " (a node serving TLS drops a plain connection: --ca-file or tls=True)"
            elif self.tls is not None and self.tls.cert_file is None:
                hint = " (a node with mutual TLS drops a client without a certificate: --cert-file and --key-file)"
        if hint:
            error = type(error)(error.message + hint, code=error.code, status=error.status, details=error.details)
        return error

    @staticmethod
    def normalise(endpoint: str) -> str:
        endpoint = endpoint.strip()
        if not _TARGET.match(endpoint):
            raise ValueError(f"endpoint {endpoint!r} is not a gRPC target HOST:PORT (the transport is 'grpc')")
        return endpoint

    def _stub(self, target: str) -> coordinator_pb2_grpc.CoordinatorStub:
        entry = self._channels.get(target)
        if entry is not None:
            self._channels.move_to_end(target)
            return entry[1]
        if len(self._channels) >= CHANNELS_MAX:
            _, (oldest, _) = self._channels.popitem(last=False)
            asyncio.ensure_future(oldest.close(grace=None))
        options = [("grpc.max_receive_message_length", RECEIVE_BYTES_MAX)]
        if self._credentials is not None:  # TLS: coordinator.client.tls
            channel = grpc.aio.secure_channel(target, self._credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        self._channels[target] = (channel, stub)
        return stub

    async def close(self) -> None:
        channels = [channel for channel, _ in self._channels.values()]
        self._channels.clear()
        for channel in channels:
            await channel.close()

    async def _send_once(self, endpoint: str, operation: str, args: dict, timeout_s: float | None) -> tuple[Any, str]:
        rpc, message = _message(operation, args)
        metadata = self._metadata
        if args.get("request") is not None:  # a registry write's id, the same on every retry
            metadata = (*metadata, ("idempotency-key", args["request"]))
        target = endpoint
        for _ in range(REDIRECTS_MAX + 1):
            try:
                reply = await getattr(self._stub(target), rpc)(
                    message, timeout=timeout_s or self.timeout_s, metadata=metadata
                )
            except grpc.aio.AioRpcError as exc:
                error = self._error(exc)
                if isinstance(error, NotLeader) and error.leader:
                    if not await self.may_follow(target, error.leader):
                        raise self.foreign_redirect(rpc, target, error.leader) from None
                    target = error.leader
                    continue
                raise error from None
            return json.loads(reply.object_json), target
        raise NotLeader(f"{rpc}: more than {REDIRECTS_MAX} redirects")

    async def watch(
        self, kind: str, workflow_id: str, *, timeout_s: float | None, every_change: bool
    ) -> AsyncIterator[dict]:
        """The Watch stream; on a break, reopened (the leader it named, or the
        next endpoint after a backoff) until ``attempts`` tries in a row fail.
        Every event is yielded (``every_change`` is how the stream works)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        request = pb.WatchRequest(kind=kind, id=workflow_id)
        last: dict | None = None
        failures = redirects = 0
        target = self.order()[0]
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            call = self._stub(target).Watch(request, timeout=remaining, metadata=self._metadata)
            try:
                async for event in call:
                    self.remember(target)
                    failures = redirects = 0
                    data = json.loads(event.object_json)
                    if data != last:
                        last = data
                        yield data
                    if event.terminal:
                        return
                error: CoordinatorError = Unavailable(f"{target}: the watch ended before a terminal state")
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None and loop.time() >= deadline:
                    return
                error = self._error(exc)
            finally:
                call.cancel()
            if isinstance(error, NotLeader) and error.leader and redirects < REDIRECTS_MAX:
                if await self.may_follow(target, error.leader):
                    target, redirects = error.leader, redirects + 1
                    continue
                error = self.foreign_redirect("Watch", target, error.leader)
            failures += 1
            if not isinstance(error, RETRYABLE) or failures >= self.attempts * len(self.endpoints):
                raise error
            order = self.order()
            target = order[failures % len(order)]
            await asyncio.sleep(backoff_s(failures))
