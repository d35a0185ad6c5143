import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.consensus import (
    ENTRY_BYTES_MAX,
    CodecError,
    Command,
    EntryTooLarge,
    decode_command,
    encode_command,
    pack,
    pack_to,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
kinds = st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True)


@given(kind=kinds, body=json_values, at_ms=st.integers(0, 2**53))
def test_round_trip(kind, body, at_ms):
    command = Command(kind, body, at_ms)
    assert decode_command(encode_command(command)) == command


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_codec_error(data):
    try:
        command = decode_command(data)
    except CodecError:
        return
    assert isinstance(command, Command)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # never-used msgpack byte
        pack([1, "x", 0, None]),
        pack({"v": 2, "k": "x", "at": 0, "b": None}),
        pack({"v": 1, "k": "Bad Kind", "at": 0, "b": None}),
        pack({"v": 1, "k": "x", "at": -1, "b": None}),
        pack({"v": 1, "k": "x", "at": 0, "b": None, "extra": 1}),
    ],
)
def test_malformed_commands_are_codec_errors(raw):
    with pytest.raises(CodecError):
        decode_command(raw)


def test_an_entry_over_the_limit_is_refused_before_the_log():
    with pytest.raises(EntryTooLarge) as info:
        encode_command(Command("service.put", "x" * ENTRY_BYTES_MAX))
    assert info.value.limit == ENTRY_BYTES_MAX


def test_no_pickle_in_a_command():
    data = encode_command(Command("service.put", {"name": "a"}, 5))
    assert msgpack.unpackb(data) == {"v": 1, "k": "service.put", "at": 5, "b": {"name": "a"}}


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=4), inner, max_size=6)),
    max_leaves=40,
)


def _streamed(value) -> tuple[bytes, int]:
    pieces: list[bytes] = []
    pack_to(value, pieces.append)
    return b"".join(pieces), max(len(p) for p in pieces)


@given(_values)
def test_pack_to_writes_exactly_the_bytes_of_pack(value):
    assert _streamed(value)[0] == pack(value)


def test_pack_to_never_holds_a_long_list_in_one_piece():
    state = {
        "format": 3,
        "sagas": {
            "sagas": [bytes(700)] * 10_000,
            "outcomes": {"p1": [{"index": i, "saga": "s"} for i in range(5_000)]},
        },
    }
    data, largest = _streamed(state)
    assert data == pack(state)
    assert largest < 1_000  # one kept saga at most, not the 7 MB whole
