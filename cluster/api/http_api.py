"""The node's HTTP API (aiohttp), as README.md "HTTP API" describes it.

Writes go to the leader: a follower answers ``307`` with the leader's URL.
Reads are linearizable (a shared read barrier through the log) unless
``?stale=true`` asks for the local replica. Every error has the API's
shape, built in one place (:func:`_error_response`).

Browsers are kept out (:func:`browser_guard_middleware`): a page on any
site may send "simple" requests (text/plain or form POSTs) to a node, and a
rebinding DNS name may make the node its own origin. So a write carrying a
body needs ``Content-Type: application/json`` (415), an ``Origin`` header
must be in ``[api] allowed_origins`` or be one of the cluster's own (403),
and the ``Host`` must be a node's configured host, a loopback name or in
``[api] allowed_hosts`` (421).

The cluster's own origins are the pages its nodes serve (the dashboard,
``/ui/``): the scheme the nodes speak, a host the Host check accepts and the
HTTP port of one of the nodes. A page of one node may call another (it moves
to another node when its own dies): for such a cross-origin caller, a CORS
preflight is answered here and the answer carries
``Access-Control-Allow-Origin`` (:func:`cors_headers`).

The handlers only decode requests and encode answers: what they do is in
:mod:`coordinator.cluster.api.operations`, which the gRPC API (:mod:`coordinator.cluster.api.grpc_api`)
serves too.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from yarl import URL

from coordinator.cluster.api import operations, roles
from coordinator.cluster.api.http_events import add_event_routes
from coordinator.cluster.api.http_node import NODE_KEY, TOKEN_KEY, request_by, request_node
from coordinator.cluster.api.http_saga import add_saga_routes
from coordinator.cluster.api.http_twopc import add_transaction_routes
from coordinator.cluster.api.http_ui import add_ui_routes
from coordinator.cluster.api.metrics import render_metrics
from coordinator.cluster.api.openapi import OPENAPI_PATH, openapi_document
from coordinator.cluster.api.operations import LeaderElsewhere
from coordinator.cluster.core.errors import (
    ApiError,
    Forbidden,
    Misdirected,
    NotFound,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from coordinator.cluster.core.netpolicy import literal_address
from coordinator.cluster.core.node import Node
from coordinator.cluster.core.tokens import Role

__all__ = ["build_app"]

log = logging.getLogger(__name__)


class Redirect(ApiError):
    status, code = 307, "not_leader"


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
    except LeaderElsewhere as error:
        response = _error_response(_redirect(request, error))
    except ApiError as error:
        response = _error_response(error)
    except web.HTTPRequestEntityTooLarge:
        limit = request_node(request).config.cluster.http_body_bytes_max
        response = _error_response(TooLarge(f"body: larger than the limit of {limit} bytes"))
    except web.HTTPNotFound:
        response = _error_response(NotFound(f"no such route: {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        error = ApiError(
            f"{request.method} is not allowed here (allowed: {', '.join(sorted(exc.allowed_methods))})",
            code="method_not_allowed",
        )
        error.status = 405
        response = _error_response(error)
    except web.HTTPException as exc:
        error = ApiError(exc.reason, code="invalid" if exc.status == 400 else "http_error")
        error.status = exc.status
        response = _error_response(error)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the answer is a 500 in the API's error shape
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = _error_response(ApiError("internal error; see the node's log"))
    counts = request_node(request).http_responses
    counts[response.status] = counts.get(response.status, 0) + 1
    return response


OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# A registry write's request id, the same on every retry (cluster/stores/requests.py).
IDEMPOTENCY_KEY = "Idempotency-Key"
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def host_name(header: str) -> str:
    """The host of a Host header, without the port, brackets or a final dot, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def _is_loopback(host: str) -> bool:
    address = literal_address(host)
    return host in LOOPBACK_NAMES if address is None else address.is_loopback


