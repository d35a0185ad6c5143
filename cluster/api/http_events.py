"""``GET /v1/events``: Server-Sent Events of what this node applies
(README.md, "Event stream"; the hub is :mod:`coordinator.cluster.core.events`).

Any node serves it from its own replica: a follower never redirects to the
leader, so dashboards need not load it. Each event is written as::

    id: 1234.0
    event: workflow
    data: {"id": "1234.0", "index": 1234, "kind": "workflow", ...}

``event:`` is the kind (``workflow``, ``service``, ``role``), or ``reset``
(events were lost between the id asked for and this one: reload the state
by GET) or ``dropped`` (the last one: this reader fell too far behind; it
has no ``id:`` line, so a reader's Last-Event-ID stays the last event it
got, and ``last_event_id`` in its data says the same). A
comment line (``: keepalive``) goes every ``HEARTBEAT_S`` so proxies keep an
idle stream open. The stream ends when the node stops.

Query: ``kinds`` (comma-separated, of workflow, service, role; default all),
``workflow`` (one workflow id: only its events), ``since`` (an event id, as
``Last-Event-ID``; the header wins when both are given). A bad value is 400
before the stream starts; so are 429 (too many streams on the node or from
this client) and 401/403 (the route needs a ``read`` token).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json

from aiohttp import web

from coordinator.cluster.api.http_node import request_node
from coordinator.cluster.core.errors import InvalidInput
from coordinator.cluster.core.events import EVENT_KINDS, format_id, parse_id

__all__ = ["EVENTS_PATH", "HEARTBEAT_S", "add_event_routes", "parse_filters"]

EVENTS_PATH = "/v1/events"
HEARTBEAT_S = 15.0
CHECK_S = 1.0
WORKFLOW_ID_CHARS_MAX = 256


def parse_filters(query, last_event_id: str | None) -> tuple[frozenset[str], str | None, tuple[int, int] | None]:
    """(kinds, workflow, since) of a request; InvalidInput (400) names the field."""
    kinds = frozenset(EVENT_KINDS)
    raw = query.get("kinds")
    if raw is not None:
        asked = [k.strip() for k in raw.split(",") if k.strip()]
        unknown = sorted(set(asked) - EVENT_KINDS)
        if not asked or unknown:
            raise InvalidInput("kinds", f"a comma-separated list of {', '.join(sorted(EVENT_KINDS))}; got {raw[:80]!r}")
        kinds = frozenset(asked)
    workflow = query.get("workflow")
    if workflow is not None and not 0 < len(workflow) <= WORKFLOW_ID_CHARS_MAX:
        raise InvalidInput("workflow", f"a workflow id of 1 to {WORKFLOW_ID_CHARS_MAX} characters")
    since = None
    if last_event_id is not None and last_event_id.strip():
        since = parse_id(last_event_id, "Last-Event-ID")
    elif query.get("since") is not None:
        since = parse_id(query["since"], "since")
    return kinds, workflow, since


# Frames already encoded, by event id, per node (its app): every stream of
# a node sends the same event the same way, so N dashboards cost one
# encoding, not N. An id names one event on a node (the hub never reuses
# one); reset and dropped events are a reader's own and are not kept.
FRAMES_KEPT = 4096
FRAMES_KEY = web.AppKey("event_frames", collections.OrderedDict)


def _frame(event: dict, frames: collections.OrderedDict | None = None) -> bytes:
    """One SSE event; without ``id`` (``dropped``) the reader's last id stands."""
    shared = frames is not None and "id" in event and event["kind"] not in ("reset", "dropped")
    if shared and (frame := frames.get(event["id"])) is not None:
        return frame
    data = json.dumps(event, separators=(",", ":"))
    id_line = f"id: {event['id']}\n" if "id" in event else ""
    frame = f"{id_line}event: {event['kind']}\ndata: {data}\n\n".encode()
    if shared:
        frames[event["id"]] = frame
        if len(frames) > FRAMES_KEPT:
            frames.popitem(last=False)
    return frame


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    subscription,
    last_id: str | None,
    heartbeat_s: float,
    queue: int,
) -> None:
    """Write the subscription's events until it ends or the reader leaves
    (checked every ``CHECK_S``: aiohttp does not cancel a handler whose
    client went away, and a stream must not hold its place until the next
    heartbeat fails)."""
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        event = await subscription.next(min(CHECK_S, heartbeat_s))
        if event is not None:
            await response.write(_frame(event, request.app[FRAMES_KEY]))
            last_id, quiet_since = event["id"], loop.time()
            continue
        if subscription.end == "dropped":
            message = (
                f"this reader fell {queue} events behind and was dropped; reconnect with Last-Event-ID "
                "(a reset comes first if the node no longer holds the events after it)"
            )
            await response.write(
                _frame({"kind": "dropped", "type": "dropped", "last_event_id": last_id, "message": message})
            )
            return
        if subscription.end is not None:
            return
        if loop.time() - quiet_since >= heartbeat_s:
            await response.write(b": keepalive\n\n")
            quiet_since = loop.time()


async def stream_events(request: web.Request) -> web.StreamResponse:
    node = request_node(request)
    kinds, workflow, since = parse_filters(request.query, request.headers.get("Last-Event-ID"))
    since_text = None if since is None else format_id(since)
    heartbeat_s = HEARTBEAT_S
    hub = node.events
    with node.event_streams.hold(request.remote):
        subscription = hub.subscribe(since, kinds, workflow)
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
                }
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                await response.write(b": events of node " + node.config.node.id.encode() + b"\n\n")
                await _pump(request, response, subscription, since_text, heartbeat_s, hub.queue_size)
            return response
        finally:
            hub.unsubscribe(subscription)


def add_event_routes(app: web.Application) -> None:
    app[FRAMES_KEY] = collections.OrderedDict()
    app.router.add_get(EVENTS_PATH, stream_events)
