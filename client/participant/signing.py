"""Request signing between the coordinator and its participants (pure).

The coordinator signs every participant call with a secret shared with the
participant; the kit (`saga.saga_participant`, `twopc.add_twopc_routes`,
`grpc_servicer.ParticipantServicer`, given `keys=`) verifies the signature
before it stores or answers anything, and refuses a call without a valid
one: HTTP 401 `unauthorized`, gRPC UNAUTHENTICATED.

The header (HTTP) / metadata (gRPC, lower case) is

    Coordinator-Signature: t=<unix seconds>,k=<key id>,v1=<hex>

- `t`: when the call was signed, integer seconds since the epoch; the
  participant refuses a `t` more than `window_s` (SIGNATURE_WINDOW_S_DEFAULT,
  300 s) away from its own clock, in the past or the future.
- `k`: the id of the key that signed, 1..KEY_ID_CHARS_MAX of
  `[A-Za-z0-9._-]`. A participant is configured with a dict key id -> secret
  bytes; to rotate, give it the old and the new key, switch the coordinator
  to the new one, then drop the old one.
- `v1`: lower-case hex HMAC-SHA256, under the key's secret, of the UTF-8
  bytes of these lines joined by "\\n" (no trailing newline):

      coordinator-signature-v1
      <t>
      <method>            HTTP: the request method as sent ("POST");
                          gRPC: the RPC name ("Execute", "Compensate",
                          "Prepare", "Commit", "Abort")
      <path>              HTTP: the request target as sent, path and query,
                          percent-encoded (aiohttp's `request.raw_path`,
                          yarl's `URL.raw_path_qs`); gRPC: ParticipantCall.path
      <idempotency key>   empty when the call has none
      <fence>             `TERM:INDEX`, empty when the call has none
      <sha256 of the body> lower-case hex; HTTP: the body bytes as sent;
                          gRPC: the UTF-8 bytes of ParticipantCall.body_json

  No field may hold a newline or a carriage return.

The coordinator side calls `sign(...)` for each attempt (a new `t` each
time) and sends its result as the header; the participant side calls
`verify(...)`. Both take the same fields, so they cannot disagree on the
message. `request_digest(...)` is what the kit stores with an answer: a
replay of a key with another method, path or body is refused (422
`key_reused`) instead of getting that answer.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping

from coordinator.client.participant.errors import SignatureError

__all__ = [
    "KEY_ID_CHARS_MAX",
    "KEYS_MAX",
    "SECRET_BYTES_MIN",
    "SIGNATURE_HEADER",
    "SIGNATURE_METADATA",
    "SIGNATURE_WINDOW_S_DEFAULT",
    "SIGNATURE_WINDOW_S_MAX",
    "body_sha256",
    "sign_checked",
    "check_keys",
    "request_digest",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "Coordinator-Signature"
SIGNATURE_METADATA = "coordinator-signature"
VERSION = "coordinator-signature-v1"
SIGNATURE_WINDOW_S_DEFAULT = 300.0
SIGNATURE_WINDOW_S_MAX = 3600.0
KEY_ID_CHARS_MAX = 64
KEY_ID_PATTERN = re.compile(rf"[A-Za-z0-9._-]{{1,{KEY_ID_CHARS_MAX}}}")
# Keys one participant accepts at a time (a rotation needs two).
KEYS_MAX = 16
# A secret shorter than this is refused: HMAC-SHA256 wants 32 random bytes.
SECRET_BYTES_MIN = 32
SECRET_BYTES_MAX = 1024
# The header value: t (up to 19 digits), k, v1 (64 hex) and separators.
HEADER_CHARS_MAX = 256
TIMESTAMP_MAX = 2**63 - 1
_HEADER_PATTERN = re.compile(rf"t=([0-9]{{1,19}}),k=([A-Za-z0-9._-]{{1,{KEY_ID_CHARS_MAX}}}),v1=([0-9a-f]{{64}})")
_FIELD_BAD = re.compile(r"[\r\n]")


def check_keys(keys: Mapping[str, bytes]) -> dict[str, bytes]:
    """A copy of `keys` if every id and secret is acceptable, else ValueError."""
    if not isinstance(keys, Mapping) or not 1 <= len(keys) <= KEYS_MAX:
        raise ValueError(f"keys must be a mapping of 1..{KEYS_MAX} key id -> secret (KEYS_MAX)")
    checked: dict[str, bytes] = {}
    for key_id, secret in keys.items():
        if not isinstance(key_id, str) or KEY_ID_PATTERN.fullmatch(key_id) is None:
            raise ValueError(f"key id must be 1..{KEY_ID_CHARS_MAX} of [A-Za-z0-9._-]: {key_id!r}")
        if not isinstance(secret, (bytes, bytearray)) or not (SECRET_BYTES_MIN <= len(secret) <= SECRET_BYTES_MAX):
            raise ValueError(
                f"secret of key {key_id!r} must be {SECRET_BYTES_MIN}..{SECRET_BYTES_MAX} bytes (SECRET_BYTES_MIN)"
            )
        checked[key_id] = bytes(secret)
    return checked


def check_window(window_s: float) -> float:
    if not isinstance(window_s, (int, float)) or not 0 < window_s <= SIGNATURE_WINDOW_S_MAX:
        raise ValueError(f"window_s must be in (0, {SIGNATURE_WINDOW_S_MAX}] (SIGNATURE_WINDOW_S_MAX)")
    return float(window_s)


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _message(timestamp: int, method: str, path: str, idempotency_key: str, fence: str, body: bytes) -> bytes:
    fields = (method, path, idempotency_key, fence)
    for field in fields:
        if not isinstance(field, str) or _FIELD_BAD.search(field) is not None:
            raise SignatureError("a signed field holds a newline or is not a string")
    if not isinstance(body, (bytes, bytearray)):
        raise SignatureError("the body must be bytes")
    lines = (VERSION, str(timestamp), *fields, body_sha256(bytes(body)))
    return "\n".join(lines).encode()


def _mac(secret: bytes, message: bytes) -> str:
    return hmac.digest(secret, message, "sha256").hex()  # one call, the same bytes as hmac.new(...).hexdigest()


def sign(
    secret: bytes, key_id: str, *, method: str, path: str, idempotency_key: str, fence: str, body: bytes, timestamp: int
) -> str:
    """The `Coordinator-Signature` value for one call (module docstring)."""
    check_keys({key_id: secret})
    return sign_checked(
        secret,
        key_id,
        method=method,
        path=path,
        idempotency_key=idempotency_key,
        fence=fence,
        body=body,
        timestamp=timestamp,
    )


def sign_checked(
    secret: bytes, key_id: str, *, method: str, path: str, idempotency_key: str, fence: str, body: bytes, timestamp: int
) -> str:
    """``sign`` with a key already checked (``check_keys``): what a signer
    that checked its key once calls for every request."""
    if not isinstance(timestamp, int) or not 0 <= timestamp <= TIMESTAMP_MAX:
        raise ValueError(f"timestamp must be non-negative integer seconds, not {timestamp!r}")
    mac = _mac(secret, _message(timestamp, method, path, idempotency_key, fence, body))
    return f"t={timestamp},k={key_id},v1={mac}"


def verify(
    header: str | None,
    keys: Mapping[str, bytes],
    *,
    method: str,
    path: str,
    idempotency_key: str,
    fence: str,
    body: bytes,
    now: float,
    window_s: float = SIGNATURE_WINDOW_S_DEFAULT,
) -> str:
    """The id of the key that signed the call; SignatureError (str() says
    why) when the header is missing, malformed, too old or too new, names
    an unknown key, or does not match."""
    if header is None:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is required")
    if len(header) > HEADER_CHARS_MAX:
        raise SignatureError(f"{SIGNATURE_HEADER} is over {HEADER_CHARS_MAX} characters")
    match = _HEADER_PATTERN.fullmatch(header.strip())
    if match is None:
        raise SignatureError(f"{SIGNATURE_HEADER} must be t=<unix s>,k=<key id>,v1=<hex sha256>")
    timestamp, key_id, given = int(match.group(1)), match.group(2), match.group(3)
    if not math.isfinite(now) or abs(now - timestamp) > window_s:
        raise SignatureError(f"signature time {timestamp} is more than {window_s:g} s from now ({now:.0f})")
    secret = keys.get(key_id)
    if secret is None:
        raise SignatureError(f"unknown key id {key_id!r}")
    expected = _mac(secret, _message(timestamp, method, path, idempotency_key, fence, body))
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature does not match the request")
    return key_id


def request_digest(method: str, path: str, body: bytes) -> str:
    """What binds a stored answer to its request: method, path, body."""
    message = "\n".join((method, path, body_sha256(bytes(body))))
    return hashlib.sha256(message.encode("utf-8", "surrogatepass")).hexdigest()
