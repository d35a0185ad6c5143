"""Transaction definitions: each kind of bad input names its field."""

from __future__ import annotations

import copy
import json

import msgpack
import pytest

from coordinator.twopc import (
    DefinitionError,
    definition_from_dict,
    definition_to_dict,
    limits,
    parse_definition,
    same_definition,
    with_id,
)


def participant(service: str = "inventory", **overrides: object) -> dict:
    raw = {
        "service": service,
        "prepare": {"path": "/reserve", "body": {"sku": "W-1", "qty": 3}},
        "commit": {"path": "/reserve/commit"},
        "abort": {"path": "/reserve/abort"},
    }
    raw.update(overrides)
    return raw


def definition(*participants: dict, **overrides: object) -> dict:
    raw = {
        "id": "tx-1",
        "participants": list(participants) or [participant("inventory"), participant("payments")],
        "timeout_s": 10,
    }
    raw.update(overrides)
    return raw


def error_for(raw: object, known_services: frozenset[str] | None = None) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw, known_services)
    return caught.value


# -- valid ------------------------------------------------------------------


def test_a_full_definition_parses() -> None:
    parsed = parse_definition(definition())
    assert parsed.id == "tx-1"
    assert parsed.services == ("inventory", "payments")
    assert parsed.timeout_s == 10
    first = parsed.participants[0]
    assert first.prepare.path == "/reserve"
    assert first.prepare.body == {"sku": "W-1", "qty": 3}
    assert first.prepare.body_json == '{"sku":"W-1","qty":3}'


def test_defaults_id_absent_timeout_ten_empty_bodies() -> None:
    raw = definition()
    del raw["id"], raw["timeout_s"]
    parsed = parse_definition(raw)
    assert parsed.id is None
    assert parsed.timeout_s == limits.TX_TIMEOUT_S_DEFAULT == 10
    assert parsed.timeout_ms == 10_000
    assert parsed.participants[0].commit.body == {}


def test_null_means_absent_for_optional_fields() -> None:
    raw = definition(participant(commit={"path": "/c", "body": None}), id=None, timeout_s=None)
    parsed = parse_definition(raw)
    assert (parsed.id, parsed.timeout_s) == (None, 10)
    assert parsed.participants[0].commit.body_json == "{}"


def test_values_exactly_at_the_limits_are_accepted() -> None:
    services = [f"s{i}" for i in range(limits.PARTICIPANTS_MAX)]
    path = "/" + "p" * (limits.PATH_CHARS_MAX - 1)
    padding = limits.BODY_BYTES_MAX - len(json.dumps({"x": ""}, separators=(",", ":")))
    body = {"x": "b" * padding}
    raw = definition(*[participant(s) for s in services], id="i" * 128, timeout_s=limits.TX_TIMEOUT_S_MAX)
    raw["participants"][0] = participant("a" * 63, prepare={"path": path, "body": body})
    parsed = parse_definition(raw)
    assert len(parsed.participants) == limits.PARTICIPANTS_MAX
    assert len(parsed.participants[0].prepare.body_json.encode()) == limits.BODY_BYTES_MAX
    assert parse_definition(definition(timeout_s=0.001)).timeout_ms == 1


def test_bodies_may_be_any_json_value() -> None:
    for body in ([1, 2], "text", 3, 2.5, True, {"nested": {"list": [None, False]}}):
        raw = definition(participant(prepare={"path": "/p", "body": body}))
        assert parse_definition(raw).participants[0].prepare.body == body


def test_an_array_may_be_a_tuple_as_in_a_saga() -> None:
    """One grammar for both machines' bodies (grammar/checks.py)."""
    raw = definition(participant(prepare={"path": "/p", "body": {"a": (1, 2)}}))
    assert parse_definition(raw).participants[0].prepare.body == {"a": [1, 2]}


def test_known_services_accepts_registered_ones() -> None:
    parsed = parse_definition(definition(), frozenset({"inventory", "payments", "x"}))
    assert parsed.services == ("inventory", "payments")


# -- errors: one test per kind, each naming its field -------------------------