def host_accepted(host: str, hosts: frozenset[str], any_address: bool) -> bool:
    """A Host (or an Origin's host) names this cluster: a node's or a listed
    name, a loopback name or address, or any address on a wildcard bind."""
    return host in hosts or _is_loopback(host) or (any_address and literal_address(host) is not None)


def accepted_hosts(node: Node) -> tuple[frozenset[str], bool]:
    """The Host names the node answers to, and whether any IP address is
    one of them too (a node bound to a wildcard address)."""
    cluster = node.config.cluster
    hosts = {host_name(n.http) for n in cluster.nodes} | set(cluster.api.allowed_hosts)
    return frozenset(hosts), host_name(node.config.node.http) in WILDCARD_HOSTS


def cluster_origin_check(node: Node):
    """A predicate: is this Origin header a page served by a node of this
    cluster (see the module docstring)?"""
    hosts, any_address = accepted_hosts(node)
    scheme = "https" if node.config.node.tls else "http"
    ports = frozenset(n.http.rsplit(":", 1)[1] for n in node.config.cluster.nodes)

    def check(origin: str) -> bool:
        try:
            url = URL(origin)
        except ValueError:
            return False
        if url.scheme != scheme or url.host is None or url.path not in ("", "/") or url.explicit_port is None:
            return False
        host = url.host.lower().rstrip(".")
        return host_accepted(host, hosts, any_address) and str(url.explicit_port) in ports

    return check


CORS_METHODS = "GET, POST, PUT, DELETE"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
CORS_MAX_AGE_S = 600
CORS_KEY = web.RequestKey("cors_origin", str)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS answer for a cluster page on another
    node (set by the guard), on every response, streams and errors included."""
    origin = request.get(CORS_KEY)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Location, Retry-After"
        response.headers.add("Vary", "Origin")


def browser_guard_middleware(node: Node):
    """Refuse what only a browser on another site would send; see the module docstring."""
    hosts, any_address = accepted_hosts(node)
    origins = frozenset(node.config.cluster.api.allowed_origins)
    own_origin = cluster_origin_check(node)

    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        header = request.headers.get("Host")
        if header is not None and request.path not in OPEN_PATHS:
            host = host_name(header)
            if not host_accepted(host, hosts, any_address):
                raise Misdirected(
                    f"Host {header[:100]!r} is not a name of this node; add it to [api] allowed_hosts in the cluster file"
                )
        origin = request.headers.get("Origin")
        if origin is not None:
            same = header is not None and origin.lower() == f"{request.scheme}://{header.lower()}"
            if not same and own_origin(origin):
                request[CORS_KEY] = origin
                if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                    return web.Response(
                        status=204,
                        headers={
                            "Access-Control-Allow-Methods": CORS_METHODS,
                            "Access-Control-Allow-Headers": CORS_HEADERS,
                            "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                        },
                    )
            elif not same and origin.lower() not in origins:
                raise Forbidden(
                    f"Origin {origin[:100]!r} is not allowed; add it to [api] allowed_origins in the cluster file"
                )
        if request.method in WRITE_METHODS:
            content_type = request.headers.get("Content-Type")
            if content_type is None and request.body_exists:
                raise UnsupportedMediaType("a request with a body needs Content-Type: application/json")
            if content_type is not None and request.content_type != "application/json":
                raise UnsupportedMediaType(f"Content-Type must be application/json, not {content_type[:100]!r}")
        return await handler(request)

    return guard


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """With tokens configured (the node's current table, swapped on SIGHUP),
    every route but health and readiness needs ``Authorization: Bearer
    TOKEN`` of a token whose role the route needs (cluster/api/roles.py):
    401 without a known token, 403 when its role is too low. A path no route
    matches needs any known token, then answers 404 or 405."""
    tokens = request_node(request).tokens
    if tokens is not None:
        match = request.match_info
        if match.http_exception is not None:
            needed = roles.OPEN if request.path in OPEN_PATHS else Role.READ
        else:
            needed = roles.http_role(request.method, match.route.resource.canonical)
        what = f"{request.method} {match.route.resource.canonical if match.http_exception is None else request.path}"
        request[TOKEN_KEY] = roles.authorize(tokens, request.headers.get("Authorization"), needed, what)
    return await handler(request)


# -- request helpers ------------------------------------------------------------
def _redirect(request: web.Request, error: LeaderElsewhere) -> Redirect:
    leader = error.leader
    location = f"{leader.http_url}{request.path_qs}"
    return Redirect(error.message, location=location, leader=leader.http_url)


def _service_name(request: web.Request) -> str:
    return operations.service_name(request.match_info["name"])


# -- handlers ------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node": request_node(request).config.node.id})


async def readyz(request: web.Request) -> web.Response:
    status = request_node(request).log.status()
    if status.leader is None:
        raise Unavailable("no leader is known yet", code="not_ready", retry_after_s=1)
    if status.applied_index < status.commit_index:
        raise Unavailable(
            f"applied {status.applied_index} of {status.commit_index} committed entries",
            code="not_ready",
            retry_after_s=1,
        )
    return web.json_response({"ready": True, "applied_index": status.applied_index})


async def cluster_info(request: web.Request) -> web.Response:
    """``?digest=true`` adds ``state_digest``: a hash of this replica's applied
    state, read with its applied index, equal on nodes that applied the same
    entries (the convergence check of chaos runs)."""
    node = request_node(request)
    view = node.cluster_view()
    if operations.parse_flag("digest", request.query.get("digest")):
        view.update(node.state_digest())
    return web.json_response(view)


async def cluster_recent(request: web.Request) -> web.Response:
    """This node's last minutes (cluster/core/recent.py): local, never redirected."""
    node = request_node(request)
    return web.json_response(
        {"node": node.config.node.id, "interval_s": node.recent.interval_s, "windows": node.recent.view()}
    )


async def list_workers(request: web.Request) -> web.Response:
    return web.json_response(operations.list_workers(request_node(request), stale=request.query.get("stale")))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render_metrics(request_node(request)), content_type="text/plain", charset="utf-8")


