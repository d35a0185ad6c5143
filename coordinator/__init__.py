"""The coordinator: a Raft-replicated coordinator of sagas and two-phase commit.

Everything installs under this one package, so nothing collides with an
application's own modules. The repository keeps one folder per part, and
the package maps each to a subpackage:

    coordinator.client     the client library and the participant kit
    coordinator.saga       the saga state machine (pure)
    coordinator.twopc      the two-phase commit state machine (pure)
    coordinator.grammar    what both machines' definitions share: paths, bodies, errors (pure)
    coordinator.consensus  the replicated log on PySyncObj
    coordinator.cluster    the node, its API, the launcher, ``coordinator bench`` and the CLI
    coordinator.chaos      ``coordinator chaos`` and ``coordinator simulate``

Applications write ``from coordinator import Coordinator`` (or
``from coordinator.client import ...``). The client is loaded on first use
of one of its names here, so ``import coordinator.saga`` does not pull in
aiohttp and gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - what the lazy names below resolve to
    from coordinator.client import (
        DEFAULT_ENDPOINTS,
        DEFAULT_GRPC_ENDPOINTS,
        ClusterInfo,
        Conflict,
        Coordinator,
        CoordinatorError,
        Forbidden,
        InvalidRequest,
        NodeInfo,
        NoLeader,
        NotFound,
        NotLeader,
        OutcomeUnknown,
        Overloaded,
        Rejected,
        Saga,
        Service,
        Suspended,
        SyncCoordinator,
        Timeout,
        TlsRefused,
        TooLarge,
        Transaction,
        Unauthorized,
        Unavailable,
        WorkflowPage,
    )

__all__ = [
    "DEFAULT_ENDPOINTS",
    "DEFAULT_GRPC_ENDPOINTS",
    "ClusterInfo",
    "Conflict",
    "Coordinator",
    "CoordinatorError",
    "Forbidden",
    "InvalidRequest",
    "NoLeader",
    "NodeInfo",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "Overloaded",
    "Rejected",
    "Saga",
    "Service",
    "Suspended",
    "SyncCoordinator",
    "Timeout",
    "TlsRefused",
    "TooLarge",
    "Transaction",
    "Unauthorized",
    "Unavailable",
    "WorkflowPage",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the client's names, imported when first asked for.
    if name in __all__:
        return getattr(importlib.import_module("coordinator.client"), name)
    raise AttributeError(f"module 'coordinator' has no attribute {name!r}")
