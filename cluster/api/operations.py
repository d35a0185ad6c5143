"""The node's API operations, free of any transport: what HTTP and gRPC both serve.

Each function takes the :class:`~coordinator.cluster.core.node.Node` and plain values, and
returns the API's JSON-ready objects or raises a
:class:`~coordinator.cluster.core.errors.ApiError`. The transports only decode a request into
these arguments and encode the answer (``http_api``, ``http_sagas``,
``http_transactions``, ``grpc_api``), so both answer the same objects with
the same errors.

Arguments that HTTP carries in the query string (``wait``, ``limit``,
``stale``, ...) are accepted as that text or as typed values (gRPC), and
checked here, in the order the HTTP API always checked them.

A follower raises :class:`LeaderElsewhere` (code ``not_leader``) with the
leader's :class:`~coordinator.cluster.core.config.NodeAddress`: HTTP answers it with ``307``
to the leader's URL, gRPC with the leader's gRPC address.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from coordinator import saga, twopc
from coordinator.cluster.api.selection import format_cursor, parse_cursor, parse_filter
from coordinator.cluster.core.config import NodeAddress
from coordinator.cluster.core.errors import (
    ApiError,
    Conflict,
    InvalidInput,
    NotFound,
    Overloaded,
    TooLarge,
    Unavailable,
    error_for_rejection,
)
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.core.netpolicy import literal_address
from coordinator.cluster.core.node import Node
from coordinator.cluster.stores.admission import check_admission
from coordinator.cluster.stores.listing import select
from coordinator.cluster.stores.registry import (
    REMOTE_CHARS_MAX,
    InvalidService,
    validate_service_body,
    validate_service_name,
)
from coordinator.cluster.stores.requests import valid_request_id
from coordinator.cluster.stores.workflows import WorkflowStore
from coordinator.consensus import (
    Command,
    EntryTooLarge,
    NotLeader,
    NotWritten,
    OutcomeUnknown,
    QueueFull,
    Rejected,
    Rejection,
)
from coordinator.saga import limits as saga_limits

__all__ = [
    "JSON_DEPTH_MAX",
    "BULK_REDRIVE_MAX",
    "LIST_LIMIT_DEFAULT",
    "LIST_LIMIT_MAX",
    "OUTCOMES_LIMIT_MAX",
    "SIGNAL_NAME",
    "WAIT_S_MAX",
    "WATCH_POLL_S",
    "WORKFLOW_ID",
    "WORKFLOW_KINDS",
    "LeaderElsewhere",
    "check_signal",
    "check_workflow_id",
    "delete_service",
    "get_service",
    "get_workflow",
    "linearizable",
    "list_services",
    "list_workflows",
    "parse_flag",
    "parse_json",
    "parse_number",
    "propose",
    "put_service",
    "redrive_saga",
    "redrive_sagas",
    "require_leader",
    "service_name",
    "service_outcomes",
    "service_view",
    "signal_saga",
    "submit_workflow",
    "watch_workflow",
]

JSON_DEPTH_MAX = 64
WAIT_S_MAX = 60.0
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
OUTCOMES_LIMIT_MAX = 1000
# A watch re-reads its workflow at least this often, and notices then that
# this node no longer leads (a change whose entry does not name the workflow
# is seen here at the latest).
WATCH_POLL_S = 5.0
WORKFLOW_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
SIGNAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class LeaderElsewhere(ApiError):
    """This node follows ``leader``: each transport points the caller there."""

    status, code = 307, "not_leader"

    def __init__(self, leader: NodeAddress) -> None:
        super().__init__(f"this node is a follower; the leader is {leader.id}")
        self.leader = leader


# -- input ------------------------------------------------------------------------
# What the log stores (msgpack) of a JSON number: integers of 64 bits at most.
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**64 - 1


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unstorable(value: Any, depth: int = 0) -> str | None:
    """Why the log cannot hold this JSON value as the API returns it, or None:
    nesting, an integer past 64 bits, a non-finite number, a lone surrogate."""
    if depth + isinstance(value, (dict, list)) > JSON_DEPTH_MAX:  # a container counts a level
        return f"nested deeper than {JSON_DEPTH_MAX} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _unstorable(key, depth + 1) or _unstorable(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _unstorable(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return "invalid JSON: a string holds a lone surrogate, not Unicode text"
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, int) and not JSON_INT_MIN <= value <= JSON_INT_MAX:
        return "invalid JSON: an integer beyond 64 bits"
    elif isinstance(value, float) and not math.isfinite(value):
        return "invalid JSON: a number beyond the range of a double"
    return None


def parse_json(node: Node, raw: bytes | str) -> Any:
    """A request body (JSON text) as a value; ``body`` names it in errors."""
    limit = node.config.cluster.http_body_bytes_max
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > limit:
        raise TooLarge(f"body: larger than the limit of {limit} bytes")
    if not raw:
        raise InvalidInput("body", "a JSON body is required")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("body", f"invalid JSON: {exc}") from None
    problem = _unstorable(value)
    if problem:
        raise InvalidInput("body", problem)
    return value


def parse_flag(name: str, raw: bool | str | None) -> bool:
    """A boolean option: ``true``/``false`` as text, or a bool."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if raw not in ("true", "false"):
        raise InvalidInput(name, "must be true or false")
    return raw == "true"


