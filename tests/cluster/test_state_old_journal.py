"""A journal written before a change applies as it did: the same answers, the same state.

old_journal.json holds about 300 saga, transaction and registry commands
(valid and malformed definitions, events that apply, late and junk events,
signals, redrives, prunes), each with the answer the code of commit 39a9d13
gave when it applied it (the value, or the rejection's code), and the
digest of the state it reached. Every replica must apply an old journal
exactly as before: a command that was accepted as a no-op and is now
rejected (or the reverse) moves the command sequence, hence the revisions
and outcome indexes, and the replicas diverge.
"""

from __future__ import annotations

import json
import pathlib

from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command, Rejection

OLD = json.loads((pathlib.Path(__file__).parent / "old_journal.json").read_text())


def test_an_old_journal_gets_the_same_answers_and_reaches_the_same_state() -> None:
    state = ClusterState()
    for index, entry in enumerate(OLD["journal"], start=2):
        command = Command(entry["kind"], entry["body"], entry["at_ms"])
        try:
            answer = ["ok", json.loads(json.dumps(state.apply(index, command)))]
        except Rejection as rejection:
            answer = ["rejected", rejection.code]
        assert answer == entry["answer"], (index, entry["kind"], entry["body"])
    assert state.sequence == OLD["sequence"]
    assert state.digest() == OLD["digest"]
