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
            node=SimpleNamespace(id="n1", http=http, tls=False),
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


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("http://127.0.0.1:8101", 200),  # this node's own page (same origin)
        ("http://localhost:8101", 200),  # the same page by a loopback name
        ("http://n2.coord.internal:8102", 200),  # another node's page: the dashboard moved there
        ("http://127.0.0.1:8102", 200),  # another node's port on a loopback address
        ("https://127.0.0.1:8101", 403),  # not the scheme the nodes speak
        ("http://127.0.0.1:9999", 403),  # no node's HTTP port: another program on this host
        ("http://evil.example:8101", 403),  # a rebinding name on a node's port
        ("http://n2.coord.internal", 403),  # no port
    ],
)
async def test_the_cluster_s_own_pages_are_allowed_origins(origin, expected):
    code, body = await status(stub_node(), Origin=origin, Host="127.0.0.1:8101")
    assert code == expected, body


async def test_a_page_of_another_node_gets_cors_answers_and_others_do_not():
    client = TestClient(TestServer(build_app(stub_node())))
    await client.start_server()
    try:
        other = "http://n2.coord.internal:8102"
        preflight = {"Origin": other, "Access-Control-Request-Method": "POST"}
        response = await client.request("OPTIONS", "/v1/sagas", headers={**preflight, "Host": "127.0.0.1:8101"})
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == other
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        # a real request from it: the answer names the origin, errors included
        response = await client.get("/v1/nowhere", headers={"Origin": other, "Host": "127.0.0.1:8101"})
        assert response.status == 404 and response.headers["Access-Control-Allow-Origin"] == other
        # the same page as the node itself: no CORS headers needed or sent
        response = await client.get(OPENAPI_PATH, headers={"Origin": "http://127.0.0.1:8101", "Host": "127.0.0.1:8101"})
        assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers
        # an origin of no node: refused, and the preflight gets no CORS answer
        evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        response = await client.request("OPTIONS", "/v1/sagas", headers={**evil, "Host": "127.0.0.1:8101"})
        assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
    finally:
        await client.close()


async def test_the_dashboard_files_are_served_with_a_strict_policy_and_no_others():
    client = TestClient(TestServer(build_app(stub_node())))
    await client.start_server()
    try:
        page = await client.get("/ui/")
        assert page.status == 200 and page.content_type == "text/html"
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "http://n2.coord.internal:8102" in policy  # it may move to another node
        script = await client.get("/ui/app.js")
        assert script.status == 200 and script.content_type == "text/javascript"
        for name in ("../http_ui.py", "%2e%2e%2fhttp_ui.py", "nothing.js"):
            assert (await client.get("/ui/" + name)).status == 404, name
        bare = await client.get("/ui")
        assert bare.status == 200 and await bare.read() == await page.read()
    finally:
        await client.close()
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
