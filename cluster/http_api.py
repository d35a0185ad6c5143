"""The node's HTTP API (aiohttp): contract section 4.

Writes go to the leader: a follower answers ``307`` with the leader's URL.
Reads are linearizable (a shared read barrier through the log) unless
``?stale=true`` asks for the local replica. Every error has the contract's
shape, built in one place (:func:`_error_response`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from consensus import Command, EntryTooLarge, NotLeader, NotWritten, OutcomeUnknown, QueueFull, Rejected

from .errors import ApiError, InvalidInput, NotFound, Overloaded, TooLarge, Unavailable, error_for_rejection
from .metrics import render_metrics
from .registry import InvalidService, validate_service_body, validate_service_name

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node

__all__ = ["build_app"]

log = logging.getLogger(__name__)
NODE_KEY = web.AppKey("node", object)
JSON_DEPTH_MAX = 64


class Redirect(ApiError):
    status, code = 307, "not_leader"


def _node(request: web.Request) -> "Node":
    return request.app[NODE_KEY]


def now_ms() -> int:
    return int(time.time() * 1000)


def _error_response(error: ApiError) -> web.Response:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, Redirect):
        headers["Location"] = error.extra["location"]
        body = {"error": {"code": error.code, "message": error.message, "leader": error.extra["leader"]}}
    else:
        body = error.body()
    return web.json_response(body, status=error.status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as error:
        response = _error_response(error)
    except web.HTTPRequestEntityTooLarge:
        limit = _node(request).config.cluster.http_body_bytes_max
        response = _error_response(TooLarge(f"body: larger than the limit of {limit} bytes"))
    except web.HTTPNotFound:
        response = _error_response(NotFound(f"no such route: {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        error = ApiError(f"{request.method} is not allowed here (allowed: {', '.join(sorted(exc.allowed_methods))})", code="method_not_allowed")
        error.status = 405
        response = _error_response(error)
    except web.HTTPException as exc:
        error = ApiError(exc.reason, code="invalid" if exc.status == 400 else "http_error")
        error.status = exc.status
        response = _error_response(error)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the answer is a 500 in the contract's shape
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = _error_response(ApiError("internal error; see the node's log"))
    counts = _node(request).http_responses
    counts[response.status] = counts.get(response.status, 0) + 1
    return response


OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def auth_middleware(token: str):
    """Every request but health and readiness needs ``Authorization: Bearer TOKEN``
    (compared in constant time)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                error = ApiError("a valid Authorization: Bearer token is required", code="unauthorized")
                error.status = 401
                raise error
        return await handler(request)

    return check


# -- request helpers ------------------------------------------------------------
def _depth(value: Any, depth: int = 0) -> int:
    if depth > JSON_DEPTH_MAX:
        return depth
    if isinstance(value, dict):
        return max((_depth(v, depth + 1) for v in value.values()), default=depth + 1)
    if isinstance(value, list):
        return max((_depth(v, depth + 1) for v in value), default=depth + 1)
    return depth


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise InvalidInput("body", "a JSON body is required")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("body", f"invalid JSON: {exc}") from None
    if _depth(value) > JSON_DEPTH_MAX:
        raise InvalidInput("body", f"nested deeper than {JSON_DEPTH_MAX} levels")
    return value


def query_flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise InvalidInput(name, "must be true or false")
    return value == "true"


def leader_redirect(request: web.Request) -> ApiError:
    node = _node(request)
    leader = node.leader_address()
    if leader is None or leader.id == node.config.node.id:
        return Unavailable("no leader is known yet; retry shortly", code="no_leader", retry_after_s=1)
    location = f"{leader.http_url}{request.path_qs}"
    return Redirect(f"this node is a follower; the leader is {leader.id}", location=location, leader=leader.http_url)


def require_leader(request: web.Request) -> None:
    if not _node(request).log.is_leader():
        raise leader_redirect(request)


async def linearizable(request: web.Request) -> None:
    """Before a read: local for ``?stale=true``, else a barrier on the leader."""
    if query_flag(request, "stale"):
        return
    require_leader(request)
    try:
        await _node(request).log.read_barrier()
    except NotLeader:
        raise leader_redirect(request) from None
    except (OutcomeUnknown, NotWritten) as exc:
        raise Unavailable(f"the read barrier did not commit: {exc}", code="no_leader", retry_after_s=1) from None


