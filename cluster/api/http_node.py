"""The node an HTTP handler serves: ``build_app`` (cluster/api/http_api.py)
keeps it in the aiohttp application under ``NODE_KEY``, and every handler
module (http_api, http_saga, http_twopc) reads it with ``request_node``.
The token a request came with (``auth_middleware``) is under ``TOKEN_KEY``;
``request_by`` is its name, what a write records as ``by``."""

from __future__ import annotations

from aiohttp import web

from coordinator.cluster.core.node import Node

__all__ = ["NODE_KEY", "TOKEN_KEY", "request_by", "request_node"]

NODE_KEY = web.AppKey("node", object)
TOKEN_KEY = web.RequestKey("token", object)


def request_node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def request_by(request: web.Request) -> str | None:
    """The name of the request's token, None without tokens."""
    token = request.get(TOKEN_KEY)
    return getattr(token, "name", None)
