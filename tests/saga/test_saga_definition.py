"""Saga definitions: every schema violation names its field; defaults are
made explicit; the plain form round-trips exactly."""

from __future__ import annotations

import copy
import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.saga import (
    ActionStep,
    AwaitStep,
    DefinitionError,
    RetryPolicy,
    definition_from_dict,
    definition_to_dict,
    limits,
    parse_definition,
    same_definition,
    with_id,
)


def valid() -> dict:
    """The contract's example definition."""
    return {
        "id": "order-42",
        "steps": [
            {
                "name": "create-order",
                "service": "orders",
                "action": {"method": "POST", "path": "/orders", "body": {"sku": "W-1", "qty": 3}},
                "compensation": {
                    "method": "POST",
                    "path": "/orders/cancel",
                    "body": {"order": "${steps.create-order.output.order_id}"},
                },
                "timeout_s": 5,
                "retry": {"max_attempts": 5, "backoff_s": 0.1, "max_backoff_s": 5},
            },
            {"name": "approval", "await": "approved", "timeout_s": 300},
        ],
        "timeout_s": 600,
    }


def changed(path: str, value: object) -> dict:
    """`valid()` with the value at dotted `path` ("steps.0.action.path") set;
    the value `DELETE` removes the key."""
    raw = valid()
    *parents, last = path.split(".")
    node: object = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
    slot: object = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[slot]  # type: ignore[union-attr]
    else:
        node[slot] = value  # type: ignore[index]
    return raw


DELETE = object()


def rejects(raw: object, field: str, known: frozenset[str] | None = None) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw, known)
    assert caught.value.field == field, str(caught.value)
    assert str(caught.value) == f"{field}: {caught.value.message}"
    return caught.value


def test_the_contract_example_is_valid():
    definition = parse_definition(valid(), frozenset({"orders"}))
    assert definition.id == "order-42" and definition.timeout_s == 600
    first, second = definition.steps
    assert isinstance(first, ActionStep) and isinstance(second, AwaitStep)
    assert first.action.body == {"sku": "W-1", "qty": 3}
    assert second.signal == "approved" and second.timeout_s == 300


def test_defaults_are_made_explicit():
    definition = parse_definition(
        {
            "steps": [
                {
                    "name": "a",
                    "service": "s",
                    "action": {"method": "GET", "path": "/a"},
                    "compensation": {"method": "DELETE", "path": "/a"},
                },
                {"name": "b", "await": "go"},
            ]
        }
    )
    action, wait = definition.steps
    assert definition.id is None and definition.timeout_s is None
    assert action.timeout_s == 5 and action.action.body_json is None
    assert action.retry == RetryPolicy(5, 0.1, 5)
    assert action.compensation.retry == RetryPolicy(20, 0.1, 5)
    assert wait.timeout_s == 3600


def test_null_means_absent_for_optional_fields():
    raw = changed("timeout_s", None)
    raw["id"] = None
    raw["steps"][0].update(compensation=None, retry=None, timeout_s=None)
    definition = parse_definition(raw)
    assert definition.id is None and definition.timeout_s is None
    assert definition.steps[0].compensation is None


def test_a_partial_retry_keeps_the_other_defaults():
    step = parse_definition(changed("steps.0.retry", {"backoff_s": 10})).steps[0]
    assert step.retry == RetryPolicy(5, 10.0, 10.0)


ESCAPING_PATHS = [
    "/..",
    "/../admin",
    "/a/../../b",
    "/a/./b",
    "/.",
    "/a/..",
    "/%2e%2e/admin",
    "/%2E%2E",
    "/.%2e/x",
    "/%2e./x",
    "/a/%2e/b",
    "/%252e%252e/x",  # encoded twice
    "/a/..%2f..%2fadmin",
    "/a\\..\\b",
    "/orders?fast=1",
    "/orders#frag",
    "/a?",
    "/#",
]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_a_path_cannot_leave_the_service_base_path_or_carry_a_query(path):
    # yarl resolves dot segments: base http://h/api + /../admin called http://h/admin.
    rejects(changed("steps.0.action.path", path), "steps[0].action.path")
    rejects(changed("steps.0.compensation.path", path), "steps[0].compensation.path")


