"""The journal truncates only where the logs conflict (Raft's rule).

PySyncObj 0.3.17 deletes every entry past an AppendEntries' prevLogIdx and
appends the message's entries again, also when they are the ones the
follower already holds and acknowledged; the delete record could reach the
disk before the re-appended entries were synced, and a power loss in
between lost acknowledged entries (found by the simulation with slow disks
and power losses). See consensus/journal.py.
"""

from pathlib import Path

from pysyncobj import pickle as pysyncobj_pickle

from coordinator.consensus.journal import MsgpackJournal
from coordinator.consensus.pysyncobj_log import _commit_cap


def regular(payload: bytes) -> bytes:
    """PySyncObj's in-memory framing of a command (see consensus/frames.py)."""
    return b"\x00" + pysyncobj_pickle.dumps((0, (payload,)))


def _journal(tmp_path: Path, entries: list[tuple[int, int]]) -> MsgpackJournal:
    journal = MsgpackJournal(str(tmp_path / "raft.journal"), fsync=False)
    for idx, term in entries:
        journal.add(regular(b"x%d" % idx), idx, term)
    journal.sync()
    return journal


def _held(journal: MsgpackJournal) -> list[tuple[int, int]]:
    return [(e[1], e[2]) for e in journal]


def _reloaded(tmp_path: Path, journal: MsgpackJournal) -> list[tuple[int, int]]:
    journal.sync()
    return _held(MsgpackJournal(str(tmp_path / "raft.journal"), fsync=False))


def test_entries_sent_again_are_neither_deleted_nor_written_again(tmp_path):
    journal = _journal(tmp_path, [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)])
    size = (tmp_path / "raft.journal").stat().st_size
    journal.deleteEntriesFrom(2)  # PySyncObj: prevLogIdx 2, the follower holds more
    journal.add(regular(b"x3"), 3, 2)
    journal.add(regular(b"x4"), 4, 2)
    journal.end_of_message()
    assert _held(journal) == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)], "entry 5 is kept: nothing conflicts"
    assert (tmp_path / "raft.journal").stat().st_size == size, "no delete record, no entry written twice"
    assert journal.truncations_avoided == 2
    assert _reloaded(tmp_path, journal) == _held(journal)


def test_the_log_is_cut_at_the_first_conflicting_entry(tmp_path):
    journal = _journal(tmp_path, [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)])
    journal.deleteEntriesFrom(2)
    journal.add(regular(b"x3"), 3, 2)  # the same
    journal.add(regular(b"y4"), 4, 3)  # a newer leader's entry at index 4
    journal.add(regular(b"y5"), 5, 3)
    journal.add(regular(b"y6"), 6, 3)
    journal.end_of_message()
    assert _held(journal) == [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (6, 3)]
    assert [e[0] for e in journal][3:] == [regular(b"y4"), regular(b"y5"), regular(b"y6")]
    assert _reloaded(tmp_path, journal) == _held(journal)


def test_a_heartbeat_behind_the_log_keeps_the_entries_past_it(tmp_path):
    journal = _journal(tmp_path, [(1, 1), (2, 1), (3, 2)])
    journal.deleteEntriesFrom(1)  # prevLogIdx 1, no entries
    journal.end_of_message()
    assert _held(journal) == [(1, 1), (2, 1), (3, 2)]
    journal.add(regular(b"x4"), 4, 2)  # a later append goes at the end, not at the old mark
    assert _held(journal) == [(1, 1), (2, 1), (3, 2), (4, 2)]


def test_an_append_past_the_end_clears_a_stale_mark(tmp_path):
    journal = _journal(tmp_path, [(1, 1), (2, 1), (3, 2)])
    journal.deleteEntriesFrom(1)
    journal.add(regular(b"x2"), 2, 1)
    journal.add(regular(b"x3"), 3, 2)
    journal.add(regular(b"x4"), 4, 2)  # past what was held: appended
    journal.add(regular(b"x5"), 5, 2)
    assert _held(journal) == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert _reloaded(tmp_path, journal) == _held(journal)


def _append(prev: int, entries: list[int], commit: int, **extra) -> dict:
    return {
        "type": "append_entries",
        "term": 3,
        "prevLogIdx": prev,
        "prevLogTerm": 2,
        "entries": [(b"x", i, 3) for i in entries],
        "commit_index": commit,
        **extra,
    }


def test_an_append_entries_commits_no_further_than_its_last_entry():
    assert _commit_cap(_append(5, [6, 7], 9))["commit_index"] == 7
    assert _commit_cap(_append(5, [], 9))["commit_index"] == 5
    assert _commit_cap(_append(5, [6, 7], 6))["commit_index"] == 6
    assert _commit_cap(_append(5, [], 0, transmission="finish"))["commit_index"] == 0
    assert _commit_cap(_append(5, [], 9, transmission="finish"))["commit_index"] == 6
    started = _append(5, [], 9, transmission="start")
    assert _commit_cap(started) is started
    other = {"type": "next_node_idx", "next_node_idx": 4}
    assert _commit_cap(other) is other
