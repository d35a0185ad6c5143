"""Calling gRPC participant services: the `Participant` service of
`proto/coordinator.proto`, with the same retries and breaker as HTTP.

`GrpcCaller.call(spec, operation)` sends one `ParticipantCall` to the RPC
named by `operation` (`execute` -> Execute, `compensate` -> Compensate,
`prepare`, `commit`, `abort`) at the target `spec.url` ("host:port");
`spec.method` is not used. The idempotency key and the fence travel both as
message fields and as the metadata `idempotency-key` and
`coordinator-fence`; `spec.timeout_s` is each attempt's deadline.

| status                                              | outcome                         |
| OK                                                  | ok: the parsed `output_json`    |
|                                                     | (Prepare: {"vote": "yes"|"no"}) |
| INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND,   | failed (definite)               |
| ALREADY_EXISTS, PERMISSION_DENIED, OUT_OF_RANGE,    |                                 |
| ABORTED, UNAUTHENTICATED, UNIMPLEMENTED             |                                 |
| any other (UNAVAILABLE, DEADLINE_EXCEEDED,          | retried; out of budget: unknown |
| RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, CANCELLED,   |                                 |
| DATA_LOSS)                                          |                                 |

These mirror HTTP: the definite set are the statuses that map to a 4xx
other than 408/429 (ABORTED is 409, UNIMPLEMENTED the missing route); the
rest map to 408, 429, 5xx or a broken connection. One `grpc.aio` channel per
target is cached (at most CHANNELS_MAX) and closed by `close()`.

Before each attempt the target's host is resolved and every address checked
against the `[services]` policy (`cluster/core/netpolicy.py`); a refused one is
a definite failure that never reaches the network. The channel then
connects to the checked address itself (``ipv4:``/``ipv6:`` target, the
registered name as authority), so gRPC's own resolver cannot pick another.
A name that does not resolve is retried like a refused connection.

A target registered with ``"tls": true`` (``spec.tls``) gets a
``grpc.aio.secure_channel``: the participant's certificate is verified
against ``[services]`` ``ca_file`` (else the system's CAs) for the
registered host name (the channel's authority), and the client certificate
of ``[services]`` is presented when one is set (``ParticipantTls`` in
cluster/core/tls.py). A handshake that fails is UNAVAILABLE, so retried,
and out of budget unknown, like a refused connection; its reason is logged
once per service (``TlsFailures``). Channels are cached by (target, tls,
checked address): the same target plain and over TLS are two channels.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import OrderedDict
from typing import Any

import grpc

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant.signing import SIGNATURE_METADATA
from coordinator.cluster.core.netpolicy import AddressRefused, Resolve, ServicePolicy, system_resolve
from coordinator.cluster.core.tls import ParticipantTls
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.http_caller import (
    ERROR_CHARS_MAX,
    OPERATIONS,
    OUTPUT_BYTES_MAX,
    STALE_FENCE,
    CallOutcome,
    CallSpec,
    Retryable,
    Signer,
    TlsFailures,
    call_with_retries,
)

__all__ = ["CHANNELS_MAX", "DEFINITE_STATUSES", "FENCE_METADATA", "KEY_METADATA", "GrpcCaller"]

KEY_METADATA = "idempotency-key"
FENCE_METADATA = "coordinator-fence"

# The participant said no: the call is not retried and the step fails.
DEFINITE_STATUSES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

# Channels kept open at once (one per target); the oldest is closed beyond it.
CHANNELS_MAX = 1024
# An evicted channel gets this long to finish the calls it carries.
CHANNEL_CLOSE_GRACE_S = 30.0
# Answers are read up to this size (gRPC refuses bigger ones with
# RESOURCE_EXHAUSTED); outputs over OUTPUT_BYTES_MAX are replaced, as over HTTP.
RECEIVE_BYTES_MAX = 4 * 1024 * 1024

_RPC_NAMES = {
    "execute": "Execute",
    "compensate": "Compensate",
    "prepare": "Prepare",
    "commit": "Commit",
    "abort": "Abort",
}
assert tuple(_RPC_NAMES) == OPERATIONS


class GrpcCaller:
    """The gRPC `ParticipantCaller`. Use it on one event loop; `close()` it.
    It opens a channel on the first call to a target, so a cluster whose
    participants are all HTTP opens none. `rng` draws the retries' jitter.
    `tls`: the CA bundle and client certificate of TLS targets (default: the
    system CAs, no client certificate); its files are read here, once."""

    def __init__(
        self,
        breakers: Breakers,
        *,
        channels_max: int = CHANNELS_MAX,
        policy: ServicePolicy | None = None,
        resolve: Resolve = system_resolve,
        signer: Signer | None = None,
        rng: random.Random | None = None,
        tls: ParticipantTls | None = None,
    ) -> None:
        assert channels_max > 0
        roots, key, chain = (tls if tls is not None else ParticipantTls()).grpc_files()
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=chain
        )
        self._tls_failures = TlsFailures()
        self._rng = rng if rng is not None else random.Random()
        self._breakers = breakers
        self._channels_max = channels_max
        self._policy = policy if policy is not None else ServicePolicy()
        self._resolve = resolve
        self._signer = signer
        # by (registered target, TLS or not, checked address)
        self._channels: OrderedDict[
            tuple[str, bool, str], tuple[grpc.aio.Channel, coordinator_pb2_grpc.ParticipantStub]
        ] = OrderedDict()
        self._closing: dict[asyncio.Task, grpc.aio.Channel] = {}  # evicted channels

    async def call(self, spec: CallSpec, operation: str) -> CallOutcome:
        """Call the RPC of `operation` until a definite answer or the budget is spent."""
        if operation not in _RPC_NAMES:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, not {operation!r}")
        try:
            request = coordinator_pb2.ParticipantCall(
                idempotency_key=spec.idempotency_key,
                fence=spec.fence,
                path=spec.path,
                body_json="" if spec.body is None else json.dumps(spec.body),
            )
        except (TypeError, ValueError) as exc:  # never sent, so it never ran
            return CallOutcome("failed", error=f"cannot encode the call: {exc}"[:ERROR_CHARS_MAX])
        return await call_with_retries(spec, self._breakers, lambda: self._once(spec, operation, request), self._rng)

    async def _address(self, target: str) -> str:
        """The checked address to connect to for `target` (host:port)."""
        host, _, port = target.rpartition(":")
        try:
            addresses = await self._policy.resolve(host, int(port), self._resolve)
        except AddressRefused:
            raise
        except (OSError, ValueError) as exc:
            raise Retryable(f"cannot resolve {host}: {exc}"[:ERROR_CHARS_MAX]) from None
        return addresses[0]

    async def _once(self, spec: CallSpec, operation: str, request: Any) -> CallOutcome:
        breaker = self._breakers.of(spec.service)
        try:
            address = await self._address(spec.url)
        except AddressRefused as exc:  # never sent: no answer to show
            return CallOutcome("failed", error=str(exc)[:ERROR_CHARS_MAX])
        except Retryable:
            breaker.record_failure()
            raise
        rpc = getattr(self._stub(spec.url, spec.tls, address), _RPC_NAMES[operation])
        metadata: tuple[tuple[str, str], ...] = ((KEY_METADATA, spec.idempotency_key), (FENCE_METADATA, spec.fence))
        if self._signer is not None:
            signature = self._signer.header(
                method=_RPC_NAMES[operation],
                path=request.path,
                idempotency_key=spec.idempotency_key,
                fence=spec.fence,
                body=request.body_json.encode(),
            )
            metadata += ((SIGNATURE_METADATA, signature),)
        try:
            response = await rpc(request, timeout=spec.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            error = f"gRPC {code.name}: {exc.details() or ''}"[:ERROR_CHARS_MAX]
            stale_fence = code == grpc.StatusCode.FAILED_PRECONDITION and (exc.details() or "").startswith(STALE_FENCE)
            if code in DEFINITE_STATUSES and not stale_fence:  # a stale fence is retried, as over HTTP
                breaker.record_success()  # the service answered: healthy, the business said no
                return CallOutcome("failed", error=error)
            if not stale_fence:  # the service is healthy; this node is the stale one
                breaker.record_failure()
            if spec.tls and code == grpc.StatusCode.UNAVAILABLE and _is_tls_failure(exc.details() or ""):
                self._tls_failures.failed(spec.service, spec.url, exc.details() or "")
            raise Retryable(error) from None
        if spec.tls:
            self._tls_failures.succeeded(spec.service)
        breaker.record_success()
        if operation == "prepare":
            return CallOutcome("ok", {"vote": "yes" if response.yes else "no"})
        return CallOutcome("ok", _output(response.output_json))

    def _stub(self, target: str, tls: bool, address: str) -> coordinator_pb2_grpc.ParticipantStub:
        key = (target, tls, address)
        entry = self._channels.get(key)
        if entry is not None:
            self._channels.move_to_end(key)
            return entry[1]
        if len(self._channels) >= self._channels_max:
            _, (oldest, _) = self._channels.popitem(last=False)
            task = asyncio.ensure_future(oldest.close(grace=CHANNEL_CLOSE_GRACE_S))
            self._closing[task] = oldest
            task.add_done_callback(lambda done: self._closing.pop(done, None))
        port = target.rpartition(":")[2]
        pinned = f"ipv6:[{address}]:{port}" if ":" in address else f"ipv4:{address}:{port}"
        options = [
            ("grpc.max_receive_message_length", RECEIVE_BYTES_MAX),
            ("grpc.enable_retries", 0),  # retries are ours: one key, one budget
            ("grpc.default_authority", target),  # with TLS, also the name the certificate must have
        ]
        if tls:
            channel = grpc.aio.secure_channel(pinned, self._credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(pinned, options=options)
        stub = coordinator_pb2_grpc.ParticipantStub(channel)
        self._channels[key] = (channel, stub)
        return stub

    def targets(self) -> list[str]:
        """The targets with an open channel, least recently used first."""
        return list(dict.fromkeys(target for target, _, _ in self._channels))

    async def close(self) -> None:
        """Close every channel; calls still running on them are cancelled."""
        channels = [channel for channel, _ in self._channels.values()]
        self._channels.clear()
        closing = dict(self._closing)
        for task in closing:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        for channel in [*channels, *closing.values()]:
            await channel.close()


_TLS_WORDS = ("ssl", "tls", "handshake", "certificate")


def _is_tls_failure(details: str) -> bool:
    """Whether an UNAVAILABLE's details tell of a failed TLS handshake."""
    lowered = details.lower()
    return any(word in lowered for word in _TLS_WORDS)


def _output(text: str) -> Any:
    """The output of an OK answer, as HttpCaller reads a 2xx body."""
    if len(text.encode()) > OUTPUT_BYTES_MAX:
        return {"_truncated": True}
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text[:ERROR_CHARS_MAX]}
