"""The saga endpoints of the HTTP API (contract section 4)."""

from __future__ import annotations

import asyncio
import re
import uuid

from aiohttp import web

import saga as machine
from saga import limits as saga_limits

from .errors import Conflict, InvalidInput, NotFound, TooLarge
from .http_api import _node, _service_name, linearizable, propose, read_json, require_leader

__all__ = ["add_saga_routes"]

WAIT_S_MAX = 60.0
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
OUTCOMES_LIMIT_MAX = 1000
_SAGA_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_SIGNAL = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(name, f"must be a number from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise InvalidInput(name, f"must be a number from {low:g} to {high:g}")
    return value


def _saga_id(request: web.Request) -> str:
    saga_id = request.match_info["id"]
    if not _SAGA_ID.match(saga_id):
        raise InvalidInput("id", "must match [A-Za-z0-9._:-]{1,128}")
    return saga_id


def _view(request: web.Request, saga_id: str) -> tuple[dict, bool]:
    node = _node(request)
    with node.log.reading():
        state = node.state.sagas.sagas.get(saga_id)
        if state is None:
            raise NotFound(f"no saga {saga_id!r}")
        return machine.to_api(state), state.status.is_terminal


async def submit_saga(request: web.Request) -> web.Response:
    raw = await read_json(request)
    try:
        definition = machine.parse_definition(raw)
    except machine.DefinitionError as error:
        raise InvalidInput(error.field, error.message) from None
    require_leader(request)
    node = _node(request)
    saga_id = definition.id or uuid.uuid4().hex
    with node.log.reading():
        existing = node.state.sagas.sagas.get(saga_id)
        if existing is not None:
            if not machine.same_definition(existing.definition, machine.with_id(definition, saga_id)):
                raise Conflict(f"id: saga {saga_id!r} exists with another definition")
            return web.json_response(machine.to_api(existing), status=200)
    node.executor.admission({s.service for s in definition.steps if isinstance(s, machine.ActionStep)})
    value = await propose(request, "saga.submit", {"definition": {**raw, "id": saga_id}})
    view, _ = _view(request, saga_id)
    return web.json_response(view, status=201 if value["created"] else 200)


async def get_saga(request: web.Request) -> web.Response:
    saga_id = _saga_id(request)
    wait_s = _number(request, "wait", 0.0, 0.0, WAIT_S_MAX)
    await linearizable(request)
    node = _node(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    view, terminal = _view(request, saga_id)
    while not terminal and loop.time() < deadline and node.log.is_leader():
        await node.wait_change(saga_id, deadline - loop.time())
        view, terminal = _view(request, saga_id)
    return web.json_response(view)


async def list_sagas(request: web.Request) -> web.Response:
    wanted = request.query.get("state")
    states = {s.value for s in machine.SagaStatus}
    if wanted is not None and wanted not in states:
        raise InvalidInput("state", f"must be one of {', '.join(sorted(states))}")
    limit = int(_number(request, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX))
    await linearizable(request)
    node = _node(request)
    with node.log.reading():
        chosen = [s for s in node.state.sagas.sagas.values() if wanted is None or s.status.value == wanted]
        chosen.sort(key=lambda s: (s.created_at_ms, s.id))
        views = [machine.to_api(s) for s in chosen[:limit]]
    return web.json_response({"sagas": views})


async def signal_saga(request: web.Request) -> web.Response:
    saga_id = _saga_id(request)
    name = request.match_info["name"]
    if not _SIGNAL.match(name):
        raise InvalidInput("name", "must match [A-Za-z0-9._-]{1,64}")
    raw = await request.read()
    if len(raw) > saga_limits.SIGNAL_PAYLOAD_BYTES_MAX:
        raise TooLarge(f"body: a signal payload is at most {saga_limits.SIGNAL_PAYLOAD_BYTES_MAX} bytes")
    payload = await read_json(request) if raw else None
    require_leader(request)
    value = await propose(request, "saga.signal", {"id": saga_id, "name": name, "payload": payload})
    return web.json_response({"id": saga_id, "signal": name, "state": value["state"], "changed": value["changed"]}, status=202)


async def redrive_saga(request: web.Request) -> web.Response:
    saga_id = _saga_id(request)
    require_leader(request)
    value = await propose(request, "saga.redrive", {"id": saga_id})
    return web.json_response({"id": saga_id, "state": value["state"]}, status=202)


async def service_outcomes(request: web.Request) -> web.Response:
    name = _service_name(request)
    after = int(_number(request, "after", 0, 0, 2**62))
    limit = int(_number(request, "limit", OUTCOMES_LIMIT_MAX, 1, OUTCOMES_LIMIT_MAX))
    await linearizable(request)
    node = _node(request)
    with node.log.reading():
        if node.state.registry.get(name) is None:
            raise NotFound(f"no service {name!r}")
        outcomes = node.state.sagas.outcomes_after(name, after, limit)
    return web.json_response({"service": name, "outcomes": outcomes, "next_after": outcomes[-1]["index"] if outcomes else after})


def add_saga_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sagas", submit_saga)
    app.router.add_get("/v1/sagas", list_sagas)
    app.router.add_get("/v1/sagas/{id}", get_saga)
    app.router.add_post("/v1/sagas/{id}/signals/{name}", signal_saga)
    app.router.add_post("/v1/sagas/{id}/redrive", redrive_saga)
    app.router.add_get("/v1/services/{name}/outcomes", service_outcomes)
