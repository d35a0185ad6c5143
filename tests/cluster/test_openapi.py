"""GET /v1/openapi.json: a valid OpenAPI document that names exactly the
routes build_app serves, with the patterns the handlers check."""

import json
import re
from types import SimpleNamespace

import pytest
import schemathesis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import example, given, settings
from hypothesis import strategies as st

from coordinator import saga, twopc
from coordinator.cluster.api import http_saga
from coordinator.cluster.api.http_api import build_app
from coordinator.cluster.api.openapi import OPENAPI_PATH, build_document, document_json
from coordinator.cluster.api.operations import SIGNAL_NAME, WORKFLOW_ID
from coordinator.cluster.core.config import ApiSettings
from coordinator.cluster.core.tokens import TokenTable
from coordinator.cluster.stores import registry
from coordinator.saga import fields as saga_fields
from coordinator.twopc import definition as tx_definition

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
PUBLIC = {"/healthz", "/readyz", "/ui", "/ui/", "/ui/{file}"}  # the dashboard's files hold no data


def stub_node(token=None):
    """Enough of a Node for build_app and the routes that never touch the log."""
    return SimpleNamespace(
        config=SimpleNamespace(
            cluster=SimpleNamespace(http_body_bytes_max=1 << 20, nodes=(), api=ApiSettings()),
            node=SimpleNamespace(id="n1", http="127.0.0.1:8101", tls=False),
        ),
        tokens=TokenTable.single(token) if token else None,
        http_responses={},
    )


def operations(document):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(document, ref):
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(value):
    if isinstance(value, dict):
        if "$ref" in value:
            yield value["$ref"]
        for item in value.values():
            yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def test_document_is_valid_openapi_3_1():
    document = build_document()
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the official 3.1 meta-schema
    assert json.loads(document_json()) == document


def test_every_route_is_documented_and_every_documented_route_exists():
    app = build_app(stub_node())
    served = {
        (route.method.lower(), route.resource.canonical) for route in app.router.routes() if route.method != "HEAD"
    }
    documented = {(method, path) for path, method, _ in operations(build_document())}
    assert served == documented
    heads = {route.resource.canonical for route in app.router.routes() if route.method == "HEAD"}
    assert heads == {path for method, path in served if method == "get"}, "HEAD is served exactly where GET is"


def test_structure_refs_parameters_and_responses():
    document = build_document()
    for ref in refs(document):
        resolve(document, ref)
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations(document):
        item = document["paths"][path]
        declared = item.get("parameters", []) + operation.get("parameters", [])
        params = [resolve(document, p["$ref"]) if "$ref" in p else p for p in declared]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert all(p["required"] for p in params if p["in"] == "path")
        responses = operation["responses"]
        assert responses and all(re.fullmatch(r"[1-5][0-9][0-9]", status) for status in responses)
        assert any(status.startswith("2") for status in responses), (method, path)
        assert ("401" in responses) == (path not in PUBLIC), (method, path)
        goes_to_leader = method != "get" or "Stale" in json.dumps(operation.get("parameters", []))
        assert goes_to_leader == ("307" in responses and "503" in responses), (method, path)
        if in_path:
            assert "404" in responses, (method, path)  # no such object, or no route for a value with '{' or '}'
        if "requestBody" in operation:
            assert "400" in responses and "413" in responses, (method, path)
    for status_name, response in document["components"]["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"], status_name
        assert {"code", "message"} <= set(schema["properties"]["error"]["required"]), status_name
    assert document["components"]["responses"]["NotLeader"]["headers"]["Location"]["required"]


def test_limits_are_the_handlers_own():
    params = build_document()["components"]["parameters"]
    assert params["Wait"]["schema"]["maximum"] == http_saga.WAIT_S_MAX
    assert params["Limit"]["schema"]["maximum"] == http_saga.LIST_LIMIT_MAX
    assert params["Limit"]["schema"]["default"] == http_saga.LIST_LIMIT_DEFAULT
    assert params["OutcomesLimit"]["schema"]["maximum"] == http_saga.OUTCOMES_LIMIT_MAX


HANDLER_PATTERNS = {
    "ServiceName": registry.SERVICE_NAME_PATTERN,
    "SagaId": WORKFLOW_ID,
    "TransactionId": WORKFLOW_ID,
    "SignalName": SIGNAL_NAME,
}


