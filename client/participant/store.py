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

Store calls are short and synchronous; they run on the event loop. Both
implementations guard their state with a `threading.Lock`, so one store may
also be shared with threads.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from client.participant.errors import LimitExceededError, StoreClosedError, StoreFullError
from client.participant.limits import (
    BODY_BYTES_MAX,
    CONTENT_TYPE_CHARS_MAX,
    FENCE_TERM_MAX,
    KEY_CHARS_MAX,
    KEY_PATTERN,
    MEMORY_STORE_BYTES_MAX_DEFAULT,
    RECORDS_MAX_DEFAULT,
)

__all__ = [
    "IdempotencyStore",
    "MemoryStore",
    "Record",
    "SQLiteStore",
    "Transaction",
    "TransactionState",
    "check_key",
]


def check_key(key: str) -> str:
    """Return `key` if it is 1..KEY_CHARS_MAX visible ASCII characters."""
    if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
        raise LimitExceededError(
            f"key must be 1..{KEY_CHARS_MAX} visible ASCII characters without spaces"
            " (KEY_CHARS_MAX)"
        )
    return key


@dataclass(frozen=True)
class Record:
    """One answer as it is replayed: HTTP status, body bytes, content type."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        assert isinstance(self.status, int) and 100 <= self.status <= 599, self.status
        assert isinstance(self.body, bytes), type(self.body)
        if len(self.body) > BODY_BYTES_MAX:
            raise LimitExceededError(
                f"body of {len(self.body)} bytes is over BODY_BYTES_MAX ({BODY_BYTES_MAX})"
            )
        if len(self.content_type) > CONTENT_TYPE_CHARS_MAX:
            raise LimitExceededError(
                f"content type is over CONTENT_TYPE_CHARS_MAX ({CONTENT_TYPE_CHARS_MAX})"
            )

    @classmethod
    def from_json(cls, status: int, value: Any) -> Record:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, body, "application/json")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class TransactionState(str, enum.Enum):
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

    def close(self) -> None: ...


def _check_term(term: int) -> None:
    assert isinstance(term, int) and 0 <= term <= FENCE_TERM_MAX, term


class MemoryStore:
    """The in-memory `IdempotencyStore`: forgets everything with the process."""

    def __init__(
        self,
        *,
        records_max: int = RECORDS_MAX_DEFAULT,
        bytes_max: int = MEMORY_STORE_BYTES_MAX_DEFAULT,
    ) -> None:
        assert records_max > 0 and bytes_max > 0
        self._records_max = records_max
        self._bytes_max = bytes_max
        self._answers: dict[str, Record] = {}
        self._attempts: set[str] = set()
        self._transactions: dict[str, Transaction] = {}
        self._fence_term = 0
        self._bytes = 0
        self._closed = False
        self._lock = threading.Lock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("MemoryStore is closed")

    def get(self, key: str) -> Record | None:
        with self._lock:
            self._check_open()
            return self._answers.get(key)

    def put_if_absent(self, key: str, record: Record) -> Record:
        check_key(key)
        with self._lock:
            self._check_open()
            stored = self._answers.get(key)
            if stored is not None:
                return stored
            if key not in self._attempts and len(self._answers) >= self._records_max:
                raise StoreFullError(f"store holds records_max ({self._records_max}) answers")
            self._answers[key] = record
            self._bytes += len(record.body)
            return record

    def mark_attempted(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            if key in self._attempts:
                return False
            if len(self._attempts) >= self._records_max:
                raise StoreFullError(f"store holds records_max ({self._records_max}) attempts")
            if self._bytes >= self._bytes_max:
                raise StoreFullError(f"store holds bytes_max ({self._bytes_max}) bytes")
            self._attempts.add(key)
            return True

    def clear_attempted(self, key: str) -> None:
        with self._lock:
            self._check_open()
            self._attempts.discard(key)

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
            is_new = transaction.tx_id not in self._transactions
            if is_new and len(self._transactions) >= self._records_max:
                raise StoreFullError(
                    f"store holds records_max ({self._records_max}) transactions"
                )
            self._transactions[transaction.tx_id] = transaction

    def transactions_in_state(
        self, state: TransactionState, *, updated_before_s: float, limit: int
    ) -> list[Transaction]:
        assert limit > 0
        with self._lock:
            self._check_open()
            found = [
                t
                for t in self._transactions.values()
                if t.state is state and t.updated_at_s <= updated_before_s
            ]
        found.sort(key=lambda t: (t.updated_at_s, t.tx_id))
        return found[:limit]

    def close(self) -> None:
        with self._lock:
            self._closed = True


_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY) WITHOUT ROWID;
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


class SQLiteStore:
    """The durable `IdempotencyStore`: one SQLite file in WAL mode.

    One connection, used under a `threading.Lock`; every write is its own
    transaction and is on disk (synchronous=FULL) before the call returns,
    so an answer is durable before the service sends it. One process per
    file: the counts behind `records_max` are kept in memory.
    """

    def __init__(self, path: str | Path, *, records_max: int = RECORDS_MAX_DEFAULT) -> None:
        assert records_max > 0
        self._records_max = records_max
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False
        )
        connection = self._connection
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=5000")
        connection.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
        self._answers_count = self._count("answers")
        self._attempts_count = self._count("attempts")
        self._transactions_count = self._count("transactions")
        (self._fence_term,) = connection.execute("SELECT term FROM fence WHERE id = 0").fetchone()

    def _count(self, table: str) -> int:
        assert table in ("answers", "attempts", "transactions")
        return self._db().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreClosedError("SQLiteStore is closed")
        return self._connection

    def get(self, key: str) -> Record | None:
        with self._lock:
            row = (
                self._db()
                .execute("SELECT status, body, content_type FROM answers WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else Record(row[0], bytes(row[1]), row[2])

    def put_if_absent(self, key: str, record: Record) -> Record:
        check_key(key)
        with self._lock:
            db = self._db()
            row = db.execute(
                "SELECT status, body, content_type FROM answers WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return Record(row[0], bytes(row[1]), row[2])
            attempted = db.execute("SELECT 1 FROM attempts WHERE key = ?", (key,)).fetchone()
            if attempted is None and self._answers_count >= self._records_max:
                raise StoreFullError(f"store holds records_max ({self._records_max}) answers")
            db.execute(
                "INSERT INTO answers (key, status, content_type, body) VALUES (?, ?, ?, ?)",
                (key, record.status, record.content_type, record.body),
            )
            self._answers_count += 1
            return record

    def mark_attempted(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            db = self._db()
            if db.execute("SELECT 1 FROM attempts WHERE key = ?", (key,)).fetchone():
                return False
            if self._attempts_count >= self._records_max:
                raise StoreFullError(f"store holds records_max ({self._records_max}) attempts")
            db.execute("INSERT INTO attempts (key) VALUES (?)", (key,))
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
                self._db()
                .execute(
                    "SELECT state, updated_at_s FROM transactions WHERE tx_id = ?", (tx_id,)
                )
                .fetchone()
            )
        return None if row is None else Transaction(tx_id, TransactionState(row[0]), row[1])

    def put_transaction(self, transaction: Transaction) -> None:
        with self._lock:
            db = self._db()
            exists = db.execute(
                "SELECT 1 FROM transactions WHERE tx_id = ?", (transaction.tx_id,)
            ).fetchone()
            if exists is None and self._transactions_count >= self._records_max:
                raise StoreFullError(
                    f"store holds records_max ({self._records_max}) transactions"
                )
            db.execute(
                "INSERT OR REPLACE INTO transactions (tx_id, state, updated_at_s)"
                " VALUES (?, ?, ?)",
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

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
