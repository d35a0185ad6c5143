"""Request signing: sign/verify agree, and every field, the time window and
the key set matter; then the kit refuses unsigned calls over HTTP and gRPC."""

from __future__ import annotations

import pytest

from coordinator.client.participant.errors import SignatureError
from coordinator.client.participant.signing import KEYS_MAX, SECRET_BYTES_MIN, check_keys, request_digest, sign, verify

OLD = b"o" * 32
NEW = b"n" * 32
NOW = 1_800_000_000
CALL = {
    "method": "POST",
    "path": "/orders?x=1",
    "idempotency_key": "saga-1/create/action",
    "fence": "3:7",
    "body": b'{"sku":"W-1"}',
}


def test_a_signed_call_verifies_with_the_key_that_signed_it() -> None:
    header = sign(OLD, "k-old", timestamp=NOW, **CALL)
    assert header.startswith(f"t={NOW},k=k-old,v1=")
    assert verify(header, {"k-old": OLD}, now=NOW, **CALL) == "k-old"


@pytest.mark.parametrize(
    "field, value",
    [
        ("method", "PUT"),
        ("path", "/orders?x=2"),
        ("idempotency_key", "saga-1/create/compensation"),
        ("fence", "4:7"),
        ("fence", ""),
        ("body", b'{"sku":"W-2"}'),
    ],
)
def test_every_signed_field_matters(field: str, value: object) -> None:
    header = sign(OLD, "k-old", timestamp=NOW, **CALL)
    with pytest.raises(SignatureError, match="does not match"):
        verify(header, {"k-old": OLD}, now=NOW, **{**CALL, field: value})


def test_the_time_window_refuses_old_and_future_signatures() -> None:
    header = sign(OLD, "k-old", timestamp=NOW, **CALL)
    assert verify(header, {"k-old": OLD}, now=NOW + 300, **CALL) == "k-old"
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(SignatureError, match="300 s"):
            verify(header, {"k-old": OLD}, now=now, **CALL)
    with pytest.raises(SignatureError):
        verify(header, {"k-old": OLD}, now=NOW + 11, window_s=10, **CALL)


def test_rotation_accepts_old_and_new_keys_and_nothing_else() -> None:
    both = {"k-old": OLD, "k-new": NEW}
    for key_id, secret in (("k-old", OLD), ("k-new", NEW)):
        assert verify(sign(secret, key_id, timestamp=NOW, **CALL), both, now=NOW, **CALL) == key_id
    after = {"k-new": NEW}
    with pytest.raises(SignatureError, match="unknown key id"):
        verify(sign(OLD, "k-old", timestamp=NOW, **CALL), after, now=NOW, **CALL)
    # A key id naming the new key but signed with the old secret.
    forged = sign(OLD, "k-new", timestamp=NOW, **CALL)
    with pytest.raises(SignatureError, match="does not match"):
        verify(forged, after, now=NOW, **CALL)


@pytest.mark.parametrize(
    "header", [None, "", "t=1,k=a", "v1=" + "0" * 64, f"t={NOW},k=k-old,v1=" + "G" * 64, "x" * 300]
)
def test_missing_or_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(header, {"k-old": OLD}, now=NOW, **CALL)


def test_fields_with_newlines_cannot_be_signed_or_verified() -> None:
    with pytest.raises(SignatureError, match="newline"):
        sign(OLD, "k-old", timestamp=NOW, **{**CALL, "path": "/a\nb"})
    header = sign(OLD, "k-old", timestamp=NOW, **CALL)
    with pytest.raises(SignatureError, match="newline"):
        verify(header, {"k-old": OLD}, now=NOW, **{**CALL, "fence": "3:7\n"})


def test_keys_are_checked() -> None:
    for keys in ({}, {"k": b"short"}, {"bad id": OLD}, {f"k{i}": OLD for i in range(KEYS_MAX + 1)}):
        with pytest.raises(ValueError):
            check_keys(keys)
    assert check_keys({"k": bytearray(SECRET_BYTES_MIN)}) == {"k": bytes(SECRET_BYTES_MIN)}
    with pytest.raises(ValueError):
        sign(b"short", "k", timestamp=NOW, **CALL)


def test_request_digest_binds_method_path_and_body() -> None:
    base = request_digest("POST", "/orders", b"{}")
    assert base == request_digest("POST", "/orders", b"{}")
    assert (
        len(
            {
                base,
                request_digest("PUT", "/orders", b"{}"),
                request_digest("POST", "/orders/x", b"{}"),
                request_digest("POST", "/orders", b"{ }"),
            }
        )
        == 4
    )


def test_the_signature_is_hmac_sha256_of_the_documented_message() -> None:
    """A known answer: what a participant in any language computes (module
    docstring of client/participant/signing.py), whichever call makes it."""
    import hashlib
    import hmac

    secret = b"k" * SECRET_BYTES_MIN
    body = b'{"n": 1}'
    message = "\n".join(
        (
            "coordinator-signature-v1",
            "1700000000",
            "POST",
            "/do",
            "s1/a/action",
            "3:17",
            hashlib.sha256(body).hexdigest(),
        )
    ).encode()
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    header = sign(
        secret,
        "k1",
        method="POST",
        path="/do",
        idempotency_key="s1/a/action",
        fence="3:17",
        body=body,
        timestamp=1700000000,
    )
    assert header == f"t=1700000000,k=k1,v1={expected}"
