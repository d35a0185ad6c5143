"""The HTTP API's browser guard (cluster/api/http_api.py): Content-Type of
writes, Origin and Host, with the [api] settings of the cluster file."""

from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.cluster.api.http_api import build_app, host_name
from coordinator.cluster.api.openapi import OPENAPI_PATH
from coordinator.cluster.core.config import ApiSettings, ConfigError, NodeAddress, _api


def stub_node(api=ApiSettings(), http="127.0.0.1:8101"):
    nodes = (
        NodeAddress("n1", "10.0.0.1:7101", http, "10.0.0.1:9101"),
        NodeAddress("n2", "10.0.0.2:7102", "n2.coord.internal:8102", "10.0.0.2:9102"),
    )
    return SimpleNamespace(
        config=SimpleNamespace(
            cluster=SimpleNamespace(http_body_bytes_max=1 << 20, nodes=nodes, api=api),
            node=SimpleNamespace(id="n1", http=http),
        ),
        tokens=None,
        http_responses={},
    )


async def status(node, method="GET", path=OPENAPI_PATH, **headers):
    client = TestClient(TestServer(build_app(node)))
    await client.start_server()
    try:
        data = headers.pop("data", None)
        response = await client.request(method, path, headers=headers, data=data)
        body = await response.json()
        return response.status, body
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:8101", 200),
        ("127.3.4.5", 200),
        ("localhost:8101", 200),
        ("LOCALHOST.:8101", 200),
        ("[::1]:8101", 200),
        ("n2.coord.internal:8102", 200),  # another node of the cluster (a 307 names it)
        ("evil.example:8101", 421),  # DNS rebinding
        ("10.9.9.9:8101", 421),
        ("localhost.evil.example", 421),
    ],
)
async def test_the_host_must_be_a_name_of_the_cluster_or_loopback(host, expected):
    code, body = await status(stub_node(), Host=host)
    assert code == expected, body
    if expected == 421:
        assert body["error"]["code"] == "misdirected_request" and "allowed_hosts" in body["error"]["message"]


async def test_listed_hosts_and_a_wildcard_bind_accept_more():
    listed = stub_node(api=ApiSettings(allowed_hosts=("coordinator.example",)))
    assert (await status(listed, Host="Coordinator.Example:8101"))[0] == 200
    wildcard = stub_node(http="0.0.0.0:8101")
    assert (await status(wildcard, Host="10.9.9.9:8101"))[0] == 200  # any address: a rebinding page sends a name
    assert (await status(wildcard, Host="evil.example:8101"))[0] == 421
    assert (await status(stub_node(), "GET", "/healthz", Host="evil.example"))[0] == 200  # health probes by any name


@pytest.mark.parametrize(
    ("origin", "expected"),
    [("https://evil.example", 403), ("null", 403), ("https://ops.example", 200), ("HTTPS://OPS.example", 200)],
)
async def test_an_origin_must_be_listed(origin, expected):
    node = stub_node(api=ApiSettings(allowed_origins=("https://ops.example",)))
    code, body = await status(node, Origin=origin)
    assert code == expected
    if expected == 403:
        assert body["error"]["code"] == "forbidden"
    assert (await status(stub_node(), Origin="https://ops.example"))[0] == 403  # default: none


@pytest.mark.parametrize(
    ("content_type", "data", "expected"),
    [
        ("text/plain", b"{}", 415),
        ("application/x-www-form-urlencoded", b"a=1", 415),
        ("multipart/form-data; boundary=x", b"--x--", 415),
        ("text/plain", None, 415),
        (None, b"{}", 415),  # aiohttp sends bytes as application/octet-stream
        ("application/json", b"{}", 405),  # past the guard: the route has no PUT
        ("application/json; charset=utf-8", b"{}", 405),
    ],
)
async def test_a_write_needs_a_json_content_type(content_type, data, expected):
    headers = {"Content-Type": content_type} if content_type else {}
    code, body = await status(stub_node(), "PUT", data=data, **headers)
    assert code == expected, body
    if expected == 415:
        assert body["error"]["code"] == "unsupported_media_type"


def test_host_name():
    assert [host_name(h) for h in ("A.B:1", "[::1]:80", "::1", "h.", "[fe80::1]")] == [
        "a.b",
        "::1",
        "::1",
        "h",
        "fe80::1",
    ]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"allowed_origins": ["https://x/path"]}, "api.allowed_origins[0]"),
        ({"allowed_origins": ["ftp://x"]}, "api.allowed_origins[0]"),
        ({"allowed_origins": "https://x"}, "api.allowed_origins: must be a list"),
        ({"allowed_hosts": ["h:80"]}, "api.allowed_hosts[0]"),
        ({"nope": []}, "api.nope"),
    ],
)
def test_bad_api_settings_name_the_entry(raw, problem):
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        _api(raw)
