"""Counting prepare votes: the only place that decides what votes mean.

One "no" is enough to abort; "commit" needs a "yes" from every participant.
Votes from services that are not participants do not count.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from .errors import InputError


class Vote(enum.StrEnum):
    YES = "yes"
    NO = "no"


class Tally(enum.StrEnum):
    PENDING = "pending"
    ALL_YES = "all_yes"
    ANY_NO = "any_no"


def tally(services: Iterable[str], votes: Mapping[str, Vote | None]) -> Tally:
    """PENDING until every participant votes yes (ALL_YES) or one votes no."""
    pending = False
    counted = 0
    for service in services:
        counted += 1
        vote = votes.get(service)
        if vote == Vote.NO:
            return Tally.ANY_NO
        if vote != Vote.YES:
            pending = True
    if counted == 0:
        raise InputError("a transaction has at least one participant")
    return Tally.PENDING if pending else Tally.ALL_YES
