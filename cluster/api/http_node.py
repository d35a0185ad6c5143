"""The node an HTTP handler serves: ``build_app`` (cluster/api/http_api.py)
keeps it in the aiohttp application under ``NODE_KEY``, and every handler
module (http_api, http_saga, http_twopc) reads it with ``request_node``.
The token a request came with (``auth_middleware``) is under ``TOKEN_KEY``;
``request_by`` is its name, what a write records as ``by``. ``submitted``
answers a saga or transaction submission the same way for both."""

from __future__ import annotations

from aiohttp import web

from coordinator.cluster.api import operations
from coordinator.cluster.core.node import Node

__all__ = ["NODE_KEY", "TOKEN_KEY", "request_by", "request_node", "submitted"]

NODE_KEY = web.AppKey("node", object)
TOKEN_KEY = web.RequestKey("token", object)


def request_node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def request_by(request: web.Request) -> str | None:
    """The name of the request's token, None without tokens."""
    token = request.get(TOKEN_KEY)
    return getattr(token, "name", None)


async def submitted(request: web.Request, kind: str) -> web.Response:
    """``POST /v1/sagas`` or ``/v1/transactions`` (``kind`` "saga" or "tx"),
    ``?wait=S`` to submit and wait: 201 created, 200 the same again."""
    view, created = await operations.submit_workflow(
        request_node(request),
        kind,
        await request.read(),
        by=request_by(request),
        wait_s=request.query.get("wait"),
        client=request.remote,
    )
    return web.json_response(view, status=201 if created else 200)
