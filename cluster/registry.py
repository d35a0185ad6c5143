"""The service registry: the participants sagas and transactions may call.

Validation here is shared by the HTTP edge (to answer 400 early) and the
state machine (which re-checks every command it applies: the log is the
truth, not the edge).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from consensus import Rejection

__all__ = [
    "SERVICE_NAME_PATTERN",
    "SERVICES_MAX",
    "URL_CHARS_MAX",
    "ServiceRegistry",
    "validate_service_name",
    "validate_service_body",
]

SERVICE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
SERVICES_MAX = 1024
URL_CHARS_MAX = 2048
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
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidService("url", "must not contain whitespace or control characters")
    if port == 0:
        raise InvalidService("url", "port must be in 1-65535")
    return url.rstrip("/")


def _validate_grpc(target: object) -> str:
    if not isinstance(target, str) or not _GRPC_TARGET.match(target) or not 0 < int(target.rsplit(":", 1)[1]) < 65536:
        raise InvalidService("grpc", "must be HOST:PORT")
    return target


def validate_service_body(body: Any) -> dict:
    """``{"url": ...}`` or ``{"grpc": ...}``, exactly one, nothing else."""
    if not isinstance(body, dict):
        raise InvalidService("body", "must be a JSON object")
    for key in body:
        if key not in ("url", "grpc"):
            raise InvalidService(str(key), "unknown field")
    if ("url" in body) == ("grpc" in body):
        raise InvalidService("body", "give exactly one of url or grpc")
    if "url" in body:
        return {"url": _validate_url(body["url"]), "grpc": None}
    return {"url": None, "grpc": _validate_grpc(body["grpc"])}


class ServiceRegistry:
    def __init__(self) -> None:
        self.services: dict[str, dict] = {}

    def put(self, index: int, at_ms: int, body: Any) -> dict:
        try:
            name = validate_service_name(body.get("name") if isinstance(body, dict) else None)
            target = validate_service_body({k: v for k, v in body.items() if k != "name"})
        except InvalidService as exc:
            raise Rejection("invalid", str(exc)) from None
        existing = self.services.get(name)
        if existing is None and len(self.services) >= SERVICES_MAX:
            raise Rejection("conflict", f"the registry is full ({SERVICES_MAX} services)")
        service = {
            "name": name,
            **target,
            "created_at_ms": existing["created_at_ms"] if existing else at_ms,
            "updated_at_ms": at_ms,
            "revision": index,
        }
        self.services[name] = service
        return service

    def delete(self, body: Any) -> dict:
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
