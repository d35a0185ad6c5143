"""The gRPC participant servicer over loopback: replay, fences, null
compensation, hanging actions, 2PC votes and restarts on SQLite."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant import (
    NULL_COMPENSATION_BODY,
    IdempotencyStore,
    MemoryStore,
    SQLiteStore,
    TransactionState,
)
from coordinator.client.participant.grpc_servicer import BusinessFailure, ParticipantServicer, serve_participant

WAIT_S = 5.0


class Orders(ParticipantServicer):
    """Saga steps: creates orders, refuses big ones, cancels them."""

    def __init__(self, store: IdempotencyStore) -> None:
        super().__init__(store)
        self.calls: Counter[str] = Counter()
        self.orders: dict[str, dict] = {}
        self.crash_next = False
        self.gate: asyncio.Event | None = None

    async def execute(self, path: str, body: Any) -> Any:
        self.calls["execute"] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.crash_next:
            self.crash_next = False
            raise RuntimeError("disk on fire")
        if path == "/unstorable":
            return {"not": {"json"}}
        if body["qty"] > 10:
            raise BusinessFailure(f"{body['qty']} is over the limit", code="over_limit")
        order_id = f"o-{len(self.orders) + 1}"
        self.orders[order_id] = body
        return {"order_id": order_id, "path": path}

    def compensate(self, path: str, body: Any) -> Any:  # a plain function works too
        self.calls["compensate"] += 1
        return {"cancelled": self.orders.pop(body["order"], None) is not None}


class Ledger(ParticipantServicer):
    """2PC: holds an amount on prepare; votes no over budget."""

    def __init__(self, store: IdempotencyStore, budget: int = 100) -> None:
        super().__init__(store)
        self.budget = budget
        self.held: dict[str, int] = {}
        self.booked: dict[str, int] = {}
        self.calls: Counter[str] = Counter()

    async def prepare(self, tx_id: str, body: Any) -> bool:
        self.calls["prepare"] += 1
        if body["amount"] > self.budget - sum(self.held.values()):
            return False
        self.held[tx_id] = body["amount"]
        return True

    async def commit(self, tx_id: str) -> None:
        self.calls["commit"] += 1
        self.booked[tx_id] = self.held.pop(tx_id, 0)

    async def abort(self, tx_id: str) -> None:
        self.calls["abort"] += 1
        self.held.pop(tx_id, None)


@dataclass
class Answer:
    code: grpc.StatusCode
    output: Any = None
    details: str = ""
    replayed: bool = False


class Client:
    def __init__(self, stub: coordinator_pb2_grpc.ParticipantStub) -> None:
        self.stub = stub

    async def call(
        self,
        rpc: str,
        key: str,
        body: Any = None,
        *,
        fence: str = "1:1",
        path: str = "/orders",
        metadata: tuple[tuple[str, str], ...] | None = None,
        body_json: str | None = None,
    ) -> Answer:
        request = coordinator_pb2.ParticipantCall(
            idempotency_key=key,
            fence=fence,
            path=path,
            body_json=body_json if body_json is not None else ("" if body is None else json.dumps(body)),
        )
        call = getattr(self.stub, rpc)(request, timeout=WAIT_S, metadata=metadata)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            replayed = ("idempotent-replayed", "true") in tuple(error.trailing_metadata() or ())
            return Answer(error.code(), None, error.details() or "", replayed)
        replayed = ("idempotent-replayed", "true") in tuple(await call.trailing_metadata() or ())
        if rpc == "Prepare":
            return Answer(grpc.StatusCode.OK, response.yes, "", replayed)
        return Answer(
            grpc.StatusCode.OK, json.loads(response.output_json) if response.output_json else None, "", replayed
        )


Serve = Callable[[ParticipantServicer], Awaitable[Client]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel]] = []

    async def start(servicer: ParticipantServicer) -> Client:
        server, port = await serve_participant(servicer)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return Client(coordinator_pb2_grpc.ParticipantStub(channel))

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(None)


# -- saga steps: one answer per key ----------------------------------------------------------------
async def test_an_action_runs_once_per_key_and_is_replayed(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    first = await client.call("Execute", "s1/create/action", {"qty": 2})
    again = await client.call("Execute", "s1/create/action", {"qty": 2})
    assert first == Answer(grpc.StatusCode.OK, {"order_id": "o-1", "path": "/orders"})
    assert again == Answer(grpc.StatusCode.OK, {"order_id": "o-1", "path": "/orders"}, replayed=True)
    assert orders.calls["execute"] == 1


async def test_concurrent_calls_with_one_key_run_the_method_once(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    orders.gate = asyncio.Event()
    client = await serve(orders)
    calls = [asyncio.ensure_future(client.call("Execute", "s1/create/action", {"qty": 1})) for _ in range(3)]
    while orders.calls["execute"] == 0:
        await asyncio.sleep(0.01)
    orders.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), WAIT_S)
    assert {json.dumps(a.output) for a in answers} == {json.dumps({"order_id": "o-1", "path": "/orders"})}
    assert sorted(a.replayed for a in answers) == [False, True, True]
    assert orders.calls["execute"] == 1


async def test_the_key_and_fence_may_come_as_metadata(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    metadata = (("idempotency-key", "s1/create/action"), ("coordinator-fence", "4:2"))
    answer = await client.call("Execute", "", {"qty": 1}, fence="", metadata=metadata)
    assert answer.code is grpc.StatusCode.OK
    assert orders.store.highest_fence_term() == 4
    replay = await client.call("Execute", "s1/create/action", {"qty": 1}, fence="4:3")
    assert replay.replayed and replay.output == answer.output


@pytest.mark.parametrize(
    ("key", "fence", "metadata", "body_json", "fragment"),
    [
        ("", "1:1", None, "{}", "idempotency key is required"),
        ("has space/create/action", "1:1", None, "{}", "visible ASCII"),
        ("s1/create/action", "one:1", None, "{}", "TERM:INDEX"),
        ("s1/create/action", "1:1", None, "{not json", "not valid JSON"),
        ("s1/create/action", "1:1", (("idempotency-key", "s2/create/action"),), "{}", "differ"),
        ("s1/create/compensation", "1:1", None, "{}", "ending in /action"),
    ],
)
async def test_malformed_calls_are_invalid_and_leave_nothing_behind(
    serve: Serve, key: str, fence: str, metadata: Any, body_json: str, fragment: str
) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    answer = await client.call("Execute", key, fence=fence, metadata=metadata, body_json=body_json)
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT and fragment in answer.details
    assert orders.calls["execute"] == 0
    assert orders.store.get("s1/create/action") is None and not orders.store.was_attempted("s1/create/action")


async def test_a_stale_fence_is_refused_and_not_stored(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    assert (await client.call("Execute", "s1/a/action", {"qty": 1}, fence="5:10")).code is grpc.StatusCode.OK
    stale = await client.call("Execute", "s1/b/action", {"qty": 1}, fence="4:99")
    assert stale.code is grpc.StatusCode.FAILED_PRECONDITION and stale.details.startswith("stale_fence:")
    assert orders.calls["execute"] == 1
    # The current leader retrying the same key gets through: the refusal was not stored.
    current = await client.call("Execute", "s1/b/action", {"qty": 1}, fence="5:11")
    assert current.code is grpc.StatusCode.OK and orders.calls["execute"] == 2


async def test_a_business_failure_is_definite_stored_and_replayed(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    first = await client.call("Execute", "s1/create/action", {"qty": 50})
    again = await client.call("Execute", "s1/create/action", {"qty": 50})
    assert first.code is grpc.StatusCode.FAILED_PRECONDITION
    assert first.details == "over_limit: 50 is over the limit"
    assert (again.code, again.details, again.replayed) == (first.code, first.details, True)
    assert orders.calls["execute"] == 1


async def test_a_crash_is_unknown_and_not_stored_so_a_retry_runs_again(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    orders.crash_next = True
    client = await serve(orders)
    crashed = await client.call("Execute", "s1/create/action", {"qty": 1})
    assert crashed.code is grpc.StatusCode.UNKNOWN
    retried = await client.call("Execute", "s1/create/action", {"qty": 1})
    assert retried.code is grpc.StatusCode.OK and not retried.replayed
    assert orders.calls["execute"] == 2


async def test_an_output_that_cannot_be_stored_is_a_stored_internal_error(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    first = await client.call("Execute", "s1/create/action", {"qty": 1}, path="/unstorable")
    again = await client.call("Execute", "s1/create/action", {"qty": 1}, path="/unstorable")
    assert first.code is grpc.StatusCode.INTERNAL and first.details.startswith("not_replayable:")
    assert again.code is grpc.StatusCode.INTERNAL and again.replayed
    assert orders.calls["execute"] == 1


# -- null compensation and hanging actions ---------------------------------------------------------
async def test_a_compensation_whose_action_never_arrived_is_a_null_compensation(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    null = await client.call("Compensate", "s1/create/compensation", {"order": "o-1"})
    assert null == Answer(grpc.StatusCode.OK, NULL_COMPENSATION_BODY)
    assert orders.calls["compensate"] == 0
    # The action arriving late (hanging) is refused for good, without running.
    hanging = await client.call("Execute", "s1/create/action", {"qty": 1})
    assert hanging.code is grpc.StatusCode.FAILED_PRECONDITION and hanging.details.startswith("compensated:")
    replay = await client.call("Execute", "s1/create/action", {"qty": 1})
    assert (replay.code, replay.replayed) == (grpc.StatusCode.FAILED_PRECONDITION, True)
    assert orders.calls["execute"] == 0 and orders.orders == {}


async def test_a_compensation_after_an_action_that_ran_calls_the_method(serve: Serve) -> None:
    orders = Orders(MemoryStore())
    client = await serve(orders)
    done = await client.call("Execute", "s1/create/action", {"qty": 1})
    undone = await client.call("Compensate", "s1/create/compensation", {"order": done.output["order_id"]})
    assert undone == Answer(grpc.StatusCode.OK, {"cancelled": True})
    # An action whose method raised left no trace: its compensation is a
    # null compensation and the method is not called.
    orders.crash_next = True
    assert (await client.call("Execute", "s2/create/action", {"qty": 1})).code is grpc.StatusCode.UNKNOWN
    after_raise = await client.call("Compensate", "s2/create/compensation", {"order": "o-2"})
    assert after_raise == Answer(grpc.StatusCode.OK, NULL_COMPENSATION_BODY)
    assert orders.calls["compensate"] == 1


async def test_rpcs_a_servicer_does_not_implement_are_unimplemented(serve: Serve) -> None:
    orders = await serve(Orders(MemoryStore()))
    ledger = await serve(Ledger(MemoryStore()))
    assert (await orders.call("Prepare", "t1/orders/prepare", {"amount": 1})).code is grpc.StatusCode.UNIMPLEMENTED
    assert (await ledger.call("Execute", "s1/a/action", {})).code is grpc.StatusCode.UNIMPLEMENTED


def test_a_business_failure_must_carry_a_definite_status() -> None:
    with pytest.raises(ValueError, match="UNAVAILABLE"):
        BusinessFailure("nope", status=grpc.StatusCode.UNAVAILABLE)


# -- two-phase commit ------------------------------------------------------------------------------
async def test_prepare_and_commit_are_idempotent(serve: Serve) -> None:
    ledger = Ledger(MemoryStore())
    client = await serve(ledger)
    assert (await client.call("Prepare", "t1/ledger/prepare", {"amount": 30})).output is True
    assert (await client.call("Prepare", "t1/ledger/prepare", {"amount": 30})).output is True
    committed = await client.call("Commit", "t1/ledger/commit")
    assert committed == Answer(grpc.StatusCode.OK, {"state": "committed"})
    assert await client.call("Commit", "t1/ledger/commit") == committed
    late_abort = await client.call("Abort", "t1/ledger/abort")
    assert late_abort.code is grpc.StatusCode.FAILED_PRECONDITION and late_abort.details.startswith("committed:")
    assert dict(ledger.calls) == {"prepare": 1, "commit": 1}
    assert ledger.booked == {"t1": 30}


async def test_a_no_vote_holds_nothing_and_cannot_commit(serve: Serve) -> None:
    ledger = Ledger(MemoryStore(), budget=10)
    client = await serve(ledger)
    assert (await client.call("Prepare", "t1/ledger/prepare", {"amount": 30})).output is False
    refused = await client.call("Commit", "t1/ledger/commit")
    assert refused.code is grpc.StatusCode.FAILED_PRECONDITION and refused.details.startswith("not_prepared:")
    assert await client.call("Abort", "t1/ledger/abort") == Answer(grpc.StatusCode.OK, {"state": "aborted"})
    assert dict(ledger.calls) == {"prepare": 1}  # nothing was held, so abort() had nothing to undo


async def test_an_abort_before_prepare_is_a_presumed_abort(serve: Serve) -> None:
    ledger = Ledger(MemoryStore())
    client = await serve(ledger)
    assert (await client.call("Abort", "t1/ledger/abort")).output == {"state": "aborted"}
    assert (await client.call("Prepare", "t1/ledger/prepare", {"amount": 1})).output is False
    aborted = await client.call("Commit", "t1/ledger/commit")
    assert aborted.code is grpc.StatusCode.FAILED_PRECONDITION and aborted.details.startswith("aborted:")
    assert ledger.calls["prepare"] == 0


async def test_prepared_then_aborted_releases_the_hold(serve: Serve) -> None:
    ledger = Ledger(MemoryStore())
    client = await serve(ledger)
    assert (await client.call("Prepare", "t1/ledger/prepare", {"amount": 60})).output is True
    assert (await client.call("Abort", "t1/ledger/abort")).output == {"state": "aborted"}
    assert (await client.call("Abort", "t1/ledger/abort")).output == {"state": "aborted"}
    assert ledger.held == {} and ledger.calls["abort"] == 1


@pytest.mark.parametrize(
    ("rpc", "key"), [("Prepare", "t1/ledger/commit"), ("Commit", "t1/commit"), ("Abort", "bad id!/ledger/abort")]
)
async def test_a_2pc_key_must_name_the_rpcs_phase(serve: Serve, rpc: str, key: str) -> None:
    ledger = Ledger(MemoryStore())
    client = await serve(ledger)
    answer = await client.call(rpc, key, {"amount": 1})
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT
    assert ledger.calls == Counter()


async def test_a_stale_fence_is_refused_on_2pc_calls(serve: Serve) -> None:
    ledger = Ledger(MemoryStore())
    client = await serve(ledger)
    assert (await client.call("Prepare", "t1/ledger/prepare", {"amount": 1}, fence="7:1")).output is True
    stale = await client.call("Commit", "t1/ledger/commit", fence="6:40")
    assert stale.code is grpc.StatusCode.FAILED_PRECONDITION and stale.details.startswith("stale_fence:")
    assert ledger.twopc.state("t1") is TransactionState.PREPARED and ledger.calls["commit"] == 0


# -- restarts on SQLite -----------------------------------------------------------------------------
async def test_answers_fences_and_prepared_transactions_survive_a_restart(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "participant.db"

    class Both(Orders, Ledger):
        """Saga steps and 2PC on one servicer and one store."""

    before = Both(SQLiteStore(path))
    client = await serve(before)
    created = await client.call("Execute", "s1/create/action", {"qty": 1}, fence="3:1")
    assert (
        await client.call("Compensate", "s2/create/compensation", {"order": "x"}, fence="3:2")
    ).output == NULL_COMPENSATION_BODY
    assert (await client.call("Prepare", "t1/both/prepare", {"amount": 5}, fence="3:3")).output is True
    before.store.close()

    after = Both(SQLiteStore(path))  # a new process on the same file
    client = await serve(after)
    replay = await client.call("Execute", "s1/create/action", {"qty": 1}, fence="3:4")
    assert (replay.output, replay.replayed) == (created.output, True)
    hanging = await client.call("Execute", "s2/create/action", {"qty": 1}, fence="3:5")
    assert hanging.code is grpc.StatusCode.FAILED_PRECONDITION
    stale = await client.call("Execute", "s3/create/action", {"qty": 1}, fence="2:9")
    assert stale.details.startswith("stale_fence:")
    assert (await client.call("Prepare", "t1/both/prepare", {"amount": 5}, fence="3:6")).output is True
    assert (await client.call("Commit", "t1/both/commit", fence="3:7")).output == {"state": "committed"}
    assert after.calls["execute"] == 0 and after.calls["prepare"] == 0 and after.calls["commit"] == 1
    after.store.close()
