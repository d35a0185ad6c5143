"""The [services] policy at call time, for both transports: a registered
name that resolves to a refused address is never called (cluster/core/netpolicy.py,
cluster/executor/http_caller.py, cluster/executor/grpc_caller.py)."""

import socket

import grpc
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from coordinator.client.grpc_gen import coordinator_pb2, coordinator_pb2_grpc
from coordinator.cluster.core.netpolicy import ServicePolicy
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.grpc_caller import GrpcCaller
from coordinator.cluster.executor.http_caller import CallSpec, HttpCaller, participant_session

TEN_ONLY = ServicePolicy.parse(["10.0.0.0/8"], [])


class FakeResolver(AbstractResolver):
    """Answers names from a table, as DNS would (including a rebinding one)."""

    def __init__(self, table):
        self.table = table
        self.asked = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in self.table[host]
        ]

    async def close(self):
        pass


def spec(url, attempts=3):
    return CallSpec("svc", url, "POST", "/latest/meta-data", None, "s1/step/action", "3:17", 0.5, attempts, 0.01, 0.02)


@pytest.fixture
async def http_target():
    seen = []

    async def handle(request):
        seen.append(request.path)
        return web.json_response({"secret": "instance-credentials"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield seen, runner.addresses[0][1]
    await runner.cleanup()


async def http_call(policy, table, url):
    resolver = FakeResolver(table)
    async with participant_session(policy, connections_max=4, resolver=resolver) as session:
        return await HttpCaller(session, Breakers(5, 0.05), policy).call(spec(url)), resolver


@pytest.mark.parametrize(
    ("policy", "answers"),
    [
        (ServicePolicy(), ["0.0.0.0"]),  # reaches this host; guarded like 169.254.169.254
        (ServicePolicy(), ["127.0.0.1", "169.254.169.254"]),
        (ServicePolicy(), ["::ffff:169.254.169.254"]),
        (TEN_ONLY, ["127.0.0.1"]),  # outside the configured networks
    ],
)
async def test_http_a_name_resolving_to_a_refused_address_is_not_called(http_target, policy, answers):
    seen, port = http_target
    outcome, resolver = await http_call(policy, {"metadata.test": answers}, f"http://metadata.test:{port}")
    assert resolver.asked == ["metadata.test"]
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    assert "metadata.test" in outcome.error and "refused" in outcome.error
    assert "instance-credentials" not in outcome.error
    assert seen == []


async def test_http_a_name_resolving_to_an_allowed_address_is_called(http_target):
    seen, port = http_target
    outcome, _ = await http_call(ServicePolicy(), {"svc.test": ["127.0.0.1"]}, f"http://svc.test:{port}")
    assert outcome.kind == "ok" and seen == ["/latest/meta-data"]


class Target(coordinator_pb2_grpc.ParticipantServicer):
    def __init__(self):
        self.seen = []

    async def Execute(self, request, context):
        self.seen.append(request.path)
        return coordinator_pb2.CallResult(output_json='{"secret": "instance-credentials"}')


@pytest.fixture
async def grpc_target():
    target = Target()
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_ParticipantServicer_to_server(target, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield target, port
    await server.stop(None)


def resolving(table):
    answers = {host: list(values) for host, values in table.items()}

    async def resolve(host, port):
        values = answers[host]
        return [values.pop(0)] if len(values) > 1 else [values[0]]  # one answer per lookup, the last repeats

    return resolve


@pytest.mark.parametrize(
    ("policy", "target"),
    [(ServicePolicy(), "0.0.0.0"), (ServicePolicy(), "metadata.test"), (TEN_ONLY, "svc.test"), (TEN_ONLY, "127.0.0.1")],
)
async def test_grpc_a_refused_address_is_not_called(grpc_target, policy, target):
    servicer, port = grpc_target
    table = {"metadata.test": ["0.0.0.0"], "svc.test": ["127.0.0.1"]}
    caller = GrpcCaller(Breakers(5, 0.05), policy=policy, resolve=resolving(table))
    try:
        outcome = await caller.call(spec(f"{target}:{port}"), "execute")
    finally:
        await caller.close()
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    assert "refused" in outcome.error and "instance-credentials" not in outcome.error
    assert servicer.seen == [] and caller.targets() == []


async def test_grpc_a_name_is_resolved_again_at_each_call_dns_rebinding(grpc_target):
    servicer, port = grpc_target
    caller = GrpcCaller(Breakers(5, 0.05), resolve=resolving({"svc.test": ["127.0.0.1", "169.254.169.254"]}))
    try:
        first = await caller.call(spec(f"svc.test:{port}"), "execute")
        second = await caller.call(spec(f"svc.test:{port}"), "execute")
    finally:
        await caller.close()
    assert first.kind == "ok" and first.output == {"secret": "instance-credentials"}
    assert second.kind == "failed" and "169.254.169.254" in second.error
    assert servicer.seen == ["/latest/meta-data"]


async def test_grpc_a_name_that_does_not_resolve_is_retried_as_unknown():
    async def nowhere(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    caller = GrpcCaller(Breakers(5, 0.05), resolve=nowhere)
    try:
        outcome = await caller.call(spec("nowhere.test:50051", attempts=2), "execute")
    finally:
        await caller.close()
    assert (outcome.kind, outcome.attempts) == ("unknown", 2) and "cannot resolve" in outcome.error
