"""What the executor reports of each participant call - the fence it sent
and how long the call took - lands in the details of the vote's or the
acknowledgement's history record; without them the record is as before."""

from __future__ import annotations

import msgpack
import pytest

from coordinator.twopc import (
    Acknowledged,
    InputError,
    VoteReceived,
    limits,
    parse_definition,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)

T0_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
DEFINITION = parse_definition(
    {
        "id": "order-42:tx",
        "participants": [
            {"service": s, "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/a"}}
            for s in ("inventory", "payments")
        ],
        "timeout_s": 30,
    }
)


def committed(with_calls: bool):
    """A transaction that committed; its calls reported (or not)."""
    state, _ = start(DEFINITION, T0_MS)
    events = [
        VoteReceived("inventory", "yes", at_ms=T0_MS + 10, fence="3:41", duration_ms=8),
        VoteReceived("payments", "yes", at_ms=T0_MS + 20, fence="3:41", duration_ms=17),
        Acknowledged("payments", "commit", at_ms=T0_MS + 30, fence="3:41", duration_ms=5),
        Acknowledged("inventory", "commit", at_ms=T0_MS + 40, fence="4:60", duration_ms=1234),
    ]
    for event in events:
        if not with_calls:
            event = type(event)(event.service, getattr(event, "vote", getattr(event, "phase", None)), event.at_ms)
        state, _ = step(state, event)
    return state


def test_votes_and_acks_record_their_fence_and_duration():
    history = to_api(committed(with_calls=True))["history"]
    at = "2024-05-01T12:00:00.0"
    assert history == [
        {"at": at + "00Z", "event": "started"},
        {"at": at + "10Z", "event": "vote", "service": "inventory", "vote": "yes", "fence": "3:41", "duration_ms": 8},
        {"at": at + "20Z", "event": "vote", "service": "payments", "vote": "yes", "fence": "3:41", "duration_ms": 17},
        {"at": at + "20Z", "event": "decided", "decision": "commit", "reason": "all_voted_yes"},
        {
            "at": at + "30Z",
            "event": "acknowledged",
            "service": "payments",
            "phase": "commit",
            "fence": "3:41",
            "duration_ms": 5,
        },
        {
            "at": at + "40Z",
            "event": "acknowledged",
            "service": "inventory",
            "phase": "commit",
            "fence": "4:60",
            "duration_ms": 1234,
        },
        {"at": at + "40Z", "event": "committed"},
    ]


def test_without_them_the_records_are_as_before():
    plain = state_to_dict(committed(with_calls=False))
    assert plain["history"][1] == {"at_ms": T0_MS + 10, "event": "vote", "service": "inventory", "vote": "yes"}
    assert all("fence" not in r and "duration_ms" not in r for r in plain["history"])


def test_only_the_reported_one_is_recorded():
    state, _ = start(DEFINITION, T0_MS)
    state, _ = step(state, VoteReceived("inventory", "no", at_ms=T0_MS + 1, duration_ms=0))
    assert dict(state.history[1].details) == {"service": "inventory", "vote": "no", "duration_ms": 0}
    state, _ = step(state, Acknowledged("payments", "abort", at_ms=T0_MS + 2, fence="7:7"))
    assert dict(state.history[-1].details) == {"service": "payments", "phase": "abort", "fence": "7:7"}


@pytest.mark.parametrize("with_calls", [True, False])
def test_states_round_trip_with_and_without_them(with_calls):
    state = committed(with_calls)
    assert state_from_dict(msgpack.unpackb(msgpack.packb(state_to_dict(state)))) == state


BAD = [
    ({"fence": ""}, "fence"),
    ({"fence": "x" * (limits.FENCE_CHARS_MAX + 1)}, "fence"),
    ({"fence": "3:\t41"}, "fence"),
    ({"fence": 341}, "fence"),
    ({"duration_ms": -1}, "duration_ms"),
    ({"duration_ms": limits.CALL_DURATION_MS_MAX + 1}, "duration_ms"),
    ({"duration_ms": 2.5}, "duration_ms"),
    ({"duration_ms": False}, "duration_ms"),
]


@pytest.mark.parametrize("bad, name", BAD)
def test_a_bad_fence_or_duration_is_an_input_error(bad, name):
    with pytest.raises(InputError, match=name):
        VoteReceived("inventory", "yes", at_ms=T0_MS, **bad)
    with pytest.raises(InputError, match=name):
        Acknowledged("inventory", "commit", at_ms=T0_MS, **bad)


@pytest.mark.parametrize(
    "details", [{"fence": 7}, {"fence": ""}, {"duration_ms": "7"}, {"duration_ms": -7}, {"service": 7}]
)
def test_a_state_with_a_bad_detail_does_not_decode(details):
    plain = state_to_dict(committed(with_calls=True))
    plain["history"][1].update(details)
    with pytest.raises(InputError):
        state_from_dict(plain)
