"""Where a participant keeps what it answered, what it saw and what it prepared.

`IdempotencyStore` is the narrow port the saga middleware and the 2PC routes
use; `MemoryStore` is its in-memory twin (tests, throw-away services) and
`SQLiteStore` the durable one: a service restarted on the same file still
replays its answers, still refuses stale fences and still honours the
transactions it prepared.

What a store holds:

- answers: `key -> Record` (status, body, content type), written once
  (`put_if_absent`) and replayed for every later request with that key;
- attempt markers: keys whose handler has been *called* and may have had
  effects, so "the action left no trace" can be told from "it ran". The
  saga middleware and the gRPC servicer clear the marker again
  (`clear_attempted`) when the handler returned a non-definite answer or
  raised, and keep it when the handler never came back (crash, cancel);
- the highest fence term seen (`observe_fence_term`);
- 2PC transactions: `tx_id -> Transaction(state, updated_at_s)`.

Retention: nothing is kept for ever. Answers and attempt markers older
than `retention_s` (default RETENTION_S_DEFAULT, 7 days; each record's age
counts from its write, by the store's `clock`, default `time.time`) and 2PC
transactions finished (committed, aborted, refused) longer than that
before (their `updated_at_s`) are deleted, at most PRUNE_BATCH_MAX of each
kind per prune. A transaction still `preparing` or `prepared` is never
pruned, however old: its outcome is not settled. Writes prune at most once
per `prune_interval_s` (PRUNE_INTERVAL_S_DEFAULT), and always before
refusing a write for lack of room (`records_max`), so a store that filled
up accepts new keys again once old ones expire; `prune()` does it on
demand. The retention must outlast the longest time the coordinator may
retry one key: a key retried after its records were pruned is new again
(its handler runs again; a compensation whose action's marker was pruned is
a null compensation; an action whose compensation's tombstone was pruned is
no longer refused as hanging; a 2PC call after a pruned abort is not
presumed aborted).

Store calls are short and synchronous; they run on the event loop. Both
implementations guard their state with a `threading.Lock`, so one store may
also be shared with threads.
"""

from __future__ import annotations

import enum
import json
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coordinator.client.participant.errors import LimitExceededError, StoreClosedError, StoreFullError
from coordinator.client.participant.limits import (
    BODY_BYTES_MAX,
    CONTENT_TYPE_CHARS_MAX,
    FENCE_TERM_MAX,
    KEY_CHARS_MAX,
    KEY_PATTERN,
    MEMORY_STORE_BYTES_MAX_DEFAULT,
    PRUNE_BATCH_MAX,
    PRUNE_INTERVAL_S_DEFAULT,
    RECORDS_MAX_DEFAULT,
    RETENTION_S_DEFAULT,
)

__all__ = ["IdempotencyStore", "MemoryStore", "Record", "SQLiteStore", "Transaction", "TransactionState", "check_key"]


_DIGEST_PATTERN = re.compile(r"(?:[0-9a-f]{64})?")


def check_key(key: str) -> str:
    """Return `key` if it is 1..KEY_CHARS_MAX visible ASCII characters."""
    if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
        raise LimitExceededError(
            f"key must be 1..{KEY_CHARS_MAX} visible ASCII characters without spaces (KEY_CHARS_MAX)"
        )
    return key


