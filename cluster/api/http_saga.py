"""The saga endpoints of the HTTP API (README.md, "HTTP API"); what they do is
in :mod:`coordinator.cluster.api.operations`."""

from __future__ import annotations

from aiohttp import web

from coordinator.cluster.api import operations
from coordinator.cluster.api.http_node import request_by, request_node, submitted
from coordinator.cluster.api.operations import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, OUTCOMES_LIMIT_MAX, WAIT_S_MAX
from coordinator.cluster.api.selection import list_arguments

__all__ = ["add_saga_routes", "LIST_LIMIT_DEFAULT", "LIST_LIMIT_MAX", "OUTCOMES_LIMIT_MAX", "WAIT_S_MAX"]


async def submit_saga(request: web.Request) -> web.Response:
    return await submitted(request, "saga")


async def get_saga(request: web.Request) -> web.Response:
    """The saga. ``?wait=S`` (at most WAIT_S_MAX): while this node leads, wait
    up to S seconds for a terminal state. With ``&since=UPDATED_AT`` (the
    ``updated_at`` of a state the caller has), answer as soon as the saga's
    ``updated_at`` differs from it instead: a long poll for every change (a
    change within the same millisecond as ``since`` is answered with the next
    one, or when S runs out). ``?stale=true`` reads the local replica."""
    query = request.query
    view = await operations.get_workflow(
        request_node(request),
        "saga",
        request.match_info["id"],
        wait_s=query.get("wait"),
        since=query.get("since"),
        stale=query.get("stale"),
        client=request.remote,
        definition=query.get("definition"),
    )
    return web.json_response(view)


async def list_sagas(request: web.Request) -> web.Response:
    query = request.query
    views = await operations.list_workflows(request_node(request), "saga", **list_arguments(query))
    return web.json_response(views)


async def signal_saga(request: web.Request) -> web.Response:
    """Deliver the signal ``name`` with the JSON body as its payload (none: null)."""
    match = request.match_info
    operations.check_signal(match["id"], match["name"])  # before the body is read
    answer = await operations.signal_saga(
        request_node(request), match["id"], match["name"], await request.read(), by=request_by(request)
    )
    return web.json_response(answer, status=202)


async def redrive_saga(request: web.Request) -> web.Response:
    answer = await operations.redrive_saga(request_node(request), request.match_info["id"], by=request_by(request))
    return web.json_response(answer, status=202)


async def redrive_sagas(request: web.Request) -> web.Response:
    """Redrive the stuck sagas a filter selects (operations.redrive_sagas)."""
    answer = await operations.redrive_sagas(request_node(request), await request.read(), by=request_by(request))
    return web.json_response(answer)


async def service_outcomes(request: web.Request) -> web.Response:
    query = request.query
    answer = await operations.service_outcomes(
        request_node(request),
        request.match_info["name"],
        after=query.get("after"),
        limit=query.get("limit"),
        stale=query.get("stale"),
    )
    return web.json_response(answer)


def add_saga_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sagas", submit_saga)
    app.router.add_get("/v1/sagas", list_sagas)
    app.router.add_post("/v1/sagas/redrive", redrive_sagas)
    app.router.add_get("/v1/sagas/{id}", get_saga)
    app.router.add_post("/v1/sagas/{id}/signals/{name}", signal_saga)
    app.router.add_post("/v1/sagas/{id}/redrive", redrive_saga)
    app.router.add_get("/v1/services/{name}/outcomes", service_outcomes)
