"""Transaction states made by earlier code: the same events give the same
bytes, and the bytes decode.

old_twopc_states.json holds, for each story below, the transaction state as
a node packs it into its snapshots (msgpack of `state_to_dict`) and the
SHA-256 of its API object (`to_api` as sorted compact JSON), as the code of
commit 39a9d13 made them - before the two machines were brought to one
style and shared their grammar (grammar/). A node must read the snapshots
it wrote before an upgrade, and a replica that replays an old journal must
reach the very state a replica restored from an old snapshot holds.

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
from coordinator.twopc import (
    Acknowledged,
    DeadlineReached,
    TxStatus,
    VoteReceived,
    parse_definition,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)

OLD = json.loads((pathlib.Path(__file__).parent / "old_twopc_states.json").read_text())
T0 = 1_714_564_800_000
SERVICES = ("inventory", "payments", "ledger")
DEFINITION = {
    "id": "order-42:tx",
    "participants": [
        {
            "service": service,
            "prepare": {"path": "/p", "body": {"n": 1.5, "b": [True, None]}},
            "commit": {"path": "/c"},
            "abort": {"path": "/a", "body": {"z": 1, "a": 2}},
        }
        for service in SERVICES
    ],
    "timeout_s": 30,
}


def stories() -> dict[str, list]:
    """name -> the events applied to DEFINITION from its start at T0."""
    all_yes = [VoteReceived(s, "yes", at_ms=T0 + 10 + i) for i, s in enumerate(SERVICES)]
    return {
        "preparing": [VoteReceived("inventory", "yes", at_ms=T0 + 10)],
        "committing": [*all_yes, Acknowledged("ledger", "commit", at_ms=T0 + 50)],
        "committed": all_yes + [Acknowledged(s, "commit", at_ms=T0 + 100 + i) for i, s in enumerate(SERVICES[::-1])],
        "aborting": [
            VoteReceived("inventory", "yes", at_ms=T0 + 10),
            VoteReceived("payments", "no", at_ms=T0 + 11),
            Acknowledged("payments", "abort", at_ms=T0 + 12),
        ],
        "aborted_by_deadline": [DeadlineReached(at_ms=T0 + 30_000)]
        + [Acknowledged(s, "abort", at_ms=T0 + 30_001 + i) for i, s in enumerate(SERVICES)],
    }


def run(events: list):
    state, _ = start(parse_definition(DEFINITION), T0)
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
    assert encoded(run(stories()[name])) == OLD[name]


@pytest.mark.parametrize("name", sorted(OLD))
def test_an_old_state_decodes_and_encodes_to_the_same_bytes(name: str) -> None:
    state = state_from_dict(unpack(base64.b64decode(OLD[name]["state_msgpack"])))
    assert encoded(state) == OLD[name]
    assert state == run(stories()[name])


def test_the_old_states_cover_every_status() -> None:
    states = [state_from_dict(unpack(base64.b64decode(old["state_msgpack"]))) for old in OLD.values()]
    assert {s.status for s in states} == set(TxStatus)
