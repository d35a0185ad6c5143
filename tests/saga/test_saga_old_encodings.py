"""Saga states made by earlier code: the same events give the same bytes,
and the bytes decode.

old_saga_states.json holds, for each story below, the saga state as a node
packs it into its snapshots (msgpack of `state_to_dict`) and the SHA-256 of
its API object (`to_api` as sorted compact JSON), as the code of commit
39a9d13 made them - before the saga's enums became StrEnums
(saga/state.py) and before the two machines shared their grammar
(grammar/). A node must read the snapshots it wrote before an upgrade, and
a replica that replays an old journal must reach the very state a replica
restored from an old snapshot holds: the texts the machine writes into a
state (errors, history) are part of it.

To remake the file after a deliberate change of format: run `stories()`
with the old code and write what `encoded()` gives for each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib

import pytest

from coordinator.consensus import pack, unpack
from coordinator.saga import (
    ActionFailed,
    ActionSucceeded,
    ActionUnknown,
    CompensationExhausted,
    CompensationSucceeded,
    DeadlineReached,
    HistoryEvent,
    Redrive,
    SagaStatus,
    SignalReceived,
    StepStatus,
    parse_definition,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)

OLD = json.loads((pathlib.Path(__file__).parent / "old_saga_states.json").read_text())
T0 = 1_714_564_800_000
DEFINITION = {
    "id": "order-42",
    "steps": [
        {
            "name": "orders",
            "service": "orders",
            "action": {"method": "POST", "path": "/orders", "body": {"qty": 3, "note": "é"}},
            "compensation": {
                "method": "POST",
                "path": "/orders/cancel",
                "body": {"order": "${steps.orders.output.id}"},
            },
        },
        {"name": "approval", "await": "approved", "timeout_s": 60},
        {"name": "payments", "service": "payments", "action": {"method": "POST", "path": "/pay"}},
        {"name": "notify", "service": "mail", "action": {"method": "PUT", "path": "/n"}},
    ],
    "timeout_s": 600,
}
SUBSTITUTING = {
    "id": "order-43",
    "steps": [
        {"name": "a", "service": "orders", "action": {"method": "POST", "path": "/a"}},
        {"name": "b", "service": "orders", "action": {"method": "POST", "path": "/b", "body": "${steps.a.output.x}"}},
    ],
}
STUCK = [
    ActionSucceeded(step=0, output={"id": 7, "lines": [1, 2.5, None, True]}, attempts=2, at_ms=T0 + 100),
    SignalReceived(name="approved", payload={"by": "bob"}, at_ms=T0 + 200),
    ActionFailed(step=2, error="402 declined", attempts=1, at_ms=T0 + 300),
    CompensationExhausted(step=0, error="503", attempts=20, at_ms=T0 + 400),
]


def stories() -> dict[str, tuple[dict, list]]:
    """name -> (definition, the events applied from its start at T0)."""
    first = ActionSucceeded(step=0, output={"id": 1}, attempts=1, at_ms=T0 + 1)
    approved = SignalReceived(name="approved", payload=None, at_ms=T0 + 2)
    return {
        "started": (DEFINITION, []),
        "running_buffered": (DEFINITION, [STUCK[0]]),
        "stuck": (DEFINITION, STUCK),
        "compensated": (
            DEFINITION,
            [*STUCK, Redrive(at_ms=T0 + 500), CompensationSucceeded(step=0, attempts=1, at_ms=T0 + 600, redrives=1)],
        ),
        "completed": (
            DEFINITION,
            [
                first,
                approved,
                ActionSucceeded(step=2, output=[1, "x"], attempts=1, at_ms=T0 + 3),
                ActionSucceeded(step=3, output=None, attempts=3, at_ms=T0 + 4),
            ],
        ),
        "timed_out": (DEFINITION, [first, approved, DeadlineReached(kind="saga", step=None, at_ms=T0 + 600_000)]),
        "await_timed_out": (
            DEFINITION,
            [
                first,
                DeadlineReached(kind="step", step=1, at_ms=T0 + 1 + 60_000),
                CompensationSucceeded(step=0, attempts=1, at_ms=T0 + 70_000),
            ],
        ),
        "unknown": (DEFINITION, [ActionUnknown(step=0, error="timeout", attempts=5, at_ms=T0 + 9)]),
        "output_too_large": (
            DEFINITION,
            [ActionSucceeded(step=0, output={"blob": "x" * 70_000}, attempts=1, at_ms=T0 + 5)],
        ),
        "output_not_json": (DEFINITION, [ActionSucceeded(step=0, output=[float("nan")], attempts=1, at_ms=T0 + 5)]),
        "error_too_long": (DEFINITION, [ActionFailed(step=0, error="e" * 5000, attempts=1, at_ms=T0 + 5)]),
        "substitution_failed": (SUBSTITUTING, [ActionSucceeded(step=0, output={"y": 1}, attempts=1, at_ms=T0 + 5)]),
    }


def run(definition: dict, events: list):
    state, _ = start(parse_definition(definition), T0)
    for event in events:
        state, _ = step(state, event)
    return state


def encoded(state) -> dict:
    api = json.dumps(to_api(state), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        "state_msgpack": base64.b64encode(pack(state_to_dict(state))).decode(),
        "api_json_sha256": hashlib.sha256(api.encode()).hexdigest(),
    }


def test_every_story_has_its_old_encoding() -> None:
    assert sorted(stories()) == sorted(OLD)


@pytest.mark.parametrize("name", sorted(OLD))
def test_the_same_events_give_the_same_bytes(name: str) -> None:
    assert encoded(run(*stories()[name])) == OLD[name]


@pytest.mark.parametrize("name", sorted(OLD))
def test_an_old_state_decodes_and_encodes_to_the_same_bytes(name: str) -> None:
    packed = base64.b64decode(OLD[name]["state_msgpack"])
    state = state_from_dict(unpack(packed))
    assert isinstance(state.status, SagaStatus)
    assert all(isinstance(s.status, StepStatus) for s in state.steps)
    assert encoded(state) == OLD[name]
    assert state == run(*stories()[name])


def test_the_old_states_cover_every_resting_status_and_history_event() -> None:
    states = [state_from_dict(unpack(base64.b64decode(old["state_msgpack"]))) for old in OLD.values()]
    resting = set(SagaStatus) - {SagaStatus.FAILED, SagaStatus.TIMED_OUT}  # passed through, never kept
    assert {s.status for s in states} == resting
    # An unknown step is the latest one, so its compensation starts at once.
    assert {s.status for state in states for s in state.steps} == set(StepStatus) - {StepStatus.UNKNOWN}
    assert {r.event for state in states for r in state.history} == set(HistoryEvent)


def test_members_format_as_their_values() -> None:
    assert str(SagaStatus.STUCK) == f"{SagaStatus.STUCK}" == "stuck"
    assert json.dumps({HistoryEvent.REDRIVE: StepStatus.SKIPPED}) == '{"redrive": "skipped"}'
    assert pack(SagaStatus.COMPENSATED) == pack("compensated")
