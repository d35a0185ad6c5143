"""IdempotencyStore: the memory twin and SQLite behave alike; SQLite survives reopen."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.client.participant import (
    BODY_BYTES_MAX,
    KEY_CHARS_MAX,
    LimitExceededError,
    MemoryStore,
    Record,
    SQLiteStore,
    StoreClosedError,
    StoreFullError,
    Transaction,
    TransactionState,
)


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    stores = []

    def make(**kwargs):
        if request.param == "memory":
            store = MemoryStore(**kwargs)
        else:
            store = SQLiteStore(tmp_path / f"store-{len(stores)}.db", **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def test_put_if_absent_keeps_the_first_answer(make_store) -> None:
    store = make_store()
    first = Record.from_json(201, {"order_id": "o-1"})
    assert store.get("s/a/action") is None
    assert store.put_if_absent("s/a/action", first) == first
    assert store.put_if_absent("s/a/action", Record.from_json(200, {"other": 1})) == first
    assert store.get("s/a/action") == first
    assert store.get("s/a/action").json() == {"order_id": "o-1"}


def test_attempt_markers(make_store) -> None:
    store = make_store()
    assert not store.was_attempted("k")
    assert store.mark_attempted("k") is True
    assert store.mark_attempted("k") is False  # made by an earlier attempt
    assert store.was_attempted("k")
    assert store.get("k") is None
    store.clear_attempted("k")
    store.clear_attempted("k")  # no marker: a no-op
    assert not store.was_attempted("k")
    assert store.mark_attempted("k") is True


def test_a_cleared_attempt_frees_its_room(make_store) -> None:
    store = make_store(records_max=1)
    store.mark_attempted("x")
    with pytest.raises(StoreFullError):
        store.mark_attempted("y")
    store.clear_attempted("x")
    assert store.mark_attempted("y") is True


def test_fence_term_only_grows(make_store) -> None:
    store = make_store()
    assert store.highest_fence_term() == 0
    assert store.observe_fence_term(3) == 3
    assert store.observe_fence_term(2) == 3
    assert store.observe_fence_term(7) == 7
    assert store.highest_fence_term() == 7


def test_transactions_by_state_oldest_first(make_store) -> None:
    store = make_store()
    store.put_transaction(Transaction("t2", TransactionState.PREPARED, 20.0))
    store.put_transaction(Transaction("t1", TransactionState.PREPARED, 10.0))
    store.put_transaction(Transaction("t3", TransactionState.PREPARED, 30.0))
    store.put_transaction(Transaction("t4", TransactionState.COMMITTED, 5.0))
    found = store.transactions_in_state(TransactionState.PREPARED, updated_before_s=25.0, limit=10)
    assert [t.tx_id for t in found] == ["t1", "t2"]
    assert store.transactions_in_state(TransactionState.PREPARED, updated_before_s=100.0, limit=1) == [
        Transaction("t1", TransactionState.PREPARED, 10.0)
    ]
    store.put_transaction(Transaction("t1", TransactionState.COMMITTED, 40.0))
    assert store.get_transaction("t1") == Transaction("t1", TransactionState.COMMITTED, 40.0)
    assert store.get_transaction("nope") is None


def test_bounds_refuse_instead_of_storing(make_store) -> None:
    store = make_store(records_max=2)
    with pytest.raises(LimitExceededError, match="KEY"):
        store.put_if_absent("k" * (KEY_CHARS_MAX + 1), Record(200))
    with pytest.raises(LimitExceededError):
        store.mark_attempted("has space")
    with pytest.raises(LimitExceededError, match="BODY_BYTES_MAX"):
        Record(200, b"x" * (BODY_BYTES_MAX + 1))
    store.put_if_absent("a", Record(200))
    store.put_if_absent("b", Record(200))
    with pytest.raises(StoreFullError):
        store.put_if_absent("c", Record(200))
    store.mark_attempted("x")
    store.mark_attempted("y")
    with pytest.raises(StoreFullError):
        store.mark_attempted("z")
    # A key whose handler was called always gets its answer stored.
    assert store.put_if_absent("x", Record(204)) == Record(204)
    store.put_transaction(Transaction("t1", TransactionState.PREPARING, 1.0))
    store.put_transaction(Transaction("t2", TransactionState.PREPARING, 1.0))
    store.put_transaction(Transaction("t1", TransactionState.PREPARED, 2.0))
    with pytest.raises(StoreFullError):
        store.put_transaction(Transaction("t3", TransactionState.PREPARING, 1.0))


def test_closed_store_refuses_use(make_store) -> None:
    store = make_store()
    store.close()
    with pytest.raises(StoreClosedError):
        store.get("k")


def test_sqlite_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "participant.db"
    store = SQLiteStore(path)
    store.put_if_absent("s/a/action", Record.from_json(201, {"order_id": "o-1"}))
    store.mark_attempted("s/a/action")
    store.observe_fence_term(9)
    store.put_transaction(Transaction("tx-1", TransactionState.PREPARED, 12.5))
    store.close()

    reopened = SQLiteStore(path, records_max=2)
    try:
        assert reopened.get("s/a/action") == Record.from_json(201, {"order_id": "o-1"})
        assert reopened.was_attempted("s/a/action")
        assert reopened.highest_fence_term() == 9
        assert reopened.get_transaction("tx-1") == Transaction("tx-1", TransactionState.PREPARED, 12.5)
        # Counts behind records_max are rebuilt from the file.
        reopened.put_if_absent("second", Record(200))
        with pytest.raises(StoreFullError):
            reopened.put_if_absent("third", Record(200))
        journal_mode = reopened._db().execute("PRAGMA journal_mode").fetchone()[0]
        assert journal_mode == "wal"
    finally:
        reopened.close()


# -- retention: records older than retention_s are pruned --------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_full_store_accepts_new_keys_once_old_ones_expire(make_store) -> None:
    clock = FakeClock()
    store = make_store(records_max=2, retention_s=10.0, clock=clock)
    store.put_if_absent("s/a/action", Record(201))
    store.mark_attempted("s/b/action")
    store.mark_attempted("s/c/action")
    store.put_if_absent("s/d/action", Record(200))
    clock.now += 5.0
    with pytest.raises(StoreFullError):
        store.put_if_absent("s/e/action", Record(200))
    with pytest.raises(StoreFullError):
        store.mark_attempted("s/f/action")
    clock.now += 6.0  # 11 s after the first records: past retention
    assert store.put_if_absent("s/e/action", Record(200)) == Record(200)
    assert store.mark_attempted("s/f/action") is True
    assert store.get("s/a/action") is None and store.get("s/d/action") is None
    assert not store.was_attempted("s/b/action") and not store.was_attempted("s/c/action")
    assert store.get("s/e/action") == Record(200) and store.was_attempted("s/f/action")


def test_prune_removes_only_records_past_retention(make_store) -> None:
    clock = FakeClock()
    store = make_store(retention_s=10.0, clock=clock)
    store.put_if_absent("old", Record(200))
    store.mark_attempted("old")
    clock.now += 8.0
    store.put_if_absent("young", Record(200))
    store.mark_attempted("young")
    clock.now += 2.0  # "old" is exactly 10 s old: kept
    assert store.prune() == 0
    clock.now += 0.5
    assert store.prune() == 2  # its answer and its mark
    assert store.get("old") is None and not store.was_attempted("old")
    assert store.get("young") == Record(200) and store.was_attempted("young")


def test_prune_works_in_bounded_batches(make_store) -> None:
    clock = FakeClock()
    store = make_store(retention_s=1.0, clock=clock)
    for index in range(5):
        store.put_if_absent(f"k{index}", Record(200))
    clock.now += 2.0
    assert store.prune(limit=2) == 2
    assert store.prune(limit=2) == 2
    assert store.prune(limit=2) == 1
    assert store.prune(limit=2) == 0
    with pytest.raises(ValueError):
        store.prune(limit=0)


def test_writes_prune_expired_records_every_prune_interval(make_store) -> None:
    clock = FakeClock()
    store = make_store(retention_s=10.0, prune_interval_s=5.0, clock=clock)
    start = clock.now
    store.put_if_absent("old", Record(200))
    clock.now = start + 3.0
    store.put_if_absent("mid", Record(200))
    clock.now = start + 11.0
    store.put_if_absent("new", Record(200))  # due: "old" (11 s) goes, "mid" (8 s) stays
    assert store.get("old") is None and store.get("mid") == Record(200)
    clock.now = start + 14.0
    store.mark_attempted("x")  # "mid" expired, but the last prune was 3 s ago
    assert store.get("mid") == Record(200)
    clock.now = start + 16.0
    store.mark_attempted("y")
    assert store.get("mid") is None
    assert store.get("new") == Record(200) and store.was_attempted("x")


def test_a_prepared_transaction_is_never_pruned(make_store) -> None:
    clock = FakeClock()
    store = make_store(records_max=5, retention_s=10.0, clock=clock)
    for tx_id, state in (
        ("t-preparing", TransactionState.PREPARING),
        ("t-prepared", TransactionState.PREPARED),
        ("t-committed", TransactionState.COMMITTED),
        ("t-aborted", TransactionState.ABORTED),
        ("t-refused", TransactionState.REFUSED),
    ):
        store.put_transaction(Transaction(tx_id, state, clock.now))
    with pytest.raises(StoreFullError):
        store.put_transaction(Transaction("t-new", TransactionState.PREPARING, clock.now))
    clock.now += 1000.0
    store.put_transaction(Transaction("t-new", TransactionState.PREPARING, clock.now))
    assert store.get_transaction("t-preparing").state is TransactionState.PREPARING
    assert store.get_transaction("t-prepared").state is TransactionState.PREPARED
    for tx_id in ("t-committed", "t-aborted", "t-refused"):
        assert store.get_transaction(tx_id) is None
    assert store.get_transaction("t-new") is not None


def test_retention_bounds_are_checked(make_store) -> None:
    for options in ({"retention_s": 0}, {"retention_s": -1.0}, {"prune_interval_s": 0}):
        with pytest.raises(ValueError):
            make_store(**options)


def test_sqlite_keeps_record_times_across_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "participant.db"
    store = SQLiteStore(path, retention_s=10.0, clock=clock)
    store.put_if_absent("old", Record(200))
    store.close()
    clock.now += 11.0
    reopened = SQLiteStore(path, records_max=1, retention_s=10.0, clock=clock)
    try:
        assert reopened.put_if_absent("new", Record(200)) == Record(200)
        assert reopened.get("old") is None
    finally:
        reopened.close()


def test_sqlite_file_from_before_retention_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE answers (key TEXT PRIMARY KEY, status INTEGER NOT NULL,"
        " content_type TEXT NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE attempts (key TEXT PRIMARY KEY) WITHOUT ROWID;"
        "INSERT INTO answers VALUES ('s/a/action', 201, 'application/json', X'7B7D');"
        "INSERT INTO attempts VALUES ('s/a/action');"
    )
    connection.commit()
    connection.close()
    clock = FakeClock()
    store = SQLiteStore(path, retention_s=10.0, clock=clock)
    try:
        # Old rows count as written at the migration, not at time 0.
        assert store.prune() == 0
        assert store.get("s/a/action") == Record(201, b"{}")
        assert store.was_attempted("s/a/action")
        clock.now += 11.0
        assert store.prune() == 2
        assert store.get("s/a/action") is None
    finally:
        store.close()
