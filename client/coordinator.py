"""The async client: finds the leader, follows it, retries what is safe.

Every method is idempotent on the server (PUT of a service; submissions
carry their id), so a retry after an unknown outcome cannot do a thing twice.
Definite rejections (4xx; their gRPC statuses) are never retried.

The methods are written once, here; a transport object carries them to the
nodes (``coordinator.client._http``: ``transport="http"``, the default; ``coordinator.client._grpc``:
``transport="grpc"``) and answers the same JSON objects, so both transports
give the same results and raise the same errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode

from ._grpc import GrpcTransport
from ._http import WAIT_S_MAX, WAIT_SLACK_S, HttpTransport
from ._transport import Transport, is_terminal
from .errors import Timeout
from .tls import ClientTls
from .types import ClusterInfo, Saga, Service, Transaction, WorkflowPage

__all__ = ["Coordinator", "DEFAULT_ENDPOINTS", "DEFAULT_GRPC_ENDPOINTS", "TRANSPORTS", "endpoints_from_env"]

DEFAULT_ENDPOINTS = ("http://127.0.0.1:8101", "http://127.0.0.1:8102", "http://127.0.0.1:8103")
DEFAULT_GRPC_ENDPOINTS = ("127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103")
TRANSPORTS: dict[str, type[Transport]] = {"http": HttpTransport, "grpc": GrpcTransport}
_ENVIRONMENT = {
    "http": ("COORDINATOR_ENDPOINTS", DEFAULT_ENDPOINTS),
    "grpc": ("COORDINATOR_GRPC_ENDPOINTS", DEFAULT_GRPC_ENDPOINTS),
}
Workflow = TypeVar("Workflow", Saga, Transaction)


def endpoints_from_env(transport: str = "http", *, tls: bool = False) -> list[str]:
    """``COORDINATOR_ENDPOINTS`` (http URLs) or, for gRPC,
    ``COORDINATOR_GRPC_ENDPOINTS`` (HOST:PORT targets), comma-separated;
    else the local cluster's defaults (``https://`` ones with ``tls``)."""
    variable, defaults = _ENVIRONMENT[transport]
    raw = os.environ.get(variable, "")
    given = [e.strip() for e in raw.split(",") if e.strip()]
    if given:
        return given
    if tls and transport == "http":
        return [e.replace("http://", "https://", 1) for e in defaults]
    return list(defaults)


