"""The errors of the consensus edge.

Every failure of a proposal answers one question first: was the entry
written to the log or not?

    ConsensusError
    ├── NotWritten            the entry is definitely not in the log; safe to retry
    │   ├── NotLeader         this node is not the leader (``leader`` is a hint or None)
    │   ├── EntryTooLarge     refused before it reached the log
    │   └── QueueFull         PySyncObj's command queue was full
    └── OutcomeUnknown        the entry may or may not commit (leader changed,
                              unknown outcome, timeout): deduplicate, never assume

PySyncObj's ``FAIL_REASON`` codes are mapped to these in one place,
:func:`error_for_fail_reason`. A command the state machine *rejects* is not an
error here: it is applied as a recorded rejection and returned as
:class:`coordinator.consensus.Rejected`.
"""

from __future__ import annotations

__all__ = [
    "ConsensusError",
    "NotWritten",
    "NotLeader",
    "EntryTooLarge",
    "QueueFull",
    "OutcomeUnknown",
    "CodecError",
    "error_for_fail_reason",
]


class ConsensusError(Exception):
    """Root of the consensus errors."""


class NotWritten(ConsensusError):
    """The entry is definitely not in the log."""


class NotLeader(NotWritten):
    """This node is not the leader; ``leader`` is the Raft address it knows, or None."""

    def __init__(self, leader: str | None, message: str = "this node is not the leader") -> None:
        super().__init__(message)
        self.leader = leader


class EntryTooLarge(NotWritten):
    """The encoded entry is over ``ENTRY_BYTES_MAX``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"entry of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class QueueFull(NotWritten):
    """PySyncObj's command queue is full."""


class OutcomeUnknown(ConsensusError):
    """The entry may or may not commit. Never report this as 'not written'."""


class CodecError(ValueError):
    """Bytes that are not a valid command."""


# PySyncObj FAIL_REASON codes (pysyncobj.config.FAIL_REASON), kept here as
# plain numbers so this module does not import pysyncobj.
_SUCCESS, _QUEUE_FULL, _MISSING_LEADER, _DISCARDED = 0, 1, 2, 3
_NOT_LEADER, _LEADER_CHANGED, _REQUEST_DENIED, _UNKNOWN_OUTCOME = 4, 5, 6, 7


def error_for_fail_reason(code: int, leader: str | None = None) -> ConsensusError:
    """Map a PySyncObj ``FAIL_REASON`` (other than SUCCESS) to our error.

    DISCARDED means the log position of our entry now holds an entry of
    another term: ours was overwritten and will never commit there (a
    PySyncObj entry lives at exactly one position).
    """
    assert code != _SUCCESS, "SUCCESS is not an error"
    if code == _QUEUE_FULL:
        return QueueFull("the consensus command queue is full")
    if code in (_MISSING_LEADER, _NOT_LEADER):
        return NotLeader(leader, "no leader accepted the entry")
    if code == _DISCARDED:
        return NotWritten("the entry was overwritten by a new leader")
    if code == _REQUEST_DENIED:
        return NotWritten("the leader denied the request")
    if code == _LEADER_CHANGED:
        return OutcomeUnknown("the leader changed while the entry was in flight")
    if code == _UNKNOWN_OUTCOME:
        return OutcomeUnknown("the consensus layer cannot tell whether the entry committed")
    return OutcomeUnknown(f"unexpected consensus failure code {code}")
