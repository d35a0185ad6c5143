"""Transaction states packed by earlier code decode, and pack again to the same bytes.

old_twopc_states.json holds transaction states as a node packs them into
its snapshots (msgpack of `state_to_dict`), one per status, with the
SHA-256 of their API object (`to_api` as sorted compact JSON). They were
made by the code of commit 39a9d13, before the two machines were brought
to one style. A node must read the snapshots it wrote before an upgrade,
and every replica must pack a state to the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib

import pytest

from coordinator.consensus import pack, unpack
from coordinator.twopc import TxStatus, state_from_dict, state_to_dict, to_api

OLD = json.loads((pathlib.Path(__file__).parent / "old_twopc_states.json").read_text())


def api_digest(api: dict) -> str:
    text = json.dumps(api, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(OLD))
def test_an_old_state_decodes_and_encodes_to_the_same_bytes(name: str) -> None:
    packed = base64.b64decode(OLD[name]["state_msgpack"])
    state = state_from_dict(unpack(packed))
    assert pack(state_to_dict(state)) == packed
    assert api_digest(to_api(state)) == OLD[name]["api_json_sha256"]


def test_the_old_states_cover_every_status() -> None:
    states = [state_from_dict(unpack(base64.b64decode(old["state_msgpack"]))) for old in OLD.values()]
    assert {s.status for s in states} == set(TxStatus)
