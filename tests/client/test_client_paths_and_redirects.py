"""The client library's requests (client/_http.py, client/_transport.py):
ids and names are escaped in URL paths, and a 307 is followed only to a
node of the cluster, so the token never goes to another host."""

import json

import grpc
import pytest
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.client._http import _route
from coordinator.client.errors import NotLeader
from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.client.grpc_gen import coordinator_pb2_grpc
from coordinator.cluster.api.grpc_api import abort_details
from coordinator.cluster.api.operations import LeaderElsewhere
from coordinator.cluster.core.config import NodeAddress


@pytest.mark.parametrize(
    ("operation", "args", "expected"),
    [
        ("signal_saga", {"id": "../redrive", "name": "x", "payload": None}, "/v1/sagas/..%2Fredrive/signals/x"),
        (
            "signal_saga",
            {"id": "s1", "name": "../../redrive", "payload": None},
            "/v1/sagas/s1/signals/..%2F..%2Fredrive",
        ),
        ("redrive_saga", {"id": "a/b?c#d"}, "/v1/sagas/a%2Fb%3Fc%23d/redrive"),
        ("get_service", {"name": "x/../y"}, "/v1/services/x%2F..%2Fy"),
        ("delete_service", {"name": "%2e%2e"}, "/v1/services/%252e%252e"),
        ("put_service", {"name": "a?force=true", "body": {}}, "/v1/services/a%3Fforce%3Dtrue"),
        ("service_outcomes", {"name": "a/b", "after": 3}, "/v1/services/a%2Fb/outcomes?after=3"),
        ("get_saga", {"id": "../x"}, "/v1/sagas/..%2Fx"),
        ("get_tx", {"id": "t/1", "wait_s": 1.0, "since": "a&b"}, "/v1/transactions/t%2F1?wait=1.000&since=a%26b"),
        ("list_saga", {"limit": 5, "state": "x&y=z"}, "/v1/sagas?limit=5&state=x%26y%3Dz"),
    ],
)
def test_path_parts_are_escaped(operation, args, expected):
    assert _route(operation, args)[1] == expected


class Recorder:
    def __init__(self):
        self.seen = []

    async def handle(self, request):
        self.seen.append((request.path, request.headers.get("Authorization")))
        return web.json_response(
            {"name": "x", "url": None, "grpc": "h:1", "created_at": "t", "updated_at": "t", "revision": 1}
        )


async def start(app):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def servers():
    runners = []

    async def serve(app):
        runner, url = await start(app)
        runners.append(runner)
        return url

    yield serve
    for runner in runners:
        await runner.cleanup()


async def test_a_redirect_to_a_host_outside_the_cluster_is_not_followed(servers):
    evil = Recorder()
    evil_app = web.Application()
    evil_app.router.add_route("*", "/{tail:.*}", evil.handle)
    evil_url = await servers(evil_app)
    node_url = None

    async def follower(request):
        if request.path == "/v1/cluster":
            return web.json_response({"nodes": [{"id": "n1", "http": node_url, "grpc": "127.0.0.1:1"}], "leader": None})
        raise web.HTTPTemporaryRedirect(evil_url + request.path_qs)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", follower)
    node_url = await servers(app)
    async with Coordinator([node_url], token="secret-token-secret-token", attempts=1) as c:
        with pytest.raises(NotLeader, match="not a node of this cluster"):
            await c.get_service("x")
    assert evil.seen == []


async def test_a_redirect_to_a_node_listed_by_v1_cluster_is_followed_with_the_token(servers):
    leader = Recorder()
    leader_app = web.Application()
    leader_app.router.add_route("*", "/{tail:.*}", leader.handle)
    leader_url = await servers(leader_app)
    node_url = None

    async def follower(request):
        if request.path == "/v1/cluster":
            nodes = [
                {"id": "n1", "http": node_url, "grpc": "127.0.0.1:1"},
                {"id": "n2", "http": leader_url, "grpc": "127.0.0.1:2"},
            ]
            return web.json_response({"nodes": nodes, "leader": nodes[1]})
        raise web.HTTPTemporaryRedirect(leader_url + request.path_qs)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", follower)
    node_url = await servers(app)
    async with Coordinator([node_url], token="secret-token-secret-token", attempts=1) as c:
        assert (await c.get_service("x")).name == "x"
    assert leader.seen == [("/v1/services/x", "Bearer secret-token-secret-token")]


class GrpcNode(coordinator_pb2_grpc.CoordinatorServicer):
    """GetService answers not_leader naming `leader` (or the service when
    `leader` is None); Cluster lists `nodes` as the cluster's gRPC addresses."""

    def __init__(self, leader, nodes):
        self.leader, self.nodes, self.seen = leader, nodes, []

    async def GetService(self, request, context):
        self.seen.append(dict(context.invocation_metadata() or ()).get("authorization"))
        if self.leader is None:
            service = {"name": "x", "url": None, "grpc": "h:1", "created_at": "t", "updated_at": "t", "revision": 1}
            return pb.ObjectReply(object_json=json.dumps(service))
        status, message, trailers = abort_details(LeaderElsewhere(NodeAddress("n9", "h:1", "h:2", self.leader)))
        context.set_trailing_metadata(trailers)
        await context.abort(status, message)

    async def Cluster(self, request, context):
        nodes = [{"id": "n", "http": "http://h:1", "grpc": address} for address in self.nodes]
        return pb.ObjectReply(object_json=json.dumps({"nodes": nodes}))


async def grpc_server(servicer):
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("listed", [False, True])
async def test_grpc_follows_not_leader_only_to_cluster_nodes(listed):
    target = GrpcNode(None, [])
    target_server, target_address = await grpc_server(target)
    follower = GrpcNode(target_address, [target_address] if listed else [])
    follower_server, follower_address = await grpc_server(follower)
    try:
        async with Coordinator(
            [follower_address], transport="grpc", token="secret-token-secret-token", attempts=1
        ) as c:
            if listed:
                assert (await c.get_service("x")).name == "x"
            else:
                with pytest.raises(NotLeader, match="not a node of this cluster"):
                    await c.get_service("x")
    finally:
        await follower_server.stop(None)
        await target_server.stop(None)
    assert target.seen == (["Bearer secret-token-secret-token"] if listed else [])