async def list_services(request: web.Request) -> web.Response:
    return web.json_response(await operations.list_services(request_node(request), stale=request.query.get("stale")))


async def get_service(request: web.Request) -> web.Response:
    node, query = request_node(request), request.query
    return web.json_response(await operations.get_service(node, request.match_info["name"], stale=query.get("stale")))


async def put_service(request: web.Request) -> web.Response:
    name = _service_name(request)
    node, force = request_node(request), request.query.get("force")
    return web.json_response(
        await operations.put_service(
            node,
            name,
            await request.read(),
            force=force,
            remote=request.remote,
            request_id=request.headers.get(IDEMPOTENCY_KEY),
            by=request_by(request),
        )
    )


async def delete_service(request: web.Request) -> web.Response:
    return web.json_response(
        await operations.delete_service(
            request_node(request),
            request.match_info["name"],
            request_id=request.headers.get(IDEMPOTENCY_KEY),
            by=request_by(request),
        )
    )


def build_app(node: Node) -> web.Application:
    middlewares = [errors_middleware, browser_guard_middleware(node), auth_middleware]
    app = web.Application(client_max_size=node.config.cluster.http_body_bytes_max, middlewares=middlewares)
    app[NODE_KEY] = node
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/cluster", cluster_info)
    app.router.add_get("/v1/cluster/recent", cluster_recent)
    app.router.add_get("/v1/workers", list_workers)
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/services/{name}", get_service)
    app.router.add_put("/v1/services/{name}", put_service)
    app.router.add_delete("/v1/services/{name}", delete_service)
    add_saga_routes(app)
    add_transaction_routes(app)
    add_event_routes(app)
    add_ui_routes(app, node)
    app.router.add_get(OPENAPI_PATH, openapi_document)
    app.on_response_prepare.append(cors_headers)
    return app
