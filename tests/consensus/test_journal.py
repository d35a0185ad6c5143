"""The msgpack journal: what PySyncObj stores survives a reopen, with no pickle in the file."""

import os
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj import pickle as pysyncobj_pickle

from coordinator.consensus.frames import frame_to_record, record_to_frame
from coordinator.consensus.journal import MAGIC, MsgpackJournal


def regular(payload: bytes, method_id: int = 0) -> bytes:
    return b"\x00" + pysyncobj_pickle.dumps((method_id, (payload,)))


NO_OP = b"\x01"


def test_frames_round_trip_exactly():
    for frame in (NO_OP, regular(b""), regular(b"\x00\xff" * 100), regular(b"abc", 3)):
        assert record_to_frame(frame_to_record(frame)) == frame


def test_frames_refuse_what_this_project_never_writes():
    with pytest.raises(ValueError):
        frame_to_record(b"\x02" + pysyncobj_pickle.dumps(["add", "x", None]))
    with pytest.raises(ValueError):
        frame_to_record(b"\x00" + pysyncobj_pickle.dumps((0, ("not bytes",))))


def test_reopen_keeps_entries_commit_term_and_vote(tmp_path):
    path = str(tmp_path / "j")
    journal = MsgpackJournal(path)
    journal.add(NO_OP, 1, 0)
    journal.add(regular(b"a"), 2, 1)
    journal.add(regular(b"b"), 3, 1)
    journal.setRaftCommitIndex(3)
    journal.setCurrentTerm(4, "127.0.0.1:7102")
    journal._destroy()

    again = MsgpackJournal(path)
    assert [again[i] for i in range(len(again))] == [(NO_OP, 1, 0), (regular(b"a"), 2, 1), (regular(b"b"), 3, 1)]
    assert again.getRaftCommitIndex() == 3
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (4, "127.0.0.1:7102")


def test_no_pickle_can_be_loaded_from_the_file(tmp_path, monkeypatch):
    path = str(tmp_path / "j")
    journal = MsgpackJournal(path)
    journal.add(regular(b"payload"), 1, 1)
    journal._destroy()
    data = open(path, "rb").read()
    assert data.startswith(MAGIC)
    assert b"_codecs" not in data and b"\x80\x02" not in data
    # Loading never unpickles: make every unpickling fail and reopen.
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads called"))
    monkeypatch.setattr(pysyncobj_pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads called"))
    assert MsgpackJournal(path)[0] == (regular(b"payload"), 1, 1)


def test_a_torn_tail_is_cut_off(tmp_path):
    path = str(tmp_path / "j")
    journal = MsgpackJournal(path)
    journal.add(regular(b"kept"), 1, 1)
    journal._destroy()
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00")  # a record header cut short
    again = MsgpackJournal(path)
    assert len(again) == 1 and again[0][0] == regular(b"kept")
    again.add(regular(b"next"), 2, 1)
    again._destroy()
    assert [e[1] for e in MsgpackJournal(path)._entries] == [1, 2]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.binary(max_size=30)),
        st.tuples(st.just("delete_from"), st.integers(0, 10)),
        st.tuples(st.just("delete_to"), st.integers(0, 10)),
        st.tuples(st.just("clear"), st.none()),
        st.tuples(st.just("end_of_message"), st.none()),
        st.tuples(st.just("commit"), st.integers(1, 100)),
        st.tuples(st.just("term"), st.integers(0, 100)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_any_operation_sequence_reloads_to_the_same_journal(tmp_path_factory, ops):
    path = str(tmp_path_factory.mktemp("j") / "journal")
    journal = MsgpackJournal(path, fsync=False)
    model: list = []
    next_index, term = 1, 0
    mark = None  # where PySyncObj asked to delete from: cut at the first entry that differs
    for op, arg in ops:
        if op == "add":
            journal.add(regular(arg), next_index, term)
            if mark is not None and mark < len(model) and model[mark][1:] == (next_index, term):
                mark += 1  # the same entry, sent again: kept, not written
            else:
                if mark is not None:
                    del model[mark:]
                mark = None
                model.append((regular(arg), next_index, term))
            next_index += 1
        elif op == "delete_from":
            journal.deleteEntriesFrom(arg)
            if arg < len(model):
                mark, next_index = arg, model[arg][1]  # the leader sends again from there
        elif op == "end_of_message":
            journal.end_of_message()
            mark = None
            next_index = model[-1][1] + 1 if model else next_index
        elif op == "delete_to":
            journal.deleteEntriesTo(arg)
            model = model[arg:]
            mark = None
            next_index = model[-1][1] + 1 if model else next_index
        elif op == "clear":
            journal.clear()
            model = []
            mark = None
        elif op == "commit":
            journal.setRaftCommitIndex(arg)
        else:
            term = arg
            journal.setCurrentTerm(arg, None)
    assert list(journal._entries) == model
    commit, current_term = journal.getRaftCommitIndex(), journal.getCurrentTerm()
    journal._destroy()
    again = MsgpackJournal(path, fsync=False)
    assert list(again._entries) == model
    assert again.getRaftCommitIndex() == commit and again.getCurrentTerm() == current_term
    again._destroy()
    os.remove(path)


def test_group_commit_one_fsync_covers_every_entry_written_since_the_last(tmp_path):
    journal = MsgpackJournal(str(tmp_path / "j"))
    for n in range(5):
        journal.add(regular(bytes([n])), n + 1, 1)
    assert journal.syncs == 0
    journal.sync()
    assert journal.syncs == 1
    journal.sync()  # nothing new: no fsync
    journal.setRaftCommitIndex(5)  # a commit index need not be durable
    journal.sync()
    assert journal.syncs == 1
    journal.setCurrentTerm(2, "n2")  # a vote is durable at once
    assert journal.syncs == 2
