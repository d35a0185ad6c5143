"""The service registry: the participants sagas and transactions may call.

A record names an HTTP participant by its base URL (``https://`` is
called over TLS) or a gRPC one by its target, with ``tls`` true when the
target speaks TLS. ``tls`` is stored only when true: a record without it
(any record written before it existed, in a journal or a snapshot) is a
plain gRPC or HTTP participant, and the records of services that do not
use it are the same as before, so the state's digest is too.

Validation here is shared by the HTTP edge (to answer 400 early) and the
state machine (which re-checks every command it applies: the log is the
truth, not the edge).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from coordinator.cluster.stores.who import command_by
from coordinator.consensus import Rejection
from coordinator.grammar import limits as grammar_limits

__all__ = [
    "SERVICE_NAME_PATTERN",
    "SERVICES_MAX",
    "URL_CHARS_MAX",
    "ServiceRegistry",
    "validate_service_name",
    "service_target",
    "validate_service_body",
]

# The machines' service names (grammar/limits.py), for `match`.
SERVICE_NAME_PATTERN = re.compile(grammar_limits.SERVICE_NAME_PATTERN.pattern + r"\Z")
SERVICES_MAX = 1024
URL_CHARS_MAX = 2048
REMOTE_CHARS_MAX = 256  # the recorded address of whoever forced a re-point
_GRPC_TARGET = re.compile(r"[A-Za-z0-9.-]{1,253}:[0-9]{1,5}\Z")


class InvalidService(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def validate_service_name(name: object) -> str:
    if not isinstance(name, str) or not SERVICE_NAME_PATTERN.match(name):
        raise InvalidService("name", "must match [a-z0-9][a-z0-9-]{0,62}")
    return name


def _validate_url(url: object) -> str:
    if not isinstance(url, str):
        raise InvalidService("url", "must be a string")
    if len(url) > URL_CHARS_MAX:
        raise InvalidService("url", f"longer than {URL_CHARS_MAX} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidService("url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidService("url", "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidService("url", "must name a host")
    if parts.username or parts.password:
        raise InvalidService("url", "must not carry credentials")
    if parts.query or parts.fragment:
        raise InvalidService("url", "must not have a query or a fragment")
    # No whitespace or control character: str.isprintable is False for every
    # one of them but the ASCII space (checked over all of Unicode in
    # tests/cluster/test_registry_urls.py), and it loops in C, not per
    # character in Python (every registry write, on every node).
    if " " in url or not url.isprintable():
        raise InvalidService("url", "must not contain whitespace or control characters")
    if port == 0:
        raise InvalidService("url", "port must be in 1-65535")
    return url.rstrip("/")


def _validate_grpc(target: object) -> str:
    if not isinstance(target, str) or not _GRPC_TARGET.match(target) or not 0 < int(target.rsplit(":", 1)[1]) < 65536:
        raise InvalidService("grpc", "must be HOST:PORT")
    return target


def validate_service_body(body: Any) -> dict:
    """``{"url": ...}`` or ``{"grpc": ..., "tls": bool}`` (``tls`` optional),
    exactly one of url and grpc, nothing else. The target: ``url`` and
    ``grpc`` (one None), and ``tls: True`` only for a TLS gRPC target."""
    if not isinstance(body, dict):
        raise InvalidService("body", "must be a JSON object")
    for key in body:
        if key not in ("url", "grpc", "tls"):
            raise InvalidService(str(key), "unknown field")
    if ("url" in body) == ("grpc" in body):
        raise InvalidService("body", "give exactly one of url or grpc")
    if "url" in body:
        if "tls" in body:
            raise InvalidService("tls", "only with grpc; for a url, https:// says it")
        return {"url": _validate_url(body["url"]), "grpc": None}
    tls = body.get("tls", False)
    if not isinstance(tls, bool):
        raise InvalidService("tls", "must be true or false")
    target = {"url": None, "grpc": _validate_grpc(body["grpc"])}
    return {**target, "tls": True} if tls else target


def service_target(service: dict) -> dict:
    """Where a record points, as `validate_service_body` returns it (a
    record without ``tls`` is not TLS)."""
    target = {"url": service["url"], "grpc": service["grpc"]}
    return {**target, "tls": True} if service.get("tls") else target


def _forced_by(body: dict) -> tuple[bool, dict | None]:
    """``force`` of a put, and who forced it: ``{"remote", "by"}`` (the
    request's address, the token's name or None). An entry written before
    tokens had names says ``by = {"remote", "token": bool}`` instead (whether
    a token was configured); it still applies, recorded as it was."""
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidService("force", "must be true or false")
    by = body.get("by")
    if isinstance(by, dict):  # the form before token names
        if not force:
            return False, None
        if set(by) != {"remote", "token"}:
            raise InvalidService("by", "a forced put names who forced it: {remote, token}")
        remote, token = by["remote"], by["token"]
        if not _valid_remote(remote) or not isinstance(token, bool):
            raise InvalidService("by", "remote is an address or null, token true or false")
        return True, {"remote": remote, "token": token}
    try:
        name = command_by(body)
    except Rejection as rejection:
        raise InvalidService("by", rejection.message.removeprefix("by: ")) from None
    remote = body.get("remote")
    if not _valid_remote(remote):
        raise InvalidService("remote", "an address or null")
    if not force:
        return False, None
    if "by" not in body or "remote" not in body:
        raise InvalidService("by", "a forced put names who forced it: remote and by")
    return True, {"remote": remote, "by": name}


def _valid_remote(remote: object) -> bool:
    return remote is None or (isinstance(remote, str) and len(remote) <= REMOTE_CHARS_MAX)


class ServiceRegistry:
    def __init__(self) -> None:
        self.services: dict[str, dict] = {}

    def put(self, index: int, at_ms: int, body: Any, in_use: Callable[[str], bool] = lambda name: False) -> dict:
        """Register or update a service. Re-pointing one that running
        workflows use (`in_use`) is a conflict unless the body says
        ``force``; a forced re-point is recorded in the service as
        ``forced`` (when, from which address, by which token, and the
        previous target) until the next one."""
        try:
            name = validate_service_name(body.get("name") if isinstance(body, dict) else None)
            force, by = _forced_by(body)
            target = validate_service_body(
                {k: v for k, v in body.items() if k not in ("name", "force", "by", "remote")}
            )
        except InvalidService as exc:
            raise Rejection("invalid", str(exc)) from None
        existing = self.services.get(name)
        if existing is None and len(self.services) >= SERVICES_MAX:
            raise Rejection("conflict", f"the registry is full ({SERVICES_MAX} services)")
        forced = existing.get("forced") if existing else None
        previous = service_target(existing) if existing else None
        if previous is not None and previous != target and in_use(name):
            if not force:
                raise Rejection(
                    "conflict",
                    f"service {name!r} is used by workflows that are still running; "
                    "re-point it with ?force=true (recorded) or wait for them to end",
                )
            forced = {"at_ms": at_ms, **by, "previous": previous}
        service = {
            "name": name,
            **target,
            "created_at_ms": existing["created_at_ms"] if existing else at_ms,
            "updated_at_ms": at_ms,
            "revision": index,
        }
        if forced is not None:
            service["forced"] = forced
        self.services[name] = service
        return service

    def delete(self, body: Any) -> dict:
        command_by(body)  # checked; recorded in the log entry only
        name = body.get("name") if isinstance(body, dict) else None
        service = self.services.pop(name, None) if isinstance(name, str) else None
        if service is None:
            raise Rejection("not_found", f"no service {name!r}")
        return service

    def get(self, name: str) -> dict | None:
        return self.services.get(name)

    def names(self) -> frozenset[str]:
        return frozenset(self.services)

    def snapshot(self) -> list:
        return [self.services[name] for name in sorted(self.services)]

    def restore(self, data: list) -> None:
        self.services = {service["name"]: dict(service) for service in data}
