"""The grammar both definitions share (grammar/): one answer for both machines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import grammar, saga, twopc
from coordinator.grammar import limits
from coordinator.saga import fields as saga_fields
from coordinator.twopc import definition as twopc_definition


def deep(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_both_definition_errors_are_field_errors() -> None:
    for error in (saga.DefinitionError("steps[0].name", "is required"), twopc.DefinitionError("id", "is required")):
        assert isinstance(error, grammar.FieldError)
        assert (error.field, error.message) == (str(error).split(": ")[0], "is required")
    assert not issubclass(saga.DefinitionError, twopc.DefinitionError)
    assert not issubclass(twopc.DefinitionError, saga.DefinitionError)


@pytest.mark.parametrize(
    "path, words",
    [
        (None, "must be a string, not null"),
        ("reserve", "start with '/'"),
        ("//evil.example/x", "not start with '//'"),
        ("/redirect?to=http://evil.example", "not a URL"),
        ("/a b", "whitespace"),
        ("/a\u200bb", "control"),
        ("/" + "p" * limits.PATH_CHARS_MAX, f"over the limit of {limits.PATH_CHARS_MAX}"),
    ],
)
def test_path_problems(path: object, words: str) -> None:
    problem = grammar.path_problem(path)
    assert problem is not None and words in problem


@pytest.mark.parametrize("path", ["/a/../b", "/a/%2e%2E/b", "/a/%252e%252e/b", "/a\\..\\b", "/x?y=1", "/x#y", "/."])
def test_dot_segments_and_queries_are_problems(path: str) -> None:
    assert grammar.dot_segment_problem(path) is not None


@pytest.mark.parametrize("path", ["/", "/a..b", "/.well-known/x", "/v1.2/orders", "/%41", "/a/b."])
def test_dots_inside_a_segment_are_fine(path: str) -> None:
    assert grammar.path_problem(path) is None and grammar.dot_segment_problem(path) is None


@pytest.mark.parametrize(
    "body, where, words",
    [
        ({"a": float("nan")}, "b.a", "finite"),
        ({"a": [1, float("inf")]}, "b.a[1]", "finite"),
        ({"a": {1: "x"}}, "b.a", "object key 1 is not a string"),
        ({"a": {None: "x"}}, "b.a", "object key None is not a string"),
        ({"a": {1, 2}}, "b.a", "not a JSON value (set)"),
        ({"a": 2**63}, "b.a", "64-bit"),
        ({"a": -(2**63) - 1}, "b.a", "64-bit"),
        ({"a": "\ud800"}, "b.a", "Unicode"),
        ({"\ud800": 1}, "b", "Unicode"),
        (deep(limits.BODY_DEPTH_MAX + 1), "b" + "[0]" * limits.BODY_DEPTH_MAX, "nests deeper"),
        ([0] * (limits.BODY_BYTES_MAX + 1), "b", f"over the limit of {limits.BODY_BYTES_MAX} bytes"),
    ],
)
def test_json_value_problems(body: object, where: str, words: str) -> None:
    problem = grammar.json_value_problem(body, "b")
    assert problem is not None
    assert problem[0] == where and words in problem[1]


def test_the_first_problem_in_document_order_is_reported() -> None:
    body = {"a": [1, float("nan")], "b": {2: "x"}, "c": 2**64}
    assert grammar.json_value_problem(body, "b") == ("b.a[1]", "must be a finite number")


@pytest.mark.parametrize(
    "body",
    [None, True, 0, 2**63 - 1, -(2**63), 1.5, "é", [], (), {"a": (1, [None, {"b": "c"}])}, deep(limits.BODY_DEPTH_MAX)],
)
def test_json_values_within_bounds(body: object) -> None:
    assert grammar.json_value_problem(body, "b") is None


def test_format_ms_is_iso_8601_utc() -> None:
    assert grammar.format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert grammar.format_ms(1_714_564_801_234) == "2024-05-01T12:00:01.234Z"
    assert saga.state.format_ms is twopc.format_ms is grammar.format_ms


@settings(max_examples=500)
@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_format_ms_is_datetimes_isoformat_whatever_it_kept(at_ms: int) -> None:
    """format_ms keeps the part down to the second: the answer is still
    exactly datetime's, before and after its cache fills."""
    from datetime import UTC, datetime, timedelta

    expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at_ms)).isoformat(timespec="milliseconds")
    assert grammar.format_ms(at_ms) == expected.replace("+00:00", "Z")
    assert grammar.format_ms(at_ms) == grammar.format_ms(at_ms)


def test_the_machines_name_the_shared_bounds() -> None:
    assert saga.limits.SAGA_ID_PATTERN is twopc.limits.TX_ID_PATTERN is limits.WORKFLOW_ID_PATTERN
    assert saga.limits.SERVICE_NAME_PATTERN is twopc.limits.SERVICE_NAME_PATTERN is limits.SERVICE_NAME_PATTERN
    assert saga.limits.PATH_CHARS_MAX == twopc.limits.PATH_CHARS_MAX == limits.PATH_CHARS_MAX
    assert saga.limits.STEP_BODY_BYTES_MAX == twopc.limits.BODY_BYTES_MAX == limits.BODY_BYTES_MAX
    assert saga.limits.FENCE_CHARS_MAX == twopc.limits.FENCE_CHARS_MAX == limits.FENCE_CHARS_MAX
    assert saga.limits.CALL_DURATION_MS_MAX == twopc.limits.CALL_DURATION_MS_MAX == limits.CALL_DURATION_MS_MAX


