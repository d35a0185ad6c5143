"""The PostgreSQL 2PC participant against a real, throw-away PostgreSQL server:
prepared transactions, idempotent phase 2, no votes, restarts, and a money
transfer between two databases through the kit's HTTP routes."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from psycopg import sql

from coordinator.client.participant import (
    NULL_COMPENSATION_BODY,
    LimitExceededError,
    MemoryStore,
    SQLiteStore,
    Transaction,
    TransactionState,
    add_twopc_routes,
    saga_participant,
)
from coordinator.client.participant.pgtest import PostgresUnavailable, TemporaryPostgres
from coordinator.client.participant.postgres import (
    GID_BYTES_MAX,
    STATEMENTS_MAX,
    PostgresParticipant,
    SQLBodyError,
    parse_sql_body,
)

OPENING_BALANCES = {"alice": 100, "bob": 100}
_database_numbers = itertools.count(1)


# -- the server and its databases -----------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[TemporaryPostgres]:
    postgres = TemporaryPostgres(max_prepared_transactions=20)
    try:
        postgres.__enter__()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL is not available: {error}")
    try:
        yield postgres
    finally:
        postgres.stop()


@pytest.fixture
def new_database(server: TemporaryPostgres) -> Iterator[Callable[[], str]]:
    """Makes databases holding `accounts`; at teardown none may hold a
    prepared transaction (they are rolled back, then the test fails)."""
    created: list[str] = []

    def create() -> str:
        dsn = server.create_database(f"bank_{next(_database_numbers)}")
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(
                "CREATE TABLE accounts (id text PRIMARY KEY, balance integer NOT NULL CHECK (balance >= 0))"
            )
            for account, balance in OPENING_BALANCES.items():
                connection.execute("INSERT INTO accounts VALUES (%s, %s)", [account, balance])
        created.append(dsn)
        return dsn

    yield create
    left = {dsn: prepared_gids(dsn) for dsn in created}
    for dsn, gids in left.items():
        with psycopg.connect(dsn, autocommit=True) as connection:
            for gid in gids:
                connection.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
    assert {dsn: gids for dsn, gids in left.items() if gids} == {}


@pytest.fixture
def database(new_database: Callable[[], str]) -> str:
    return new_database()


def balances(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return dict(connection.execute("SELECT id, balance FROM accounts").fetchall())


def prepared_gids(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid"
        ).fetchall()
    return [gid for (gid,) in rows]


def transfer_sql(source: str, target: str, amount: int) -> dict[str, Any]:
    """A prepare body in the SQL form (participants built with allow_request_sql=True)."""
    update = "UPDATE accounts SET balance = balance + %s WHERE id = %s"
    return {"sql": [{"query": update, "params": [-amount, source]}, {"query": update, "params": [amount, target]}]}


def apply_delta(connection: psycopg.Connection[Any], body: Any) -> bool:
    """The callback form: one account moves by `delta`; unknown account = no."""
    cursor = connection.execute(
        "UPDATE accounts SET balance = balance + %s WHERE id = %s", [int(body["delta"]), str(body["account"])]
    )
    return cursor.rowcount == 1


# -- pure parts: gid and body --------------------------------------------------


def test_gid_is_deterministic_bounded_and_quotable() -> None:
    participant = PostgresParticipant("dbname=unused", "bank-a", work=apply_delta)
    assert participant.gid("tx-1") == "2pc/bank-a/tx-1" == participant.gid("tx-1")
    longest = PostgresParticipant("dbname=unused", "b" * 63, work=apply_delta).gid("t" * 128)
    assert len(longest.encode()) <= GID_BYTES_MAX
    for tx_id in ("", "it's", "a/b", "t" * 129):
        with pytest.raises(LimitExceededError):
            participant.gid(tx_id)
    for name in ("", "Bank", "bank/a", "b" * 64):
        with pytest.raises(ValueError):
            PostgresParticipant("dbname=unused", name, work=apply_delta)


def test_sql_bodies_are_bounded_and_hold_only_dml() -> None:
    statements = parse_sql_body(transfer_sql("alice", "bob", 5))
    assert [s.params for s in statements] == [(-5, "alice"), (5, "bob")]
    one = {"query": "SELECT 1", "params": []}
    refused = [
        None,
        [],
        {"sql": []},
        {"sql": [one], "extra": 1},
        {"sql": [one] * (STATEMENTS_MAX + 1)},
        {"sql": [{"query": "SELECT 1" + " " * 9000}]},
        {"sql": [{"query": "COMMIT"}]},
        {"sql": [{"query": "/* hidden */ COMMIT"}]},
        {"sql": [{"query": "PREPARE TRANSACTION 'x'"}]},
        {"sql": [{"query": "SELECT %s", "params": [{"a": 1}]}]},
        {"sql": [{"query": "SELECT 1", "params": [0] * 101}]},
        {"sql": [{"query": "SELECT 1", "unknown": 1}]},
    ]
    for body in refused:
        with pytest.raises(SQLBodyError):
            parse_sql_body(body)


def test_missing_binaries_are_reported_as_unavailable(tmp_path: Path) -> None:
    with pytest.raises(PostgresUnavailable, match="not found"):
        TemporaryPostgres(bin_dir=tmp_path / "no-such-bin").__enter__()


async def test_a_malformed_sql_body_is_answered_400_before_any_connection() -> None:
    # Nothing listens on port 1: the body is refused before connecting.
    bank = PostgresParticipant("host=127.0.0.1 port=1 dbname=none", "bank", allow_request_sql=True)
    app = web.Application()
    add_twopc_routes(app, "/bank", bank, MemoryStore())
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.post(
            "/bank/prepare", json={"sql": [{"query": "COMMIT"}]}, headers={"Idempotency-Key": "tx-0/bank/prepare"}
        )
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid"


# -- phases against the server ------------------------------------------------------


async def test_prepare_votes_yes_and_holds_the_work_as_a_prepared_transaction(database: str) -> None:
    bank = PostgresParticipant(database, "bank", allow_request_sql=True)
    assert await bank.prepare("tx-1", transfer_sql("alice", "bob", 30)) is True
    assert prepared_gids(database) == ["2pc/bank/tx-1"]
    assert balances(database) == OPENING_BALANCES  # not visible before commit
    assert [p.tx_id for p in await bank.in_doubt()] == ["tx-1"]

    await bank.commit("tx-1")
    assert balances(database) == {"alice": 70, "bob": 130}
    assert prepared_gids(database) == []
    await bank.commit("tx-1")  # again: a no-op
    await bank.abort("tx-1")  # PostgreSQL cannot tell; the kit's store never asks this
    assert balances(database) == {"alice": 70, "bob": 130}


async def test_abort_rolls_back_and_is_idempotent(database: str) -> None:
    bank = PostgresParticipant(database, "bank", allow_request_sql=True)
    assert await bank.prepare("tx-2", transfer_sql("alice", "bob", 30)) is True
    await bank.abort("tx-2")
    assert prepared_gids(database) == []
    assert balances(database) == OPENING_BALANCES
    await bank.abort("tx-2")
    await bank.abort("never-prepared")
    await bank.commit("tx-2")  # gone: a no-op here; the kit answers 409 before
    assert balances(database) == OPENING_BALANCES


async def test_an_sql_error_votes_no_and_prepares_nothing(database: str) -> None:
    bank = PostgresParticipant(database, "bank", allow_request_sql=True)
    # The second statement breaks the CHECK (balance >= 0) after the first ran.
    overdraft = transfer_sql("bob", "alice", 500)
    overdraft["sql"].reverse()
    assert await bank.prepare("tx-3", overdraft) is False
    # Two statements in one query string: the server refuses it.
    smuggled = {
        "sql": [
            {"query": "UPDATE accounts SET balance = 0 WHERE id = %s", "params": ["alice"]},
            {"query": "SELECT %s; COMMIT", "params": [1]},
        ]
    }
    assert await bank.prepare("tx-4", smuggled) is False
    # Placeholders and parameters that do not match (refused by psycopg).
    mismatch = {"sql": [{"query": "UPDATE accounts SET balance = %s", "params": []}]}
    assert await bank.prepare("tx-5", mismatch) is False
    # A missing table.
    missing = {"sql": [{"query": "DELETE FROM nowhere", "params": []}]}
    assert await bank.prepare("tx-6", missing) is False
    assert prepared_gids(database) == []
    assert balances(database) == OPENING_BALANCES
    assert await bank.in_doubt() == []


async def test_a_retried_prepare_votes_yes_without_running_the_work_again(database: str) -> None:
    bank = PostgresParticipant(database, "bank", allow_request_sql=True)
    body = transfer_sql("alice", "bob", 10)
    assert await bank.prepare("tx-7", body) is True
    # The answer was lost; the kit runs prepare() again for a `preparing` state.
    assert await bank.prepare("tx-7", body) is True
    assert prepared_gids(database) == ["2pc/bank/tx-7"]
    await bank.commit("tx-7")
    assert balances(database) == {"alice": 90, "bob": 110}


async def test_the_callback_form_votes_with_its_result(database: str) -> None:
    bank = PostgresParticipant(database, "bank", work=apply_delta)
    assert await bank.prepare("tx-8", {"account": "nobody", "delta": 5}) is False
    assert await bank.prepare("tx-9", {"account": "alice", "delta": -101}) is False

    def broken(connection: psycopg.Connection[Any], body: Any) -> bool:
        connection.execute("UPDATE accounts SET balance = 0")
        raise KeyError("bug in the service")

    def ends_its_transaction(connection: psycopg.Connection[Any], body: Any) -> bool:
        connection.execute("UPDATE accounts SET balance = 0")
        connection.execute("ROLLBACK")
        return True

    with pytest.raises(KeyError):
        await PostgresParticipant(database, "bank", work=broken).prepare("tx-10", {})
    with pytest.raises(RuntimeError, match="ended the transaction"):
        await PostgresParticipant(database, "bank", work=ends_its_transaction).prepare("tx-11", {})
    assert prepared_gids(database) == []
    assert balances(database) == OPENING_BALANCES

    async def not_allowed(connection: Any, body: Any) -> bool:
        return True

    with pytest.raises(TypeError):
        PostgresParticipant(database, "bank", work=not_allowed)  # type: ignore[arg-type]

    assert await bank.prepare("tx-12", {"account": "alice", "delta": -40}) is True
    await bank.commit("tx-12")
    assert balances(database) == {"alice": 60, "bob": 100}


async def test_a_broken_connection_leaves_the_vote_unknown(database: str) -> None:
    def disconnect(connection: psycopg.Connection[Any], body: Any) -> bool:
        connection.execute("UPDATE accounts SET balance = 0")
        connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return True

    # No vote: the error reaches the kit (a 500; the coordinator retries).
    with pytest.raises(psycopg.OperationalError):
        await PostgresParticipant(database, "bank", work=disconnect).prepare("tx-14", {})
    assert prepared_gids(database) == []
    assert balances(database) == OPENING_BALANCES


async def test_a_restarted_participant_finds_its_in_doubt_transaction(database: str) -> None:
    before = PostgresParticipant(database, "bank", allow_request_sql=True)
    assert await before.prepare("tx-13", transfer_sql("alice", "bob", 25)) is True
    del before  # the process dies; PostgreSQL keeps the prepared transaction

    after = PostgresParticipant(database, "bank", allow_request_sql=True)
    in_doubt = await after.in_doubt()
    assert [(p.tx_id, p.gid) for p in in_doubt] == [("tx-13", "2pc/bank/tx-13")]
    assert await PostgresParticipant(database, "bank-other", work=apply_delta).in_doubt() == []
    await after.commit("tx-13")
    assert balances(database) == {"alice": 75, "bob": 125}
    assert await after.in_doubt() == []


async def test_recover_finishes_what_the_store_decided(database: str, tmp_path: Path) -> None:
    # One account per transaction: a prepared transaction keeps its row locks.
    tx_ids = ("tx-c", "tx-a", "tx-p", "tx-u")
    with psycopg.connect(database, autocommit=True) as connection:
        for tx_id in tx_ids:
            connection.execute("INSERT INTO accounts VALUES (%s, 10)", [tx_id])
    bank = PostgresParticipant(database, "bank", work=apply_delta)
    for tx_id in tx_ids:
        assert await bank.prepare(tx_id, {"account": tx_id, "delta": -1}) is True
    store = SQLiteStore(tmp_path / "bank.db")
    try:
        for tx_id, state in (
            ("tx-c", TransactionState.COMMITTED),
            ("tx-a", TransactionState.ABORTED),
            ("tx-p", TransactionState.PREPARED),
        ):
            store.put_transaction(Transaction(tx_id, state, 0.0))
        recovery = await PostgresParticipant(database, "bank", work=apply_delta).recover(store)
    finally:
        store.close()
    assert recovery.committed == ("tx-c",)
    assert recovery.aborted == ("tx-a",)
    assert sorted(recovery.left) == ["tx-p", "tx-u"]
    assert prepared_gids(database) == ["2pc/bank/tx-p", "2pc/bank/tx-u"]
    settled = {tx_id: balances(database)[tx_id] for tx_id in ("tx-c", "tx-a")}
    assert settled == {"tx-c": 9, "tx-a": 10}
    # The coordinator's phase 2 settles the ones left.
    await bank.commit("tx-p")
    await bank.abort("tx-u")
    assert {tx_id: balances(database)[tx_id] for tx_id in tx_ids} == {"tx-c": 9, "tx-a": 10, "tx-p": 9, "tx-u": 10}


# -- a money transfer through the kit's HTTP routes ------------------------------


@contextlib.asynccontextmanager
async def banks_app(dsns: dict[str, str], tmp_path: Path) -> AsyncIterator[TestClient]:
    """One aiohttp app serving a 2PC participant per bank on 127.0.0.1."""
    app = web.Application()
    stores = [SQLiteStore(tmp_path / f"{service}.db") for service in dsns]
    for (service, dsn), store in zip(dsns.items(), stores, strict=True):
        bank = PostgresParticipant(dsn, service, work=apply_delta)
        add_twopc_routes(app, f"/{service}", bank, store)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            yield client
    finally:
        for store in stores:
            store.close()


async def call(client: TestClient, tx_id: str, service: str, phase: str, body: Any) -> Any:
    """One call as the coordinator sends it (same key on every retry)."""
    response = await client.post(
        f"/{service}/{phase}",
        json=body,
        headers={"Idempotency-Key": f"{tx_id}/{service}/{phase}", "Coordinator-Fence": "1:1"},
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def run_transaction(
    client: TestClient, tx_id: str, moves: dict[str, dict[str, Any]], *, force_abort: bool = False
) -> str:
    """Prepare every bank; commit if all vote yes (and not forced), else abort.
    Phase 2 is sent twice, as a coordinator retrying after lost answers would."""
    votes = [await call(client, tx_id, service, "prepare", body) for service, body in moves.items()]
    decision = "commit" if all(v == {"vote": "yes"} for v in votes) and not force_abort else "abort"
    expected = {"state": "committed" if decision == "commit" else "aborted"}
    for _ in range(2):
        for service in moves:
            assert await call(client, tx_id, service, decision, {}) == expected
    return decision


async def test_money_moves_between_two_databases_and_the_total_is_constant(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    dsns = {"bank-a": new_database(), "bank-b": new_database()}

    def total() -> int:
        return sum(sum(balances(dsn).values()) for dsn in dsns.values())

    start = total()

    def move(amount: int) -> dict[str, dict[str, Any]]:
        return {"bank-a": {"account": "alice", "delta": -amount}, "bank-b": {"account": "bob", "delta": amount}}

    async with banks_app(dsns, tmp_path) as client:
        assert await run_transaction(client, "tx-1", move(30)) == "commit"
        assert balances(dsns["bank-a"])["alice"] == 70
        assert balances(dsns["bank-b"])["bob"] == 130
        assert total() == start

        # bank-a cannot pay (CHECK balance >= 0): it votes no, bank-b's
        # prepared credit is rolled back.
        assert await run_transaction(client, "tx-2", move(1000)) == "abort"
        assert total() == start

        # Both vote yes, the coordinator still decides abort (a timeout).
        assert await run_transaction(client, "tx-3", move(10), force_abort=True) == "abort"
        assert total() == start
        assert balances(dsns["bank-a"])["alice"] == 70

    for dsn in dsns.values():
        assert prepared_gids(dsn) == []


# -- a saga participant whose work is one PostgreSQL transaction ---------------------


def charge_app(dsn: str, store: SQLiteStore, calls: dict[str, int], busy: list[str]) -> web.Application:
    """Saga steps over the kit's middleware: the action debits alice in one
    transaction (a failed CHECK raises and rolls it back; a key listed in
    `busy` rolls back and answers 503 once); the compensation credits her."""

    def debit(key: str, amount: int) -> int:
        with psycopg.connect(dsn) as connection:  # commits on exit, rolls back on an exception
            connection.execute("UPDATE accounts SET balance = balance - %s WHERE id = 'alice'", [amount])
            if key in busy:
                busy.remove(key)
                connection.rollback()
                return 503
        return 201

    def credit(amount: int) -> None:
        with psycopg.connect(dsn) as connection:
            connection.execute("UPDATE accounts SET balance = balance + %s WHERE id = 'alice'", [amount])

    async def charge(request: web.Request) -> web.Response:
        calls["charge"] += 1
        amount = int((await request.json())["amount"])
        status = debit(request.headers["Idempotency-Key"], amount)
        return web.json_response({"charged": amount if status == 201 else 0}, status=status)

    async def refund(request: web.Request) -> web.Response:
        calls["refund"] += 1
        credit(int((await request.json())["amount"]))
        return web.json_response({"refunded": True})

    app = web.Application(middlewares=[saga_participant(store, path_prefixes=["/charge", "/refund"])])
    app.router.add_post("/charge", charge)
    app.router.add_post("/refund", refund)
    return app


async def test_a_saga_action_that_failed_in_postgres_gets_a_null_compensation(database: str, tmp_path: Path) -> None:
    calls = {"charge": 0, "refund": 0}
    busy = ["saga-2/pay/action"]
    store = SQLiteStore(tmp_path / "saga.db")

    async def step(client: TestClient, path: str, key: str, amount: int) -> tuple[int, Any]:
        response = await client.post(path, json={"amount": amount}, headers={"Idempotency-Key": key})
        text = await response.text()
        return response.status, (await response.json()) if response.status != 500 else text

    try:
        async with TestClient(TestServer(charge_app(database, store, calls, busy))) as client:
            # saga-1: the debit breaks the CHECK, raises and is rolled back ...
            assert (await step(client, "/charge", "saga-1/pay/action", 1000))[0] == 500
            # ... so nothing is refunded (no 1000 credited from nowhere).
            null = await step(client, "/refund", "saga-1/pay/compensation", 1000)
            assert null == (200, NULL_COMPENSATION_BODY)
            assert balances(database) == OPENING_BALANCES
            assert calls == {"charge": 1, "refund": 0}

            # saga-2: 503 (rolled back), then the retry debits, then the
            # compensation really credits it back.
            assert (await step(client, "/charge", "saga-2/pay/action", 30))[0] == 503
            assert (await step(client, "/charge", "saga-2/pay/action", 30))[0] == 201
            assert balances(database)["alice"] == 70
            undone = await step(client, "/refund", "saga-2/pay/compensation", 30)
            assert undone == (200, {"refunded": True})
    finally:
        store.close()
    assert balances(database) == OPENING_BALANCES
    assert calls == {"charge": 3, "refund": 1}


# -- SQL from a request is not run unless the service opted in -----------------------

ATTACK = {"sql": [{"query": "WITH gone AS (DELETE FROM accounts RETURNING id) SELECT count(*) FROM gone"}]}


def test_a_participant_without_work_is_refused_unless_it_opts_in() -> None:
    with pytest.raises(TypeError, match="work is required"):
        PostgresParticipant("dbname=unused", "bank")
    with pytest.raises(TypeError, match="not both"):
        PostgresParticipant("dbname=unused", "bank", work=apply_delta, allow_request_sql=True)
    PostgresParticipant("dbname=unused", "bank", allow_request_sql=True)


async def test_sql_in_a_request_body_is_never_run_by_a_participant_with_work(database: str, tmp_path: Path) -> None:
    """On the old default (no `work`) this prepare emptied `accounts`."""
    seen: list[Any] = []

    def work(connection: psycopg.Connection[Any], body: Any) -> bool:
        seen.append(body)
        return apply_delta(connection, {"account": "alice", "delta": -1})

    app = web.Application()
    store = SQLiteStore(tmp_path / "bank.db")
    add_twopc_routes(app, "/bank", PostgresParticipant(database, "bank", work=work), store)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert await call(client, "tx-x", "bank", "prepare", ATTACK) == {"vote": "yes"}
            assert await call(client, "tx-x", "bank", "commit", {}) == {"state": "committed"}
    finally:
        store.close()
    assert seen == [ATTACK]  # handed to the work as data, never executed
    assert balances(database) == {"alice": 99, "bob": 100}