class Coordinator:
    """The cluster's client.

    ``endpoints``: the nodes, a list or a comma-separated string; for
    ``transport="http"`` their URLs (``http://host:port``), for
    ``transport="grpc"`` their gRPC targets (``host:port``, each node's
    ``grpc`` address). Any one reachable node is enough: a follower names
    the leader. ``token``: the API token (default ``COORDINATOR_TOKEN``).

    TLS (:mod:`coordinator.client.tls`): ``ca_file`` the CA that signed the
    nodes' certificates, ``cert_file`` and ``key_file`` a client certificate
    for mutual TLS (defaults ``COORDINATOR_CA_FILE``, ``COORDINATOR_CERT_FILE``,
    ``COORDINATOR_KEY_FILE``). Over HTTP, ``https://`` endpoints speak TLS;
    over gRPC, TLS is on when a file is given or ``tls=True``.
    """

    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...] | str | None = None,
        *,
        transport: str = "http",
        timeout_s: float = 10.0,
        attempts: int = 6,
        retry_budget_s: float = 30.0,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls: bool | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r} is not supported (choose from {', '.join(TRANSPORTS)})")
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        token = token if token is not None else os.environ.get("COORDINATOR_TOKEN") or None
        client_tls = None if tls is False else ClientTls.resolve(ca_file, cert_file, key_file)
        if client_tls is None and tls:
            client_tls = ClientTls()  # the system's CAs
        self._transport = TRANSPORTS[transport](
            list(endpoints or endpoints_from_env(transport, tls=client_tls is not None)),
            timeout_s=timeout_s,
            attempts=attempts,
            retry_budget_s=retry_budget_s,
            token=token,
            tls=client_tls,
        )
        self.transport = transport
        self.endpoints = self._transport.endpoints

    async def __aenter__(self) -> Coordinator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def _request(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        """Any request of the HTTP API (transport="http" only); prefer the methods."""
        if not isinstance(self._transport, HttpTransport):
            raise TypeError("_request speaks HTTP; this client's transport is " + self.transport)
        return await self._transport.request_path(method, path, body, timeout_s=timeout_s)

    # -- cluster and services --------------------------------------------------------
    async def cluster(self, endpoint: str | None = None) -> ClusterInfo:
        """The cluster as a node sees it: ``endpoint``'s view, or any node's."""
        if endpoint is not None:
            return ClusterInfo.from_json(await self._transport.request_at(endpoint, "cluster", {}))
        return ClusterInfo.from_json(await self._transport.request("cluster", {}))

    async def put_service(
        self, name: str, url: str | None = None, *, grpc: str | None = None, tls: bool = False, force: bool = False
    ) -> Service:
        """Register or update a service: an HTTP participant at ``url``
        (``https://`` is called over TLS) or a gRPC one at ``grpc``
        ("host:port"), over TLS with ``tls=True``. A service that running
        workflows use is re-pointed only with ``force=True`` (the node
        records who and when); else Conflict."""
        if (url is None) == (grpc is None):
            raise ValueError("give exactly one of url or grpc")
        if tls and grpc is None:
            raise ValueError("tls=True is for a gRPC target; for a url, https:// says it")
        body: dict[str, Any] = {"url": url} if grpc is None else {"grpc": grpc}
        if tls:
            body["tls"] = True
        # One request id for every retry of this call: a retry of a write
        # that took effect is answered, not applied again after another write.
        args = {"name": name, "body": body, "force": force, "request": uuid.uuid4().hex}
        return Service.from_json(await self._transport.request("put_service", args))

    async def get_service(self, name: str) -> Service:
        return Service.from_json(await self._transport.request("get_service", {"name": name}))

    async def list_services(self) -> list[Service]:
        data = await self._transport.request("list_services", {})
        return [Service.from_json(s) for s in data["services"]]

    async def workers(self) -> dict:
        """The leader's transition workers (GET /v1/workers): ``{"mode",
        "queued", "releases", "workers": [{"id", "release", "services",
        "capacity", "in_flight", "last_heartbeat", "admitted", "reason", ...}]}``."""
        return await self._transport.request("list_workers", {})

    async def delete_service(self, name: str) -> Service:
        args = {"name": name, "request": uuid.uuid4().hex}
        return Service.from_json(await self._transport.request("delete_service", args))

    async def service_outcomes(self, name: str, after: int = 0) -> dict:
        return await self._transport.request("service_outcomes", {"name": name, "after": after})

    # -- sagas ---------------------------------------------------------------------------
    async def submit_saga(self, definition: Any, *, wait: float | None = None) -> Saga:
        """Submit a saga (a dict, or a builder with ``build()``). An id is
        generated here when absent, so a retried submission cannot create
        two sagas: the cluster answers the same id with the existing one.
        ``wait`` (seconds, at most 60): the same request then answers once
        the saga is terminal, or as it stands after ``wait`` s (check
        ``state``); :meth:`run_saga` waits until terminal."""
        return Saga.from_json(await self._submit("saga", definition, wait))

    async def run_saga(self, definition: Any, timeout: float = 30.0) -> Saga:
        """Submit a saga and wait until it is terminal: one request when it
        ends within 60 s; :class:`Timeout` if it is not within ``timeout`` s."""
        return await self._run("saga", definition, timeout, Saga.from_json)

    async def get_saga(self, saga_id: str) -> Saga:
        return Saga.from_json(await self._transport.request("get_saga", {"id": saga_id}))

    async def wait_saga(self, saga_id: str, timeout: float = 30.0) -> Saga:
        """Until the saga is terminal; :class:`Timeout` if it is not within ``timeout`` s."""
        return await self._wait("saga", saga_id, timeout, Saga.from_json)

    async def watch_saga(self, saga_id: str, timeout: float | None = None) -> AsyncIterator[Saga]:
        """The saga now and after each change, ending with its terminal state;
        :class:`Timeout` if it is not terminal within ``timeout`` s (None: no
        limit). Over HTTP a long poll per change (``?wait&since``), over gRPC
        the ``Watch`` stream. Close it early with ``contextlib.aclosing``."""
        async for data in self._states("saga", saga_id, timeout, every_change=True):
            yield Saga.from_json(data)

    async def list_sagas(self, state: str | None = None, limit: int = 100, **filters: Any) -> list[Saga]:
        """Sagas by creation time; ``filters`` as :meth:`list_sagas_page`."""
        return list((await self.list_sagas_page(state, limit, **filters)).items)

    async def list_sagas_page(
        self,
        state: str | None = None,
        limit: int = 100,
        *,
        service: str | None = None,
        q: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        order: str = "asc",
        after: str | None = None,
        summary: bool = False,
    ) -> WorkflowPage:
        """One page of sagas: of ``state``, calling ``service``, whose id
        contains ``q``, created in [``created_after``, ``created_before``)
        (ISO-8601), oldest first (``order="desc"``: newest), after the cursor
        ``after`` (a previous page's ``next``). ``summary``: summary dicts,
        no history."""
        args = _list_args(state, limit, service, q, created_after, created_before, order, after, summary)
        data = await self._transport.request("list_saga", args)
        items = data["sagas"] if summary else [Saga.from_json(s) for s in data["sagas"]]
        return _page(data, items)

    async def redrive_sagas(
        self,
        *,
        service: str | None = None,
        q: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        limit: int | None = None,
        dry_run: bool = False,
    ) -> dict:
        """Redrive the oldest stuck sagas matching the filter (as
        :meth:`list_sagas_page`), at most ``limit`` (the server's bound when
        None), each one log entry; ``dry_run`` only says which. Answers
        ``matched``, ``ids``, ``redriven``, ``remaining``, ``dry_run``."""
        body: dict[str, Any] = {"dry_run": dry_run}
        for name, value in (
            ("service", service),
            ("q", q),
            ("created_after", created_after),
            ("created_before", created_before),
            ("limit", limit),
        ):
            if value is not None:
                body[name] = value
        return await self._transport.request("redrive_sagas", {"body": body})

    async def signal_saga(self, saga_id: str, name: str, payload: Any = None) -> dict:
        return await self._transport.request("signal_saga", {"id": saga_id, "name": name, "payload": payload})

    async def redrive_saga(self, saga_id: str) -> dict:
        return await self._transport.request("redrive_saga", {"id": saga_id})

    # -- transactions ----------------------------------------------------------------------
    async def submit_transaction(self, definition: Any, *, wait: float | None = None) -> Transaction:
        """Submit a 2PC transaction; an id is generated here when absent (safe
        retries). ``wait`` as for :meth:`submit_saga`."""
        return Transaction.from_json(await self._submit("tx", definition, wait))

    async def run_transaction(self, definition: Any, timeout: float = 30.0) -> Transaction:
        """Submit a transaction and wait until it is decided and done, as :meth:`run_saga`."""
        return await self._run("tx", definition, timeout, Transaction.from_json)

    async def get_transaction(self, tx_id: str) -> Transaction:
        return Transaction.from_json(await self._transport.request("get_tx", {"id": tx_id}))

    async def wait_transaction(self, tx_id: str, timeout: float = 30.0) -> Transaction:
        """Until the transaction is decided and done; :class:`Timeout` if it is not within ``timeout`` s."""
        return await self._wait("tx", tx_id, timeout, Transaction.from_json)

    async def watch_transaction(self, tx_id: str, timeout: float | None = None) -> AsyncIterator[Transaction]:
        """As :meth:`watch_saga`, for a transaction."""
        async for data in self._states("tx", tx_id, timeout, every_change=True):
            yield Transaction.from_json(data)

    async def list_transactions(self, state: str | None = None, limit: int = 100, **filters: Any) -> list[Transaction]:
        """Transactions by creation time; ``filters`` as :meth:`list_sagas_page`."""
        return list((await self.list_transactions_page(state, limit, **filters)).items)

    async def list_transactions_page(
        self,
        state: str | None = None,
        limit: int = 100,
        *,
        service: str | None = None,
        q: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        order: str = "asc",
        after: str | None = None,
        summary: bool = False,
    ) -> WorkflowPage:
        """As :meth:`list_sagas_page`, for transactions."""
        args = _list_args(state, limit, service, q, created_after, created_before, order, after, summary)
        data = await self._transport.request("list_tx", args)
        items = data["transactions"] if summary else [Transaction.from_json(t) for t in data["transactions"]]
        return _page(data, items)

    # -- the event stream ------------------------------------------------------------------------
    def events(
        self, kinds: Iterable[str] | None = None, workflow: str | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[dict]:
        """What the nodes apply, as it happens: ``GET /v1/events`` (README.md,
        "Event stream"), one dict per event (``id``, ``index``, ``kind``,
        ``type``, ...), for ever; close it with ``contextlib.aclosing``.

        ``kinds``: of ``workflow``, ``service``, ``role`` (default all);
        ``workflow``: one workflow's events; ``last_event_id``: resume after
        that event. Any node serves it from its own replica; on a break the
        next node is asked with the last id yielded, so nothing is missed or
        repeated while the nodes hold the events - otherwise a ``reset`` event
        (``kind`` "reset") comes first: reload the state you follow by GET.
        ``role`` events are each node's own. Over HTTP only (``transport="grpc"``
        raises TypeError at the call); :class:`SyncCoordinator` does not offer it."""
        if not isinstance(self._transport, HttpTransport):
            raise TypeError("events() streams over HTTP; this client's transport is " + self.transport)
        return self._events(self._transport, kinds, workflow, last_event_id)

    @staticmethod
    async def _events(
        transport: HttpTransport, kinds: Iterable[str] | None, workflow: str | None, last_event_id: str | None
    ) -> AsyncIterator[dict]:
        params = {}
        if kinds is not None:
            params["kinds"] = ",".join(kinds)
        if workflow is not None:
            params["workflow"] = workflow
        query = ("?" + urlencode(params)) if params else ""
        async with contextlib.aclosing(transport.events(query, last_event_id)) as events:
            async for event in events:
                yield event

    # -- following a workflow -------------------------------------------------------------------
    async def _states(
        self, kind: str, workflow_id: str, timeout: float | None, *, every_change: bool
    ) -> AsyncIterator[dict]:
        last: dict | None = None
        async for data in self._transport.watch(kind, workflow_id, timeout_s=timeout, every_change=every_change):
            last = data
            yield data
        if last is None or not is_terminal(kind, last):
            state = "unknown" if last is None else last.get("state")
            within = "" if timeout is None else f" after {timeout:g} s"
            raise Timeout(f"{workflow_id} is still {state}{within}", details={"workflow": last})

    async def _submit(self, kind: str, definition: Any, wait: float | None) -> dict:
        args: dict[str, Any] = {"definition": _with_id(definition)}
        if not wait:
            return await self._transport.request(f"submit_{kind}", args)
        if not 0 < wait <= WAIT_S_MAX:
            raise ValueError(f"wait must be more than 0 and at most {WAIT_S_MAX:g} s")
        args["wait_s"] = wait
        return await self._transport.request(f"submit_{kind}", args, timeout_s=wait + WAIT_SLACK_S)

    async def _run(self, kind: str, definition: Any, timeout: float, parse: Callable[[dict], Workflow]) -> Workflow:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        data = await self._submit(kind, definition, min(timeout, WAIT_S_MAX) if timeout > 0 else None)
        if is_terminal(kind, data):
            return parse(data)
        return await self._wait(kind, data["id"], max(0.0, deadline - loop.time()), parse)

    async def _wait(self, kind: str, workflow_id: str, timeout: float, parse: Callable[[dict], Workflow]) -> Workflow:
        last: dict | None = None
        async for data in self._states(kind, workflow_id, timeout, every_change=False):
            last = data
        assert last is not None  # _states raised Timeout otherwise
        return parse(last)


def _with_id(definition: Any) -> dict:
    raw = definition.build() if hasattr(definition, "build") else dict(definition)
    raw.setdefault("id", uuid.uuid4().hex)
    return raw


def _list_args(
    state: str | None,
    limit: int,
    service: str | None,
    q: str | None,
    created_after: str | None,
    created_before: str | None,
    order: str,
    after: str | None,
    summary: bool,
) -> dict:
    """The list operation's arguments; ``filters`` only what differs from a plain list."""
    filters = {
        "service": service,
        "q": q,
        "created_after": created_after,
        "created_before": created_before,
        "order": None if order == "asc" else order,
        "after": after,
        "view": "summary" if summary else None,
    }
    return {"state": state, "limit": limit, "filters": {k: v for k, v in filters.items() if v is not None}}


def _page(data: dict, items: list) -> WorkflowPage:
    # A node older than the filters answers the list alone.
    return WorkflowPage(tuple(items), data.get("counts", {}), data.get("total", len(items)), data.get("next"))
