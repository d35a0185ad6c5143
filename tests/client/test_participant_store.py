"""IdempotencyStore: the memory twin and SQLite behave alike; SQLite survives reopen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.participant import (
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
    found = store.transactions_in_state(
        TransactionState.PREPARED, updated_before_s=25.0, limit=10
    )
    assert [t.tx_id for t in found] == ["t1", "t2"]
    assert store.transactions_in_state(
        TransactionState.PREPARED, updated_before_s=100.0, limit=1
    ) == [Transaction("t1", TransactionState.PREPARED, 10.0)]
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
        assert reopened.get_transaction("tx-1") == Transaction(
            "tx-1", TransactionState.PREPARED, 12.5
        )
        # Counts behind records_max are rebuilt from the file.
        reopened.put_if_absent("second", Record(200))
        with pytest.raises(StoreFullError):
            reopened.put_if_absent("third", Record(200))
        journal_mode = reopened._db().execute("PRAGMA journal_mode").fetchone()[0]
        assert journal_mode == "wal"
    finally:
        reopened.close()
