"""2PC participant routes over loopback HTTP: votes, idempotence, presumed abort, restart."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.client.participant import (
    BODY_BYTES_MAX,
    CallbackHandler,
    IdempotencyStore,
    MemoryStore,
    SQLiteStore,
    TransactionState,
    TwoPhaseParticipant,
    add_twopc_routes,
    saga_participant,
)


class Ledger:
    """A participant that holds an amount on prepare; votes no when over budget."""

    def __init__(self, budget: int = 100) -> None:
        self.budget = budget
        self.held: dict[str, int] = {}
        self.booked: dict[str, int] = {}
        self.calls: Counter[str] = Counter()
        self.prepare_error: Exception | None = None

    async def prepare(self, tx_id: str, body: Any) -> bool:
        self.calls["prepare"] += 1
        if self.prepare_error is not None:
            error, self.prepare_error = self.prepare_error, None
            raise error
        amount = body["amount"]
        if amount > self.budget:
            return False
        self.held[tx_id] = amount
        return True

    async def commit(self, tx_id: str) -> None:
        self.calls["commit"] += 1
        self.booked[tx_id] = self.held.pop(tx_id, 0)

    async def abort(self, tx_id: str) -> None:
        self.calls["abort"] += 1
        self.held.pop(tx_id, None)


def ledger_app(ledger, store: IdempotencyStore) -> tuple[web.Application, TwoPhaseParticipant]:
    # The saga middleware on the same app must leave the 2PC routes alone.
    app = web.Application(middlewares=[saga_participant(store)])
    participant = add_twopc_routes(app, "/ledger", ledger, store)
    return app, participant


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def call(client: TestClient, tx_id: str, phase: str, body: Any = None, fence: str = "1:1") -> tuple[int, Any]:
    response = await client.post(
        f"/ledger/{phase}",
        json=body if body is not None else {},
        headers={"Idempotency-Key": f"{tx_id}/ledger/{phase}", "Coordinator-Fence": fence},
    )
    if response.content_type != "application/json":
        return response.status, None  # aiohttp's own 500 page
    return response.status, await response.json()


async def test_prepare_votes_yes_once_then_commit() -> None:
    ledger = Ledger()
    app, participant = ledger_app(ledger, MemoryStore())
    async with serve(app) as client:
        assert await call(client, "tx-1", "prepare", {"amount": 40}) == (200, {"vote": "yes"})
        assert await call(client, "tx-1", "prepare", {"amount": 40}) == (200, {"vote": "yes"})
        assert participant.state("tx-1") is TransactionState.PREPARED
        assert await call(client, "tx-1", "commit") == (200, {"state": "committed"})
        assert await call(client, "tx-1", "commit") == (200, {"state": "committed"})
        # A late duplicate prepare still sees the yes it voted.
        assert await call(client, "tx-1", "prepare", {"amount": 40}) == (200, {"vote": "yes"})
        status, body = await call(client, "tx-1", "abort")
    assert (status, body["error"]["code"]) == (409, "committed")
    assert ledger.booked == {"tx-1": 40}
    assert ledger.calls == Counter({"prepare": 1, "commit": 1})


async def test_prepare_votes_no_and_commit_is_refused() -> None:
    ledger = Ledger(budget=10)
    app, participant = ledger_app(ledger, MemoryStore())
    async with serve(app) as client:
        assert await call(client, "tx-2", "prepare", {"amount": 40}) == (200, {"vote": "no"})
        assert await call(client, "tx-2", "prepare", {"amount": 1}) == (200, {"vote": "no"})
        status, body = await call(client, "tx-2", "commit")
        assert (status, body["error"]["code"], body["error"]["state"]) == (409, "not_prepared", "refused")
        assert await call(client, "tx-2", "abort") == (200, {"state": "aborted"})
    assert participant.state("tx-2") is TransactionState.ABORTED
    # A no vote holds nothing: abort() is not called for it.
    assert ledger.calls == Counter({"prepare": 1})


async def test_abort_of_a_prepared_transaction_runs_once() -> None:
    ledger = Ledger()
    app, _ = ledger_app(ledger, MemoryStore())
    async with serve(app) as client:
        assert await call(client, "tx-3", "prepare", {"amount": 5}) == (200, {"vote": "yes"})
        assert await call(client, "tx-3", "abort") == (200, {"state": "aborted"})
        assert await call(client, "tx-3", "abort") == (200, {"state": "aborted"})
        status, body = await call(client, "tx-3", "commit")
    assert (status, body["error"]["code"]) == (409, "aborted")
    assert ledger.held == {} and ledger.booked == {}
    assert ledger.calls == Counter({"prepare": 1, "abort": 1})


async def test_abort_of_unknown_transaction_is_presumed_and_later_prepare_votes_no() -> None:
    ledger = Ledger()
    app, participant = ledger_app(ledger, MemoryStore())
    async with serve(app) as client:
        assert await call(client, "tx-4", "abort") == (200, {"state": "aborted"})
        assert participant.state("tx-4") is TransactionState.ABORTED
        assert await call(client, "tx-4", "prepare", {"amount": 5}) == (200, {"vote": "no"})
    assert ledger.calls == Counter()


async def test_commit_of_a_transaction_never_prepared_is_409() -> None:
    ledger = Ledger()
    app, participant = ledger_app(ledger, MemoryStore())
    async with serve(app) as client:
        status, body = await call(client, "tx-5", "commit")
        assert participant.state("tx-5") is None
        # The 409 is not replayed like a saga answer: the routes follow the state.
        assert await call(client, "tx-5", "prepare", {"amount": 1}) == (200, {"vote": "yes"})
        assert await call(client, "tx-5", "commit") == (200, {"state": "committed"})
    assert (status, body["error"]["code"], body["error"]["state"]) == (409, "not_prepared", None)
    assert ledger.calls == Counter({"prepare": 1, "commit": 1})


async def test_failed_prepare_is_retried_and_an_abort_still_undoes_it() -> None:
    ledger = Ledger()
    app, participant = ledger_app(ledger, MemoryStore())
    async with serve(app) as client:
        ledger.prepare_error = RuntimeError("disk hiccup")
        response = await client.post(
            "/ledger/prepare", json={"amount": 5}, headers={"Idempotency-Key": "tx-6/ledger/prepare"}
        )
        assert response.status == 500
        assert participant.state("tx-6") is TransactionState.PREPARING
        # The coordinator retries an unknown outcome: prepare() runs again.
        assert await call(client, "tx-6", "prepare", {"amount": 5}) == (200, {"vote": "yes"})

        ledger.prepare_error = RuntimeError("disk hiccup")
        assert (await call(client, "tx-7", "prepare", {"amount": 5}))[0] == 500
        # prepare() may have done part of its work before failing: abort() runs.
        assert await call(client, "tx-7", "abort") == (200, {"state": "aborted"})
    assert participant.state("tx-6") is TransactionState.PREPARED
    assert ledger.calls == Counter({"prepare": 3, "abort": 1})


async def test_bad_calls_are_refused() -> None:
    ledger = Ledger()
    store = MemoryStore()
    app, _ = ledger_app(ledger, store)
    async with serve(app) as client:
        missing = await client.post("/ledger/prepare", json={"amount": 1})
        wrong_phase = await client.post("/ledger/commit", json={}, headers={"Idempotency-Key": "tx-8/ledger/prepare"})
        bad_tx_id = await client.post("/ledger/abort", json={}, headers={"Idempotency-Key": "tx 8/ledger/abort"})
        not_json = await client.post(
            "/ledger/prepare", data=b"{not json", headers={"Idempotency-Key": "tx-9/ledger/prepare"}
        )
        too_large = await client.post(
            "/ledger/prepare",
            data=io.BytesIO(b" " * (BODY_BYTES_MAX + 1)),
            headers={"Idempotency-Key": "tx-9/ledger/prepare"},
        )
        assert too_large.status == 400
        assert "BODY_BYTES_MAX" in (await too_large.json())["error"]["message"]
        assert await call(client, "tx-10", "prepare", {"amount": 1}, fence="7:1") == (200, {"vote": "yes"})
        stale_status, stale_body = await call(client, "tx-10", "commit", fence="6:9")
        assert [r.status for r in (missing, wrong_phase, bad_tx_id, not_json)] == [400] * 4
    assert (stale_status, stale_body["error"]["code"]) == (409, "stale_fence")
    assert store.highest_fence_term() == 7
    assert ledger.calls == Counter({"prepare": 1})


async def test_callbacks_may_be_plain_functions() -> None:
    log: list[str] = []
    handler = CallbackHandler(
        prepare=lambda tx_id, body: log.append(f"prepare {tx_id} {body}") or True,
        commit=lambda tx_id: log.append(f"commit {tx_id}"),
        abort=lambda tx_id: log.append(f"abort {tx_id}"),
    )
    app, _ = ledger_app(handler, MemoryStore())
    async with serve(app) as client:
        assert await call(client, "tx-11", "prepare", {"n": 1}) == (200, {"vote": "yes"})
        assert await call(client, "tx-11", "commit") == (200, {"state": "committed"})
    assert log == ["prepare tx-11 {'n': 1}", "commit tx-11"]


async def test_prepared_transaction_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger()
    store = SQLiteStore(path)
    app, _ = ledger_app(ledger, store)
    async with serve(app) as client:
        assert await call(client, "tx-12", "prepare", {"amount": 30}) == (200, {"vote": "yes"})
        assert await call(client, "tx-13", "abort") == (200, {"state": "aborted"})
    store.close()

    restarted = Ledger()
    restarted.held = dict(ledger.held)  # the service's own durable state, restored
    store = SQLiteStore(path)
    try:
        app, participant = ledger_app(restarted, store)
        async with serve(app) as client:
            assert participant.state("tx-12") is TransactionState.PREPARED
            assert await call(client, "tx-12", "prepare", {"amount": 30}) == (200, {"vote": "yes"})
            assert await call(client, "tx-13", "prepare", {"amount": 1}) == (200, {"vote": "no"})
            assert await call(client, "tx-12", "commit") == (200, {"state": "committed"})
    finally:
        store.close()
    assert restarted.booked == {"tx-12": 30}
    assert restarted.calls == Counter({"commit": 1})
