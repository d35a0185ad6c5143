"""The two-phase commit endpoints of the HTTP API (contract section 4).

``GET /v1/transactions/{id}`` is also how a participant left prepared learns
the decision (cooperative termination): any node answers it, a follower by
redirecting to the leader.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

import twopc as machine

from .errors import Conflict, InvalidInput, NotFound
from .http_api import _node, linearizable, propose, read_json, require_leader
from .http_sagas import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, WAIT_S_MAX, _number, _saga_id as _workflow_id

__all__ = ["add_transaction_routes"]


def _view(request: web.Request, tx_id: str) -> tuple[dict, bool]:
    node = _node(request)
    with node.log.reading():
        state = node.state.transactions.transactions.get(tx_id)
        if state is None:
            raise NotFound(f"no transaction {tx_id!r}")
        return machine.to_api(state), state.terminal


async def submit_transaction(request: web.Request) -> web.Response:
    raw = await read_json(request)
    try:
        definition = machine.parse_definition(raw)
    except machine.DefinitionError as error:
        raise InvalidInput(error.field, error.message) from None
    require_leader(request)
    node = _node(request)
    tx_id = definition.id or uuid.uuid4().hex
    with node.log.reading():
        existing = node.state.transactions.transactions.get(tx_id)
        if existing is not None:
            if not machine.same_definition(existing.definition, machine.with_id(definition, tx_id)):
                raise Conflict(f"id: transaction {tx_id!r} exists with another definition")
            return web.json_response(machine.to_api(existing), status=200)
    node.executor.admission(set(definition.services))
    value = await propose(request, "tx.submit", {"definition": {**raw, "id": tx_id}})
    view, _ = _view(request, tx_id)
    return web.json_response(view, status=201 if value["created"] else 200)


async def get_transaction(request: web.Request) -> web.Response:
    tx_id = _workflow_id(request)
    wait_s = _number(request, "wait", 0.0, 0.0, WAIT_S_MAX)
    await linearizable(request)
    node = _node(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    view, terminal = _view(request, tx_id)
    while not terminal and loop.time() < deadline and node.log.is_leader():
        await node.wait_change(tx_id, deadline - loop.time())
        view, terminal = _view(request, tx_id)
    return web.json_response(view)


async def list_transactions(request: web.Request) -> web.Response:
    wanted = request.query.get("state")
    states = {str(s) for s in machine.TxStatus}
    if wanted is not None and wanted not in states:
        raise InvalidInput("state", f"must be one of {', '.join(sorted(states))}")
    limit = int(_number(request, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX))
    await linearizable(request)
    node = _node(request)
    with node.log.reading():
        chosen = [t for t in node.state.transactions.transactions.values() if wanted is None or str(t.status) == wanted]
        chosen.sort(key=lambda t: (t.created_at_ms, t.tx_id))
        views = [machine.to_api(t) for t in chosen[:limit]]
    return web.json_response({"transactions": views})


def add_transaction_routes(app: web.Application) -> None:
    app.router.add_post("/v1/transactions", submit_transaction)
    app.router.add_get("/v1/transactions", list_transactions)
    app.router.add_get("/v1/transactions/{id}", get_transaction)
