"""Definitions survive the trip through plain data (the Raft log) unchanged."""

from __future__ import annotations

import json

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.twopc import (
    TransactionDefinition,
    definition_from_dict,
    definition_to_dict,
    limits,
    parse_definition,
    same_definition,
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
paths = st.from_regex(r"/[a-z0-9/]{0,10}", fullmatch=True).filter(lambda p: not p.startswith("//"))
call = st.fixed_dictionaries({"path": paths}, optional={"body": json_value})
definitions = st.builds(
    lambda services, calls, tx_id, timeout_s, release: {
        "participants": [{"service": s, "prepare": calls[0], "commit": calls[1], "abort": calls[2]} for s in services],
        **({"id": tx_id} if tx_id is not None else {}),
        **({"timeout_s": timeout_s} if timeout_s is not None else {}),
        **({"release": release} if release is not None else {}),
    },
    st.lists(st.from_regex(limits.SERVICE_NAME_PATTERN, fullmatch=True), min_size=1, max_size=4, unique=True),
    st.tuples(call, call, call),
    st.none() | st.from_regex(limits.TX_ID_PATTERN, fullmatch=True),
    st.none() | st.integers(1, 3600) | st.floats(0.001, 3600),
    st.none() | st.from_regex(limits.RELEASE_PATTERN, fullmatch=True),
)


@settings(max_examples=60, deadline=None, print_blob=True)
@given(definitions)
def test_round_trip_through_plain_data(raw: dict) -> None:
    parsed = parse_definition(raw)
    plain = definition_to_dict(parsed)
    assert definition_from_dict(plain) == parsed
    assert definition_from_dict(msgpack.unpackb(msgpack.packb(plain))) == parsed
    assert definition_from_dict(json.loads(json.dumps(plain))) == parsed
    assert same_definition(parse_definition(plain), parsed)
    assert ("release" in plain) == (parsed.release is not None) == ("release" in raw)
    assert isinstance(parsed, TransactionDefinition)
    hash(parsed)  # frozen all the way down