def test_error_str_is_field_colon_message() -> None:
    error = DefinitionError("participants[1].prepare.path", "must start with '/'")
    assert str(error) == "participants[1].prepare.path: must start with '/'"
    assert (error.field, error.message) == ("participants[1].prepare.path", "must start with '/'")


@pytest.mark.parametrize(
    "raw, field",
    [
        ([], "definition"),
        (definition(id=7), "id"),
        (definition(participants={"a": 1}), "participants"),
        (definition(timeout_s="10"), "timeout_s"),
        (definition(timeout_s=True), "timeout_s"),
        (definition("not an object"), "participants[0]"),
        (definition(participant(service=1)), "participants[0].service"),
        (definition(participant(prepare="/reserve")), "participants[0].prepare"),
        (definition(participant(abort={"path": ["/a"]})), "participants[0].abort.path"),
    ],
)
def test_wrong_types(raw: object, field: str) -> None:
    error = error_for(raw)
    assert error.field == field
    assert "must be" in error.message


@pytest.mark.parametrize(
    "raw, field",
    [
        (definition(extra=1), "extra"),
        (definition(participant(retry={})), "participants[0].retry"),
        (definition(participant(commit={"path": "/c", "method": "POST"})), "participants[0].commit.method"),
        (
            definition(participant(), participant("b", abort={"path": "/a", "headers": {}})),
            "participants[1].abort.headers",
        ),
    ],
)
def test_unknown_fields(raw: dict, field: str) -> None:
    error = error_for(raw)
    assert error.field == field
    assert error.message.startswith("unknown field")


def test_method_is_rejected_with_a_hint() -> None:
    error = error_for(definition(participant(prepare={"path": "/p", "method": "PUT"})))
    assert "always POST" in error.message


@pytest.mark.parametrize(
    "remove, field",
    [
        ((), "participants"),
        ((0, "service"), "participants[0].service"),
        ((0, "prepare"), "participants[0].prepare"),
        ((1, "commit"), "participants[1].commit"),
        ((1, "abort"), "participants[1].abort"),
        ((1, "abort", "path"), "participants[1].abort.path"),
    ],
)
def test_missing_fields(remove: tuple, field: str) -> None:
    raw = definition()
    if not remove:
        del raw["participants"]
    else:
        target = raw["participants"][remove[0]]
        for key in remove[1:-1]:
            target = target[key]
        del target[remove[-1]]
    error = error_for(raw)
    assert (error.field, error.message) == (field, "is required")


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 129, "tx\n", "ü"])
def test_bad_id(bad: str) -> None:
    assert error_for(definition(id=bad)).field == "id"


@pytest.mark.parametrize("bad", ["", "Inventory", "-lead", "under_score", "a" * 64, "x\n"])
def test_bad_service_name(bad: str) -> None:
    assert error_for(definition(participant(bad))).field == "participants[0].service"


def test_the_same_service_twice() -> None:
    error = error_for(definition(participant("a"), participant("b"), participant("a")))
    assert error.field == "participants[2].service"
    assert "'a' appears twice" in error.message and "participants[0]" in error.message


@pytest.mark.parametrize("count", [0, limits.PARTICIPANTS_MAX + 1])
def test_participant_count_out_of_bounds(count: int) -> None:
    raw = definition(participants=[participant(f"s{i}") for i in range(count)])
    error = error_for(raw)
    assert error.field == "participants"
    assert f"got {count}" in error.message


@pytest.mark.parametrize(
    "path, words",
    [
        ("reserve", "start with '/'"),
        ("", "start with '/'"),
        ("//evil.example/x", "not start with '//'"),
        ("/redirect?to=http://evil.example", "'://'"),
        ("/a b", "whitespace"),
        ("/a\tb", "whitespace"),
        ("/a\x00b", "control"),
        ("/a\u200bb", "control"),
        ("/" + "p" * limits.PATH_CHARS_MAX, "over the limit of 1024"),
    ],
)
def test_bad_paths(path: str, words: str) -> None:
    raw = definition(participant(), participant("b", commit={"path": path}))
    error = error_for(raw)
    assert error.field == "participants[1].commit.path"
    assert words in error.message


