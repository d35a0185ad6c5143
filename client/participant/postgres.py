"""A 2PC participant whose prepared work is a PostgreSQL prepared transaction.

    from coordinator.client.participant import SQLiteStore, add_twopc_routes
    from coordinator.client.participant.postgres import PostgresParticipant

    def debit(conn, body):                      # runs in a worker thread
        row = conn.execute(
            "UPDATE accounts SET balance = balance - %s WHERE id = %s AND balance >= %s"
            " RETURNING balance", [body["amount"], body["account"], body["amount"]],
        ).fetchone()
        return row is not None                  # False = vote no

    bank = PostgresParticipant("dbname=bank", "bank", work=debit)
    store = SQLiteStore("bank-2pc.db")
    await bank.recover(store)                   # before serving: settle what it can
    add_twopc_routes(app, "/bank", bank, store)

Needs psycopg 3 (the `postgres` extra: `pip install 'coordinator[postgres]'`)
and a server with `max_prepared_transactions` > 0.

The phases (each call opens its own connection, in a worker thread through
`asyncio.to_thread`, at most `connections_max` at a time; every session gets
`statement_timeout` = `statement_timeout_s` and
`idle_in_transaction_session_timeout` twice that, so no call waits unbounded
on a lock a prepared transaction holds: it fails, and prepare votes no):

- `prepare(tx_id, body)`: BEGIN; the work; `PREPARE TRANSACTION 'gid'`;
  vote yes. The work is the `work(conn, body)` callback (a plain function;
  the transaction is open on `conn`, which it must neither commit nor roll
  back; return False to vote no). `work` is required: the body is data for
  it, never SQL the participant runs.

  Raw SQL from requests is an explicit opt-in, `allow_request_sql=True`
  (without `work`; off by default, and not used by cluster/demo/banks.py):
  anyone who can reach the prepare route then runs any SELECT / INSERT /
  UPDATE / DELETE / WITH statement on the participant's database role
  (e.g. `WITH gone AS (DELETE FROM accounts RETURNING id) SELECT 1`, or
  `SELECT pg_read_file(...)` for a superuser). Use it only for tests and
  tools on a database and role that hold nothing else. The body is then
  `{"sql": [{"query": "...", "params": [...]}, ...]}`: at most
  STATEMENTS_MAX statements, each one SELECT / INSERT / UPDATE / DELETE /
  MERGE / WITH / VALUES statement of at most QUERY_CHARS_MAX characters
  whose values travel only as parameters (`%s` placeholders, a literal `%`
  written `%%`; at most PARAMS_MAX JSON scalars each). The statements are
  sent in one pipeline over the extended query protocol, so a query string
  holding two statements is refused by the server. A malformed body raises
  `SQLBodyError` (the kit's routes answer 400, which counts as a no).
  An SQL error (from the server or psycopg, on a connection still alive)
  -> ROLLBACK, vote no, logged. A broken connection leaves the outcome
  unknown: the error propagates (500; the coordinator retries). A retried
  prepare first looks for its gid in `pg_prepared_xacts` and votes yes
  without running the work again if an earlier attempt prepared it.
- `commit(tx_id)`: `COMMIT PREPARED 'gid'`; `abort(tx_id)`:
  `ROLLBACK PREPARED 'gid'`. Both idempotent: a gid that no longer exists
  is taken as already finished.
- `in_doubt()`: this participant's prepared transactions (its gid prefix, in
  this database), e.g. after a restart. `recover(store)` reconciles them with
  the kit's store: store says committed -> COMMIT PREPARED; aborted or
  refused -> ROLLBACK PREPARED; prepared or preparing -> left for the
  coordinator's phase 2 or the `TerminationResolver`; no record -> left,
  with a warning (the store is not the one this participant used). Run it
  before serving requests: it does not take the routes' per-transaction
  locks.

The record of outcomes is the kit's store, not PostgreSQL: once a prepared
transaction is finished its gid is gone from `pg_prepared_xacts`, and
PostgreSQL cannot tell whether it was committed or rolled back. So a gid
not found is "already done" for both commit and abort, and only the store
(through the kit's state machine, which never aborts a committed
transaction) says which. Keep the store durable (`SQLiteStore`) and one per
participant.

Unlike a saga action (`saga.py`, "The rule"), a prepare that raised keeps
its `preparing` state, so an abort still calls abort(): an exception from
a broken connection leaves open whether PREPARE TRANSACTION took effect.
That costs nothing here, since ROLLBACK PREPARED of a gid never prepared is
a no-op; a prepare that failed with an SQL error on a live connection has
rolled back and votes no, which leaves nothing to abort.

The gid is `2pc/{name}/{tx_id}`: deterministic, at most 196 bytes (under
PostgreSQL's 200-byte GIDSIZE), made of `[A-Za-z0-9._:/-]` only, and passed
as a quoted literal. Gids are server-wide: `name` must be unique among the
participants sharing a PostgreSQL server, and stable across restarts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg import sql
    from psycopg.pq import TransactionStatus
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "coordinator.client.participant.postgres needs psycopg 3: pip install 'coordinator[postgres]'"
    ) from error

from coordinator.client.participant.errors import LimitExceededError
from coordinator.client.participant.limits import TX_ID_PATTERN
from coordinator.client.participant.store import IdempotencyStore, TransactionState

__all__ = [
    "GID_BYTES_MAX",
    "PARAMS_MAX",
    "QUERY_CHARS_MAX",
    "STATEMENTS_MAX",
    "PostgresParticipant",
    "PreparedTransaction",
    "Recovery",
    "SQLBodyError",
    "Statement",
    "parse_sql_body",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Participant names: the coordinator's service names.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
GID_PREFIX = "2pc/"
# PostgreSQL's GIDSIZE is 200 bytes including the terminating NUL.
GID_BYTES_MAX = 199
# The SQL form of a prepare body.
STATEMENTS_MAX = 64
QUERY_CHARS_MAX = 8192
PARAMS_MAX = 100
PARAM_CHARS_MAX = 65536
STATEMENT_KINDS = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|MERGE|WITH|VALUES)\b", re.IGNORECASE)
# Prepared transactions one in_doubt() call lists (PostgreSQL's
# max_prepared_transactions is usually far lower).
IN_DOUBT_MAX = 1000
CONNECTIONS_MAX_DEFAULT = 8
CONNECT_TIMEOUT_S_DEFAULT = 5
STATEMENT_TIMEOUT_S_DEFAULT = 5.0

WorkCallback = Callable[["psycopg.Connection[Any]", Any], "bool | None"]


class SQLBodyError(LimitExceededError):
    """A prepare body that is not a valid, bounded SQL statement list.

    A LimitExceededError, so the kit's 2PC routes answer it 400 (a no vote)."""