def parse_number(name: str, raw: float | str | None, default: float, low: float, high: float) -> float:
    """A number option within [low, high]: as text, or a number; None is ``default``."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(name, f"must be a number from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise InvalidInput(name, f"must be a number from {low:g} to {high:g}")
    return value


def check_workflow_id(workflow_id: str) -> str:
    if not WORKFLOW_ID.match(workflow_id):
        raise InvalidInput("id", "must match [A-Za-z0-9._:-]{1,128}")
    return workflow_id


def service_name(name: str) -> str:
    try:
        return validate_service_name(name)
    except InvalidService as exc:
        raise InvalidInput(exc.field, exc.message) from None


# -- the log ------------------------------------------------------------------------
def _not_leader(node: Node) -> ApiError:
    leader = node.leader_address()
    if leader is None or leader.id == node.config.node.id:
        return Unavailable("no leader is known yet; retry shortly", code="no_leader", retry_after_s=1)
    return LeaderElsewhere(leader)


def require_leader(node: Node) -> None:
    if not node.log.is_leader():
        raise _not_leader(node)


async def linearizable(node: Node, stale: bool | str | None) -> None:
    """Before a read: local when ``stale``, else a barrier on the leader."""
    if parse_flag("stale", stale):
        return
    require_leader(node)
    try:
        await node.log.read_barrier()
    except NotLeader:
        raise _not_leader(node) from None
    except (OutcomeUnknown, NotWritten) as exc:
        raise Unavailable(f"the read barrier did not commit: {exc}", code="no_leader", retry_after_s=1) from None


def list_workers(node: Node, *, stale: bool | str | None = None) -> dict:
    """GET /v1/workers: the leader's transition workers (cluster/executor/dispatch.py).
    Workers connect to the leader only, so a follower redirects; with
    ``stale`` any node answers its own table (a follower's is empty)."""
    if not parse_flag("stale", stale):
        require_leader(node)
    return node.executor.workers_view()


async def propose(node: Node, kind: str, body: Any) -> Any:
    try:
        result = await node.log.propose(Command(kind, body, at_ms=node.now_ms()))
    except NotLeader:
        raise _not_leader(node) from None
    except EntryTooLarge as exc:
        raise TooLarge(str(exc)) from None
    except QueueFull as exc:
        raise Overloaded(str(exc), retry_after_s=1) from None
    except NotWritten as exc:
        raise Unavailable(f"not written: {exc}; safe to retry", code="not_written", retry_after_s=1) from None
    except OutcomeUnknown as exc:
        raise Unavailable(
            f"outcome unknown: {exc}; retry the same request, it is idempotent", code="outcome_unknown", retry_after_s=1
        ) from None
    if isinstance(result, Rejected):
        raise error_for_rejection(result.code, result.message)
    return result.value


# -- services ---------------------------------------------------------------------------
def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def service_view(service: dict) -> dict:
    return {
        "name": service["name"],
        "url": service["url"],
        "grpc": service["grpc"],
        "tls": bool(service.get("tls")),  # a gRPC target over TLS; a record without it is not
        "created_at": _iso(service["created_at_ms"]),
        "updated_at": _iso(service["updated_at_ms"]),
        "revision": service["revision"],
        "forced_repoint": _forced_view(service.get("forced")),
    }


def _forced_view(forced: dict | None) -> dict | None:
    """The last re-point forced while workflows used the service (cluster/stores/registry.py)."""
    if forced is None:
        return None
    by = forced.get("by")
    return {
        "at": _iso(forced["at_ms"]),
        "remote": forced["remote"],
        # Whether the request had a token: recorded as such before token names.
        "token": forced["token"] if "token" in forced else by is not None,
        "by": by,
        "previous": forced["previous"],
    }


async def list_services(node: Node, *, stale: bool | str | None) -> dict:
    await linearizable(node, stale)
    with node.log.reading():
        return {"services": [service_view(s) for s in node.state.registry.snapshot()]}


async def get_service(node: Node, name: str, *, stale: bool | str | None) -> dict:
    name = service_name(name)
    await linearizable(node, stale)
    with node.log.reading():
        service = node.state.registry.get(name)
        if service is None:
            raise NotFound(f"no service {name!r}")
        return service_view(service)


def _request_id(request_id: str | None) -> str | None:
    """The write's request id (``Idempotency-Key``), checked; see cluster/stores/requests.py."""
    if request_id is None:
        return None
    if not valid_request_id(request_id):
        raise InvalidInput("Idempotency-Key", "1 to 64 of A-Z a-z 0-9 . _ : -")
    return request_id


async def put_service(
    node: Node,
    name: str,
    raw: bytes | str,
    *,
    force: bool | str | None = None,
    remote: str | None = None,
    request_id: str | None = None,
    by: str | None = None,
) -> dict:
    """Register or update a service. Re-pointing one that running workflows
    use is a 409 from the state machine unless `force`; a forced put
    carries where from (`remote`, the request's address) into the log entry
    too. Every put records `by`, the name of the request's token."""
    name = service_name(name)
    force = parse_flag("force", force)
    request_id = _request_id(request_id)
    try:
        target = validate_service_body(parse_json(node, raw))
    except InvalidService as exc:
        raise InvalidInput(exc.field, exc.message) from None
    _check_literal_address(node, target)
    require_leader(node)
    body: dict = {"name": name, "url": target["url"]} if target["url"] else {"name": name, "grpc": target["grpc"]}
    body["by"] = by
    if target.get("tls"):
        body["tls"] = True  # only when true: a plain service's log entry is as before
    if force:
        body["force"] = True
        body["remote"] = remote[:REMOTE_CHARS_MAX] if remote else None
    if request_id is not None:
        body["request"] = request_id
    return service_view(await propose(node, "service.put", body))


def _check_literal_address(node: Node, target: dict) -> None:
    """Refuse a literal address the `[services]` policy refuses (a name is
    judged when it is called: cluster/core/netpolicy.py)."""
    if target["url"]:
        field, host = "url", urlsplit(target["url"]).hostname or ""
    else:
        field, host = "grpc", target["grpc"].rpartition(":")[0]
    if literal_address(host) is not None:
        reason = node.config.cluster.services.refusal(host, host)
        if reason is not None:
            raise InvalidInput(field, f"{host} is {reason}")


async def delete_service(node: Node, name: str, *, request_id: str | None = None, by: str | None = None) -> dict:
    name = service_name(name)
    request_id = _request_id(request_id)
    require_leader(node)
    body = {"name": name, "by": by} if request_id is None else {"name": name, "by": by, "request": request_id}
    return service_view(await propose(node, "service.delete", body))


async def service_outcomes(
    node: Node, name: str, *, after: int | str | None, limit: int | str | None, stale: bool | str | None
) -> dict:
    name = service_name(name)
    after = int(parse_number("after", after, 0, 0, 2**62))
    limit = int(parse_number("limit", limit, OUTCOMES_LIMIT_MAX, 1, OUTCOMES_LIMIT_MAX))
    await linearizable(node, stale)
    with node.log.reading():
        if node.state.registry.get(name) is None:
            raise NotFound(f"no service {name!r}")
        outcomes = node.state.sagas.outcomes_after(name, after, limit)
    return {"service": name, "outcomes": outcomes, "next_after": outcomes[-1]["index"] if outcomes else after}


# -- workflows: sagas and transactions -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Kind:
    """What differs between sagas and transactions beyond their stores
    (``coordinator.cluster.stores.workflows.WorkflowStore``: noun, pure model, items)."""

    plural: str  # the list answer's key
    submit_command: str
    store: Callable[[Node], WorkflowStore]
    states: frozenset[str]
    services: Callable[[Any], set[str]]  # of a parsed definition


WORKFLOW_KINDS: dict[str, _Kind] = {
    "saga": _Kind(
        plural="sagas",
        submit_command="saga.submit",
        store=lambda node: node.state.sagas,
        states=frozenset(s.value for s in saga.SagaStatus),
        services=lambda definition: {s.service for s in definition.steps if isinstance(s, saga.ActionStep)},
    ),
    "tx": _Kind(
        plural="transactions",
        submit_command="tx.submit",
        store=lambda node: node.state.transactions,
        states=frozenset(s.value for s in twopc.TxStatus),
        services=lambda definition: set(definition.services),
    ),
}


def _kind(kind: str) -> _Kind:
    try:
        return WORKFLOW_KINDS[kind]
    except KeyError:
        raise InvalidInput("kind", f"must be one of {', '.join(sorted(WORKFLOW_KINDS))}") from None


def _view(node: Node, kind: _Kind, workflow_id: str, definition: bool = False) -> tuple[dict, bool]:
    """(the API object, terminal); ``definition``: with the definition as
    stored (the submitted shape, every default explicit)."""
    store = kind.store(node)
    with node.log.reading():
        state = store.items.get(workflow_id)
        if state is None:
            raise NotFound(f"no {store.noun} {workflow_id!r}")
        view = store.model.to_api(state)
        if definition:
            view["definition"] = store.model.definition_to_dict(state.definition)
        return view, store.is_terminal(state)


def _terminal(node: Node, kind: _Kind, workflow_id: str) -> bool:
    """Whether the workflow is terminal, without rendering it; NotFound as _view."""
    store = kind.store(node)
    with node.log.reading():
        if workflow_id in store.items.active:
            return False
        if workflow_id not in store.items:
            raise NotFound(f"no {store.noun} {workflow_id!r}")
        return True


async def submit_workflow(
    node: Node,
    kind_name: str,
    raw: bytes | str,
    *,
    by: str | None = None,
    wait_s: float | str | None = None,
    client: str | None = None,
) -> tuple[dict, bool]:
    """Submit a saga or a transaction: (its object, whether this call created it).

    The same id with the same definition again answers the existing one,
    whoever sends it (its history keeps the first submitter's ``by``);
    with another definition, Conflict.

    ``wait_s`` (at most WAIT_S_MAX): submit and wait in one request - the
    answer is the workflow once terminal, or as it stands after that long,
    as ``GET ...?wait`` would give it, without the client's second request
    and its read barrier (the submission's own commit is the barrier). The
    wait holds one of ``client``'s long-poll slots, taken before anything is
    proposed: a client without a free slot is refused (429) and nothing is
    submitted."""
    wait_s = parse_number("wait", wait_s, 0.0, 0.0, WAIT_S_MAX)
    kind = _kind(kind_name)
    if wait_s <= 0:
        workflow_id, created = await _submit(node, kind, raw, by)
        return _view(node, kind, workflow_id)[0], created
    with node.long_polls.hold(client):
        workflow_id, created = await _submit(node, kind, raw, by)
        # A submission answered with the existing workflow proposed nothing:
        # that answer is read locally, so its wait starts with a barrier.
        stale = True if created else None
        return await _long_poll(node, kind, workflow_id, wait_s, None, stale), created


async def _submit(node: Node, kind: _Kind, raw: bytes | str, by: str | None) -> tuple[str, bool]:
    """(the workflow's id, whether this call created it); Conflict for the
    same id with another definition."""
    store = kind.store(node)
    model = store.model
    body = parse_json(node, raw)
    try:
        definition = model.parse_definition(body)
    except model.DefinitionError as error:
        raise InvalidInput(error.field, error.message) from None
    require_leader(node)
    workflow_id = definition.id or uuid.uuid4().hex
    with node.log.reading():
        existing = store.items.get(workflow_id)
        if existing is not None:
            if not model.same_definition(existing.definition, model.with_id(definition, workflow_id)):
                raise Conflict(f"id: {store.noun} {workflow_id!r} exists with another definition")
            return workflow_id, False
    node.executor.admission(kind.services(definition), definition.release)
    limits = node.config.cluster.limits
    _check_state_budget(node, store, model.with_id(definition, workflow_id), limits)
    value = await propose(
        node, kind.submit_command, {"definition": {**body, "id": workflow_id}, "limits": limits.to_command(), "by": by}
    )
    return workflow_id, bool(value["created"])


def _check_state_budget(node: Node, store: WorkflowStore, definition: Any, limits: Limits) -> None:
    """Refuse early what the state machine would refuse (cluster/stores/admission.py);
    it checks again at apply time, where the log decides."""
    with node.log.reading():
        try:
            check_admission(
                limits.to_command(), store.noun, store.items.charge_of_new(definition), node.state.charged_bytes()
            )
        except Rejection as rejection:
            raise error_for_rejection(rejection.code, rejection.message) from None


async def get_workflow(
    node: Node,
    kind_name: str,
    workflow_id: str,
    *,
    wait_s: float | str | None = None,
    since: str | None = None,
    stale: bool | str | None = None,
    client: str | None = None,
    definition: bool | str | None = None,
) -> dict:
    """One workflow. With ``wait_s``, while this node leads, wait up to that
    long for a terminal state, or with ``since`` (an ``updated_at``) for any
    state updated after it; such a long poll holds one of the slots of
    ``client`` (its remote address, ``node.long_polls``). ``definition``:
    the answer carries the workflow's definition too."""
    kind = _kind(kind_name)
    workflow_id = check_workflow_id(workflow_id)
    wait_s = parse_number("wait", wait_s, 0.0, 0.0, WAIT_S_MAX)
    with_definition = parse_flag("definition", definition)
    if wait_s > 0:
        with node.long_polls.hold(client):
            return await _long_poll(node, kind, workflow_id, wait_s, since, stale, with_definition)
    return await _long_poll(node, kind, workflow_id, 0.0, since, stale, with_definition)


async def _long_poll(
    node: Node,
    kind: _Kind,
    workflow_id: str,
    wait_s: float,
    since: str | None,
    stale: bool | str | None,
    definition: bool = False,
) -> dict:
    await linearizable(node, stale)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    if since is None:  # until terminal: the object is rendered once, at the end
        while not _terminal(node, kind, workflow_id) and loop.time() < deadline and node.log.is_leader():
            await node.wait_change(workflow_id, deadline - loop.time())
        return _view(node, kind, workflow_id, definition)[0]
    view, terminal = _view(node, kind, workflow_id, definition)
    while (
        not terminal
        and (since is None or view["updated_at"] == since)
        and loop.time() < deadline
        and node.log.is_leader()
    ):
        await node.wait_change(workflow_id, deadline - loop.time())
        view, terminal = _view(node, kind, workflow_id, definition)
    return view


LIST_VIEWS = ("full", "summary")
ORDERS = ("asc", "desc")


async def list_workflows(
    node: Node,
    kind_name: str,
    *,
    state: str | None = None,
    limit: int | str | None = None,
    stale: bool | str | None = None,
    filters: Mapping[str, Any] | None = None,
    order: str | None = None,
    after: str | None = None,
    view: str | None = None,
) -> dict:
    """One page of workflows by (created_at, id), oldest first unless
    ``order`` is ``desc``; ``filters``: service, q (id contains),
    created_after, created_before (cluster/api/selection.py); ``after``:
    the ``next`` of the previous page. The answer adds ``counts`` (per state,
    of those matching every filter but the state), ``total`` and ``next``."""
    kind = _kind(kind_name)
    where = parse_filter(filters or {}, state, kind.states)
    limit = int(parse_number("limit", limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX))
    order = "asc" if order is None else order
    view = "full" if view is None else view
    if order not in ORDERS:
        raise InvalidInput("order", "must be asc or desc")
    if view not in LIST_VIEWS:
        raise InvalidInput("view", "must be full or summary")
    cursor = parse_cursor(after)
    await linearizable(node, stale)
    store = kind.store(node)
    with node.log.reading():
        page = select(
            store.items.rows(), where, statuses=kind.states, limit=limit, descending=order == "desc", after=cursor
        )
        states = [store.items[workflow_id] for workflow_id in page.ids]
        render = store.model.to_api if view == "full" else partial(_summary_view, store)
        items = [render(w) for w in states]
    return {kind.plural: items, "counts": page.counts, "total": page.total, "next": format_cursor(page.next)}


def _summary_view(store: WorkflowStore, state: Any) -> dict:
    """A list row: what a dashboard shows of a workflow without its history."""
    view = {
        "id": store.state_id(state),
        "state": str(getattr(state.status, "value", state.status)),
        "services": list(store.services_of(state.definition)),
        "created_at": _iso(state.created_at_ms),
        "updated_at": _iso(state.updated_at_ms),
    }
    if hasattr(state, "steps"):
        failure = state.failure
        view["failure"] = (
            None if failure is None else {"reason": failure.reason.value, "step": failure.step, "error": failure.error}
        )
        view["steps"] = len(state.steps)
    else:
        view["decision"] = None if state.decision is None else str(state.decision)
    return view


async def watch_workflow(
    node: Node, kind_name: str, workflow_id: str, *, stale: bool | str | None = None, life_s: float | None = None
) -> AsyncIterator[tuple[dict, bool]]:
    """(object, terminal) now and after each change, until terminal.

    Linearizable unless ``stale``: the first read follows a barrier, and the
    watch ends with ``not_leader`` / ``no_leader`` when this node stops
    leading (the caller resumes on the new leader). With ``stale`` it follows
    this node's replica, on any node. After ``life_s`` it ends with
    ``watch_expired`` (503): the caller opens it again."""
    kind = _kind(kind_name)
    workflow_id = check_workflow_id(workflow_id)
    stale = parse_flag("stale", stale)
    await linearizable(node, stale)
    loop = asyncio.get_running_loop()
    end = None if life_s is None else loop.time() + life_s
    last = None
    while True:
        view, terminal = _view(node, kind, workflow_id)
        if view != last:
            yield view, terminal
            last = view
        if terminal:
            return
        if not stale:
            require_leader(node)
        if end is not None and loop.time() >= end:
            raise Unavailable(
                f"the watch reached its life of {life_s:g} s; open it again to resume", code="watch_expired"
            )
        await node.wait_change(
            workflow_id, WATCH_POLL_S if end is None else max(0.0, min(WATCH_POLL_S, end - loop.time()))
        )


# -- saga only -----------------------------------------------------------------------------------
def check_signal(saga_id: str, name: str) -> None:
    check_workflow_id(saga_id)
    if not SIGNAL_NAME.match(name):
        raise InvalidInput("name", "must match [A-Za-z0-9._-]{1,64}")


async def signal_saga(node: Node, saga_id: str, name: str, raw: bytes | str, *, by: str | None = None) -> dict:
    """Deliver a signal; ``raw`` is the JSON payload (empty: null); ``by``
    (the token's name) goes into the saga's history."""
    check_signal(saga_id, name)
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > saga_limits.SIGNAL_PAYLOAD_BYTES_MAX:
        raise TooLarge(f"body: a signal payload is at most {saga_limits.SIGNAL_PAYLOAD_BYTES_MAX} bytes")
    payload = parse_json(node, raw) if raw else None
    require_leader(node)
    value = await propose(node, "saga.signal", {"id": saga_id, "name": name, "payload": payload, "by": by})
    return {"id": saga_id, "signal": name, "state": value["state"], "changed": value["changed"]}


BULK_REDRIVE_MAX = 100  # sagas one bulk redrive call redrives at most
BULK_FIELDS = frozenset({"state", "service", "q", "created_after", "created_before", "limit", "dry_run"})


async def redrive_sagas(node: Node, raw: bytes | str, *, by: str | None = None) -> dict:
    """``POST /v1/sagas/redrive``: redrive the oldest stuck sagas matching a
    filter (the JSON body: state, service, q, created_after, created_before,
    limit, dry_run), at most ``limit`` (default and bound BULK_REDRIVE_MAX),
    one ``saga.redrive`` log entry each, as a single redrive writes it.
    Idempotent in effect: a saga no longer stuck when its entry applies is
    left alone and not counted. With ``dry_run``, nothing is proposed: the
    answer says which it would redrive."""
    body = parse_json(node, raw) if raw else {}
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    unknown = sorted(set(body) - BULK_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field; known: {', '.join(sorted(BULK_FIELDS))}")
    nulls = sorted(name for name, value in body.items() if value is None)
    if nulls:
        raise InvalidInput(nulls[0], "must not be null; leave a field out for no filter")
    state = body.get("state", saga.SagaStatus.STUCK.value)
    if state != saga.SagaStatus.STUCK.value:
        raise InvalidInput("state", "a redrive applies to stuck sagas only: stuck")
    where = parse_filter(body, state, WORKFLOW_KINDS["saga"].states)
    limit = body.get("limit", BULK_REDRIVE_MAX)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= BULK_REDRIVE_MAX:
        raise InvalidInput("limit", f"must be an integer from 1 to {BULK_REDRIVE_MAX}")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dry_run", "must be true or false")
    require_leader(node)
    await linearizable(node, False)
    with node.log.reading():
        page = select(node.state.sagas.items.rows(), where, statuses=WORKFLOW_KINDS["saga"].states, limit=limit)
    redriven = 0
    if not dry_run:
        for saga_id in page.ids:
            try:
                value = await propose(node, "saga.redrive", {"id": saga_id, "by": by})
            except Conflict:  # no longer stuck: redriven by someone else meanwhile, or done
                continue
            redriven += bool(value.get("changed"))
    return {
        "matched": page.total,
        "ids": page.ids,
        "redriven": redriven,
        "remaining": page.total - len(page.ids),
        "dry_run": dry_run,
    }


async def redrive_saga(node: Node, saga_id: str, *, by: str | None = None) -> dict:
    saga_id = check_workflow_id(saga_id)
    require_leader(node)
    value = await propose(node, "saga.redrive", {"id": saga_id, "by": by})
    return {"id": saga_id, "state": value["state"]}
