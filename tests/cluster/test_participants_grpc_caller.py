"""The gRPC caller against real grpc.aio servers on loopback: classification,
retries with one key, deadlines, the breaker and the channel cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.client.participant import MemoryStore
from coordinator.client.participant.grpc_servicer import BusinessFailure, ParticipantServicer, serve_participant
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.grpc_caller import GrpcCaller
from coordinator.cluster.executor.http_caller import CallSpec, HttpCaller, ParticipantCaller

Answer = Any  # ("ok", output_json) | ("vote", bool) | (grpc.StatusCode, details) | "sleep"


class Target(coordinator_pb2_grpc.ParticipantServicer):
    """Answers every RPC from a script; the last answer repeats."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple] = []

    async def _answer(self, rpc: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append(
            (
                rpc,
                request.idempotency_key,
                request.fence,
                metadata.get("idempotency-key"),
                metadata.get("coordinator-fence"),
                request.path,
                request.body_json,
            )
        )
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "sleep":
            await asyncio.sleep(1)
            return coordinator_pb2.CallResult(output_json='{"late": true}')
        kind, value = answer
        if kind == "ok":
            return coordinator_pb2.CallResult(output_json=value)
        if kind == "vote":
            return coordinator_pb2.Vote(yes=value)
        await context.abort(kind, value)

    async def Execute(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer("Execute", request, context)

    async def Compensate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer("Compensate", request, context)

    async def Prepare(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer("Prepare", request, context)

    async def Commit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer("Commit", request, context)

    async def Abort(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer("Abort", request, context)


Serve = Callable[[Any], Awaitable[tuple[Any, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[grpc.aio.Server] = []

    async def start(servicer_or_answers: Any) -> tuple[Any, str]:
        servicer = servicer_or_answers
        if isinstance(servicer_or_answers, list):
            servicer = Target(servicer_or_answers)
        server = grpc.aio.server()
        coordinator_pb2_grpc.add_ParticipantServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(None)


@pytest.fixture
async def caller() -> AsyncIterator[Callable[..., GrpcCaller]]:
    made: list[GrpcCaller] = []

    def make(breakers: Breakers | None = None, **options: Any) -> GrpcCaller:
        made.append(GrpcCaller(breakers or Breakers(5, 0.05), **options))
        return made[-1]

    yield make
    for each in made:
        await each.close()


def spec(
    target: str, attempts: int = 4, timeout_s: float = 0.5, key: str = "s1/step/action", fence: str = "3:17"
) -> CallSpec:
    return CallSpec("svc", target, "POST", "/do", {"a": 1}, key, fence, timeout_s, attempts, 0.01, 0.02)


# -- classification ---------------------------------------------------------------------------------
async def test_ok_is_the_parsed_output_with_the_contracts_fields_and_metadata(serve: Serve, caller: Any) -> None:
    target, address = await serve([("ok", '{"order_id": "o-1"}')])
    outcome = await caller().call(spec(address), "execute")
    assert (outcome.kind, outcome.output, outcome.attempts) == ("ok", {"order_id": "o-1"}, 1)
    assert target.seen == [("Execute", "s1/step/action", "3:17", "s1/step/action", "3:17", "/do", '{"a": 1}')]


@pytest.mark.parametrize(
    ("operation", "rpc"),
    [("execute", "Execute"), ("compensate", "Compensate"), ("commit", "Commit"), ("abort", "Abort")],
)
async def test_each_operation_calls_its_rpc(serve: Serve, caller: Any, operation: str, rpc: str) -> None:
    target, address = await serve([("ok", "")])
    outcome = await caller().call(spec(address), operation)
    assert (outcome.kind, outcome.output) == ("ok", None)
    assert [seen[0] for seen in target.seen] == [rpc]


@pytest.mark.parametrize("yes", [True, False])
async def test_prepare_answers_a_vote(serve: Serve, caller: Any, yes: bool) -> None:
    target, address = await serve([("vote", yes)])
    outcome = await caller().call(spec(address, key="t1/svc/prepare"), "prepare")
    assert (outcome.kind, outcome.output) == ("ok", {"vote": "yes" if yes else "no"})
    assert target.seen[0][0] == "Prepare"


async def test_an_output_that_is_not_json_or_too_big_is_replaced_as_over_http(serve: Serve, caller: Any) -> None:
    _, address = await serve([("ok", "plain words"), ("ok", json.dumps({"blob": "x" * 70_000}))])
    grpc_caller = caller()
    assert (await grpc_caller.call(spec(address), "execute")).output == {"text": "plain words"}
    assert (await grpc_caller.call(spec(address), "execute")).output == {"_truncated": True}


@pytest.mark.parametrize(
    "status",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNIMPLEMENTED,
    ],
)
async def test_a_definite_status_is_a_failure_not_retried(serve: Serve, caller: Any, status: grpc.StatusCode) -> None:
    target, address = await serve([(status, "no: out of stock"), ("ok", "{}")])
    breakers = Breakers(1, 0.05)
    outcome = await caller(breakers).call(spec(address), "execute")
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    assert outcome.error == f"gRPC {status.name}: no: out of stock"
    assert len(target.seen) == 1 and not breakers.is_open("svc")  # a business no is a healthy answer


@pytest.mark.parametrize(
    "status",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DATA_LOSS,
    ],
)
async def test_a_transient_status_is_retried_with_the_same_key(
    serve: Serve, caller: Any, status: grpc.StatusCode
) -> None:
    target, address = await serve([(status, "busy"), (status, "busy"), ("ok", '{"ok": 1}')])
    outcome = await caller().call(spec(address), "execute")
    assert (outcome.kind, outcome.output, outcome.attempts) == ("ok", {"ok": 1}, 3)
    assert {(seen[1], seen[3]) for seen in target.seen} == {("s1/step/action", "s1/step/action")}


async def test_out_of_retries_is_unknown(serve: Serve, caller: Any) -> None:
    target, address = await serve([(grpc.StatusCode.UNAVAILABLE, "down")])
    outcome = await caller().call(spec(address, attempts=3), "execute")
    assert (outcome.kind, outcome.attempts) == ("unknown", 3)
    assert "gRPC UNAVAILABLE: down" in outcome.error and len(target.seen) == 3


async def test_deadlines_and_refused_connections_are_unknown_after_the_budget(serve: Serve, caller: Any) -> None:
    target, address = await serve(["sleep"])
    grpc_caller = caller()
    started = asyncio.get_running_loop().time()
    outcome = await grpc_caller.call(spec(address, attempts=2, timeout_s=0.1), "execute")
    assert (outcome.kind, outcome.attempts) == ("unknown", 2) and "DEADLINE_EXCEEDED" in outcome.error
    assert asyncio.get_running_loop().time() - started < 0.9  # each attempt stopped at its deadline
    assert len(target.seen) == 2
    refused = await grpc_caller.call(spec("127.0.0.1:1", attempts=2), "execute")
    assert (refused.kind, refused.attempts) == ("unknown", 2) and "UNAVAILABLE" in refused.error


async def test_an_open_breaker_keeps_retrying_slowly_without_spending_the_budget(serve: Serve, caller: Any) -> None:
    breakers = Breakers(failures_to_open=2, slow_interval_s=0.05)
    answers = [(grpc.StatusCode.UNAVAILABLE, "down")] * 6 + [("ok", '{"done": true}')]
    _, address = await serve(answers)
    outcome = await caller(breakers).call(spec(address, attempts=3), "execute")
    # Three budgeted attempts would have ended in 'unknown'; with the breaker
    # open after two failures the later attempts are free, and it succeeds.
    assert (outcome.kind, outcome.attempts) == ("ok", 7)
    assert not breakers.is_open("svc")
    assert breakers.view()["svc"]["opened_total"] == 1


# -- channels ----------------------------------------------------------------------------------------
async def test_one_channel_per_target_cached_bounded_and_closed(serve: Serve, caller: Any) -> None:
    _, first = await serve([("ok", "{}")])
    _, second = await serve([("ok", "{}")])
    grpc_caller = caller(channels_max=1)
    for address in (first, first, second, first):
        assert (await grpc_caller.call(spec(address), "execute")).kind == "ok"
        assert grpc_caller.targets() == [address]
    await grpc_caller.close()
    assert grpc_caller.targets() == []
    both = caller()
    for address in (first, second, first):
        await both.call(spec(address), "execute")
    assert both.targets() == [second, first]


async def test_an_unknown_operation_is_a_bug(caller: Any) -> None:
    with pytest.raises(ValueError, match="operation"):
        await caller().call(spec("127.0.0.1:1"), "delete")


# -- against the participant kit's servicer ----------------------------------------------------------
class Orders(ParticipantServicer):
    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.executed = 0

    async def execute(self, path: str, body: Any) -> Any:
        self.executed += 1
        if body.get("qty", 0) > 10:
            raise BusinessFailure("too many", code="over_limit")
        return {"order_id": f"o-{self.executed}"}

    async def compensate(self, path: str, body: Any) -> Any:
        return {"cancelled": True}


async def test_the_kit_servicer_replays_retries_and_fences(caller: Any) -> None:
    orders = Orders()
    server, port = await serve_participant(orders)
    try:
        grpc_caller = caller()
        address = f"127.0.0.1:{port}"
        first = await grpc_caller.call(spec(address, fence="2:1"), "execute")
        again = await grpc_caller.call(spec(address, fence="2:5"), "execute")
        assert first.output == again.output == {"order_id": "o-1"} and orders.executed == 1
        big = CallSpec("svc", address, "", "/orders", {"qty": 50}, "s2/step/action", "2:6", 0.5, 3, 0.01, 0.02)
        refused = await grpc_caller.call(big, "execute")
        assert (refused.kind, refused.attempts) == ("failed", 1) and "over_limit: too many" in refused.error
        stale = await grpc_caller.call(spec(address, key="s3/step/action", fence="1:99"), "execute")
        # A deposed leader's call: retried like an unknown outcome, never a business failure.
        assert stale.kind == "unknown" and stale.attempts > 1 and "stale_fence" in stale.error
        null = await grpc_caller.call(spec(address, key="s4/step/compensation"), "compensate")
        assert null.output == {"compensated": False, "reason": "action never seen"}
        assert (await grpc_caller.call(spec(address), "prepare")).error.startswith("gRPC UNIMPLEMENTED")
    finally:
        await server.stop(None)


async def test_both_transports_take_the_operation(caller: Any) -> None:
    async with aiohttp.ClientSession() as session:
        transports: list[ParticipantCaller] = [HttpCaller(session, Breakers(5, 0.05)), caller()]
        targets = ["http://127.0.0.1:1", "127.0.0.1:1"]
        outcomes = [
            await t.call(spec(url, attempts=1), "compensate") for t, url in zip(transports, targets, strict=True)
        ]
    assert [(o.kind, o.attempts) for o in outcomes] == [("unknown", 1), ("unknown", 1)]


async def test_a_guarded_literal_address_is_never_called_and_its_answer_never_shown(serve: Serve, caller: Any) -> None:
    # 0.0.0.0 reaches this host as 169.254.169.254 reaches a cloud's metadata service.
    target, address = await serve([("ok", '{"secret": "instance-credentials"}')])
    port = address.rsplit(":", 1)[1]
    outcome = await caller().call(spec(f"0.0.0.0:{port}"), "execute")
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    assert "refused by the [services] address policy" in outcome.error
    assert target.seen == []