@dataclass(frozen=True)
class Statement:
    query: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class PreparedTransaction:
    """One of this participant's transactions prepared in PostgreSQL."""

    tx_id: str
    gid: str
    prepared_at: datetime


@dataclass(frozen=True)
class Recovery:
    """What `recover` did with each in-doubt transaction (tx ids)."""

    committed: tuple[str, ...]
    aborted: tuple[str, ...]
    left: tuple[str, ...]


def parse_sql_body(body: Any) -> tuple[Statement, ...]:
    """The statements of `{"sql": [{"query", "params"}, ...]}`, or SQLBodyError."""
    if not isinstance(body, dict) or set(body) != {"sql"}:
        raise SQLBodyError('the prepare body must be {"sql": [{"query": ..., "params": [...]}]}')
    items = body["sql"]
    if not isinstance(items, list) or not 1 <= len(items) <= STATEMENTS_MAX:
        raise SQLBodyError(f"sql must be a list of 1..{STATEMENTS_MAX} statements (STATEMENTS_MAX)")
    return tuple(_parse_statement(f"sql[{index}]", item) for index, item in enumerate(items))


def _parse_statement(where: str, item: Any) -> Statement:
    if not isinstance(item, dict) or "query" not in item or not set(item) <= {"query", "params"}:
        raise SQLBodyError(f'{where} must be {{"query": ..., "params": [...]}}')
    query, params = item["query"], item.get("params", [])
    if not isinstance(query, str) or not 1 <= len(query) <= QUERY_CHARS_MAX:
        raise SQLBodyError(f"{where}.query must be 1..{QUERY_CHARS_MAX} characters (QUERY_CHARS_MAX)")
    if STATEMENT_KINDS.match(query) is None:
        raise SQLBodyError(
            f"{where}.query must be one SELECT, INSERT, UPDATE, DELETE, MERGE, WITH or VALUES"
            " statement: the participant owns the transaction"
        )
    if not isinstance(params, list) or len(params) > PARAMS_MAX:
        raise SQLBodyError(f"{where}.params must be a list of at most {PARAMS_MAX} (PARAMS_MAX)")
    for value in params:
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise SQLBodyError(f"{where}.params must hold JSON scalars only")
        if isinstance(value, str) and len(value) > PARAM_CHARS_MAX:
            raise SQLBodyError(f"{where}.params strings must be at most {PARAM_CHARS_MAX} characters (PARAM_CHARS_MAX)")
    return Statement(query, tuple(params))