@pytest.mark.parametrize("fence", [None, "0:0", "12:3456", "x" * limits.FENCE_CHARS_MAX, "term-7/index-9"])
def test_a_fence_the_executor_may_send(fence: object) -> None:
    assert grammar.fence_problem(fence) is None


@pytest.mark.parametrize("fence", ["", "x" * (limits.FENCE_CHARS_MAX + 1), "3: 4", "3:4\n", "é", 34, b"3:4"])
def test_a_fence_no_header_carries_is_a_problem(fence: object) -> None:
    assert grammar.fence_problem(fence) is not None


@pytest.mark.parametrize("duration_ms", [None, 0, 1, limits.CALL_DURATION_MS_MAX])
def test_a_duration_within_bounds(duration_ms: object) -> None:
    assert grammar.duration_problem(duration_ms) is None


@pytest.mark.parametrize("duration_ms", [-1, limits.CALL_DURATION_MS_MAX + 1, 1.0, True, "5"])
def test_a_duration_out_of_bounds_or_not_an_int_is_a_problem(duration_ms: object) -> None:
    assert grammar.duration_problem(duration_ms) is not None


@pytest.mark.parametrize(
    "release", [None, "1", "2.4.1", "v2.4.1-rc.1+build.7", "release_2024", "x" * limits.RELEASE_CHARS_MAX]
)
def test_a_release_a_definition_may_name(release: object) -> None:
    assert grammar.release_problem(release) is None


@pytest.mark.parametrize(
    "release",
    [
        "",
        "x" * (limits.RELEASE_CHARS_MAX + 1),
        "a b",
        "-x",
        ".x",
        "+x",
        "_x",
        "2.4\n",
        "2.4/1",
        "é",
        2,
        2.4,
        True,
        ["2"],
    ],
)
def test_a_release_out_of_the_pattern_is_a_problem(release: object) -> None:
    problem = grammar.release_problem(release)
    assert problem is not None and problem.startswith("must be a string of 1 to 64 of A-Z a-z 0-9 . _ + -")


def test_the_release_pattern_is_the_one_documented() -> None:
    assert limits.RELEASE_PATTERN.pattern == "[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
    assert saga.limits.RELEASE_PATTERN is twopc.limits.RELEASE_PATTERN is limits.RELEASE_PATTERN


def _answer(check, *args) -> str | None:
    """str() of the DefinitionError `check(*args)` raises, or None."""
    try:
        check(*args)
    except (saga.DefinitionError, twopc.DefinitionError) as error:
        return str(error)
    return None


def _plain_in_a_transaction(path: str) -> None:
    call = twopc_definition.ParticipantCall(path, "{}")
    twopc_definition._check_plain_paths((twopc_definition.ParticipantDefinition("a", call, call, call),))


PATHS = st.one_of(
    st.text(max_size=12),
    st.lists(st.sampled_from(["/", ".", "..", "%2e", "%2F", "%5c", "%25", "\\", "?", "a", "://", " "]), max_size=8).map(
        "".join
    ),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(path=PATHS)
def test_both_machines_answer_a_path_alike(path: str) -> None:
    assert _answer(saga_fields.path, path, "w") == _answer(twopc_definition._parse_path, path, "w")
    in_a_saga = _answer(saga_fields.plain_path, path, "participants[0].prepare.path")
    assert in_a_saga == _answer(_plain_in_a_transaction, path)


@settings(max_examples=300, deadline=None)
@given(body=JSON)
def test_both_machines_accept_and_refuse_the_same_bodies(body: object) -> None:
    """The same answer (the texts kept differ: a saga keeps sorted keys)."""
    saga_answer = _answer(saga_fields.body_json, body, "w")
    twopc_answer = _answer(twopc_definition._encode_body, body, "w")
    assert saga_answer == twopc_answer


def test_evolve_is_replace_for_the_machines_states_and_refuses_a_post_init() -> None:
    import dataclasses

    from coordinator.grammar.evolve import evolve

    definition = twopc.parse_definition(
        {
            "id": "t",
            "participants": [
                {"service": "a", "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/x"}}
            ],
        }
    )
    state, _ = twopc.start(definition, 5)
    participant = state.participants[0]
    assert evolve(state, updated_at_ms=9) == dataclasses.replace(state, updated_at_ms=9)
    assert evolve(participant, status=participant.status) == participant
    saga_state, _ = saga.start(saga.parse_definition({"id": "s", "steps": [{"name": "w", "await": "go"}]}), 5)
    assert evolve(saga_state, redrives=1) == dataclasses.replace(saga_state, redrives=1)
    with pytest.raises(TypeError):
        evolve(state, no_such_field=1)
    with pytest.raises(TypeError, match="__post_init__"):
        evolve(twopc.DeadlineReached(at_ms=1), at_ms=2)


def test_path_answers_are_kept_bounded_and_the_same_as_computed() -> None:
    from coordinator.grammar import checks

    paths = [f"/p{n}" for n in range(checks.PATH_ANSWERS_KEPT_MAX + 10)] + ["/a/../b", "//x", "/ok?q"]
    for path in paths + paths:
        assert checks.path_problem(path) == checks._path_problem(path)
        assert checks.dot_segment_problem(path) == checks._dot_segment_problem(path)
    assert len(checks._path_answers) <= checks.PATH_ANSWERS_KEPT_MAX
    assert checks.dot_segment_problem("/a/../b") is not None and checks.path_problem("//x") is not None
