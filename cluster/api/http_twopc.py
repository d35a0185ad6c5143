"""The two-phase commit endpoints of the HTTP API (README.md, "HTTP API"); what
they do is in :mod:`coordinator.cluster.api.operations`.

``GET /v1/transactions/{id}`` is also how a participant left prepared learns
the decision (cooperative termination): any node answers it, a follower by
redirecting to the leader.
"""

from __future__ import annotations

from aiohttp import web

from coordinator.cluster.api import operations
from coordinator.cluster.api.http_node import request_node, submitted
from coordinator.cluster.api.selection import list_arguments

__all__ = ["add_transaction_routes"]


async def submit_transaction(request: web.Request) -> web.Response:
    return await submitted(request, "tx")


async def get_transaction(request: web.Request) -> web.Response:
    """The transaction; ``?wait``, ``&since`` and ``?stale`` as for a saga
    (``http_sagas.get_saga``)."""
    query = request.query
    view = await operations.get_workflow(
        request_node(request),
        "tx",
        request.match_info["id"],
        wait_s=query.get("wait"),
        since=query.get("since"),
        stale=query.get("stale"),
        client=request.remote,
        definition=query.get("definition"),
    )
    return web.json_response(view)


async def list_transactions(request: web.Request) -> web.Response:
    query = request.query
    views = await operations.list_workflows(request_node(request), "tx", **list_arguments(query))
    return web.json_response(views)


def add_transaction_routes(app: web.Application) -> None:
    app.router.add_post("/v1/transactions", submit_transaction)
    app.router.add_get("/v1/transactions", list_transactions)
    app.router.add_get("/v1/transactions/{id}", get_transaction)
