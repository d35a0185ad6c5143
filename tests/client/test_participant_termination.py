"""TerminationResolver against fake coordinators served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator.client.participant import (
    IdempotencyStore,
    MemoryStore,
    SQLiteStore,
    TerminationResolver,
    TransactionState,
    TwoPhaseParticipant,
    add_twopc_routes,
)

WAIT_S = 5.0
NOT_DECIDED = object()  # the coordinator answers 404 for this transaction


class Ledger:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.committed = asyncio.Event()

    async def prepare(self, tx_id: str, body: Any) -> bool:
        self.calls["prepare"] += 1
        return True

    async def commit(self, tx_id: str) -> None:
        self.calls["commit"] += 1
        self.committed.set()

    async def abort(self, tx_id: str) -> None:
        self.calls["abort"] += 1


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class FakeCoordinator:
    """Answers GET /v1/transactions/{id} like a leader: a decision or 404."""

    def __init__(self, decisions: dict[str, Any]) -> None:
        self.decisions = decisions
        self.requests: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/v1/transactions/{tx_id}", self.get_transaction)

    async def get_transaction(self, request: web.Request) -> web.Response:
        tx_id = request.match_info["tx_id"]
        self.requests.append(tx_id)
        decision = self.decisions.get(tx_id, NOT_DECIDED)
        if decision is NOT_DECIDED:
            return web.json_response({"error": {"code": "not_found", "message": tx_id}}, status=404)
        state = {"commit": "committed", "abort": "aborted", None: "preparing"}[decision]
        return web.json_response({"id": tx_id, "state": state, "decision": decision, "participants": []})


def follower_app(leader: TestServer, hits: list[str], *, listed: bool = True) -> web.Application:
    """A follower: redirects reads to the leader with 307; its /v1/cluster
    lists the leader (`listed`) or not (a redirect to a foreign host)."""

    async def cluster(request: web.Request) -> web.Response:
        nodes = [{"id": "n2", "http": str(leader.make_url("")).rstrip("/"), "grpc": "127.0.0.1:1"}] if listed else []
        return web.json_response({"nodes": nodes})

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        location = str(leader.make_url(request.path_qs))
        return web.json_response(
            {"error": {"code": "not_leader", "leader": str(leader.make_url("/"))}},
            status=307,
            headers={"Location": location},
        )

    app = web.Application()
    app.router.add_get("/v1/transactions/{tx_id}", redirect)
    app.router.add_get("/v1/cluster", cluster)
    return app


def leaderless_app(hits: list[str]) -> web.Application:
    async def unavailable(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"error": {"code": "no_leader"}}, status=503)

    app = web.Application()
    app.router.add_get("/v1/transactions/{tx_id}", unavailable)
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestServer]:
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


def endpoint(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def prepared(ledger: Ledger, store: IdempotencyStore, clock: Clock, *tx_ids: str) -> TwoPhaseParticipant:
    participant = TwoPhaseParticipant(ledger, store, clock=clock)
    for tx_id in tx_ids:
        assert await participant.prepare(tx_id, {}) is True
    return participant


async def test_applies_the_recorded_decisions() -> None:
    ledger, store, clock = Ledger(), MemoryStore(), Clock(1000.0)
    participant = await prepared(ledger, store, clock, "tx-c", "tx-a", "tx-open", "tx-unknown")
    coordinator = FakeCoordinator({"tx-c": "commit", "tx-a": "abort", "tx-open": None})
    async with serve(coordinator.app) as server:
        resolver = TerminationResolver([endpoint(server)], store, participant, after_s=0.0)
        assert await resolver.resolve_once() == 2
        assert await resolver.resolve_once() == 0
    assert participant.state("tx-c") is TransactionState.COMMITTED
    assert participant.state("tx-a") is TransactionState.ABORTED
    # Undecided (null decision) and never decided (404): nothing happens yet.
    assert participant.state("tx-open") is TransactionState.PREPARED
    assert participant.state("tx-unknown") is TransactionState.PREPARED
    assert ledger.calls == Counter({"prepare": 4, "commit": 1, "abort": 1})
    assert sorted(coordinator.requests) == sorted(["tx-c", "tx-a", "tx-open", "tx-unknown", "tx-open", "tx-unknown"])


async def test_waits_after_s_before_asking() -> None:
    ledger, store, clock = Ledger(), MemoryStore(), Clock(1000.0)
    participant = await prepared(ledger, store, clock, "tx-1")
    coordinator = FakeCoordinator({"tx-1": "commit"})
    async with serve(coordinator.app) as server:
        resolver = TerminationResolver([endpoint(server)], store, participant, after_s=10.0, clock=clock)
        clock.now_s = 1009.0
        assert await resolver.resolve_once() == 0
        assert coordinator.requests == []
        clock.now_s = 1010.5
        assert await resolver.resolve_once() == 1
    assert coordinator.requests == ["tx-1"]
    assert participant.state("tx-1") is TransactionState.COMMITTED


async def test_tries_endpoints_in_turn_and_follows_307_to_the_leader() -> None:
    ledger, store, clock = Ledger(), MemoryStore(), Clock(1000.0)
    participant = await prepared(ledger, store, clock, "tx-r")
    coordinator = FakeCoordinator({"tx-r": "commit"})
    leaderless_hits: list[str] = []
    follower_hits: list[str] = []
    async with (
        serve(coordinator.app) as leader,
        serve(leaderless_app(leaderless_hits)) as leaderless,
        serve(follower_app(leader, follower_hits)) as follower,
    ):
        resolver = TerminationResolver([endpoint(leaderless), endpoint(follower)], store, participant, after_s=0.0)
        assert await resolver.resolve_once() == 1
    assert leaderless_hits == follower_hits == ["/v1/transactions/tx-r"]
    assert coordinator.requests == ["tx-r"]
    assert participant.state("tx-r") is TransactionState.COMMITTED
    assert ledger.calls["commit"] == 1


async def test_nothing_happens_when_no_endpoint_answers() -> None:
    ledger, store, clock = Ledger(), MemoryStore(), Clock(1000.0)
    participant = await prepared(ledger, store, clock, "tx-x")
    hits: list[str] = []
    async with serve(leaderless_app(hits)) as first, serve(leaderless_app(hits)) as second:
        resolver = TerminationResolver([endpoint(first), endpoint(second)], store, participant, after_s=0.0)
        assert await resolver.resolve_once() == 0
    assert len(hits) == 2
    assert participant.state("tx-x") is TransactionState.PREPARED


async def test_background_task_commits_a_transaction_prepared_over_http(tmp_path: Path) -> None:
    """A restarted service (same SQLite file) resolves the yes it recorded."""
    path = tmp_path / "ledger.db"
    store = SQLiteStore(path)
    await prepared(Ledger(), store, Clock(0.0), "tx-restart")
    store.close()

    ledger = Ledger()
    store = SQLiteStore(path)
    coordinator = FakeCoordinator({"tx-restart": "commit"})
    try:
        async with serve(coordinator.app) as server:
            app = web.Application()
            participant = add_twopc_routes(app, "/ledger", ledger, store)
            resolver = TerminationResolver([endpoint(server)], store, participant, after_s=1.0, poll_interval_s=0.05)
            app.cleanup_ctx.append(resolver.cleanup_ctx)
            async with serve(app):
                await asyncio.wait_for(ledger.committed.wait(), WAIT_S)
            assert participant.state("tx-restart") is TransactionState.COMMITTED
    finally:
        store.close()
    assert ledger.calls == Counter({"commit": 1})


async def test_a_redirect_to_a_host_outside_the_cluster_is_not_followed() -> None:
    ledger, store, clock = Ledger(), MemoryStore(), Clock(1000.0)
    participant = await prepared(ledger, store, clock, "tx-f")
    foreign = FakeCoordinator({"tx-f": "commit"})  # would decide, and would see the token
    seen: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> Any:
        seen.append(request.headers.get("Authorization"))
        return await handler(request)

    foreign.app.middlewares.append(record)
    hits: list[str] = []
    async with serve(foreign.app) as evil, serve(follower_app(evil, hits, listed=False)) as follower:
        resolver = TerminationResolver([endpoint(follower)], store, participant, after_s=0.0, token="t0ken-t0ken-t0ken")
        assert await resolver.resolve_once() == 0
    assert foreign.requests == [] and seen == []
    assert participant.state("tx-f") is TransactionState.PREPARED


async def test_the_token_goes_to_the_cluster_nodes() -> None:
    ledger, store, clock = Ledger(), MemoryStore(), Clock(1000.0)
    participant = await prepared(ledger, store, clock, "tx-t")
    coordinator = FakeCoordinator({"tx-t": "commit"})
    seen: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> Any:
        seen.append(request.headers.get("Authorization"))
        return await handler(request)

    coordinator.app.middlewares.append(record)
    hits: list[str] = []
    async with serve(coordinator.app) as leader, serve(follower_app(leader, hits)) as follower:
        resolver = TerminationResolver([endpoint(follower)], store, participant, after_s=0.0, token="t0ken-t0ken-t0ken")
        assert await resolver.resolve_once() == 1
    assert seen == ["Bearer t0ken-t0ken-t0ken"] and hits == ["/v1/transactions/tx-t"]
    assert participant.state("tx-t") is TransactionState.COMMITTED
