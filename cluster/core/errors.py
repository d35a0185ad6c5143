"""The node's error tree: what the API answers, mapped in one place.

    ApiError(status, code, message)
    ├── InvalidInput       400 invalid       (``field`` names the problem)
    ├── Unauthorized       401 unauthorized  (no token, or not one of the node's)
    ├── Forbidden          403 forbidden     (an Origin not allowed; a token whose role is too low)
    ├── NotFound           404 not_found
    ├── Conflict           409 conflict
    ├── TooLarge           413 too_large
    ├── UnsupportedMediaType 415 unsupported_media_type
    ├── Misdirected        421 misdirected_request (a Host the node does not have)
    ├── Overloaded         429 overloaded    (Retry-After)
    └── Unavailable        503 no_leader | suspended | outcome_unknown (Retry-After)

Consensus errors and state machine rejections are translated by
:func:`error_for_rejection` and the HTTP layer's middleware; nothing else
builds an error body.
"""

from __future__ import annotations

from typing import Any

from coordinator.cluster.core.limits import OVERLOADED_RETRY_AFTER_S

__all__ = [
    "ApiError",
    "InvalidInput",
    "Unauthorized",
    "Forbidden",
    "Misdirected",
    "NotFound",
    "UnsupportedMediaType",
    "Conflict",
    "TooLarge",
    "Overloaded",
    "Unavailable",
    "error_for_rejection",
]


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: float | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s
        self.extra = extra

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class InvalidInput(ApiError):
    status, code = 400, "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Misdirected(ApiError):
    status, code = 421, "misdirected_request"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooLarge(ApiError):
    status, code = 413, "too_large"


class Overloaded(ApiError):
    status, code = 429, "overloaded"


class Unavailable(ApiError):
    status, code = 503, "no_leader"


_STATUS_BY_CODE = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "overloaded": 429,
    "internal": 500,
    "suspended": 503,
}


def error_for_rejection(code: str, message: str) -> ApiError:
    """A command the state machine refused, as the API answers it."""
    error = ApiError(message, code=code, retry_after_s=OVERLOADED_RETRY_AFTER_S if code == "overloaded" else None)
    error.status = _STATUS_BY_CODE.get(code, 409)
    return error