@dataclass(frozen=True)
class Record:
    """One answer as it is replayed: HTTP status, body bytes, content type,
    and the `signing.request_digest` of the request it answered ("" when
    not bound: the kit binds answers when it verifies signatures)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    request_digest: str = ""

    def __post_init__(self) -> None:
        assert isinstance(self.status, int) and 100 <= self.status <= 599, self.status
        assert isinstance(self.body, bytes), type(self.body)
        assert _DIGEST_PATTERN.fullmatch(self.request_digest), self.request_digest
        if len(self.body) > BODY_BYTES_MAX:
            raise LimitExceededError(f"body of {len(self.body)} bytes is over BODY_BYTES_MAX ({BODY_BYTES_MAX})")
        if len(self.content_type) > CONTENT_TYPE_CHARS_MAX:
            raise LimitExceededError(f"content type is over CONTENT_TYPE_CHARS_MAX ({CONTENT_TYPE_CHARS_MAX})")

    @classmethod
    def from_json(cls, status: int, value: Any) -> Record:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, body, "application/json")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class TransactionState(enum.StrEnum):
    """A 2PC participant's view of one transaction.

    (none) -> preparing -> prepared | refused -> committed | aborted;
    (none) -> aborted (presumed abort); preparing -> aborted.
    `preparing` is written before prepare() is called, so an abort after a
    prepare whose outcome is unknown (crash, exception) still calls abort().
    """

    PREPARING = "preparing"
    PREPARED = "prepared"
    REFUSED = "refused"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Transaction:
    tx_id: str
    state: TransactionState
    # Wall-clock seconds (time.time()) of the last state change: it has to
    # mean the same thing after a restart.
    updated_at_s: float

    def __post_init__(self) -> None:
        check_key(self.tx_id)
        assert isinstance(self.state, TransactionState), self.state


class IdempotencyStore(Protocol):
    def get(self, key: str) -> Record | None: ...

    def put_if_absent(self, key: str, record: Record) -> Record:
        """Store `record` unless `key` has an answer; return the stored one."""
        ...

    def mark_attempted(self, key: str) -> bool:
        """Note that the handler for `key` is about to be called; True when
        this call made the marker (False: an earlier attempt left it)."""
        ...

    def clear_attempted(self, key: str) -> None:
        """Remove the marker of `key` (no-op without one): the attempt that
        made it ended without effects."""
        ...

    def was_attempted(self, key: str) -> bool: ...

    def highest_fence_term(self) -> int: ...

    def observe_fence_term(self, term: int) -> int:
        """Raise the highest term seen to `term` if higher; return the highest."""
        ...

    def get_transaction(self, tx_id: str) -> Transaction | None: ...

    def put_transaction(self, transaction: Transaction) -> None:
        """Insert or replace the transaction's record."""
        ...

    def transactions_in_state(
        self, state: TransactionState, *, updated_before_s: float, limit: int
    ) -> list[Transaction]:
        """Up to `limit` transactions in `state` last changed before the
        given time, oldest first."""
        ...

    def prune(self, *, limit: int = PRUNE_BATCH_MAX) -> int:
        """Delete up to `limit` records of each kind older than the
        retention (never an unfinished transaction); return how many."""
        ...

    def close(self) -> None: ...


def _check_term(term: int) -> None:
    assert isinstance(term, int) and 0 <= term <= FENCE_TERM_MAX, term


def _check_retention(records_max: int, retention_s: float, prune_interval_s: float) -> None:
    if not isinstance(records_max, int) or records_max <= 0:
        raise ValueError(f"records_max must be a positive int, not {records_max!r}")
    if not retention_s > 0:
        raise ValueError(f"retention_s must be positive, not {retention_s!r}")
    if not prune_interval_s > 0:
        raise ValueError(f"prune_interval_s must be positive, not {prune_interval_s!r}")


def _check_prune_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= PRUNE_BATCH_MAX:
        raise ValueError(f"limit must be 1..{PRUNE_BATCH_MAX} (PRUNE_BATCH_MAX), not {limit!r}")


# 2PC states a transaction is finished in: only these are ever pruned.
FINISHED_STATES = (TransactionState.COMMITTED, TransactionState.ABORTED, TransactionState.REFUSED)


