"""Cooperative termination: a prepared participant asks for the decision.

A participant that voted yes must hold its prepared work until it learns
the decision. The coordinator retries phase 2 until every participant
answers, but if the participant was unreachable or restarted, it need not
wait for that retry: `TerminationResolver` looks, every `poll_interval_s`,
for transactions left `prepared` for longer than `after_s` and asks the
coordinator `GET {endpoint}/v1/transactions/{tx_id}`:

- 200 with `"decision": "commit"` or `"abort"` -> the participant applies it
  itself (commit()/abort() through the same state machine as the routes);
- 200 with `"decision": null` or 404 (never decided) -> nothing yet;
- 307 -> followed to the leader (at most REDIRECTS_MAX hops), only when it
  is a node of the cluster: one of the endpoints, or a node that the
  redirecting node's `/v1/cluster` lists; a decision is never taken from
  another host, and the token (`token=`) is sent to cluster nodes only;
- anything else (5xx, refused connection, timeout, bad JSON) -> the next
  endpoint; when all fail, the next round tries again.

    participant = add_twopc_routes(app, "/ledger", Ledger(), store)
    resolver = TerminationResolver(endpoints, store, participant, after_s=30, token=api_token)
    app.cleanup_ctx.append(resolver.cleanup_ctx)

A cluster serving TLS (``https://`` endpoints) is verified against the
system's CAs, or ``ssl_context=`` (e.g.
``coordinator.client.tls.ClientTls(ca_file=...).ssl_context()``, which also
presents a client certificate for mutual TLS). A token with the ``read``
role is all the resolver needs.

Pass the `TwoPhaseParticipant` that `add_twopc_routes` returned as
`handler` so the resolver and the routes share per-transaction locks; a
plain `TwoPhaseHandler` also works (commit()/abort() are idempotent anyway).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from coordinator.client.participant.limits import ENDPOINTS_MAX, REDIRECTS_MAX, RESOLVE_BATCH_MAX
from coordinator.client.participant.store import IdempotencyStore, TransactionState
from coordinator.client.participant.twopc import TwoPhaseHandler, TwoPhaseParticipant

__all__ = ["TerminationResolver"]

log = logging.getLogger(__name__)

DECISIONS = ("commit", "abort")
NODES_KNOWN_MAX = 64  # redirect targets remembered (the endpoints and the nodes /v1/cluster lists)
POLL_INTERVAL_S_MIN = 0.05
POLL_INTERVAL_S_MAX = 60.0


class TerminationResolver:
    """Background task resolving transactions stuck in `prepared`."""

    def __init__(
        self,
        coordinator_endpoints: Iterable[str],
        store: IdempotencyStore,
        handler: TwoPhaseHandler | TwoPhaseParticipant,
        after_s: float,
        *,
        poll_interval_s: float | None = None,
        request_timeout_s: float = 5.0,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`token`: the coordinator's API token, sent as ``Authorization:
        Bearer`` to the cluster's nodes only; `ssl_context`: what verifies
        ``https://`` nodes (default: the system's CAs)."""
        endpoints = tuple(endpoint.rstrip("/") for endpoint in coordinator_endpoints)
        if not 1 <= len(endpoints) <= ENDPOINTS_MAX:
            raise ValueError(f"give 1..{ENDPOINTS_MAX} coordinator endpoints (ENDPOINTS_MAX)")
        for endpoint in endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ValueError(f"endpoint must be an http(s) URL: {endpoint!r}")
        if after_s < 0 or request_timeout_s <= 0:
            raise ValueError("after_s must be >= 0 and request_timeout_s > 0")
        if isinstance(handler, TwoPhaseParticipant):
            assert handler.store is store, "the participant must use the same store"
            self._participant = handler
        else:
            self._participant = TwoPhaseParticipant(handler, store, clock=clock)
        if token is not None and (not token or any(c.isspace() or not c.isprintable() for c in token)):
            raise ValueError("token must be a non-empty printable string without spaces")
        self._endpoints = endpoints
        self._nodes = {_base(endpoint) for endpoint in endpoints}
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._store = store
        self._after_s = after_s
        if poll_interval_s is None:
            poll_interval_s = min(max(after_s, POLL_INTERVAL_S_MIN), POLL_INTERVAL_S_MAX)
        assert poll_interval_s > 0
        self._poll_interval_s = poll_interval_s
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._headers = dict(headers or {})
        self._clock = clock
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        assert self._task is None, "already started"
        self._stopping.clear()
        self._session = self._new_session()
        self._task = asyncio.create_task(self._run(), name="participant-termination-resolver")

    async def stop(self) -> None:
        """Stop after the lookup or phase-2 call in progress, if any."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TerminationResolver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For `app.cleanup_ctx.append(resolver.cleanup_ctx)`."""
        await self.start()
        yield
        await self.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.resolve_once()
            except Exception:
                log.exception("termination round failed; retrying next round")
            try:
                await asyncio.wait_for(self._stopping.wait(), self._poll_interval_s)
            except TimeoutError:
                pass

    async def resolve_once(self) -> int:
        """One round; return how many transactions it committed or aborted."""
        if self._session is None:
            async with self._new_session() as session:
                return await self._resolve_with(session)
        return await self._resolve_with(self._session)

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        return aiohttp.ClientSession(headers=self._headers, timeout=self._timeout, connector=connector)

    async def _resolve_with(self, session: aiohttp.ClientSession) -> int:
        stuck = self._store.transactions_in_state(
            TransactionState.PREPARED, updated_before_s=self._clock() - self._after_s, limit=RESOLVE_BATCH_MAX
        )
        resolved = 0
        for transaction in stuck:
            if self._stopping.is_set():
                break
            decision = await self._decision(session, transaction.tx_id)
            if decision == "commit":
                state = await self._participant.commit(transaction.tx_id)
                resolved += state is TransactionState.COMMITTED
            elif decision == "abort":
                state = await self._participant.abort(transaction.tx_id)
                resolved += state is TransactionState.ABORTED
            if decision is not None:
                log.info("transaction %s: applied decision %s", transaction.tx_id, decision)
        return resolved

    async def _get(self, session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
        """GET `url` on a cluster node, following 307 to cluster nodes only."""
        for _ in range(REDIRECTS_MAX + 1):
            async with session.get(url, allow_redirects=False, headers=self._auth) as response:
                location = response.headers.get("Location")
                if response.status != 307 or location is None:
                    body = await response.json(content_type=None) if response.status == 200 else None
                    return response.status, body
            if _base(location) not in self._nodes:
                await self._learn_nodes(session, _base(url))
            if _base(location) not in self._nodes:
                raise ValueError(
                    f"{_base(url)} redirected to {location[:200]!r}, not a node of the cluster; not followed"
                )
            url = location
        raise ValueError(f"more than {REDIRECTS_MAX} redirects")

    async def _learn_nodes(self, session: aiohttp.ClientSession, node: str) -> None:
        """Remember the nodes that `node` (a cluster node) lists in /v1/cluster."""
        try:
            async with session.get(node + "/v1/cluster", allow_redirects=False, headers=self._auth) as response:
                view = await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        nodes = view.get("nodes") if isinstance(view, dict) else None
        for entry in nodes if isinstance(nodes, list) else []:
            address = entry.get("http") if isinstance(entry, dict) else None
            if (
                isinstance(address, str)
                and address.startswith(("http://", "https://"))
                and len(self._nodes) < NODES_KNOWN_MAX
            ):
                self._nodes.add(_base(address))

    async def _decision(self, session: aiohttp.ClientSession, tx_id: str) -> str | None:
        """The coordinator's decision, or None when undecided or unreachable."""
        path = f"/v1/transactions/{quote(tx_id, safe='')}"
        for endpoint in self._endpoints:
            try:
                status, body = await self._get(session, endpoint + path)
                if status == 404:
                    return None
                if status != 200:
                    log.warning("%s%s answered %d", endpoint, path, status)
                    continue
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning("%s%s failed: %r", endpoint, path, error)
                continue
            decision = body.get("decision") if isinstance(body, dict) else None
            if isinstance(body, dict) and body.get("id", tx_id) == tx_id:
                return decision if decision in DECISIONS else None
            log.warning("%s%s answered an unexpected body", endpoint, path)
        return None


def _base(url: str) -> str:
    """scheme://host:port of `url`, lower case: what a redirect is compared by."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
