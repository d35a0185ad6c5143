"""The participant calls of one node's executor: which transport a call
takes, and closing them all.

A service registered with a ``grpc`` target is called over gRPC (over TLS
when its record says ``tls``), any other over HTTP (cluster/stores/registry.py).
:func:`participant_callers` builds them from the cluster file, for a node
(cluster/launcher/process.py) and for a transition worker
(cluster/worker/process.py) alike; the simulation builds its own
(chaos/sim/node.py). The executor closes them when it closes.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from coordinator.cluster.core.config import ClusterConfig
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.grpc_caller import GrpcCaller
from coordinator.cluster.executor.http_caller import (
    CallOutcome,
    CallSpec,
    HttpCaller,
    ParticipantCaller,
    Signer,
    participant_session,
)

__all__ = ["CONNECTIONS_MAX", "ParticipantCallers", "participant_callers"]

CONNECTIONS_MAX = 256  # participant connections of one HTTP session


class ParticipantCallers:
    def __init__(
        self,
        http: ParticipantCaller,
        grpc: ParticipantCaller | None = None,
        *,
        on_close: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        """``on_close``: what to close with them, in order (the HTTP
        session, the gRPC channels)."""
        self.http = http
        self.grpc = grpc
        self._on_close = list(on_close)

    async def call(self, service: dict | None, spec: CallSpec, operation: str) -> CallOutcome:
        """Call a registered participant over its transport."""
        if service is None:
            return CallOutcome("unknown", error=f"service {spec.service!r} is not registered")
        if service.get("grpc"):
            if self.grpc is None:
                return CallOutcome("failed", error=f"service {spec.service!r} is gRPC; this node has no gRPC caller")
            return await self.grpc.call(replace(spec, tls=bool(service.get("tls"))), operation)
        return await self.http.call(spec, operation)

    async def close(self) -> None:
        """Close what was given to close, once."""
        on_close, self._on_close = self._on_close, []
        for close in on_close:
            await close()


def participant_callers(
    cluster: ClusterConfig, participant_key: bytes | None, breakers: Breakers, rng: random.Random
) -> ParticipantCallers:
    """HTTP and gRPC, both held to ``[services]`` (its address policy, and
    its TLS settings for ``https://`` and TLS gRPC participants) and signing
    every call with ``participant_key`` (the cluster file's
    ``participant_key_file``, read) when given. Closing them closes the gRPC
    channels, then the HTTP session. Call it on the event loop."""
    policy, tls = cluster.services, cluster.participant_tls
    signer = None
    if participant_key is not None:
        signer = Signer(cluster.participant_key_id, participant_key)
    session = participant_session(policy, connections_max=CONNECTIONS_MAX, ssl=tls.client_context())
    grpc = GrpcCaller(breakers, policy=policy, signer=signer, rng=rng, tls=tls)
    http = HttpCaller(session, breakers, policy, signer, rng=rng)
    return ParticipantCallers(http, grpc, on_close=(grpc.close, session.close))
