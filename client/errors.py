"""Everything the client raises, rooted at :class:`CoordinatorError`.

    CoordinatorError              (code, status, message)
    ├── NotLeader                 a node answered 307 and redirects ran out (``leader``)
    ├── NoLeader                  503 no_leader: the cluster has no leader yet
    ├── OutcomeUnknown            the request may or may not have taken effect
    ├── Unavailable               no endpoint could be reached
    ├── Timeout                   the operation did not finish in time
    └── Rejected                  a definite answer; never retried
        ├── InvalidRequest        400 invalid (``field`` names the problem)
        ├── Unauthorized          401
        ├── NotFound              404
        ├── Conflict              409
        ├── TooLarge              413
        ├── Overloaded            429 (``retry_after_s``)
        └── Suspended             503 suspended (``retry_after_s``)

HTTP answers are mapped in one place, :func:`error_from_http`.
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
    "NotFound",
    "Conflict",
    "TooLarge",
    "Overloaded",
    "Suspended",
    "error_from_http",
]


class CoordinatorError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, details: dict | None = None) -> None:
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


_BY_CODE: dict[str, type[CoordinatorError]] = {
    "not_leader": NotLeader,
    "no_leader": NoLeader,
    "not_ready": NoLeader,
    "not_written": NoLeader,
    "outcome_unknown": OutcomeUnknown,
    "invalid": InvalidRequest,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "conflict": Conflict,
    "too_large": TooLarge,
    "overloaded": Overloaded,
    "suspended": Suspended,
}
_BY_STATUS: dict[int, type[CoordinatorError]] = {
    400: InvalidRequest,
    401: Unauthorized,
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
