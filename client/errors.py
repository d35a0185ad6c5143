"""Everything the client raises, rooted at :class:`CoordinatorError`.

    CoordinatorError              (code, status, message)
    ├── NotLeader                 a follower named the leader and redirects ran out (``leader``)
    ├── NoLeader                  503 no_leader: the cluster has no leader yet
    ├── OutcomeUnknown            the request may or may not have taken effect
    ├── Unavailable               no endpoint could be reached
    ├── Timeout                   the operation did not finish in time
    └── Rejected                  a definite answer; never retried
        ├── InvalidRequest        400 invalid (``field`` names the problem)
        ├── Unauthorized          401
        │   └── Forbidden         403 (the token's role is too low, or an Origin refused)
        ├── NotFound              404
        ├── Conflict              409
        ├── TooLarge              413
        ├── Overloaded            429 (``retry_after_s``)
        │   └── Suspended         503 suspended (``retry_after_s``)
        └── TlsRefused            the node's certificate was not trusted, or TLS was not spoken

HTTP answers are mapped in one place, :func:`error_from_http`; gRPC
statuses in one place, :func:`error_from_grpc`. Both map the node's error
code first (the HTTP body's ``code``; gRPC's trailing metadata
``coordinator-error-code``), so one answer raises the same class on both
transports; ``details`` holds the rest (``leader``: the leader's URL over
HTTP, its gRPC address over gRPC; ``field``; ``retry_after_s``). ``status``
is the HTTP status, None over gRPC (``details["grpc_status"]`` names the
gRPC status).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CoordinatorError",
    "NotLeader",
    "NoLeader",
    "OutcomeUnknown",
    "Unavailable",
    "Timeout",
    "Rejected",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "Overloaded",
    "Suspended",
    "TlsRefused",
    "error_from_grpc",
    "error_from_http",
]


class CoordinatorError(Exception):
    code = "error"

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, details: dict | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status
        self.details = details or {}


class NotLeader(CoordinatorError):
    code = "not_leader"

    @property
    def leader(self) -> str | None:
        return self.details.get("leader")


class NoLeader(CoordinatorError):
    code = "no_leader"


class OutcomeUnknown(CoordinatorError):
    code = "outcome_unknown"


class Unavailable(CoordinatorError):
    code = "unavailable"


class Timeout(CoordinatorError):
    code = "timeout"


class Rejected(CoordinatorError):
    """A definite answer from the cluster: retrying the same request will not help."""


class InvalidRequest(Rejected):
    code = "invalid"

    @property
    def field(self) -> str | None:
        return self.details.get("field")


class Unauthorized(Rejected):
    code = "unauthorized"


class Forbidden(Unauthorized):
    """A known token whose role the operation exceeds (``message`` names
    both roles). A kind of Unauthorized, as gRPC's PERMISSION_DENIED was
    before roles."""

    code = "forbidden"


class NotFound(Rejected):
    code = "not_found"


class Conflict(Rejected):
    code = "conflict"


class TooLarge(Rejected):
    code = "too_large"


class Overloaded(Rejected):
    code = "overloaded"

    @property
    def retry_after_s(self) -> float | None:
        return self.details.get("retry_after_s")


class Suspended(Overloaded):
    code = "suspended"


class TlsRefused(Rejected):
    """The TLS handshake failed on the client's side: the node's certificate
    is not signed by the CA the client trusts (``ca_file``), or names another
    host, or the node does not speak TLS. A configuration error: not retried."""

    code = "tls"


_BY_CODE: dict[str, type[CoordinatorError]] = {
    "not_leader": NotLeader,
    "no_leader": NoLeader,
    "not_ready": NoLeader,
    "not_written": NoLeader,
    "outcome_unknown": OutcomeUnknown,
    "invalid": InvalidRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "too_large": TooLarge,
    "overloaded": Overloaded,
    "suspended": Suspended,
}
_BY_STATUS: dict[int, type[CoordinatorError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    429: Overloaded,
}


def error_from_http(status: int, body: Any, retry_after: str | None = None) -> CoordinatorError:
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else f"HTTP {status}"
    details: dict[str, Any] = {k: v for k, v in error.items() if k not in ("code", "message")}
    if retry_after is not None:
        try:
            details["retry_after_s"] = float(retry_after)
        except ValueError:
            pass
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = OutcomeUnknown if status >= 500 else Rejected
    return cls(message, code=code, status=status, details=details)


# A gRPC status without the node's error code: from gRPC itself (an
# unreachable node, a deadline, a message over the size limit) or from
# something that is not a node.
_BY_GRPC_STATUS: dict[str, type[CoordinatorError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "UNAUTHENTICATED": Unauthorized,
    "PERMISSION_DENIED": Forbidden,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": Conflict,
    "ABORTED": Conflict,
    "RESOURCE_EXHAUSTED": TooLarge,  # gRPC's own message size limit; a node's `overloaded` names its code
    "FAILED_PRECONDITION": Rejected,
    "UNIMPLEMENTED": Rejected,
    "UNAVAILABLE": Unavailable,  # no connection: as an HTTP connection error
    "DEADLINE_EXCEEDED": Unavailable,  # may have reached the node: as an HTTP timeout
    "CANCELLED": Unavailable,
}


def error_from_grpc(error: Any) -> CoordinatorError:
    """The error of a failed gRPC call (a ``grpc.aio.AioRpcError``, or anything
    with its ``code()``, ``details()`` and ``trailing_metadata()``)."""
    status = error.code().name
    metadata: dict[str, str] = {}
    for key, value in error.trailing_metadata() or ():
        if isinstance(value, str):
            metadata.setdefault(key, value)
    code = metadata.get("coordinator-error-code")
    details: dict[str, Any] = {"grpc_status": status}
    if "coordinator-leader" in metadata:
        details["leader"] = metadata["coordinator-leader"]
    if "coordinator-error-field" in metadata:
        details["field"] = metadata["coordinator-error-field"]
    if "retry-after" in metadata:
        try:
            details["retry_after_s"] = float(metadata["retry-after"])
        except ValueError:
            pass
    message = error.details() or f"gRPC {status}"
    cls = _BY_CODE.get(code or "") or _BY_GRPC_STATUS.get(status) or OutcomeUnknown
    return cls(message, code=code, status=None, details=details)
