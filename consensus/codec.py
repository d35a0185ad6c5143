"""Commands: the one shape every log entry has.

A command is a msgpack map ``{"v": version, "k": kind, "at": ms, "b": body}``:
``kind`` names what the state machine should do, ``at`` is the wall-clock
time (ms) the leader stamped when it proposed it - the only clock the state
machine ever sees - and ``body`` is any msgpack value. An encoded command
over :data:`ENTRY_BYTES_MAX` is refused before it reaches the log.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import CodecError, EntryTooLarge

__all__ = [
    "COMMAND_FORMAT_VERSION",
    "ENTRY_BYTES_MAX",
    "Command",
    "TERM_KIND",
    "encode_command",
    "encode_in_term",
    "decode_command",
    "decode_in_term",
    "pack",
    "pack_to",
    "unpack",
]

COMMAND_FORMAT_VERSION = 1
# Large enough for a definition at the HTTP body limit (1 MiB) plus framing.
ENTRY_BYTES_MAX = 2 * 1024 * 1024
_KIND = re.compile(r"[a-z][a-z0-9_.]{0,63}\Z")
_KEYS = frozenset({"v", "k", "at", "b"})
# The envelope a leader wraps each entry in: the term it proposed it in.
TERM_KIND = "raft.term"


@dataclass(frozen=True, slots=True)
class Command:
    kind: str
    body: Any = None
    at_ms: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise CodecError(f"bad command kind {self.kind!r}")
        if isinstance(self.at_ms, bool) or not isinstance(self.at_ms, int) or self.at_ms < 0:
            raise CodecError(f"bad command timestamp {self.at_ms!r}")


def pack(value: Any) -> bytes:
    """msgpack with binary kept apart from text; the only encoder we use."""
    return msgpack.packb(value, use_bin_type=True)


_STREAM_DEPTH = 3  # containers nearer the top than this are written part by part ...
_STREAM_LENGTH = 256  # ... and so are long ones at any depth


def pack_to(value: Any, write: Callable[[bytes], Any]) -> None:
    """Write ``pack(value)`` - the very same bytes - through ``write`` in
    pieces: the outer containers and every long one header first, then
    element by element, so no buffer ever holds the whole (as one ``pack``,
    a snapshot of 12,000 kept sagas took 30 MB of transient memory for a
    14 MB file)."""
    packer = msgpack.Packer(use_bin_type=True)

    def emit(item: Any, depth: int) -> None:
        is_map, is_array = isinstance(item, dict), isinstance(item, (list, tuple))
        if not (is_map or is_array) or (depth >= _STREAM_DEPTH and len(item) < _STREAM_LENGTH):
            write(packer.pack(item))
        elif is_map:
            write(packer.pack_map_header(len(item)))
            for key, element in item.items():
                write(packer.pack(key))
                emit(element, depth + 1)
        else:
            write(packer.pack_array_header(len(item)))
            for element in item:
                emit(element, depth + 1)

    emit(value, 0)


def unpack(data: bytes, *, max_bytes: int = ENTRY_BYTES_MAX) -> Any:
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes is over the limit of {max_bytes}")
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def encode_command(command: Command) -> bytes:
    try:
        data = pack({"v": COMMAND_FORMAT_VERSION, "k": command.kind, "at": command.at_ms, "b": command.body})
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"command body is not encodable: {exc}") from exc
    if len(data) > ENTRY_BYTES_MAX:
        raise EntryTooLarge(len(data), ENTRY_BYTES_MAX)
    return data


def decode_command(data: bytes) -> Command:
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("a command must be bytes")
    if len(data) > ENTRY_BYTES_MAX:
        raise CodecError(f"command of {len(data)} bytes is over the limit")
    try:
        raw = unpack(bytes(data))
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"not msgpack: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) != _KEYS:
        raise CodecError("a command is a map of exactly v, k, at, b")
    if raw["v"] != COMMAND_FORMAT_VERSION:
        raise CodecError(f"unsupported command version {raw['v']!r}")
    return Command(kind=raw["k"], body=raw["b"], at_ms=raw["at"])


def encode_in_term(term: int, entry: bytes) -> bytes:
    """Wrap one entry (a command or a batch) in the term its leader proposed it in.

    The applier refuses an envelope whose term is not the term of the log
    entry that holds it (:mod:`coordinator.consensus.applier`): only the leader of that
    term can have appended it there, so a command that outlived its
    leadership - PySyncObj keeps it queued, then forwards it to a later
    leader - can never take effect after its proposer was told the outcome
    is unknown and the client retried."""
    if isinstance(term, bool) or not isinstance(term, int) or term < 0:
        raise CodecError(f"bad term {term!r}")
    return pack({"v": COMMAND_FORMAT_VERSION, "k": TERM_KIND, "at": 0, "b": [term, entry]})


def decode_in_term(command: Command) -> tuple[int, bytes]:
    """The term and the wrapped entry of a :data:`TERM_KIND` command."""
    body = command.body
    if (
        not isinstance(body, list)
        or len(body) != 2
        or isinstance(body[0], bool)
        or not isinstance(body[0], int)
        or body[0] < 0
        or not isinstance(body[1], bytes)
    ):
        raise CodecError("a term envelope is [term, entry bytes]")
    return body[0], body[1]
