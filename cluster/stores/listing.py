"""Which kept workflows a list or a bulk action selects: filters, order,
cursor paging and counts per state (``GET /v1/sagas``, ``GET
/v1/transactions``, ``POST /v1/sagas/redrive``).

Pure: it reads rows (created_at_ms, id, status, services) that
:meth:`KeptWorkflows.rows` gives without decoding a terminal workflow, and
answers ids. One pass over the rows: O(kept workflows) per request, which
retention bounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Filter", "Page", "Row", "select"]

Row = tuple[int, str, str, tuple[str, ...]]  # created_at_ms, id, status, services
Key = tuple[int, str]  # (created_at_ms, id): the order, and a cursor


@dataclass(frozen=True, slots=True)
class Filter:
    status: str | None = None
    service: str | None = None
    id_contains: str | None = None
    created_from_ms: int | None = None  # inclusive
    created_before_ms: int | None = None  # exclusive

    def matches_but_status(self, row: Row) -> bool:
        created_at_ms, workflow_id, _, services = row
        return (
            (self.service is None or self.service in services)
            and (self.id_contains is None or self.id_contains in workflow_id)
            and (self.created_from_ms is None or created_at_ms >= self.created_from_ms)
            and (self.created_before_ms is None or created_at_ms < self.created_before_ms)
        )


@dataclass(frozen=True, slots=True)
class Page:
    ids: list[str]
    counts: dict[str, int]  # every status -> matching every filter but status
    total: int  # matching every filter
    next: Key | None  # the cursor of the next page, None on the last


def select(
    rows: Iterable[Row],
    where: Filter,
    *,
    statuses: Iterable[str],
    limit: int,
    descending: bool = False,
    after: Key | None = None,
) -> Page:
    """The page of ``limit`` ids after the cursor ``after`` (exclusive) in
    (created_at_ms, id) order, newest first when ``descending``."""
    counts = dict.fromkeys(sorted(statuses), 0)
    keys: list[Key] = []
    for row in rows:
        if not where.matches_but_status(row):
            continue
        status = row[2]
        counts[status] = counts.get(status, 0) + 1
        if where.status is None or status == where.status:
            keys.append((row[0], row[1]))
    total = len(keys)
    keys.sort(reverse=descending)
    if after is not None:
        keys = [k for k in keys if (k < after if descending else k > after)]
    page = keys[:limit]
    more = len(keys) > limit
    return Page([workflow_id for _, workflow_id in page], counts, total, page[-1] if more else None)