def test_body_too_large() -> None:
    body = {"x": "b" * limits.BODY_BYTES_MAX}
    error = error_for(definition(participant(prepare={"path": "/p", "body": body})))
    assert error.field == "participants[0].prepare.body"
    assert "over the limit of 65536" in error.message


def test_body_too_large_counts_utf8_bytes() -> None:
    body = "é" * (limits.BODY_BYTES_MAX // 2)  # 2 bytes each, plus quotes
    error = error_for(definition(participant(abort={"path": "/a", "body": body})))
    assert error.field == "participants[0].abort.body"


def test_body_with_many_small_items_is_refused_early() -> None:
    body = [0] * (limits.BODY_BYTES_MAX + 1)
    assert error_for(definition(participant(prepare={"path": "/p", "body": body}))).field == (
        "participants[0].prepare.body"
    )


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"a": float("nan")}, "participants[0].prepare.body.a", "finite"),
        ({"a": [1, float("inf")]}, "participants[0].prepare.body.a[1]", "finite"),
        ({"a": {1: "x"}}, "participants[0].prepare.body.a", "not a string"),
        ({"a": {1, 2}}, "participants[0].prepare.body.a", "not a JSON value"),
        ({"a": 2**64}, "participants[0].prepare.body.a", "64-bit"),
        ({"a": "\ud800"}, "participants[0].prepare.body.a", "Unicode"),
    ],
)
def test_body_values_must_be_json(body: object, field: str, words: str) -> None:
    error = error_for(definition(participant(prepare={"path": "/p", "body": body})))
    assert error.field == field
    assert words in error.message


def test_body_nested_too_deep() -> None:
    body: object = "leaf"
    for _ in range(limits.BODY_DEPTH_MAX + 1):
        body = [body]
    error = error_for(definition(participant(prepare={"path": "/p", "body": body})))
    assert error.field.startswith("participants[0].prepare.body")
    assert "nests deeper" in error.message


@pytest.mark.parametrize("timeout_s", [0, -1, 0.0, limits.TX_TIMEOUT_S_MAX + 0.5, float("nan"), float("inf")])
def test_timeout_out_of_range(timeout_s: float) -> None:
    error = error_for(definition(timeout_s=timeout_s))
    assert error.field == "timeout_s"


def test_unknown_service() -> None:
    error = error_for(definition(), frozenset({"inventory"}))
    assert error.field == "participants[1].service"
    assert error.message == "unknown service 'payments'"


# -- ids, equality, round trips ----------------------------------------------


def test_with_id_sets_a_valid_id() -> None:
    raw = definition()
    del raw["id"]
    parsed = with_id(parse_definition(raw), "generated-1")
    assert parsed.id == "generated-1"
    with pytest.raises(DefinitionError) as caught:
        with_id(parsed, "bad id")
    assert caught.value.field == "id"
    with pytest.raises(DefinitionError):
        with_id(parsed, None)  # type: ignore[arg-type]


def test_same_definition_with_defaults_made_explicit() -> None:
    implicit = definition(participant(commit={"path": "/c"}))
    del implicit["timeout_s"]
    explicit = definition(participant(commit={"path": "/c", "body": {}}), timeout_s=10.0)
    assert same_definition(parse_definition(implicit), parse_definition(explicit))


def test_same_definition_ignores_body_key_order_only() -> None:
    def with_body(body: dict):
        return parse_definition(definition(participant(prepare={"path": "/p", "body": body})))

    a = with_body({"x": 1, "y": 2})
    b = with_body({"y": 2, "x": 1})
    c = with_body({"x": 1.0, "y": 2})
    d = with_body({"x": True, "y": 2})
    assert same_definition(a, b)
    assert not same_definition(a, c)
    assert not same_definition(a, d)


@pytest.mark.parametrize(
    "change",
    [
        lambda raw: raw.update(id="tx-2"),
        lambda raw: raw.update(timeout_s=11),
        lambda raw: raw["participants"].reverse(),
        lambda raw: raw["participants"][0]["abort"].update(path="/other"),
        lambda raw: raw["participants"][1].update(service="shipping"),
        lambda raw: raw.update(release="2.4.1"),
    ],
)
def test_different_definitions_differ(change) -> None:
    changed = copy.deepcopy(definition())
    change(changed)
    assert not same_definition(parse_definition(definition()), parse_definition(changed))


