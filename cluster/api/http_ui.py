"""``/ui/``: the dashboard, served by every node (README.md, "Dashboard").

The page is three files shipped inside the package (``ui/index.html``,
``ui/app.js``, ``ui/app.css``): no build step, nothing fetched from the
internet. They are read once, when the app is built, into memory; a name
not among them is 404, so no request reaches the file system.

The files hold no data, so they need no token (the roles table marks them
open); the page asks for a token when the API answers 401 and sends it in
an ``Authorization`` header on every request - never in a URL.

Headers: a Content-Security-Policy that lets the page run only its own
script and style and talk only to this cluster's nodes (it moves to another
node when the one it talks to dies), no framing, no referrer.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from coordinator.cluster.core.errors import NotFound
from coordinator.cluster.core.node import Node

__all__ = ["UI_PATH", "add_ui_routes", "ui_files"]

UI_PATH = "/ui/"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def ui_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type) of every shipped file of the page."""
    folder = resources.files(__package__).joinpath("ui")
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    if "index.html" not in files:
        raise RuntimeError("the dashboard's index.html is missing from the package")
    return files


def _policy(node: Node) -> str:
    nodes = " ".join(n.http_url for n in node.config.cluster.nodes)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {nodes}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def add_ui_routes(app: web.Application, node: Node) -> None:
    files = ui_files()
    headers = {
        "Content-Security-Policy": _policy(node),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    def serve(name: str) -> web.Response:
        body, content_type = files[name]
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    async def index(request: web.Request) -> web.Response:
        return serve("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in files:
            raise NotFound(f"no file {name[:100]!r} in the dashboard")
        return serve(name)

    app.router.add_get("/ui", index)  # the page names its files by absolute paths
    app.router.add_get(UI_PATH, index)
    app.router.add_get(UI_PATH + "{file}", asset)
