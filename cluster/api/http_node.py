"""The node an HTTP handler serves: ``build_app`` (cluster/api/http_api.py)
keeps it in the aiohttp application under ``NODE_KEY``, and every handler
module (http_api, http_saga, http_twopc) reads it with ``request_node``."""

from __future__ import annotations

from aiohttp import web

from coordinator.cluster.core.node import Node

__all__ = ["NODE_KEY", "request_node"]

NODE_KEY = web.AppKey("node", object)


def request_node(request: web.Request) -> Node:
    return request.app[NODE_KEY]
