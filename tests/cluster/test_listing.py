"""Which workflows a list or a bulk action selects (cluster/stores/listing.py,
cluster/api/selection.py) and the rows a store gives them without decoding
(cluster/stores/kept.py), before and after a snapshot."""

import pytest

from coordinator.cluster.api.selection import format_cursor, parse_cursor, parse_filter, parse_time
from coordinator.cluster.core.errors import InvalidInput
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.stores.listing import Filter, select
from coordinator.consensus import Command

STATUSES = frozenset({"running", "stuck", "completed"})
ROWS = [
    (3000, "c", "stuck", ("pay",)),
    (1000, "a", "completed", ("pay", "ship")),
    (2000, "b", "running", ("ship",)),
    (2000, "b2", "stuck", ("pay",)),
    (4000, "d", "stuck", ("ship",)),
]


def test_counts_cover_every_filter_but_the_state_and_total_every_filter():
    page = select(ROWS, Filter(status="stuck", service="pay"), statuses=STATUSES, limit=10)
    assert page.ids == ["b2", "c"] and page.total == 2 and page.next is None
    assert page.counts == {"completed": 1, "running": 0, "stuck": 2}  # zeros included, state not applied


@pytest.mark.parametrize("descending", [False, True])
def test_pages_follow_each_other_without_gap_or_duplicate(descending):
    seen, after = [], None
    while True:
        page = select(ROWS, Filter(), statuses=STATUSES, limit=2, descending=descending, after=after)
        seen += page.ids
        if page.next is None:
            break
        after = page.next
    order = ["a", "b", "b2", "c", "d"]
    assert seen == (order[::-1] if descending else order)


def test_text_and_time_bounds():
    assert select(ROWS, Filter(id_contains="b"), statuses=STATUSES, limit=10).ids == ["b", "b2"]
    bounded = Filter(created_from_ms=2000, created_before_ms=4000)  # from inclusive, before exclusive
    assert select(ROWS, bounded, statuses=STATUSES, limit=10).ids == ["b", "b2", "c"]


def test_the_api_s_filter_values_are_checked_and_name_their_field():
    assert parse_time("created_after", "2026-12-04T14:00:00.000Z") == 1796392800000
    assert parse_time("created_after", "2026-12-04T15:00:00+01:00") == 1796392800000
    assert parse_time("created_after", "2026-12-04T14:00:00") == 1796392800000  # no offset: UTC
    assert parse_time("created_after", None) is None
    with pytest.raises(InvalidInput):
        parse_time("created_after", "")
    assert parse_cursor(format_cursor((1000, "a.b:c"))) == (1000, "a.b:c")
    where = parse_filter({"service": "pay", "q": "ord"}, "stuck", STATUSES)
    assert where == Filter(status="stuck", service="pay", id_contains="ord")
    bad = [
        ({"created_after": "yesterday"}, None, "created_after"),
        ({"created_before": 12}, None, "created_before"),
        ({"q": "x" * 129}, None, "q"),
        ({"service": ""}, None, "service"),
        ({}, "lost", "state"),
    ]
    for values, status, field in bad:
        with pytest.raises(InvalidInput) as caught:
            parse_filter(values, status, STATUSES)
        assert caught.value.extra["field"] == field, values
    for cursor in ("", "x", "1:", ":a", "1:a/b", "-1:a"):
        with pytest.raises(InvalidInput):
            parse_cursor(cursor)


def _saga(saga_id: str, service: str) -> dict:
    step = {"name": "s", "service": service, "action": {"method": "POST", "path": "/do"}}
    return {"id": saga_id, "steps": [step]}


def test_a_store_gives_rows_of_running_and_packed_workflows_and_a_snapshot_keeps_them():
    state = ClusterState()
    for index, name in enumerate(("pay", "ship"), start=1):
        state.apply(index, Command("service.put", {"name": name, "url": f"http://127.0.0.1:900{index}"}, 1))
    state.apply(3, Command("saga.submit", {"definition": _saga("done", "pay")}, 10))
    done = {"type": "action_succeeded", "step": 0, "output": None, "attempts": 1}
    state.apply(4, Command("saga.event", {"id": "done", "event": done}, 11))
    state.apply(5, Command("saga.submit", {"definition": _saga("open", "ship")}, 12))
    rows = sorted(state.sagas.items.rows())
    assert rows == [(10, "done", "completed", ("pay",)), (12, "open", "started", ("ship",))]
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert sorted(restored.sagas.items.rows()) == rows
