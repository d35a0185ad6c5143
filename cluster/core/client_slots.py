"""What one client may hold open on a node: a count per remote address.

A long poll or a gRPC Watch holds a slot while it is open; past
``per_client_max`` slots of one address the next one is refused with
:class:`coordinator.cluster.core.errors.Overloaded` (429, RESOURCE_EXHAUSTED), so one client
can no longer take all of a node's long polls or watch streams
(cluster/core/limits.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from coordinator.cluster.core.errors import Overloaded

__all__ = ["ClientSlots", "grpc_peer_host"]

UNKNOWN_CLIENT = "unknown"


class ClientSlots:
    def __init__(self, what: str, per_client_max: int) -> None:
        self.what = what
        self.per_client_max = per_client_max
        self._held: dict[str, int] = {}

    def held(self, client: str | None) -> int:
        return self._held.get(client or UNKNOWN_CLIENT, 0)

    @contextlib.contextmanager
    def hold(self, client: str | None) -> Iterator[None]:
        key = client or UNKNOWN_CLIENT
        if self._held.get(key, 0) >= self.per_client_max:
            raise Overloaded(
                f"{self.per_client_max} {self.what} are open from {key}, the most one client may hold; wait for one to end",
                retry_after_s=1,
            )
        self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]


def grpc_peer_host(peer: str | None) -> str | None:
    """The address of a gRPC peer string: ``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``."""
    if not peer:
        return None
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv6" and rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    if scheme == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer
