"""What the executor reports of each participant call - the fence it sent
and how long the call took - lands in the history record of the call's
outcome, and only there; an outcome without them records as before."""

from __future__ import annotations

import msgpack
import pytest

from coordinator.saga import (
    ActionFailed,
    ActionSucceeded,
    ActionUnknown,
    CompensationExhausted,
    CompensationSucceeded,
    HistoryEvent,
    InputError,
    Redrive,
    event_from_dict,
    event_to_dict,
    limits,
    parse_definition,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)
from coordinator.saga.state import HistoryRecord, _record_from_dict, _record_to_dict

T0_MS = 1_700_000_000_000
CALL = {"fence": "3:41", "duration_ms": 125}


def action_step(name: str) -> dict:
    return {
        "name": name,
        "service": name,
        "action": {"method": "POST", "path": f"/{name}"},
        "compensation": {"method": "POST", "path": f"/{name}/undo"},
    }


def saga_definition(*names: str) -> dict:
    return {"id": "saga-1", "steps": [action_step(name) for name in names]}


def order_saga() -> dict:
    return saga_definition("orders", "inventory", "payments")


class Story:
    """One saga driven event by event (tests/saga/test_saga_scenarios.py
    tells more stories); the clock moves 10 ms per event."""

    def __init__(self, raw: dict) -> None:
        self.now = T0_MS
        self.state, _ = start(parse_definition(raw), T0_MS)

    def apply(self, event: object) -> None:
        self.state, _ = step(self.state, event)  # type: ignore[arg-type]

    def at(self) -> int:
        self.now += 10
        return self.now

    def index(self, name: str) -> int:
        return self.state.definition.step_names.index(name)

    def succeed(self, name: str, output: object = None) -> None:
        self.apply(ActionSucceeded(step=self.index(name), output=output or {}, attempts=1, at_ms=self.at()))

    def fail(self, name: str) -> None:
        self.apply(ActionFailed(step=self.index(name), error="declined", attempts=1, at_ms=self.at()))

    def redrive(self) -> None:
        self.apply(Redrive(at_ms=self.at()))


def records(story: Story, event: HistoryEvent) -> list[HistoryRecord]:
    return [r for r in story.state.history if r.event is event]


def test_a_succeeded_action_records_its_fence_and_duration():
    story = Story(order_saga())
    story.apply(ActionSucceeded(step=0, output={"order_id": "o-1", "total": 3}, attempts=2, at_ms=T0_MS + 5, **CALL))
    [record] = records(story, HistoryEvent.STEP_SUCCEEDED)
    assert (record.step, record.attempts, record.fence, record.duration_ms) == ("orders", 2, "3:41", 125)
    api = to_api(story.state)["history"][-1]
    assert api == {"at": "2023-11-14T22:13:20.005Z", "event": "step_succeeded", "step": "orders", "attempts": 2, **CALL}


def test_failed_and_unknown_actions_record_them_on_their_outcome_only():
    story = Story(saga_definition("orders", "payments"))
    story.apply(ActionSucceeded(step=0, output={}, attempts=1, at_ms=T0_MS + 5, fence="3:41", duration_ms=7))
    story.apply(ActionFailed(step=1, error="declined", attempts=1, at_ms=T0_MS + 6, fence="3:41", duration_ms=9))
    [failed] = records(story, HistoryEvent.STEP_FAILED)
    assert (failed.fence, failed.duration_ms) == ("3:41", 9)
    # The decision to compensate is not a call: its records carry neither.
    for event in (HistoryEvent.FAILED, HistoryEvent.COMPENSATING, HistoryEvent.STARTED):
        assert all(r.fence is None and r.duration_ms is None for r in records(story, event))

    story = Story(saga_definition("orders"))
    story.apply(ActionUnknown(step=0, error="timed out", attempts=5, at_ms=T0_MS + 5, fence="4:9", duration_ms=0))
    [unknown] = records(story, HistoryEvent.STEP_UNKNOWN)
    assert (unknown.fence, unknown.duration_ms) == ("4:9", 0)


def test_an_output_too_large_keeps_the_call_on_its_unknown_record():
    story = Story(saga_definition("orders", "payments"))
    big = {"blob": "x" * limits.STEP_OUTPUT_BYTES_MAX}
    story.apply(ActionSucceeded(step=0, output=big, attempts=1, at_ms=T0_MS + 5, **CALL))
    [unknown] = records(story, HistoryEvent.STEP_UNKNOWN)
    assert (unknown.fence, unknown.duration_ms) == ("3:41", 125)


def test_compensation_outcomes_record_them_on_compensation_succeeded_and_stuck():
    story = Story(order_saga())
    story.succeed("orders", {"order_id": "o-7", "total": 1})
    story.succeed("inventory")
    story.fail("payments")
    story.apply(CompensationExhausted(step=1, error="503", attempts=20, at_ms=story.now + 1, redrives=0, **CALL))
    [stuck] = records(story, HistoryEvent.STUCK)
    assert (stuck.step, stuck.attempts, stuck.fence, stuck.duration_ms) == ("inventory", 20, "3:41", 125)
    story.redrive()
    story.apply(CompensationSucceeded(step=1, attempts=1, at_ms=story.now + 1, redrives=1, fence="5:77", duration_ms=3))
    [compensated] = records(story, HistoryEvent.COMPENSATION_SUCCEEDED)
    assert (compensated.fence, compensated.duration_ms) == ("5:77", 3)
    assert all(r.fence is None for r in records(story, HistoryEvent.REDRIVE))


def test_an_outcome_without_them_records_as_before():
    story = Story(order_saga())
    story.succeed("orders", {"order_id": "o-1", "total": 3})
    [record] = records(story, HistoryEvent.STEP_SUCCEEDED)
    assert record == HistoryRecord(story.now, HistoryEvent.STEP_SUCCEEDED, step="orders", attempts=1)
    assert _record_to_dict(record) == {"at_ms": story.now, "event": "step_succeeded", "step": "orders", "attempts": 1}
    assert set(to_api(story.state)["history"][-1]) == {"at", "event", "step", "attempts"}


BAD = [
    ({"fence": ""}, "fence"),
    ({"fence": "x" * (limits.FENCE_CHARS_MAX + 1)}, "fence"),
    ({"fence": "3: 41"}, "fence"),  # not a header value's visible ASCII
    ({"fence": 341}, "fence"),
    ({"duration_ms": -1}, "duration_ms"),
    ({"duration_ms": limits.CALL_DURATION_MS_MAX + 1}, "duration_ms"),
    ({"duration_ms": 1.5}, "duration_ms"),
    ({"duration_ms": True}, "duration_ms"),
    ({"duration_ms": "12"}, "duration_ms"),
]


@pytest.mark.parametrize("bad, name", BAD)
@pytest.mark.parametrize(
    "plain",
    [
        {"type": "action_succeeded", "step": 0, "output": {}, "attempts": 1},
        {"type": "action_failed", "step": 0, "error": "x", "attempts": 1},
        {"type": "action_unknown", "step": 0, "error": "x", "attempts": 1},
        {"type": "compensation_succeeded", "step": 0, "attempts": 1},
        {"type": "compensation_exhausted", "step": 0, "error": "x", "attempts": 1},
    ],
    ids=lambda plain: plain["type"],
)
def test_a_bad_fence_or_duration_is_an_input_error(plain, bad, name):
    with pytest.raises(InputError, match=name):
        event_from_dict({**plain, "at_ms": T0_MS, **bad})


def test_the_bounds_themselves_are_taken():
    event = ActionFailed(
        step=0,
        error="x",
        attempts=1,
        at_ms=T0_MS,
        fence="9" * limits.FENCE_CHARS_MAX,
        duration_ms=limits.CALL_DURATION_MS_MAX,
    )
    story = Story(order_saga())
    state, _ = step(story.state, event)
    assert state.history[1].fence == "9" * limits.FENCE_CHARS_MAX


@pytest.mark.parametrize(
    "event",
    [
        ActionSucceeded(step=0, output={"id": 1}, attempts=1, at_ms=5, **CALL),
        ActionFailed(step=1, error="400", attempts=2, at_ms=5, fence="1:2"),
        ActionUnknown(step=1, error="timeout", attempts=5, at_ms=5, duration_ms=30_000),
        CompensationSucceeded(step=0, attempts=3, at_ms=5, redrives=1, **CALL),
        CompensationExhausted(step=0, error="503", attempts=20, at_ms=5, **CALL),
    ],
)
def test_events_with_them_round_trip_through_their_plain_form(event):
    plain = event_to_dict(event)
    assert event_from_dict(msgpack.unpackb(msgpack.packb(plain))) == event


def test_the_plain_form_of_an_event_without_them_is_as_before():
    assert event_to_dict(ActionFailed(step=1, error="400", attempts=2, at_ms=5)) == {
        "type": "action_failed",
        "step": 1,
        "error": "400",
        "attempts": 2,
        "at_ms": 5,
    }


def test_records_round_trip_with_and_without_them():
    with_call = HistoryRecord(7, HistoryEvent.STEP_FAILED, step="a", attempts=1, error="x", **CALL)
    assert _record_to_dict(with_call) == {
        "at_ms": 7,
        "event": "step_failed",
        "step": "a",
        "attempts": 1,
        "error": "x",
        **CALL,
    }
    assert _record_from_dict(_record_to_dict(with_call)) == with_call
    old = {"at_ms": 7, "event": "step_succeeded", "step": "a", "attempts": 1}  # written before them
    assert _record_from_dict(old) == HistoryRecord(7, HistoryEvent.STEP_SUCCEEDED, step="a", attempts=1)
    assert _record_to_dict(_record_from_dict(old)) == old


def test_a_state_with_them_round_trips_through_msgpack():
    story = Story(order_saga())
    story.apply(ActionSucceeded(step=0, output={"order_id": "o-1", "total": 3}, attempts=1, at_ms=T0_MS + 5, **CALL))
    story.apply(ActionFailed(step=1, error="no stock", attempts=1, at_ms=T0_MS + 6, fence="3:41", duration_ms=1))
    plain = msgpack.unpackb(msgpack.packb(state_to_dict(story.state)))
    assert state_from_dict(plain) == story.state
    assert plain["history"][1] == {
        "at_ms": T0_MS + 5,
        "event": "step_succeeded",
        "step": "orders",
        "attempts": 1,
        **CALL,
    }