@pytest.mark.parametrize("path", ["/a..b", "/...", "/.well-known/x", "/a/b.", "/v1.2/orders", "/%41"])
def test_dots_inside_a_segment_are_fine(path):
    assert parse_definition(changed("steps.0.action.path", path)).steps[0].action.path == path


# -- one test per kind of error, each naming the field ----------------------------


def test_not_an_object():
    rejects([1, 2], "definition")


@pytest.mark.parametrize(
    "path, field",
    [
        ("extra", "extra"),
        ("steps.0.foo", "steps[0].foo"),
        ("steps.0.action.headers", "steps[0].action.headers"),
        ("steps.0.compensation.url", "steps[0].compensation.url"),
        ("steps.0.retry.jitter", "steps[0].retry.jitter"),
    ],
)
def test_unknown_fields_anywhere(path, field):
    error = rejects(changed(path, 1), field)
    assert error.message.startswith("unknown field")


@pytest.mark.parametrize(
    "path, field",
    [
        ("steps", "steps"),
        ("steps.0.name", "steps[0].name"),
        ("steps.0.service", "steps[0].service"),
        ("steps.0.action", "steps[0].action"),
        ("steps.0.action.method", "steps[0].action.method"),
        ("steps.0.action.path", "steps[0].action.path"),
        ("steps.0.compensation.path", "steps[0].compensation.path"),
    ],
)
def test_missing_required_fields(path, field):
    assert rejects(changed(path, DELETE), field).message == "is required"


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("steps.0.timeout_s", True, "steps[0].timeout_s"),  # bool is not a number
        ("steps.0.timeout_s", "5", "steps[0].timeout_s"),
        ("timeout_s", [600], "timeout_s"),
        ("steps.0.retry.max_attempts", 2.5, "steps[0].retry.max_attempts"),
        ("steps.0.retry.max_attempts", True, "steps[0].retry.max_attempts"),
        ("steps.0.retry", 3, "steps[0].retry"),
        ("steps.0.action", "POST /orders", "steps[0].action"),
        ("steps.0.name", 7, "steps[0].name"),
        ("steps", {"a": 1}, "steps"),
        ("steps.1", "approval", "steps[1]"),
        ("id", 42, "id"),
    ],
)
def test_wrong_types(path, value, field):
    rejects(changed(path, value), field)


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("id", "order 42", "id"),
        ("id", "x" * 129, "id"),
        ("steps.0.name", "create order", "steps[0].name"),
        ("steps.0.name", "n" * 65, "steps[0].name"),
        ("steps.0.service", "Orders", "steps[0].service"),
        ("steps.1.await", "approved!", "steps[1].await"),
    ],
)
def test_names_must_match_their_patterns(path, value, field):
    assert "must match" in rejects(changed(path, value), field).message


def test_duplicate_step_names():
    raw = valid()
    raw["steps"][1]["name"] = "create-order"
    assert rejects(raw, "steps[1].name").message == "duplicate step name 'create-order'"


def test_zero_steps_or_too_many():
    rejects(changed("steps", []), "steps")
    step = {"name": "x", "await": "go"}
    many = [dict(step, name=f"s{i}") for i in range(limits.SAGA_STEPS_MAX + 1)]
    assert "over the limit of 64" in rejects(changed("steps", many), "steps").message
    parse_definition(changed("steps", many[: limits.SAGA_STEPS_MAX]))


@pytest.mark.parametrize("method", ["post", "HEAD", "CONNECT", 1])
def test_method_must_be_one_of_five(method):
    rejects(changed("steps.0.action.method", method), "steps[0].action.method")


@pytest.mark.parametrize(
    "path",
    [
        "orders",
        "//evil.example/orders",
        "/redirect?to=http://evil",
        "/a b",
        "/a\tb",
        "/a\nb",
        "/" + "a" * limits.PATH_CHARS_MAX,
        "",
    ],
)
def test_bad_paths(path):
    rejects(changed("steps.0.compensation.path", path), "steps[0].compensation.path")