class PostgresParticipant:
    """A `TwoPhaseHandler` preparing its work as a PostgreSQL prepared transaction."""

    def __init__(
        self,
        conninfo: str,
        name: str,
        *,
        work: WorkCallback | None = None,
        allow_request_sql: bool = False,
        connect_timeout_s: int = CONNECT_TIMEOUT_S_DEFAULT,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S_DEFAULT,
        connections_max: int = CONNECTIONS_MAX_DEFAULT,
    ) -> None:
        if NAME_PATTERN.fullmatch(name) is None:
            raise ValueError(f"participant name must match {NAME_PATTERN.pattern}: {name!r}")
        if work is None and allow_request_sql is not True:
            raise TypeError(
                "work is required: a plain function doing the prepare's work on the"
                " connection (SQL from request bodies only with allow_request_sql=True)"
            )
        if work is not None and allow_request_sql:
            raise TypeError("give work or allow_request_sql=True, not both")
        if work is not None and (inspect.iscoroutinefunction(work) or not callable(work)):
            raise TypeError("work must be a plain function: it runs in a worker thread")
        if connect_timeout_s < 1 or statement_timeout_s <= 0 or connections_max < 1:
            raise ValueError("timeouts must be positive and connections_max at least 1")
        self.name = name
        self.gid_prefix = f"{GID_PREFIX}{name}/"
        self._conninfo = conninfo
        self._work = work
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._slots = asyncio.Semaphore(connections_max)

    def gid(self, tx_id: str) -> str:
        """The PostgreSQL global transaction id of `tx_id` here."""
        if not isinstance(tx_id, str) or TX_ID_PATTERN.fullmatch(tx_id) is None:
            raise LimitExceededError(f"tx_id must match {TX_ID_PATTERN.pattern} (TX_ID_PATTERN)")
        gid = self.gid_prefix + tx_id
        assert len(gid.encode()) <= GID_BYTES_MAX, gid
        return gid

    # -- the TwoPhaseHandler protocol ----------------------------------------

    async def prepare(self, tx_id: str, body: Any) -> bool:
        """Run the work and PREPARE TRANSACTION; True = vote yes."""
        gid = self.gid(tx_id)
        # The body is SQL only with allow_request_sql=True (then work is None).
        statements = None if self._work is not None else parse_sql_body(body)
        return await self._in_thread(self._prepare, gid, body, statements)

    async def commit(self, tx_id: str) -> None:
        """COMMIT PREPARED; a gid already gone counts as done."""
        await self._in_thread(self._finish, self.gid(tx_id), "COMMIT PREPARED")

    async def abort(self, tx_id: str) -> None:
        """ROLLBACK PREPARED; a gid already gone (or never prepared) counts as done."""
        await self._in_thread(self._finish, self.gid(tx_id), "ROLLBACK PREPARED")

    # -- after a restart -----------------------------------------------------

    async def in_doubt(self, *, limit: int = IN_DOUBT_MAX) -> list[PreparedTransaction]:
        """This participant's prepared transactions in its database, oldest first."""
        if not 1 <= limit <= IN_DOUBT_MAX:
            raise ValueError(f"limit must be 1..{IN_DOUBT_MAX} (IN_DOUBT_MAX)")
        return await self._in_thread(self._in_doubt, limit)

    async def recover(self, store: IdempotencyStore, *, limit: int = IN_DOUBT_MAX) -> Recovery:
        """Finish the in-doubt transactions the store has an outcome for."""
        committed: list[str] = []
        aborted: list[str] = []
        left: list[str] = []
        for prepared in await self.in_doubt(limit=limit):
            transaction = store.get_transaction(prepared.tx_id)
            state = None if transaction is None else transaction.state
            if state is TransactionState.COMMITTED:
                await self.commit(prepared.tx_id)
                committed.append(prepared.tx_id)
            elif state in (TransactionState.ABORTED, TransactionState.REFUSED):
                await self.abort(prepared.tx_id)
                aborted.append(prepared.tx_id)
            else:
                if state is None:
                    log.warning(
                        "participant %s: %s is prepared in PostgreSQL but unknown to the store; left prepared",
                        self.name,
                        prepared.gid,
                    )
                left.append(prepared.tx_id)
        return Recovery(tuple(committed), tuple(aborted), tuple(left))

    # -- blocking parts, run in worker threads --------------------------------

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await asyncio.to_thread(function, *args)

    def _connect(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout_s)
        try:
            connection.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('idle_in_transaction_session_timeout', %s, false)",
                [str(self._statement_timeout_ms), str(self._statement_timeout_ms * 2)],
            )
        except BaseException:
            connection.close()
            raise
        return connection

    def _prepare(self, gid: str, body: Any, statements: tuple[Statement, ...] | None) -> bool:
        with self._connect() as connection:
            if _is_prepared(connection, gid):
                log.info("participant %s: %s already prepared; votes yes again", self.name, gid)
                return True
            try:
                connection.execute("BEGIN")
                vote = self._run_work(connection, body, statements)
            except psycopg.Error as error:
                return self._refuse(connection, gid, error)
            except BaseException:
                _rollback_quietly(connection)
                raise
            if not vote:
                connection.execute("ROLLBACK")
                log.info("participant %s: the work votes no on %s", self.name, gid)
                return False
            return self._prepare_transaction(connection, gid)

    def _run_work(
        self, connection: psycopg.Connection[Any], body: Any, statements: tuple[Statement, ...] | None
    ) -> bool:
        if statements is not None:
            with connection.pipeline():
                for statement in statements:
                    connection.execute(statement.query, list(statement.params))
            return True
        assert self._work is not None
        vote = self._work(connection, body)
        if vote is not None and not isinstance(vote, bool):
            raise TypeError(f"work must return a bool or None, not {type(vote).__name__}")
        status = connection.info.transaction_status
        if status is TransactionStatus.IDLE:
            raise RuntimeError("work ended the transaction itself; it must leave it open")
        if status is TransactionStatus.INERROR:
            log.info("participant %s: work left its transaction failed; votes no", self.name)
            return False
        return vote is not False

    def _prepare_transaction(self, connection: psycopg.Connection[Any], gid: str) -> bool:
        try:
            connection.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
        except psycopg.errors.DuplicateObject as error:
            # This attempt is rolled back; the gid is held by an earlier one.
            if connection.broken:
                raise
            if not _is_prepared(connection, gid):
                raise RuntimeError(
                    f"gid {gid} is in use outside this database: participant names must be unique per PostgreSQL server"
                ) from error
            return True
        except psycopg.Error as error:
            return self._refuse(connection, gid, error)
        return True

    def _refuse(self, connection: psycopg.Connection[Any], gid: str, error: psycopg.Error) -> bool:
        """Roll back after a definite SQL error and vote no; re-raise when the
        connection broke (whether the transaction got prepared is unknown)."""
        if connection.broken or connection.closed:
            raise error
        if connection.info.transaction_status is not TransactionStatus.IDLE:
            connection.execute("ROLLBACK")
        log.warning("participant %s votes no on %s: %s", self.name, gid, error)
        return False

    def _finish(self, gid: str, command: str) -> bool:
        """COMMIT/ROLLBACK PREPARED; False if the gid was already gone."""
        assert command in ("COMMIT PREPARED", "ROLLBACK PREPARED"), command
        with self._connect() as connection:
            try:
                connection.execute(sql.SQL(command + " {}").format(sql.Literal(gid)))
            except psycopg.errors.UndefinedObject:
                log.debug("participant %s: %s not prepared; %s is a no-op", self.name, gid, command)
                return False
        return True

    def _in_doubt(self, limit: int) -> list[PreparedTransaction]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT gid, prepared FROM pg_prepared_xacts"
                " WHERE database = current_database() AND starts_with(gid, %s)"
                " ORDER BY prepared, gid LIMIT %s",
                [self.gid_prefix, limit],
            ).fetchall()
        found = []
        for gid, prepared_at in rows:
            tx_id = gid[len(self.gid_prefix) :]
            if TX_ID_PATTERN.fullmatch(tx_id) is None:
                log.warning("participant %s: ignoring foreign gid %r", self.name, gid)
                continue
            found.append(PreparedTransaction(tx_id, gid, prepared_at))
        return found


def _is_prepared(connection: psycopg.Connection[Any], gid: str) -> bool:
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = %s AND database = current_database())", [gid]
    ).fetchone()
    assert row is not None
    return bool(row[0])


def _rollback_quietly(connection: psycopg.Connection[Any]) -> None:
    if connection.broken or connection.closed:
        return
    try:
        if connection.info.transaction_status is not TransactionStatus.IDLE:
            connection.execute("ROLLBACK")
    except psycopg.Error:
        log.debug("rollback after a failed work raised", exc_info=True)