def test_to_dict_makes_defaults_explicit() -> None:
    raw = {
        "participants": [{"service": "a", "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/a"}}]
    }
    assert definition_to_dict(parse_definition(raw)) == {
        "id": None,
        "participants": [
            {
                "service": "a",
                "prepare": {"path": "/p", "body": {}},
                "commit": {"path": "/c", "body": {}},
                "abort": {"path": "/a", "body": {}},
            }
        ],
        "timeout_s": 10,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/..",
        "/a/../../b",
        "/a/./b",
        "/%2e%2e/admin",
        "/.%2E/x",
        "/%252e%252e/x",
        "/a/..%2f..%2fb",
        "/a\\..\\b",
        "/p?x=1",
        "/p#f",
    ],
)
@pytest.mark.parametrize("phase", ["prepare", "commit", "abort"])
def test_a_path_cannot_leave_the_service_base_path_or_carry_a_query(path: str, phase: str) -> None:
    error = error_for(definition(participant(), participant("b", **{phase: {"path": path}})))
    assert error.field == f"participants[1].{phase}.path"


@pytest.mark.parametrize("path", ["/a..b", "/.well-known/x", "/v1.2/p"])
def test_dots_inside_a_segment_are_fine(path: str) -> None:
    assert parse_definition(definition(participant(prepare={"path": path}))).participants[0].prepare.path == path


def test_a_stored_definition_from_before_the_rule_still_loads() -> None:
    from coordinator.twopc import definition_from_dict

    raw = definition(participant(prepare={"path": "/p?x=1"}))
    assert definition_from_dict(raw).participants[0].prepare.path == "/p?x=1"


# -- release: run only on workers of one release -------------------------------


def test_a_definition_may_name_a_release() -> None:
    parsed = parse_definition(definition(release="v2.4.1-rc.1+build.7"))
    assert parsed.release == "v2.4.1-rc.1+build.7"
    assert definition_to_dict(parsed)["release"] == "v2.4.1-rc.1+build.7"


def test_without_a_release_any_worker_runs_it() -> None:
    assert parse_definition(definition()).release is None
    assert parse_definition(definition(release=None)).release is None  # null means absent


@pytest.mark.parametrize("release", ["", "x" * 65, "a b", "-x", ".x", "2.4/1", 2, 2.4, True, ["2.4"], {"v": "2"}])
def test_a_bad_release_is_refused_naming_the_field(release: object) -> None:
    error = error_for(definition(release=release))
    assert error.field == "release"
    assert "must be a string of 1 to 64 of A-Z a-z 0-9 . _ + -" in error.message


def test_a_release_of_64_characters_is_the_longest() -> None:
    assert parse_definition(definition(release="7" * 64)).release == "7" * 64


def test_a_release_round_trips_through_the_plain_form() -> None:
    parsed = parse_definition(definition(release="2.4.1"))
    plain = definition_to_dict(parsed)
    assert definition_from_dict(plain) == parsed
    assert definition_from_dict(msgpack.unpackb(msgpack.packb(plain))) == parsed
    assert definition_from_dict(json.loads(json.dumps(plain))).release == "2.4.1"


def test_without_a_release_the_plain_form_is_what_it_was() -> None:
    """No "release" key: journals, snapshots and state digests written
    before the field encode byte for byte the same."""
    plain = definition_to_dict(parse_definition(definition()))
    assert "release" not in plain
    assert list(plain) == ["id", "participants", "timeout_s"]
    assert definition_from_dict(plain).release is None


def test_the_release_makes_another_definition() -> None:
    without = parse_definition(definition())
    assert not same_definition(without, parse_definition(definition(release="2.4.1")))
    assert not same_definition(
        parse_definition(definition(release="2.4.1")), parse_definition(definition(release="2.4.2"))
    )
    assert same_definition(parse_definition(definition(release="2.4.1")), parse_definition(definition(release="2.4.1")))
    assert same_definition(without, parse_definition(definition(release=None)))
