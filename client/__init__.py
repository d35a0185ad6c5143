"""The coordinator client, what applications import.

``Coordinator`` (async) and ``SyncCoordinator`` over HTTP or gRPC, the
builders, and the error tree; ``coordinator.client.participant`` holds the
kit for participant services.
"""

from .coordinator import DEFAULT_ENDPOINTS, DEFAULT_GRPC_ENDPOINTS, Coordinator
from .errors import (
    Conflict,
    CoordinatorError,
    Forbidden,
    InvalidRequest,
    NoLeader,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    Overloaded,
    Rejected,
    Suspended,
    Timeout,
    TlsRefused,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .sync import SyncCoordinator
from .types import ClusterInfo, NodeInfo, Saga, Service, Transaction, WorkflowPage

__all__ = [
    "DEFAULT_ENDPOINTS",
    "DEFAULT_GRPC_ENDPOINTS",
    "ClusterInfo",
    "Conflict",
    "Coordinator",
    "CoordinatorError",
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
    "TlsRefused",
    "SyncCoordinator",
    "Timeout",
    "TooLarge",
    "Transaction",
    "WorkflowPage",
    "Unauthorized",
    "Forbidden",
    "Unavailable",
]
