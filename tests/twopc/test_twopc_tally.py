"""Counting votes: one no aborts, commit needs every yes."""

from __future__ import annotations

import pytest

from coordinator.twopc import InputError, Tally, Vote, tally

SERVICES = ("a", "b", "c")


@pytest.mark.parametrize(
    "votes, expected",
    [
        ({}, Tally.PENDING),
        ({"a": Vote.YES, "b": Vote.YES}, Tally.PENDING),
        ({"a": Vote.YES, "b": None, "c": Vote.YES}, Tally.PENDING),
        ({"a": Vote.YES, "b": Vote.YES, "c": Vote.YES}, Tally.ALL_YES),
        ({"c": Vote.NO}, Tally.ANY_NO),
        ({"a": Vote.YES, "b": Vote.YES, "c": Vote.NO}, Tally.ANY_NO),
        ({"a": "yes", "b": "yes", "c": "yes"}, Tally.ALL_YES),
        ({"a": Vote.YES, "b": Vote.YES, "ghost": Vote.YES}, Tally.PENDING),
        ({"a": Vote.YES, "b": Vote.YES, "c": Vote.YES, "ghost": Vote.NO}, Tally.ALL_YES),
    ],
)
def test_tally(votes: dict, expected: Tally) -> None:
    assert tally(SERVICES, votes) == expected


def test_no_participants_is_a_bug() -> None:
    with pytest.raises(InputError):
        tally((), {})