class MemoryStore:
    """The in-memory `IdempotencyStore`: forgets everything with the process.

    Answers and attempt markers are kept in insertion order with their
    time, transactions in order of their last change, so a prune reads only
    the oldest entries."""

    def __init__(
        self,
        *,
        records_max: int = RECORDS_MAX_DEFAULT,
        bytes_max: int = MEMORY_STORE_BYTES_MAX_DEFAULT,
        retention_s: float = RETENTION_S_DEFAULT,
        prune_interval_s: float = PRUNE_INTERVAL_S_DEFAULT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_retention(records_max, retention_s, prune_interval_s)
        if not isinstance(bytes_max, int) or bytes_max <= 0:
            raise ValueError(f"bytes_max must be a positive int, not {bytes_max!r}")
        self._records_max = records_max
        self._bytes_max = bytes_max
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self._clock = clock
        self._answers: OrderedDict[str, tuple[float, Record]] = OrderedDict()
        self._attempts: OrderedDict[str, float] = OrderedDict()
        self._transactions: OrderedDict[str, Transaction] = OrderedDict()
        self._fence_term = 0
        self._bytes = 0
        self._closed = False
        self._lock = threading.Lock()
        self._last_prune_s = clock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("MemoryStore is closed")

    def get(self, key: str) -> Record | None:
        with self._lock:
            self._check_open()
            entry = self._answers.get(key)
        return None if entry is None else entry[1]

    def put_if_absent(self, key: str, record: Record) -> Record:
        check_key(key)
        with self._lock:
            self._check_open()
            stored = self._answers.get(key)
            if stored is not None:
                return stored[1]
            self._prune_if_due_locked()
            if key not in self._attempts and len(self._answers) >= self._records_max:
                self._prune_locked(PRUNE_BATCH_MAX)
                if len(self._answers) >= self._records_max:
                    raise StoreFullError(f"store holds records_max ({self._records_max}) answers")
            self._answers[key] = (self._clock(), record)
            self._bytes += len(record.body)
            return record

    def mark_attempted(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            if key in self._attempts:
                return False
            self._prune_if_due_locked()
            if len(self._attempts) >= self._records_max or self._bytes >= self._bytes_max:
                self._prune_locked(PRUNE_BATCH_MAX)
            if len(self._attempts) >= self._records_max:
                raise StoreFullError(f"store holds records_max ({self._records_max}) attempts")
            if self._bytes >= self._bytes_max:
                raise StoreFullError(f"store holds bytes_max ({self._bytes_max}) bytes")
            self._attempts[key] = self._clock()
            return True

    def clear_attempted(self, key: str) -> None:
        with self._lock:
            self._check_open()
            self._attempts.pop(key, None)

    def was_attempted(self, key: str) -> bool:
        with self._lock:
            self._check_open()
            return key in self._attempts

    def highest_fence_term(self) -> int:
        with self._lock:
            self._check_open()
            return self._fence_term

    def observe_fence_term(self, term: int) -> int:
        _check_term(term)
        with self._lock:
            self._check_open()
            self._fence_term = max(self._fence_term, term)
            return self._fence_term

    def get_transaction(self, tx_id: str) -> Transaction | None:
        with self._lock:
            self._check_open()
            return self._transactions.get(tx_id)

    def put_transaction(self, transaction: Transaction) -> None:
        with self._lock:
            self._check_open()
            self._prune_if_due_locked()
            is_new = transaction.tx_id not in self._transactions
            if is_new and len(self._transactions) >= self._records_max:
                self._prune_locked(PRUNE_BATCH_MAX)
                if len(self._transactions) >= self._records_max:
                    raise StoreFullError(f"store holds records_max ({self._records_max}) transactions")
            self._transactions[transaction.tx_id] = transaction
            self._transactions.move_to_end(transaction.tx_id)

    def transactions_in_state(
        self, state: TransactionState, *, updated_before_s: float, limit: int
    ) -> list[Transaction]:
        assert limit > 0
        with self._lock:
            self._check_open()
            found = [t for t in self._transactions.values() if t.state is state and t.updated_at_s <= updated_before_s]
        found.sort(key=lambda t: (t.updated_at_s, t.tx_id))
        return found[:limit]

    def prune(self, *, limit: int = PRUNE_BATCH_MAX) -> int:
        """Delete up to `limit` answers, `limit` attempt markers and `limit`
        finished transactions older than retention_s; return how many."""
        _check_prune_limit(limit)
        with self._lock:
            self._check_open()
            return self._prune_locked(limit)

    def _prune_if_due_locked(self) -> None:
        if self._clock() - self._last_prune_s >= self._prune_interval_s:
            self._prune_locked(PRUNE_BATCH_MAX)

    def _prune_locked(self, limit: int) -> int:
        now = self._clock()
        self._last_prune_s = now
        cutoff = now - self._retention_s
        removed = 0
        for key in _oldest(self._answers, cutoff, limit, lambda entry: entry[0]):
            self._bytes -= len(self._answers.pop(key)[1].body)
            removed += 1
        for key in _oldest(self._attempts, cutoff, limit, lambda at: at):
            del self._attempts[key]
            removed += 1
        # Transactions are ordered by their last change. An old one that is
        # not finished (preparing, prepared) is never pruned: it goes to the
        # back, so the next prune does not read it first again.
        for tx_id in _oldest(self._transactions, cutoff, limit, lambda t: t.updated_at_s):
            if self._transactions[tx_id].state in FINISHED_STATES:
                del self._transactions[tx_id]
                removed += 1
            else:
                self._transactions.move_to_end(tx_id)
        return removed

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _oldest(entries: OrderedDict[str, Any], cutoff: float, limit: int, at: Callable[[Any], float]) -> list[str]:
    """The keys at the front of `entries` whose time is before `cutoff`, at
    most `limit` of them (stops at the first younger one)."""
    keys: list[str] = []
    for key, value in entries.items():
        if len(keys) >= limit or at(value) >= cutoff:
            break
        keys.append(key)
    return keys


_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at_s REAL NOT NULL DEFAULT 0,
    request_digest TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT PRIMARY KEY,
    created_at_s REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fence (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    term INTEGER NOT NULL
);
INSERT OR IGNORE INTO fence (id, term) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS transactions (
    tx_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at_s REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transactions_by_state
    ON transactions (state, updated_at_s);
"""
# After the columns exist (a file from before retention gets them first).
_INDEXES = """
CREATE INDEX IF NOT EXISTS answers_by_age ON answers (created_at_s);
CREATE INDEX IF NOT EXISTS attempts_by_age ON attempts (created_at_s);
"""
_AGED_TABLES = ("answers", "attempts")
_SELECT_ANSWER = "SELECT status, body, content_type, request_digest FROM answers WHERE key = ?"


class SQLiteStore:
    """The durable `IdempotencyStore`: one SQLite file in WAL mode.

    One connection, used under a `threading.Lock`; every write is its own
    transaction and is on disk (synchronous=FULL) before the call returns,
    so an answer is durable before the service sends it. One process per
    file: the counts behind `records_max` are kept in memory.

    Answers and attempt markers carry `created_at_s` (the store's clock at
    the write, indexed); rows of a file written before that column existed
    count as created when the file is first opened by this version.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        records_max: int = RECORDS_MAX_DEFAULT,
        retention_s: float = RETENTION_S_DEFAULT,
        prune_interval_s: float = PRUNE_INTERVAL_S_DEFAULT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_retention(records_max, retention_s, prune_interval_s)
        self._records_max = records_max
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False
        )
        connection = self._connection
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=5000")
        self._create_schema(connection)
        self._answers_count = self._count("answers")
        self._attempts_count = self._count("attempts")
        self._transactions_count = self._count("transactions")
        (self._fence_term,) = connection.execute("SELECT term FROM fence WHERE id = 0").fetchone()
        self._last_prune_s = clock()

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            now = self._clock()
            for table in _AGED_TABLES:
                columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                if "created_at_s" not in columns:
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN created_at_s REAL NOT NULL DEFAULT 0")
                    connection.execute(f"UPDATE {table} SET created_at_s = ?", (now,))
                if table == "answers" and "request_digest" not in columns:
                    connection.execute("ALTER TABLE answers ADD COLUMN request_digest TEXT NOT NULL DEFAULT ''")
            for statement in _INDEXES.split(";"):
                if statement.strip():
                    connection.execute(statement)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _count(self, table: str) -> int:
        assert table in ("answers", "attempts", "transactions")
        return self._db().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreClosedError("SQLiteStore is closed")
        return self._connection

    def get(self, key: str) -> Record | None:
        with self._lock:
            row = self._db().execute(_SELECT_ANSWER, (key,)).fetchone()
        return None if row is None else Record(row[0], bytes(row[1]), row[2], row[3])

    def put_if_absent(self, key: str, record: Record) -> Record:
        check_key(key)
        with self._lock:
            db = self._db()
            row = db.execute(_SELECT_ANSWER, (key,)).fetchone()
            if row is not None:
                return Record(row[0], bytes(row[1]), row[2], row[3])
            self._prune_if_due_locked()
            attempted = db.execute("SELECT 1 FROM attempts WHERE key = ?", (key,)).fetchone()
            if attempted is None and self._answers_count >= self._records_max:
                self._prune_locked(PRUNE_BATCH_MAX)
                if self._answers_count >= self._records_max:
                    raise StoreFullError(f"store holds records_max ({self._records_max}) answers")
            db.execute(
                "INSERT INTO answers"
                " (key, status, content_type, body, created_at_s, request_digest)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, record.status, record.content_type, record.body, self._clock(), record.request_digest),
            )
            self._answers_count += 1
            return record

    def mark_attempted(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            db = self._db()
            if db.execute("SELECT 1 FROM attempts WHERE key = ?", (key,)).fetchone():
                return False
            self._prune_if_due_locked()
            if self._attempts_count >= self._records_max:
                self._prune_locked(PRUNE_BATCH_MAX)
                if self._attempts_count >= self._records_max:
                    raise StoreFullError(f"store holds records_max ({self._records_max}) attempts")
            db.execute("INSERT INTO attempts (key, created_at_s) VALUES (?, ?)", (key, self._clock()))
            self._attempts_count += 1
            return True

    def clear_attempted(self, key: str) -> None:
        with self._lock:
            deleted = self._db().execute("DELETE FROM attempts WHERE key = ?", (key,)).rowcount
            self._attempts_count -= deleted

    def was_attempted(self, key: str) -> bool:
        with self._lock:
            row = self._db().execute("SELECT 1 FROM attempts WHERE key = ?", (key,)).fetchone()
        return row is not None

    def highest_fence_term(self) -> int:
        with self._lock:
            self._db()
            return self._fence_term

    def observe_fence_term(self, term: int) -> int:
        _check_term(term)
        with self._lock:
            db = self._db()
            if term > self._fence_term:
                db.execute("UPDATE fence SET term = ? WHERE id = 0 AND term < ?", (term, term))
                self._fence_term = term
            return self._fence_term

    def get_transaction(self, tx_id: str) -> Transaction | None:
        with self._lock:
            row = (
                self._db().execute("SELECT state, updated_at_s FROM transactions WHERE tx_id = ?", (tx_id,)).fetchone()
            )
        return None if row is None else Transaction(tx_id, TransactionState(row[0]), row[1])

    def put_transaction(self, transaction: Transaction) -> None:
        with self._lock:
            db = self._db()
            self._prune_if_due_locked()
            exists = db.execute("SELECT 1 FROM transactions WHERE tx_id = ?", (transaction.tx_id,)).fetchone()
            if exists is None and self._transactions_count >= self._records_max:
                self._prune_locked(PRUNE_BATCH_MAX)
                if self._transactions_count >= self._records_max:
                    raise StoreFullError(f"store holds records_max ({self._records_max}) transactions")
            db.execute(
                "INSERT OR REPLACE INTO transactions (tx_id, state, updated_at_s) VALUES (?, ?, ?)",
                (transaction.tx_id, transaction.state.value, transaction.updated_at_s),
            )
            if exists is None:
                self._transactions_count += 1

    def transactions_in_state(
        self, state: TransactionState, *, updated_before_s: float, limit: int
    ) -> list[Transaction]:
        assert limit > 0
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT tx_id, updated_at_s FROM transactions"
                    " WHERE state = ? AND updated_at_s <= ?"
                    " ORDER BY updated_at_s, tx_id LIMIT ?",
                    (state.value, updated_before_s, limit),
                )
                .fetchall()
            )
        return [Transaction(tx_id, state, at) for tx_id, at in rows]

    def prune(self, *, limit: int = PRUNE_BATCH_MAX) -> int:
        """Delete up to `limit` answers, `limit` attempt markers and `limit`
        finished transactions older than retention_s; return how many."""
        _check_prune_limit(limit)
        with self._lock:
            return self._prune_locked(limit)

    def _prune_if_due_locked(self) -> None:
        if self._clock() - self._last_prune_s >= self._prune_interval_s:
            self._prune_locked(PRUNE_BATCH_MAX)

    def _prune_locked(self, limit: int) -> int:
        db = self._db()
        now = self._clock()
        self._last_prune_s = now
        cutoff = now - self._retention_s
        deleted = {}
        finished = [state.value for state in FINISHED_STATES]
        db.execute("BEGIN IMMEDIATE")  # the counts below must match the file
        try:
            for table in _AGED_TABLES:
                deleted[table] = db.execute(
                    f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table}"
                    " WHERE created_at_s < ? ORDER BY created_at_s LIMIT ?)",
                    (cutoff, limit),
                ).rowcount
            deleted["transactions"] = db.execute(
                "DELETE FROM transactions WHERE tx_id IN (SELECT tx_id FROM transactions"
                f" WHERE state IN ({', '.join('?' * len(finished))}) AND updated_at_s < ?"
                " ORDER BY updated_at_s LIMIT ?)",
                (*finished, cutoff, limit),
            ).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._answers_count -= deleted["answers"]
        self._attempts_count -= deleted["attempts"]
        self._transactions_count -= deleted["transactions"]
        return sum(deleted.values())

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