@pytest.mark.parametrize("name", sorted(HANDLER_PATTERNS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_path_parameter_patterns_accept_what_the_handler_accepts(name, data):
    pattern = build_document()["components"]["parameters"][name]["schema"]["pattern"]
    documented = re.compile(pattern.removesuffix("$") + r"\Z")  # ECMA's $ is Python's \Z
    handler = HANDLER_PATTERNS[name]
    text = data.draw(st.one_of(st.from_regex(documented), st.from_regex(handler), st.text(max_size=140)))
    assert bool(documented.search(text)) == bool(handler.match(text)), repr(text)


async def test_any_node_serves_the_document_without_the_log():
    client = TestClient(TestServer(build_app(stub_node())))  # no .log: leadership is never asked
    await client.start_server()
    try:
        response = await client.get(OPENAPI_PATH)
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == build_document()
    finally:
        await client.close()


async def test_with_a_token_the_document_needs_it_too():
    client = TestClient(TestServer(build_app(stub_node(token="t" * 32))))
    await client.start_server()
    try:
        assert (await client.get(OPENAPI_PATH)).status == 401
        response = await client.get(OPENAPI_PATH, headers={"Authorization": "Bearer " + "t" * 32})
        assert response.status == 200
    finally:
        await client.close()


def _accepts(check, *args) -> bool:
    try:
        check(*args)
    except (registry.InvalidService, saga.DefinitionError, twopc.DefinitionError):
        return False
    return True


def _documented(schema: dict, text: str) -> bool:
    pattern = re.compile(schema["pattern"].removesuffix("$") + r"\Z")
    return bool(pattern.match(text)) and len(text) <= schema.get("maxLength", len(text))


BODY_FIELDS = {
    "url": (lambda t: registry.validate_service_body({"url": t}), ("ServicePut", "oneOf", 0, "properties", "url")),
    "grpc": (lambda t: registry.validate_service_body({"grpc": t}), ("ServicePut", "oneOf", 1, "properties", "grpc")),
    "saga path": (lambda t: saga_fields.path(t, "path"), ("SagaCall", "properties", "path")),
    "transaction path": (lambda t: tx_definition._parse_path(t, "path"), ("TransactionCall", "properties", "path")),
    "saga release": (
        lambda t: saga_fields.release(t, "release"),
        ("SagaDefinition", "properties", "release", "anyOf", 0),
    ),
    "transaction release": (
        lambda t: tx_definition._parse_release(t),
        ("TransactionDefinition", "properties", "release", "anyOf", 0),
    ),
}
TEXTS = st.one_of(
    st.text(),
    st.builds(lambda a, b: a + "http://h:1" + b, st.text(max_size=3), st.text(max_size=3)),
    st.builds(lambda a: "/" + a, st.text()),
)


@pytest.mark.parametrize("name", sorted(BODY_FIELDS))
@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
@example(text="v2.4.1-rc.1+build.7")
@example(text="\x01http://h:1")  # urlsplit() strips leading C0 controls before the scheme check
@example(text="http://h:1/\ufeff")
@example(text="/a\u00a0b")
def test_the_document_accepts_whatever_the_handlers_accept(name, text):
    """Request body strings: the document's pattern may be looser than the
    handler (the fuzz test's negative cases rely on it), never stricter."""
    check, where = BODY_FIELDS[name]
    schema = build_document()["components"]["schemas"]
    for key in where:
        schema = schema[key]
    if _accepts(check, text):
        assert _documented(schema, text), f"{name}: the handler accepts {text!r}, the document does not"


@pytest.mark.parametrize("definition", ["SagaDefinition", "TransactionDefinition"])
def test_a_definition_may_name_a_release(definition):
    """Optional (null is absent), the pattern of grammar/limits.py, and what it is for."""
    schema = build_document()["components"]["schemas"][definition]
    release = schema["properties"]["release"]
    assert "release" not in schema["required"]
    assert release["anyOf"][1] == {"type": "null"}
    assert release["anyOf"][0]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
    assert release["description"] == "run only on workers of this release (see [workers] in the cluster file)"


def _check_record(schema: dict, record: dict) -> None:
    """A history record against the document's schema of one (the parts it uses)."""
    assert set(schema["required"]) <= set(record), record
    for key, value in record.items():
        prop = schema["properties"].get(key, schema["additionalProperties"])
        assert prop, f"{key} is not documented"
        if prop.get("type") == "integer":
            assert isinstance(value, int) and prop["minimum"] <= value <= prop.get("maximum", value), (key, value)
        elif prop.get("type") == "string":
            assert isinstance(value, str), (key, value)
            if "pattern" in prop:
                assert _documented(prop, value), (key, value)
            if "enum" in prop:
                assert value in prop["enum"], (key, value)


def test_history_records_with_a_call_are_as_documented():
    """The fence and duration of a participant call, on a saga's and a
    transaction's history records, as the document describes them."""
    schemas = build_document()["components"]["schemas"]
    saga_record = schemas["Saga"]["properties"]["history"]["items"]
    tx_record = schemas["Transaction"]["properties"]["history"]["items"]
    definition = saga.parse_definition(
        {"id": "s", "steps": [{"name": "a", "service": "a", "action": {"method": "POST", "path": "/a"}}]}
    )
    state, _ = saga.start(definition, 1000)
    call = {"fence": "12:345", "duration_ms": 67}
    state, _ = saga.step(state, saga.ActionFailed(step=0, error="no", attempts=2, at_ms=1100, **call))
    records = saga.to_api(state)["history"]
    assert any(r.get("fence") == "12:345" and r.get("duration_ms") == 67 for r in records)
    for record in records:
        _check_record(saga_record, record)
    tx = twopc.parse_definition(
        {
            "id": "t",
            "participants": [
                {"service": "a", "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/x"}}
            ],
        }
    )
    tx_state, _ = twopc.start(tx, 1000)
    tx_state, _ = twopc.step(tx_state, twopc.VoteReceived("a", "yes", 1100, **call))
    tx_state, _ = twopc.step(tx_state, twopc.Acknowledged("a", "commit", 1200, **call))
    records = twopc.to_api(tx_state)["history"]
    assert sum(r.get("duration_ms") == 67 for r in records) == 2
    for record in records:
        _check_record(tx_record, record)
