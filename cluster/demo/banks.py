"""Two banks for the 2PC transfer of ``coordinator demo`` and its tests.

Each bank is an aiohttp participant (``coordinator.client.participant.add_twopc_routes``)
over its own database. With PostgreSQL 15 on the machine each bank is a real
PostgreSQL database (``PostgresParticipant``: the update runs at prepare,
then ``PREPARE TRANSACTION`` / ``COMMIT PREPARED``); without it, each bank
is a SQLite file whose prepare records the pending change and whose commit
applies it - and the demo says so.

Prepare body: ``{"account": "alice", "delta": -30}``. An update that would
take a balance below zero votes no.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.client.participant import MemoryStore, add_twopc_routes
from coordinator.cluster.launcher.local import serve_on_loopback

# psycopg is optional (pip install 'coordinator[postgres]'): without it the banks are SQLite.
try:
    import psycopg

    from coordinator.client.participant.pgtest import PostgresUnavailable, TemporaryPostgres
    from coordinator.client.participant.postgres import PostgresParticipant
except ImportError as error:
    POSTGRES_MISSING: str | None = f"PostgreSQL participants need psycopg ({error})"
else:
    POSTGRES_MISSING = None

__all__ = ["Banks", "start_banks", "transfer"]

OPENING_BALANCES = {"bank-a": {"alice": 100}, "bank-b": {"bob": 100}}


def transfer(tx_id: str, amount: int, *, timeout_s: float = 10) -> dict:
    """Move ``amount`` from alice at bank-a to bob at bank-b."""
    return {
        "id": tx_id,
        "participants": [
            {
                "service": "bank-a",
                "prepare": {"path": "/tx/prepare", "body": {"account": "alice", "delta": -amount}},
                "commit": {"path": "/tx/commit"},
                "abort": {"path": "/tx/abort"},
            },
            {
                "service": "bank-b",
                "prepare": {"path": "/tx/prepare", "body": {"account": "bob", "delta": amount}},
                "commit": {"path": "/tx/commit"},
                "abort": {"path": "/tx/abort"},
            },
        ],
        "timeout_s": timeout_s,
    }


class SQLiteBank:
    """A TwoPhaseHandler over one SQLite file: prepare holds the change, commit applies it."""

    def __init__(self, path: Path, name: str, on_event: Callable[[str, str], None]) -> None:
        self.name = name
        self._on_event = on_event
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute(
            "create table if not exists accounts (id text primary key, balance integer not null check (balance >= 0))"
        )
        self._db.execute(
            "create table if not exists pending (tx text primary key, account text not null, delta integer not null)"
        )
        for account, balance in OPENING_BALANCES[name].items():
            self._db.execute("insert or ignore into accounts values (?, ?)", (account, balance))

    def prepare(self, tx_id: str, body: Any) -> bool:
        account, delta = body["account"], int(body["delta"])
        (balance,) = self._db.execute("select balance from accounts where id = ?", (account,)).fetchone()
        (held,) = self._db.execute(
            "select coalesce(sum(delta), 0) from pending where account = ? and delta < 0", (account,)
        ).fetchone()
        if balance + held + min(delta, 0) < 0:
            self._on_event(self.name, f"{self.name}: votes no on {tx_id} ({account} has {balance})")
            return False
        self._db.execute("insert or replace into pending values (?, ?, ?)", (tx_id, account, delta))
        self._on_event(self.name, f"{self.name}: prepared {tx_id} ({account} {delta:+d})")
        return True

    def commit(self, tx_id: str) -> None:
        row = self._db.execute("select account, delta from pending where tx = ?", (tx_id,)).fetchone()
        if row is not None:
            self._db.execute("begin")
            self._db.execute("update accounts set balance = balance + ? where id = ?", (row[1], row[0]))
            self._db.execute("delete from pending where tx = ?", (tx_id,))
            self._db.execute("commit")
        self._on_event(self.name, f"{self.name}: committed {tx_id}")

    def abort(self, tx_id: str) -> None:
        self._db.execute("delete from pending where tx = ?", (tx_id,))
        self._on_event(self.name, f"{self.name}: aborted {tx_id}")

    def total(self) -> int:
        return self._db.execute("select sum(balance) from accounts").fetchone()[0]

    def in_doubt(self) -> int:
        return self._db.execute("select count(*) from pending").fetchone()[0]


class PostgresBank:
    def __init__(self, dsn: str, name: str, on_event: Callable[[str, str], None]) -> None:
        self.name = name
        self._dsn = dsn
        self._on_event = on_event
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "create table if not exists accounts (id text primary key, balance integer not null check (balance >= 0))"
            )
            for account, balance in OPENING_BALANCES[name].items():
                conn.execute("insert into accounts values (%s, %s) on conflict do nothing", (account, balance))
        self._participant = PostgresParticipant(dsn, name, work=self._work)

    def _work(self, conn, body: Any) -> bool:
        conn.execute("update accounts set balance = balance + %s where id = %s", (int(body["delta"]), body["account"]))
        return True

    async def prepare(self, tx_id: str, body: Any) -> bool:
        yes = await self._participant.prepare(tx_id, body)
        self._on_event(
            self.name,
            f"{self.name}: {'PREPARE TRANSACTION' if yes else 'votes no on'} {tx_id} ({body['account']} {int(body['delta']):+d})",
        )
        return yes

    async def commit(self, tx_id: str) -> None:
        await self._participant.commit(tx_id)
        self._on_event(self.name, f"{self.name}: COMMIT PREPARED {tx_id}")

    async def abort(self, tx_id: str) -> None:
        await self._participant.abort(tx_id)
        self._on_event(self.name, f"{self.name}: ROLLBACK PREPARED {tx_id}")

    def _one(self, query: str) -> int:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            return conn.execute(query).fetchone()[0]

    def total(self) -> int:
        return self._one("select coalesce(sum(balance), 0) from accounts")

    def in_doubt(self) -> int:
        return self._one("select count(*) from pg_prepared_xacts where database = current_database()")


@dataclass
class Banks:
    kind: str  # "postgresql" or "sqlite"
    note: str
    urls: dict[str, str]
    handlers: dict[str, Any]

    def total(self) -> int:
        return sum(h.total() for h in self.handlers.values())

    def in_doubt(self) -> int:
        return sum(h.in_doubt() for h in self.handlers.values())


@contextlib.asynccontextmanager
async def start_banks(
    on_event: Callable[[str, str], None], *, prefer_postgres: bool = True, keys: Mapping[str, bytes] | None = None
):
    """Yield :class:`Banks` serving on loopback; stops everything after."""
    with contextlib.ExitStack() as stack:
        handlers, kind, note = None, "sqlite", ""
        if prefer_postgres and POSTGRES_MISSING is not None:
            note = POSTGRES_MISSING
        elif prefer_postgres:
            try:
                server = stack.enter_context(TemporaryPostgres())
            except PostgresUnavailable as error:
                note = f"PostgreSQL is not available here: {error}"
            else:
                handlers = {
                    name: PostgresBank(server.create_database(name.replace("-", "_")), name, on_event)
                    for name in OPENING_BALANCES
                }
                kind = "postgresql"
        if handlers is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coordinator-banks-")))
            handlers = {name: SQLiteBank(root / f"{name}.sqlite", name, on_event) for name in OPENING_BALANCES}
        runners, urls = [], {}
        try:
            for name, handler in handlers.items():
                app = web.Application()
                add_twopc_routes(app, "/tx", handler, MemoryStore(), keys=keys)
                runner, urls[name] = await serve_on_loopback(app)
                runners.append(runner)
            yield Banks(kind, note, urls, handlers)
        finally:
            for runner in runners:
                await runner.cleanup()