def test_unknown_service():
    error = rejects(valid(), "steps[0].service", known=frozenset({"payments"}))
    assert error.message == "unknown service 'orders'"


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("steps.0.timeout_s", 0, "steps[0].timeout_s"),
        ("steps.0.timeout_s", -1, "steps[0].timeout_s"),
        ("steps.0.timeout_s", limits.STEP_TIMEOUT_S_MAX + 1, "steps[0].timeout_s"),
        ("steps.0.timeout_s", float("inf"), "steps[0].timeout_s"),
        ("steps.1.timeout_s", limits.AWAIT_TIMEOUT_S_MAX + 1, "steps[1].timeout_s"),
        ("timeout_s", 0, "timeout_s"),
        ("timeout_s", limits.SAGA_TIMEOUT_S_MAX * 2, "timeout_s"),
    ],
)
def test_timeouts_out_of_range(path, value, field):
    rejects(changed(path, value), field)


@pytest.mark.parametrize(
    "retry, field",
    [
        ({"max_attempts": 0}, "steps[0].retry.max_attempts"),
        ({"max_attempts": limits.RETRY_ATTEMPTS_MAX + 1}, "steps[0].retry.max_attempts"),
        ({"backoff_s": -0.1}, "steps[0].retry.backoff_s"),
        ({"backoff_s": limits.BACKOFF_S_MAX + 1}, "steps[0].retry.backoff_s"),
        ({"backoff_s": 2, "max_backoff_s": 1}, "steps[0].retry.max_backoff_s"),
    ],
)
def test_retry_out_of_range(retry, field):
    rejects(changed("steps.0.retry", retry), field)


def test_compensation_retry_is_checked_too():
    raw = changed("steps.0.compensation.retry", {"max_attempts": 0})
    rejects(raw, "steps[0].compensation.retry.max_attempts")


def test_a_step_is_either_an_action_or_an_await():
    both = changed("steps.1.service", "orders")
    assert "not both" in rejects(both, "steps[1]").message
    neither = {"steps": [{"name": "x", "timeout_s": 1}]}
    assert "needs" in rejects(neither, "steps[0]").message
    compensated_wait = changed("steps.1.compensation", {"method": "POST", "path": "/x"})
    assert rejects(compensated_wait, "steps[1].compensation").message == ("not allowed on an await step")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"blob": "x" * limits.STEP_BODY_BYTES_MAX}, "steps[0].action.body"),
        ({"n": float("nan")}, "steps[0].action.body.n"),
        ({"n": 2**64}, "steps[0].action.body.n"),
        ({"s": {1, 2}}, "steps[0].action.body.s"),
        ({1: "int key"}, "steps[0].action.body"),
        ({"items": [{"deep": [[[]]]}]}, None),
    ],
)
def test_bodies_are_bounded_json(body, field):
    raw = changed("steps.0.action.body", body)
    if field is None:
        parse_definition(raw)
    else:
        rejects(raw, field)


def test_bodies_nest_only_so_deep():
    body: object = "leaf"
    for _ in range(limits.BODY_DEPTH_MAX + 1):
        body = [body]
    error = rejects(changed("steps.0.action.body", body), "steps[0].action.body" + "[0]" * 32)
    assert "nests deeper" in error.message


# -- plain form and sameness -----------------------------------------------------


def test_plain_form_round_trips_exactly_through_msgpack_and_json():
    definition = parse_definition(valid())
    plain = definition_to_dict(definition)
    assert definition_from_dict(plain) == definition
    assert definition_from_dict(msgpack.unpackb(msgpack.packb(plain))) == definition
    assert definition_from_dict(json.loads(json.dumps(plain))) == definition


def test_defaults_made_explicit_are_the_same_definition():
    terse = {
        "id": "s",
        "steps": [
            {"name": "a", "service": "orders", "action": {"method": "POST", "path": "/a", "body": {"x": 1, "y": [2]}}}
        ],
    }
    explicit = copy.deepcopy(terse)
    explicit["steps"][0].update(
        timeout_s=5.0, retry={"max_attempts": 5, "backoff_s": 0.1, "max_backoff_s": 5}, compensation=None
    )
    explicit["steps"][0]["action"]["body"] = {"y": [2], "x": 1}
    assert same_definition(parse_definition(terse), parse_definition(explicit))
    assert same_definition(parse_definition(terse), definition_from_dict(definition_to_dict(parse_definition(terse))))


