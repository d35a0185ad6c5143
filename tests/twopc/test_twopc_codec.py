"""Transaction state as plain data: the log's round trip and the API object."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import msgpack
import pytest

from coordinator.twopc import (
    Acknowledged,
    VoteReceived,
    format_ms,
    parse_definition,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)

DEFINITION = parse_definition(
    {
        "id": "order-42:tx",
        "participants": [
            {
                "service": s,
                "prepare": {"path": "/p", "body": {"n": 1.5}},
                "commit": {"path": "/c"},
                "abort": {"path": "/a"},
            }
            for s in ("inventory", "payments")
        ],
        "timeout_s": 30,
    }
)
CREATED_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def walk():
    """Every state of one committed transaction."""
    state, _ = start(DEFINITION, CREATED_MS)
    states = [state]
    for event in (
        VoteReceived("inventory", "yes", at_ms=CREATED_MS + 10),
        VoteReceived("payments", "yes", at_ms=CREATED_MS + 20),
        Acknowledged("payments", "commit", at_ms=CREATED_MS + 30),
        Acknowledged("inventory", "commit", at_ms=CREATED_MS + 1234),
    ):
        state, _ = step(state, event)
        states.append(state)
    return states


@pytest.mark.parametrize("index", range(5))
def test_state_round_trips_through_msgpack_and_json(index: int) -> None:
    state = walk()[index]
    plain = state_to_dict(state)
    assert state_from_dict(plain) == state
    assert state_from_dict(msgpack.unpackb(msgpack.packb(plain))) == state
    assert state_from_dict(json.loads(json.dumps(plain))) == state


def test_format_ms_is_iso_8601_utc() -> None:
    assert format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_ms(CREATED_MS + 1234) == "2024-05-01T12:00:01.234Z"


def test_to_api_is_the_contract_object() -> None:
    api = to_api(walk()[-1])
    at = "2024-05-01T12:00:0"
    assert api == {
        "id": "order-42:tx",
        "state": "committed",
        "decision": "commit",
        "participants": [
            {"service": "inventory", "vote": "yes", "state": "committed"},
            {"service": "payments", "vote": "yes", "state": "committed"},
        ],
        "history": [
            {"at": at + "0.000Z", "event": "started"},
            {"at": at + "0.010Z", "event": "vote", "service": "inventory", "vote": "yes"},
            {"at": at + "0.020Z", "event": "vote", "service": "payments", "vote": "yes"},
            {"at": at + "0.020Z", "event": "decided", "decision": "commit", "reason": "all_voted_yes"},
            {"at": at + "0.030Z", "event": "acknowledged", "service": "payments", "phase": "commit"},
            {"at": at + "1.234Z", "event": "acknowledged", "service": "inventory", "phase": "commit"},
            {"at": at + "1.234Z", "event": "committed"},
        ],
        "created_at": "2024-05-01T12:00:00.000Z",
        "updated_at": "2024-05-01T12:00:01.234Z",
    }
    json.dumps(api)


def test_to_api_while_preparing_has_nulls() -> None:
    api = to_api(walk()[0])
    assert (api["state"], api["decision"]) == ("preparing", None)
    assert api["participants"][0] == {"service": "inventory", "vote": None, "state": "preparing"}


def test_state_from_dict_refuses_a_state_that_breaks_an_invariant() -> None:
    plain = state_to_dict(walk()[1])
    plain["decision"] = "commit"  # committed while still preparing
    with pytest.raises(AssertionError):
        state_from_dict(plain)
    plain = state_to_dict(walk()[2])
    plain["participants"][1]["vote"] = "no"  # commit without every yes
    with pytest.raises(AssertionError):
        state_from_dict(plain)


def test_the_checks_stay_under_python_O() -> None:
    """`python -O` drops `assert`s; the model's checks are explicit raises
    (twopc/errors.py), so they stay."""
    probe = subprocess.run([sys.executable, "-O", "-c", "assert False"], capture_output=True, text=True)
    assert probe.returncode == 0, "this interpreter keeps asserts under -O"
    script = textwrap.dedent(
        """
        from coordinator.twopc import InputError, InvariantError, parse_definition, start, state_from_dict, state_to_dict
        definition = parse_definition(
            {"id": "t", "participants": [{"service": "a", "prepare": {"path": "/p"},
                                          "commit": {"path": "/c"}, "abort": {"path": "/a"}}]}
        )
        try:
            start(definition, -1)
            raise SystemExit("start() took a negative at_ms")
        except InputError:
            pass
        state, _ = start(definition, 0)
        plain = state_to_dict(state)
        plain["decision"] = "commit"  # decided while still preparing
        try:
            state_from_dict(plain)
            raise SystemExit("state_from_dict() took a state that breaks an invariant")
        except InvariantError:
            pass
        """
    )
    run = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