async def propose(request: web.Request, kind: str, body: Any) -> Any:
    node = _node(request)
    try:
        result = await node.log.propose(Command(kind, body, at_ms=now_ms()))
    except NotLeader:
        raise leader_redirect(request) from None
    except EntryTooLarge as exc:
        raise TooLarge(str(exc)) from None
    except QueueFull as exc:
        raise Overloaded(str(exc), retry_after_s=1) from None
    except NotWritten as exc:
        raise Unavailable(f"not written: {exc}; safe to retry", code="not_written", retry_after_s=1) from None
    except OutcomeUnknown as exc:
        raise Unavailable(
            f"outcome unknown: {exc}; retry the same request, it is idempotent", code="outcome_unknown", retry_after_s=1
        ) from None
    if isinstance(result, Rejected):
        raise error_for_rejection(result.code, result.message)
    return result.value


# -- views -------------------------------------------------------------------------
def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def service_view(service: dict) -> dict:
    return {
        "name": service["name"],
        "url": service["url"],
        "grpc": service["grpc"],
        "created_at": _iso(service["created_at_ms"]),
        "updated_at": _iso(service["updated_at_ms"]),
        "revision": service["revision"],
    }


def _service_name(request: web.Request) -> str:
    try:
        return validate_service_name(request.match_info["name"])
    except InvalidService as exc:
        raise InvalidInput(exc.field, exc.message) from None


# -- handlers ------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node": _node(request).config.node.id})


async def readyz(request: web.Request) -> web.Response:
    status = _node(request).log.status()
    if status.leader is None:
        raise Unavailable("no leader is known yet", code="not_ready", retry_after_s=1)
    if status.applied_index < status.commit_index:
        raise Unavailable(
            f"applied {status.applied_index} of {status.commit_index} committed entries", code="not_ready", retry_after_s=1
        )
    return web.json_response({"ready": True, "applied_index": status.applied_index})


async def cluster_info(request: web.Request) -> web.Response:
    return web.json_response(_node(request).cluster_view())


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render_metrics(_node(request)), content_type="text/plain", charset="utf-8")


async def list_services(request: web.Request) -> web.Response:
    await linearizable(request)
    node = _node(request)
    with node.log.reading():
        services = [service_view(s) for s in node.state.registry.snapshot()]
    return web.json_response({"services": services})


async def get_service(request: web.Request) -> web.Response:
    name = _service_name(request)
    await linearizable(request)
    node = _node(request)
    with node.log.reading():
        service = node.state.registry.get(name)
        if service is None:
            raise NotFound(f"no service {name!r}")
        return web.json_response(service_view(service))


async def put_service(request: web.Request) -> web.Response:
    name = _service_name(request)
    try:
        target = validate_service_body(await read_json(request))
    except InvalidService as exc:
        raise InvalidInput(exc.field, exc.message) from None
    require_leader(request)
    body = {"name": name, "url": target["url"]} if target["url"] else {"name": name, "grpc": target["grpc"]}
    return web.json_response(service_view(await propose(request, "service.put", body)))


async def delete_service(request: web.Request) -> web.Response:
    name = _service_name(request)
    require_leader(request)
    return web.json_response(service_view(await propose(request, "service.delete", {"name": name})))


def build_app(node: "Node") -> web.Application:
    middlewares = [errors_middleware]
    if node.config.token:
        middlewares.append(auth_middleware(node.config.token))
    app = web.Application(client_max_size=node.config.cluster.http_body_bytes_max, middlewares=middlewares)
    app[NODE_KEY] = node
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/cluster", cluster_info)
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/services/{name}", get_service)
    app.router.add_put("/v1/services/{name}", put_service)
    app.router.add_delete("/v1/services/{name}", delete_service)
    from .http_sagas import add_saga_routes
    from .http_transactions import add_transaction_routes

    add_saga_routes(app)
    add_transaction_routes(app)
    return app
