"""The participant calls of one node's executor: which transport a call
takes, and closing them all.

A service registered with a ``grpc`` target is called over gRPC (over TLS
when its record says ``tls``), any other over HTTP (cluster/stores/registry.py). The callers are built where the
node is wired (cluster/launcher/process.py; the simulation's in
chaos/sim/node.py) and handed to the executor, which closes them when it
closes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from coordinator.cluster.executor.http_caller import CallOutcome, CallSpec, ParticipantCaller

__all__ = ["ParticipantCallers"]


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
