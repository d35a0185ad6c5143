"""Plain forms: saga state for snapshots, events for log entries, and the
contract's saga object for the API."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import msgpack
import pytest

from coordinator.saga import (
    ActionFailed,
    ActionSucceeded,
    ActionUnknown,
    CompensationExhausted,
    CompensationSucceeded,
    DeadlineReached,
    Redrive,
    SignalReceived,
    event_from_dict,
    event_to_dict,
    parse_definition,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)
from coordinator.saga.state import format_ms

T0_MS = 1_714_564_800_000  # 2024-05-01T12:00:00.000Z

DEFINITION = parse_definition(
    {
        "id": "order-42",
        "steps": [
            {
                "name": "orders",
                "service": "orders",
                "action": {"method": "POST", "path": "/orders", "body": {"qty": 3}},
                "compensation": {
                    "method": "POST",
                    "path": "/orders/cancel",
                    "body": {"order": "${steps.orders.output.id}"},
                },
            },
            {"name": "approval", "await": "approved", "timeout_s": 60},
            {"name": "payments", "service": "payments", "action": {"method": "POST", "path": "/pay"}},
        ],
        "timeout_s": 600,
    }
)


def story_state():
    """A saga that went forward, buffered nothing, failed and got stuck."""
    state, _ = start(DEFINITION, T0_MS)
    for event in (
        ActionSucceeded(step=0, output={"id": 7, "lines": [1, 2.5, None, True]}, attempts=2, at_ms=T0_MS + 100),
        SignalReceived(name="approved", payload={"by": "bob"}, at_ms=T0_MS + 200),
        ActionFailed(step=2, error="402 declined", attempts=1, at_ms=T0_MS + 300),
        CompensationExhausted(step=0, error="503", attempts=20, at_ms=T0_MS + 400),
    ):
        state, _ = step(state, event)
    return state


def test_state_round_trips_exactly_through_msgpack():
    state = story_state()
    assert state.status.value == "stuck"
    plain = state_to_dict(state)
    assert state_from_dict(plain) == state
    assert state_from_dict(msgpack.unpackb(msgpack.packb(plain))) == state
    assert state_from_dict(json.loads(json.dumps(plain))) == state


def test_the_api_object_has_the_contract_shape():
    api = to_api(story_state())
    assert set(api) >= {"id", "state", "steps", "failure", "history", "created_at", "updated_at"}
    assert api["id"] == "order-42" and api["state"] == "stuck"
    assert api["created_at"] == "2024-05-01T12:00:00.000Z"
    assert api["updated_at"] == "2024-05-01T12:00:00.400Z"
    first = api["steps"][0]
    assert {k: first[k] for k in ("name", "state", "attempts", "output", "error")} == {
        "name": "orders",
        "state": "compensating",
        "attempts": 2,
        "output": {"id": 7, "lines": [1, 2.5, None, True]},
        "error": None,
    }
    assert api["failure"] == {"reason": "step_failed", "step": "payments", "error": "402 declined"}
    assert api["history"][0] == {"at": "2024-05-01T12:00:00.000Z", "event": "started"}
    assert api["history"][-1] == {
        "at": "2024-05-01T12:00:00.400Z",
        "event": "stuck",
        "step": "orders",
        "attempts": 20,
        "error": "503",
    }
    json.dumps(api)


def test_api_outputs_are_fresh_copies():
    state = story_state()
    to_api(state)["steps"][0]["output"]["id"] = 99
    assert to_api(state)["steps"][0]["output"]["id"] == 7


@pytest.mark.parametrize("at_ms, text", [(0, "1970-01-01T00:00:00.000Z"), (T0_MS + 1, "2024-05-01T12:00:00.001Z")])
def test_timestamps_are_iso_8601_utc(at_ms, text):
    assert format_ms(at_ms) == text


@pytest.mark.parametrize(
    "event",
    [
        ActionSucceeded(step=0, output={"id": 1, "l": [1, "a"]}, attempts=1, at_ms=5),
        ActionFailed(step=1, error="400", attempts=2, at_ms=5),
        ActionUnknown(step=1, error="timeout", attempts=5, at_ms=5),
        CompensationSucceeded(step=0, attempts=3, at_ms=5, redrives=1),
        CompensationExhausted(step=0, error="503", attempts=20, at_ms=5),
        SignalReceived(name="approved", payload=None, at_ms=5),
        DeadlineReached(kind="saga", step=None, at_ms=5),
        Redrive(at_ms=5),
    ],
)
def test_events_round_trip_through_their_plain_form(event):
    plain = event_to_dict(event)
    assert event_from_dict(msgpack.unpackb(msgpack.packb(plain))) == event


@pytest.mark.parametrize(
    "plain",
    [
        {"type": "reboot", "at_ms": 1},
        {"at_ms": 1},
        {"type": "redrive", "at_ms": 1, "extra": 2},
        {"type": "action_failed", "step": 0, "at_ms": 1},
    ],
)
def test_a_bad_plain_event_is_a_value_error(plain):
    with pytest.raises(ValueError):
        event_from_dict(plain)


def test_start_needs_an_id_and_a_time():
    anonymous = parse_definition({"steps": [{"name": "a", "await": "go"}]})
    with pytest.raises(ValueError, match="with_id"):
        start(anonymous, T0_MS)
    with pytest.raises(ValueError, match="at_ms"):
        start(DEFINITION, -1)


def test_the_checks_stay_under_python_O():
    """`python -O` drops `assert`s; the model's checks are explicit raises
    (saga/errors.py), so they stay."""
    probe = subprocess.run([sys.executable, "-O", "-c", "assert False"], capture_output=True, text=True)
    assert probe.returncode == 0, "this interpreter keeps asserts under -O"
    script = textwrap.dedent(
        """
        from dataclasses import replace
        from coordinator.saga import InputError, InvariantError, parse_definition, pending_effects, start
        from coordinator.saga.state import StepState
        definition = parse_definition({"id": "s", "steps": [{"name": "a", "await": "go"}]})
        try:
            start(definition, -1)
            raise SystemExit("start() took a negative at_ms")
        except InputError:
            pass
        state, _ = start(definition, 0)
        try:
            pending_effects(replace(state, steps=(StepState(),)))  # running, yet no step running
            raise SystemExit("pending_effects() took a state that breaks an invariant")
        except InvariantError:
            pass
        """
    )
    run = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
