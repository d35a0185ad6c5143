"""Errors the participant kit raises to the service that uses it.

    ParticipantKitError         root of everything below
    ├── LimitExceededError      a key, body or other input is beyond a bound
    │                           of `limits.py`; answered 400 over HTTP
    ├── StoreFullError          the store holds `records_max` keys already,
    │                           even after pruning those past its retention;
    │                           answered 503 (the coordinator retries)
    ├── StoreClosedError        the store was used after close()
    └── SignatureError          a call's Coordinator-Signature is missing,
                                malformed, expired or wrong (signing.py);
                                answered 401 / UNAUTHENTICATED

Handler exceptions are not wrapped: they propagate to aiohttp (a 500, which
the coordinator treats as an unknown outcome and retries). Anything else is
a bug and fails an `assert`.
"""

from __future__ import annotations


class ParticipantKitError(Exception):
    """Root of the participant kit's errors."""


class LimitExceededError(ParticipantKitError, ValueError):
    """Input beyond a named bound; str() says which bound."""


class StoreFullError(ParticipantKitError):
    """The store reached its `records_max` bound."""


class StoreClosedError(ParticipantKitError):
    """The store was used after close()."""


class SignatureError(ParticipantKitError):
    """A call that is not signed by a configured key; str() says why."""
