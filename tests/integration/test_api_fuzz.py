"""Fuzz a real three-node cluster from the OpenAPI document it serves.

Requests go to the leader and to a follower: schemathesis draws valid
(positive) and invalid (negative) path parameters, queries and bodies from
``GET /v1/openapi.json``; hostile raw requests add what a schema does not
suggest (huge and deeply nested bodies, integers past 64 bits, lone
surrogates, bytes that are not JSON, unknown fields, wrong methods, unknown
paths). Every answer must

- be no 5xx but a 503 whose code says "retry" (no_leader, outcome_unknown,
  not_written, suspended), all of them documented;
- carry the error shape ``{"error": {"code", "message", ...}}`` when not 2xx;
- conform to the document: a documented status, content type, headers and
  body schema, and a 4xx for a request the document calls invalid.

Afterwards every node is alive and answers /healthz. The run prints its
seed; ``API_FUZZ_SEED=N`` replays it (as far as a live cluster replays).

A second, shorter run does the same over TLS (APIs and Raft) with a token
of the ``read`` role: every write is then a 403 ``forbidden``, documented,
and still nothing answers 5xx.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import re
from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, example, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from coordinator.cluster.launcher.local import LocalCluster

pytestmark = pytest.mark.integration

EXAMPLES = 150  # per kind of request: documented valid, documented invalid, hostile raw
REQUEST_TIMEOUT_S = 10.0
EXAMPLE_DEADLINE = timedelta(seconds=2 * REQUEST_TIMEOUT_S + 5)  # an example is one request to each of two nodes
URL_BYTES_MAX = 8000  # aiohttp answers a request line over 8190 bytes itself, before any handler
RETRY_CODES = {"no_leader", "outcome_unknown", "not_written", "suspended"}
SERVICES = ("orders", "inventory", "payments")
DOWN_URL = "http://127.0.0.1:9"  # nothing listens: calls fail fast, sagas compensate, breakers open
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
REJECTIONS = ["400", "401", "404", "405", "409", "413", "429"]
STREAMS = frozenset({"/v1/events"})
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}})
# With a read token, an invalid write may be refused for the role before its body is read.
READ_ONLY_CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [*REJECTIONS, "403"]}}}
)
TLS_EXAMPLES = 50


# -- the contract every answer keeps ----------------------------------------------------
def check_contract(method: str, path: str, status: int, headers: dict, body: bytes, sent: object = None) -> None:
    where = f"{method} {path[:300]} {str(sent)[:300]} -> {status} {body[:500]!r}"
    if status >= 300:
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError(f"not the error shape: {where}") from None
        assert isinstance(error["code"], str) and isinstance(error["message"], str), where
    if status >= 500:
        allowed = RETRY_CODES | ({"not_ready"} if path == "/readyz" else set())
        assert status == 503 and error["code"] in allowed, where
    if status == 307:
        assert error["code"] == "not_leader" and headers.get("location"), where


def bound_long_polls(case) -> None:
    """A valid ?wait= long-polls up to 60 s on an unfinished workflow: keep it short."""
    wait = (case.query or {}).get("wait")
    try:
        seconds = float(str(wait))
    except ValueError:
        return
    if 0 <= seconds <= 60:
        case.query["wait"] = min(seconds, 0.5)


def has_dot_segment(case) -> bool:
    """A client drops '.' and '..' path segments before sending (RFC 3986 5.2.4):
    such a request goes to another URL than the case describes."""
    return any(str(v) in (".", "..") for v in (case.path_parameters or {}).values())


def bind_services(case, registered: bool) -> None:
    """Valid definitions call random service names; half of them are bound
    to the registered services, so workflows really start (and fail)."""
    body = case.body
    if not registered or case.method != "POST" or not isinstance(body, dict):
        return
    if case.path == "/v1/sagas" and isinstance(body.get("steps"), list):
        for index, step in enumerate(body["steps"]):
            if isinstance(step, dict) and isinstance(step.get("service"), str):
                step["service"] = SERVICES[index % len(SERVICES)]
    if case.path == "/v1/transactions" and isinstance(body.get("participants"), list):
        for index, participant in enumerate(body["participants"][: len(SERVICES)]):
            if isinstance(participant, dict):
                participant["service"] = SERVICES[index]


# -- hostile raw requests ---------------------------------------------------------------
def _deep(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


# JSON texts a schema does not suggest: past 64 bits, past float range, lone
# surrogates, past the body and depth bounds, and plain random JSON.
HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            "2" + "0" * 20,
            str(2**63),
            str(-(2**63) - 1),
            "1" * 5000,
            "1e400",
            "-1e400",
            '"\\ud800"',
            '"\\udfff x"',
            '{"\\ud800": 1}',
            '"' + "x" * 70_000 + '"',
            '"\\u0000"',
            "null",
            "true",
            "[]",
            "{}",
        ]
    ),
    st.builds(_deep, st.sampled_from([31, 32, 33, 63, 64, 65, 2000]), st.sampled_from(["[", "{"])),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
)
URLS = st.sampled_from(
    [
        "http://h\\ud800:1",
        "\\u0001http://h:1",
        "http://h:99999",
        "http://h:0",
        "http://[::1",
        "http://u:p@h:1",
        "HTTP://H:1",
        "http://h:1/" + "x" * 3000,
        "http://h:1/\\ufeff",
        "http://h:1?q",
        "grpc://h:1",
    ]
).map(lambda url: f'"{url}"')

_SAGA = (
    '{"id": %(id)s, "steps": [{"name": %(name)s, "service": "orders", '
    '"action": {"method": "POST", "path": %(path)s, "body": %(body)s}%(extra)s}, {"name": "b", "await": "go"}], '
    '"timeout_s": %(timeout_s)s}'
)
_SAGA_FIELDS = {"id": '"fuzz-saga"', "name": '"a"', "path": '"/x"', "body": '{"v": 1}', "extra": "", "timeout_s": "60"}
_TX = (
    '{"id": %(id)s, "participants": [{"service": "orders", "prepare": {"path": %(path)s, "body": %(body)s}, '
    '"commit": {"path": "/c"}, "abort": {"path": "/a"}%(extra)s}], "timeout_s": %(timeout_s)s}'
)
_TX_FIELDS = {"id": '"fuzz-tx"', "path": '"/p"', "body": '{"v": 1}', "extra": "", "timeout_s": "5"}


def _one_bad_slot(template: str, fields: dict, value: str, slot: str) -> bytes:
    """A definition, valid but for ``value`` in one slot."""
    return (template % {**fields, slot: f', "zz": {value}' if slot == "extra" else value}).encode()


BODIES = {
    "PUT /v1/services/{name}": st.one_of(
        st.builds(lambda v: b'{"url": %s}' % v.encode(), URLS | HOSTILE_VALUES),
        st.builds(lambda v: b'{"grpc": %s}' % v.encode(), HOSTILE_VALUES),
        st.builds(lambda v: b'{"url": "http://h:1", "zz": %s}' % v.encode(), HOSTILE_VALUES),
    ),
    "POST /v1/sagas": st.builds(
        _one_bad_slot, st.just(_SAGA), st.just(_SAGA_FIELDS), HOSTILE_VALUES, st.sampled_from(sorted(_SAGA_FIELDS))
    ),
    "POST /v1/transactions": st.builds(
        _one_bad_slot, st.just(_TX), st.just(_TX_FIELDS), HOSTILE_VALUES, st.sampled_from(sorted(_TX_FIELDS))
    ),
    "POST /v1/sagas/{id}/signals/{name}": HOSTILE_VALUES.map(str.encode),
    "POST /v1/sagas/redrive": st.builds(
        lambda field, v: b'{"dry_run": true, "%s": %s}' % (field.encode(), v.encode()),
        st.sampled_from(["state", "service", "q", "created_after", "created_before", "limit", "dry_run", "zz"]),
        HOSTILE_VALUES,
    ),
}
ANY_BODY = st.one_of(
    st.sampled_from(
        [
            b"{",
            b"NaN",
            b"Infinity",
            b'{"a": NaN}',
            b"\xef\xbb\xbf{}",
            b"\xff\xfe",
            b"[]",
            b'"x"',
            b"x" * ((1 << 20) + 1),
            b'{"p": "' + b"y" * (2 << 20) + b'"}',
        ]
    ),
    st.binary(min_size=1, max_size=64),
    HOSTILE_VALUES.map(str.encode),
)
PATH_VALUES = {
    "name": st.sampled_from([*SERVICES, "go", "nothing"]),
    "id": st.sampled_from(["fuzz-saga", "fuzz-await", "fuzz-tx", "nothing"]),
    "file": st.sampled_from(["app.js", "app.css", "index.html", "nothing.js", "..%2Fhttp_ui.py"]),
}
PATH_TEXT = st.one_of(st.text(max_size=200), st.sampled_from(["", "%", "..", "a" * 129, "0" * 64, "\x00", "é", "a/b"]))
QUERIES = st.dictionaries(
    st.sampled_from(
        [
            *("stale", "wait", "since", "limit", "after", "state", "x", "service", "q"),
            *("created_after", "created_before", "order", "view", "definition"),
        ]
    ),
    st.sampled_from(["true", "false", "1", "-1", "0.5", "1e9", "nan", "inf", "", "60.0001", "running"])
    | st.text(max_size=20),
    max_size=4,
)


def _matches(template: str, path: str) -> bool:
    """aiohttp's routing: literal segments equal, a parameter is one decoded
    segment without '{' or '}'."""
    wanted, given = template.split("/"), path.split("/")
    return len(wanted) == len(given) and all(
        w == unquote(g) if not w.startswith("{") else g and not set("{}") & set(unquote(g))
        for w, g in zip(wanted, given, strict=True)
    )


def documented_statuses(document: dict, method: str, path: str) -> set[int]:
    """As aiohttp routes: of every template the path matches, the first one
    with this method (``/v1/sagas/redrive`` is POST's own, and GET's saga
    "redrive"); 405 when one matches but none has the method."""
    matched = False
    for template, item in document["paths"].items():
        if _matches(template, path):
            matched = True
            operation = item.get(method.lower())
            if operation is not None:
                return {int(status) for status in operation["responses"]}
    return {405} if matched else {404}


def _segment(text: str) -> str:
    """Percent-encoded, dots too: a client would drop a '.' or '..' segment."""
    return quote(text, safe="").replace(".", "%2E")


@st.composite
def hostile_requests(draw, document: dict) -> tuple[str, str, bytes]:
    """Mostly an operation that takes a body, on a known object, with a
    hostile body; else any path with a wrong method, a mangled path
    parameter, an unknown path or a junk query."""
    if draw(st.integers(0, 3)):
        method, template = draw(st.sampled_from(sorted(BODIES))).split(" ")
    else:
        template = draw(st.sampled_from(sorted(document["paths"])))
        method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]))
    path = template
    for name in re.findall(r"{(\w+)}", template):
        value = draw(PATH_VALUES[name]) if draw(st.integers(0, 3)) else draw(PATH_TEXT)
        path = path.replace(f"{{{name}}}", _segment(value) or "%20", 1)
    if not draw(st.integers(0, 9)):
        unknown = st.sampled_from(["/v1/", "/v1/nothing", "/v2/sagas", "/v1/sagas/x/y/z"])
        path = draw(unknown | PATH_TEXT.map(lambda t: "/" + _segment(t)))
    if not draw(st.integers(0, 3)):
        path += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in draw(QUERIES).items())
    operation = f"{method} {template}"
    if operation in BODIES and draw(st.integers(0, 4)):
        return method, path, draw(BODIES[operation])
    return method, path, draw(ANY_BODY) if draw(st.booleans()) else b""


# -- the test -----------------------------------------------------------------------------
# Hostile requests always tried, whatever the seed draws.
KNOWN_HOSTILE = [
    ("POST", "/v1/sagas/fuzz-await/signals/go", b"2" + b"0" * 20),  # an integer past 64 bits
    ("POST", "/v1/sagas/fuzz-await/signals/go", b'{"\\ud800": "\\udfff"}'),  # lone surrogates
    ("PUT", "/v1/services/orders", b'{"url": "http://h\\ud800:1"}'),
    ("POST", "/v1/sagas", _one_bad_slot(_SAGA, _SAGA_FIELDS, _deep(100_000, "["), "body")),
    ("POST", "/v1/transactions", b'{"p": "' + b"y" * (2 << 20) + b'"}'),
    ("DELETE", "/v1/sagas/fuzz-await", b""),
]


def fuzz(
    document: dict,
    nodes: list[str],
    run_seed: int,
    *,
    examples: int = EXAMPLES,
    session: requests.Session | None = None,
    config: schemathesis.Config = CONFIG,
) -> collections.Counter:
    """Every request goes to the leader, then to a follower (through
    ``session``: its CA and token, if any). Answers how often each status came."""
    statuses: collections.Counter = collections.Counter()
    # An event stream never ends by itself (tests/integration/test_events.py covers it).
    document = {**document, "paths": {p: v for p, v in document["paths"].items() if p not in STREAMS}}
    schema = schemathesis.openapi.from_dict(document, config=config)
    session = session or requests.Session()
    profile = settings(
        max_examples=examples,
        deadline=EXAMPLE_DEADLINE,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )

    def documented(case, registered: bool) -> None:
        assume(not has_dot_segment(case))
        bound_long_polls(case)
        bind_services(case, registered)
        for url in nodes:
            response = case.call(
                base_url=url, session=session, allow_redirects=False, timeout=REQUEST_TIMEOUT_S, verify=session.verify
            )
            if len(response.request.url) > URL_BYTES_MAX:
                assert response.status_code == 400, response.status_code
                continue
            statuses[response.status_code] += 1
            headers = {k.lower(): v[0] for k, v in response.headers.items()}
            check_contract(case.method, case.formatted_path, response.status_code, headers, response.content, case.body)
            case.validate_response(response, checks=CHECKS)

    @seed(run_seed)
    @profile
    @given(case=schema.as_strategy(schemathesis.GenerationMode.POSITIVE), registered=st.booleans())
    def valid(case, registered):
        documented(case, registered)

    @seed(run_seed)
    @profile
    @given(case=schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    def invalid(case):
        documented(case, False)

    @seed(run_seed)
    @profile
    @given(request=hostile_requests(document))
    def hostile(request):
        method, path, body = request
        expected = documented_statuses(document, method, path.split("?")[0])
        for url in nodes:
            response = session.request(
                method,
                url + path,
                data=body,
                allow_redirects=False,
                headers={"Content-Type": "application/json"},
                timeout=REQUEST_TIMEOUT_S,
            )
            statuses[response.status_code] += 1
            headers = {k.lower(): v for k, v in response.headers.items()}
            check_contract(method, path, response.status_code, headers, response.content, body)
            assert response.status_code in expected, (
                f"{method} {path[:300]} -> {response.status_code}, documented: {expected}"
            )

    for known in KNOWN_HOSTILE:
        hostile = example(request=known)(hostile)
    try:
        valid()
        invalid()
        hostile()
    finally:
        session.close()
    return statuses


async def test_the_api_survives_fuzzing_from_its_own_document(cluster):
    run_seed = int(os.environ.get("API_FUZZ_SEED") or random.randrange(2**32))
    print(f"API fuzz seed {run_seed} (replay: API_FUZZ_SEED={run_seed}); node logs: {cluster.root}/n*/node.log")
    leader = await cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    for name in SERVICES:
        assert (await cluster.put_service(leader, name, DOWN_URL)).status == 200
    waiting = {"id": "fuzz-await", "steps": [{"name": "a", "await": "go"}, {"name": "b", "await": "go-on"}]}
    assert (await cluster.request("POST", leader, "/v1/sagas", waiting)).status == 201
    document = (await cluster.request("GET", leader, "/v1/openapi.json")).json
    assert (await cluster.request("GET", follower, "/v1/openapi.json")).json == document

    await asyncio.to_thread(fuzz, document, [cluster.url(leader), cluster.url(follower)], run_seed)

    for node_id in cluster.ids:
        assert cluster.supervisor.alive(node_id), f"{node_id} died; see {cluster.root}/{node_id}/node.log"
        health = await cluster.request("GET", node_id, "/healthz")
        assert health.status == 200, (node_id, health)
        log = (cluster.root / node_id / "node.log").read_text(errors="replace")
        assert "Traceback" not in log, (
            f"{node_id} logged an error:\n{log[max(0, log.index('Traceback') - 300) :][:3000]}"
        )


async def test_a_tls_cluster_with_a_read_token_survives_fuzzing(tmp_path):
    run_seed = int(os.environ.get("API_FUZZ_SEED") or random.randrange(2**32))
    read_token = "dashboard-" + "r" * 32
    tokens_file = tmp_path / "tokens.toml"
    fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'[[tokens]]\nname = "dashboard"\nrole = "read"\ntoken = "{read_token}"\n')
    cluster = LocalCluster(tmp_path / "c", tls=True, peer_tls=True, token=True, tokens_file=tokens_file)
    cluster.start()
    try:
        print(f"API fuzz (TLS, read token) seed {run_seed} (replay: API_FUZZ_SEED={run_seed})")
        leader = await cluster.wait_leader()
        follower = next(i for i in cluster.ids if i != leader)
        for name in SERVICES:  # the admin token (cluster.request) sets the stage
            assert (await cluster.put_service(leader, name, DOWN_URL)).status == 200
        waiting = {"id": "fuzz-await", "steps": [{"name": "a", "await": "go"}, {"name": "b", "await": "go-on"}]}
        assert (await cluster.request("POST", leader, "/v1/sagas", waiting)).status == 201
        document = (await cluster.request("GET", leader, "/v1/openapi.json")).json
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE (if set) overrides verify
        session.verify = cluster.tls_files["ca_file"]
        session.headers["Authorization"] = f"Bearer {read_token}"
        probe = await asyncio.to_thread(session.put, cluster.url(leader) + "/v1/services/x", json={"url": DOWN_URL})
        assert probe.status_code == 403 and probe.json()["error"]["code"] == "forbidden", probe.text
        nodes = [cluster.url(leader), cluster.url(follower)]
        assert all(n.startswith("https://") for n in nodes)
        statuses = await asyncio.to_thread(
            fuzz, document, nodes, run_seed, examples=TLS_EXAMPLES, session=session, config=READ_ONLY_CONFIG
        )
        print(f"statuses: {dict(sorted(statuses.items()))}")
        assert statuses[200] and statuses[403], statuses  # the token was sent: reads answered, writes refused
        for node_id in cluster.ids:
            assert cluster.supervisor.alive(node_id), f"{node_id} died; see {cluster.root}/{node_id}/node.log"
            log = (cluster.root / node_id / "node.log").read_text(errors="replace")
            assert "Traceback" not in log, log[max(0, log.index("Traceback") - 300) :][:3000]
        services = (await cluster.request("GET", leader, "/v1/services")).json["services"]
        assert sorted(s["name"] for s in services) == sorted(SERVICES)  # the read token changed nothing
    finally:
        await cluster.close()