@pytest.mark.parametrize(
    "path, value",
    [
        ("steps.0.action.body.qty", True),  # true is not 3
        ("steps.0.action.body.qty", 3.5),
        ("steps.0.timeout_s", 6),
        ("steps.1.await", "approved-2"),
        ("timeout_s", None),
        ("id", "order-43"),
        ("release", "2.4.1"),
    ],
)
def test_any_real_difference_is_another_definition(path, value):
    assert not same_definition(parse_definition(valid()), parse_definition(changed(path, value)))


def test_with_id_fills_a_generated_id_and_checks_it():
    definition = parse_definition(changed("id", DELETE))
    assert with_id(definition, "gen-1").id == "gen-1"
    with pytest.raises(DefinitionError) as caught:
        with_id(definition, "bad id")
    assert caught.value.field == "id"


# -- release: run only on workers of one release ---------------------------------


def test_a_definition_may_name_a_release():
    definition = parse_definition(changed("release", "v2.4.1-rc.1+build.7"))
    assert definition.release == "v2.4.1-rc.1+build.7"
    assert definition_to_dict(definition)["release"] == "v2.4.1-rc.1+build.7"


@pytest.mark.parametrize("release", [DELETE, None])
def test_without_a_release_any_worker_runs_it(release):
    definition = parse_definition(valid() if release is DELETE else changed("release", release))
    assert definition.release is None


@pytest.mark.parametrize("release", ["", "x" * 65, "a b", "-x", ".x", "2.4/1", 2, 2.4, True, ["2.4"], {"v": "2"}])
def test_a_bad_release_is_refused_naming_the_field(release):
    error = rejects(changed("release", release), "release")
    assert "must be a string of 1 to 64 of A-Z a-z 0-9 . _ + -" in error.message


def test_a_release_of_64_characters_is_the_longest():
    assert parse_definition(changed("release", "7" * 64)).release == "7" * 64


def test_a_release_round_trips_through_the_plain_form():
    definition = parse_definition(changed("release", "2.4.1"))
    plain = definition_to_dict(definition)
    assert definition_from_dict(plain) == definition
    assert definition_from_dict(msgpack.unpackb(msgpack.packb(plain))) == definition
    assert definition_from_dict(json.loads(json.dumps(plain))).release == "2.4.1"


def test_without_a_release_the_plain_form_is_what_it_was():
    """No "release" key: journals, snapshots and state digests written
    before the field encode byte for byte the same."""
    plain = definition_to_dict(parse_definition(valid()))
    assert "release" not in plain
    assert list(plain) == ["id", "steps", "timeout_s"]
    assert definition_from_dict(plain).release is None


def test_the_release_makes_another_definition():
    without = parse_definition(valid())
    assert not same_definition(without, parse_definition(changed("release", "2.4.1")))
    assert not same_definition(
        parse_definition(changed("release", "2.4.1")), parse_definition(changed("release", "2.4.2"))
    )
    assert same_definition(parse_definition(changed("release", "2.4.1")), parse_definition(changed("release", "2.4.1")))
    assert same_definition(without, parse_definition(changed("release", None)))


# -- fuzz: only DefinitionError, never anything else ------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "id",
    "steps",
    "timeout_s",
    "release",
    "name",
    "service",
    "action",
    "compensation",
    "await",
    "retry",
    "method",
    "path",
    "body",
    "max_attempts",
    "backoff_s",
]


@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4), st.data())
def test_any_input_is_parsed_or_rejected_with_a_definition_error(noise, data):
    raw = valid()
    target = data.draw(
        st.sampled_from(
            [raw, raw["steps"][0], raw["steps"][1], raw["steps"][0]["action"], raw["steps"][0]["compensation"]]
        )
    )
    target.update(noise)
    try:
        definition = parse_definition(raw)
    except DefinitionError as error:
        assert error.field and error.message
    else:
        assert definition_from_dict(definition_to_dict(definition)) == definition


def test_a_stored_definition_from_before_the_rule_still_loads():
    from coordinator.saga.definition import definition_from_dict

    raw = changed("steps.0.action.path", "/orders?fast=1")
    assert definition_from_dict(raw).steps[0].action.path == "/orders?fast=1"  # accepted once: must load
