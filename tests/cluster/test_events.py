"""The event hub (cluster/core/events.py): events derived from applied
commands, ids, resuming from the ring, reset, dropping a slow reader, the cap."""

import asyncio

import pytest

from coordinator.cluster.core import events
from coordinator.cluster.core.errors import InvalidInput, Overloaded, Unavailable
from coordinator.cluster.core.events import WHOLE_ENTRY, EventHub, format_id, parse_id
from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command, Rejection

ALL = frozenset({"workflow", "service", "role"})
STEPS = [{"name": "s0", "service": "a", "action": {"method": "POST", "path": "/do"}}]
SUCCEEDED = {"type": "action_succeeded", "step": 0, "output": {"ok": True}, "attempts": 1}


def hub_state(**limits) -> tuple[EventHub, ClusterState]:
    settings = {"ring_size": 100, "queue_size": 100, "subscribers_max": 4, **limits}
    hub = EventHub(**settings, clock=lambda: 1.5)
    state = ClusterState()
    state.observer = hub
    return hub, state


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def drain(subscription, timeout_s: float = 0.05) -> list[dict]:
    out = []
    while (event := await subscription.next(timeout_s)) is not None:
        out.append(event)
    return out


def saga_run(state: ClusterState, first: int = 2) -> None:
    """Entries first..first+2: a service, a saga, its one step succeeding."""
    state.apply(first, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1000))
    state.apply(first + 1, Command("saga.submit", {"definition": {"id": "s1", "steps": STEPS}}, 2000))
    state.apply(first + 2, Command("saga.event", {"id": "s1", "event": SUCCEEDED}, 3000))


def test_ids_round_trip_and_bad_ids_are_400():
    assert parse_id("12.3") == (12, 3) and format_id((12, 3)) == "12.3"
    assert parse_id("12") == (12, WHOLE_ENTRY) and format_id((12, WHOLE_ENTRY)) == "12"
    assert parse_id("0") == (0, -1) and format_id((0, -1)) == "0"  # from the start: before role events at 0
    for bad in ("", "x", "1.x", "-1", "1.-2", "1.2.3"):
        with pytest.raises(InvalidInput):
            parse_id(bad)


async def test_applied_commands_become_events_in_log_order_with_entry_ordinals():
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    subscription = hub.subscribe(since=parse_id("0"), kinds=ALL, workflow=None)
    saga_run(state)
    await settle()
    events = await drain(subscription)
    assert [(e["id"], e["kind"], e["type"]) for e in events] == [
        ("2.0", "service", "put"),
        ("3.0", "workflow", "started"),
        ("3.1", "workflow", "call_started"),
        ("4.0", "workflow", "step_succeeded"),
        ("4.1", "workflow", "completed"),
    ]
    assert events[1]["workflow"] == "s1" and events[1]["workflow_type"] == "saga"
    assert events[2]["call"] == {
        "number": 1,
        "step": "s0",
        "service": "a",
        "phase": "action",
        "idempotency_key": "s1/s0/action",
    }
    assert events[-1]["state"] == "completed" and events[-1]["index"] == 4


async def test_a_rejected_or_repeated_command_yields_nothing_and_a_batch_continues_the_ordinals():
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    subscription = hub.subscribe(since=None, kinds=ALL, workflow=None)
    state.apply(2, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1))
    with pytest.raises(Rejection):
        state.apply(3, Command("saga.submit", {"definition": {"id": "s", "steps": [{"name": "x"}]}}, 2))
    # two commands of one batch entry (same index): ordinals go on
    waiting = {"id": "s1", "steps": [{"name": "w", "await": "go"}, {"name": "w2", "await": "go-on"}]}
    state.apply(4, Command("saga.submit", {"definition": waiting}, 3))
    state.apply(4, Command("saga.submit", {"definition": waiting}, 3))  # the same again: nothing changes
    state.apply(4, Command("saga.signal", {"id": "s1", "name": "nobody-waits"}, 3))  # not taken: no change
    state.apply(4, Command("saga.signal", {"id": "s1", "name": "go"}, 3))
    await settle()
    events = await drain(subscription)
    assert [e["id"] for e in events] == ["2.0"] + [f"4.{n}" for n in range(len(events) - 1)]
    assert [e["type"] for e in events][1:3] == ["started", "signal"]


async def test_resume_after_an_id_gives_exactly_the_later_events_and_filters_apply():
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    saga_run(state)
    await settle()
    resumed = await drain(hub.subscribe(since=parse_id("3.0"), kinds=ALL, workflow=None))
    assert [e["id"] for e in resumed] == ["3.1", "4.0", "4.1"]
    only_services = await drain(hub.subscribe(since=parse_id("0"), kinds=frozenset({"service"}), workflow=None))
    assert [e["id"] for e in only_services] == ["2.0"]
    other = await drain(hub.subscribe(since=parse_id("0"), kinds=ALL, workflow="nope"))
    assert other == []


async def test_call_started_follows_the_calls_a_state_owes_sagas_and_transactions():
    """A step becoming the running one, each compensation in reverse order,
    a redriven compensation, 2PC prepares and phase-2 calls: one
    ``call_started`` each, after the history records of the same command."""
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    subscription = hub.subscribe(since=None, kinds=ALL, workflow=None)
    for name in ("a", "b"):
        state.apply(2, Command("service.put", {"name": name, "url": "http://127.0.0.1:9001"}, 1))
    steps = [
        {
            "name": n,
            "service": svc,
            "action": {"method": "POST", "path": "/do"},
            "compensation": {"method": "POST", "path": "/undo"},
        }
        for n, svc in (("s0", "a"), ("s1", "b"), ("s2", "a"))
    ]
    state.apply(3, Command("saga.submit", {"definition": {"id": "g", "steps": steps}}, 2))
    for step in (0, 1):
        state.apply(4, Command("saga.event", {"id": "g", "event": {**SUCCEEDED, "step": step}}, 3))
    failed = {"type": "action_failed", "step": 2, "error": "declined", "attempts": 1}
    state.apply(5, Command("saga.event", {"id": "g", "event": failed}, 4))
    exhausted = {"type": "compensation_exhausted", "step": 1, "error": "down", "attempts": 3, "redrives": 0}
    state.apply(6, Command("saga.event", {"id": "g", "event": exhausted}, 5))
    state.apply(7, Command("saga.redrive", {"id": "g"}, 6))
    tx = {
        "id": "t",
        "participants": [
            {"service": s, **{p: {"path": f"/{p}"} for p in ("prepare", "commit", "abort")}} for s in ("a", "b")
        ],
    }
    state.apply(8, Command("tx.submit", {"definition": tx}, 7))
    state.apply(9, Command("tx.event", {"id": "t", "event": {"type": "vote", "service": "a", "vote": "no"}}, 8))
    await settle()
    calls = [
        (e["workflow"], e["call"]["step"], e["call"]["phase"], e["id"])
        for e in await drain(subscription)
        if e["type"] == "call_started"
    ]
    assert calls == [
        ("g", "s0", "action", "3.1"),
        ("g", "s1", "action", "4.1"),
        ("g", "s2", "action", "4.3"),
        ("g", "s1", "compensation", "5.3"),  # s2's action failed: nothing of it to undo
        ("g", "s1", "compensation", "7.2"),  # stuck at 6, redriven at 7: the same call again
        ("t", "a", "prepare", "8.1"),
        ("t", "b", "prepare", "8.2"),
        ("t", "a", "abort", "9.2"),
        ("t", "b", "abort", "9.3"),
    ]


async def test_an_id_older_than_the_ring_gets_one_reset_then_live_events():
    hub, state = hub_state(ring_size=2)
    hub.attach(asyncio.get_running_loop())
    saga_run(state)
    await settle()
    assert [e.key for e in hub.ring] == [(4, 0), (4, 1)]
    subscription = hub.subscribe(since=parse_id("2.0"), kinds=ALL, workflow=None)
    state.apply(5, Command("service.put", {"name": "b", "url": "http://127.0.0.1:9002"}, 4000))
    await settle()
    events = await drain(subscription)
    assert [(e["kind"], e["id"]) for e in events] == [("reset", "4.1"), ("service", "5.0")]
    assert events[0]["lost_after"] == "2.0"


async def test_a_restored_snapshot_is_a_gap_for_live_readers_and_resumes():
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    saga_run(state)
    await settle()
    live = hub.subscribe(since=None, kinds=ALL, workflow=None)
    other = ClusterState()
    saga_run(other, first=2)
    other.apply(9, Command("service.put", {"name": "c", "url": "http://127.0.0.1:9003"}, 5000))
    state.restore(other.snapshot())
    await settle()
    assert [(e["kind"], e["lost_until"]) for e in await drain(live)] == [("reset", "9")]
    assert hub.subscribe(since=parse_id("4.1"), kinds=ALL, workflow=None).backlog[0]["kind"] == "reset"
    assert list(hub.subscribe(since=parse_id("9"), kinds=ALL, workflow=None).backlog) == []


async def test_a_slow_reader_is_dropped_and_its_queue_freed():
    hub, state = hub_state(queue_size=2)
    hub.attach(asyncio.get_running_loop())
    slow = hub.subscribe(since=None, kinds=ALL, workflow=None)
    fast = hub.subscribe(since=None, kinds=ALL, workflow=None)
    read = []
    for n in range(2, 6):  # four events; the fast reader keeps up, the slow one reads none
        state.apply(n, Command("service.put", {"name": f"s{n}", "url": "http://127.0.0.1:9001"}, n))
        await settle()
        read += await drain(fast, 0.001)
    assert slow.end == "dropped" and len(slow.queue) == 0 and slow not in hub.subscribers
    assert hub.dropped == 1 and fast.end is None and len(read) == 4
    assert await slow.next(0.01) is None


async def test_the_subscriber_cap_is_429_and_leaving_frees_a_place():
    hub, _ = hub_state(subscribers_max=2)
    first = hub.subscribe(None, ALL, None)
    hub.subscribe(None, ALL, None)
    with pytest.raises(Overloaded):
        hub.subscribe(None, ALL, None)
    hub.unsubscribe(first)
    hub.subscribe(None, ALL, None)


async def test_role_events_sort_after_the_entry_applied_before_them_and_close_ends_streams():
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    hub.role(0, 0)  # before any entry: id 0.0, which "0" (from the start) includes
    await settle()
    assert [e["id"] for e in await drain(hub.subscribe(parse_id("0"), ALL, None))] == ["0.0"]
    subscription = hub.subscribe(None, ALL, None)
    state.apply(2, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1))
    hub.role(2, 5)
    hub.role(2, 5)  # no change: no event
    hub.role(0, 6)
    await settle()
    events = await drain(subscription)
    assert [(e["id"], e["kind"], e.get("role")) for e in events] == [
        ("2.0", "service", None),
        ("2.1", "role", "leader"),
        ("2.2", "role", "follower"),
    ]
    hub.close()
    assert subscription.end == "shutdown" and await subscription.next(1.0) is None
    with pytest.raises(Unavailable):  # a stream opened while the node stops would hold its HTTP server
        hub.subscribe(None, ALL, None)


async def test_a_stuck_loop_keeps_a_bounded_queue_and_readers_get_a_reset(monkeypatch):
    monkeypatch.setattr(events, "PENDING_MAX", 3)
    hub, state = hub_state()  # not attached yet: nothing is handed over
    for n in range(2, 12):
        state.apply(n, Command("service.put", {"name": f"s{n}", "url": "http://127.0.0.1:9001"}, n))
        assert len(hub._pending) <= 3
    hub.attach(asyncio.get_running_loop())
    await settle()
    assert [e.key for e in hub.ring] == [(10, 0), (11, 0)] and hub.floor == (9, 0)
    reset, *rest = await drain(hub.subscribe(parse_id("2.0"), ALL, None))
    assert (reset["kind"], reset["lost_after"], [e["id"] for e in rest]) == ("reset", "2.0", [])
    assert [e["id"] for e in await drain(hub.subscribe(parse_id("9.0"), ALL, None))] == ["10.0", "11.0"]


async def test_resuming_on_a_node_behind_the_id_skips_what_the_reader_has():
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    subscription = hub.subscribe(parse_id("4.1"), ALL, None)  # read elsewhere up to 4.1
    saga_run(state)  # entries 2 to 4, this node applies them only now
    state.apply(5, Command("service.put", {"name": "b", "url": "http://127.0.0.1:9002"}, 4000))
    await settle()
    assert [e["id"] for e in await drain(subscription)] == ["5.0"]


def test_a_node_encodes_each_event_once_for_all_its_streams():
    import collections

    from coordinator.cluster.api.http_events import _frame

    frames = collections.OrderedDict()
    event = {"id": "7.0", "index": 7, "kind": "workflow", "type": "started"}
    first = _frame(event, frames)
    assert first.startswith(b"id: 7.0\nevent: workflow\ndata: {") and first.endswith(b"\n\n")
    assert _frame(dict(event), frames) is first  # the second stream gets the same bytes
    reset = {"id": "9", "kind": "reset", "type": "reset", "lost_after": "2.0"}
    _frame(reset, frames)  # a reader's own: not kept for others
    assert list(frames) == ["7.0"]


async def test_workflow_events_are_rendered_only_when_sent_and_whole_when_they_are():
    """A node derives the events of every command it applies; a workflow
    event's object is built only when a stream sends it - the same object,
    key for key, whenever that is."""
    hub, state = hub_state()
    hub.attach(asyncio.get_running_loop())
    saga_run(state)
    await settle()
    workflow_events = [e for e in hub.ring if e.kind == "workflow"]
    assert len(workflow_events) == 4 and all(e._data is None for e in workflow_events)  # none read yet
    assert hub.finished == 1  # counted as applied, not as read
    events = await drain(hub.subscribe(since=parse_id("0"), kinds=ALL, workflow="s1"))
    assert events[0] == {
        "id": "3.0",
        "index": 3,
        "kind": "workflow",
        "workflow": "s1",
        "workflow_type": "saga",
        "type": "started",
        "state": "started",
        "at": "1970-01-01T00:00:02.000Z",
        "record": {"at": "1970-01-01T00:00:02.000Z", "event": "started"},
    }
    assert list(events[1]) == ["id", "index", "kind", "workflow", "workflow_type", "type", "state", "at", "call"]
    assert events[1]["at"] == "1970-01-01T00:00:02.000Z" and events[1]["state"] == "started"
    assert events[2]["record"] == {
        "at": "1970-01-01T00:00:03.000Z",
        "event": "step_succeeded",
        "step": "s0",
        "attempts": 1,
    }
    assert all(e._data is not None for e in workflow_events)
    again = await drain(hub.subscribe(since=parse_id("0"), kinds=ALL, workflow=None))
    assert [e for e in again if e["kind"] == "workflow"] == events  # built once, sent as built


async def test_with_no_stream_open_events_reach_the_loop_in_batches_and_a_new_stream_first_takes_them_all():
    hub, state = hub_state(ring_size=1000)
    hub.attach(asyncio.get_running_loop())
    state.apply(2, Command("service.put", {"name": "a", "url": "http://127.0.0.1:9001"}, 1000))
    await settle()
    assert len(hub._pending) == 1 and not hub._drain_scheduled  # no stream: the loop is not woken for one
    for n in range(events.DRAIN_BATCH):
        state.apply(3 + n, Command("service.put", {"name": f"s{n}", "url": "http://127.0.0.1:9001"}, 1000))
    await settle()
    assert not hub._pending and len(hub._ring) == events.DRAIN_BATCH + 1  # a batch went, unread
    state.apply(999, Command("service.put", {"name": "late", "url": "http://127.0.0.1:9001"}, 1000))
    subscription = hub.subscribe(since=parse_id("998"), kinds=ALL, workflow=None)
    assert [e["service"] for e in await drain(subscription)] == ["late"]  # drained by the new stream
    state.apply(1000, Command("service.put", {"name": "live", "url": "http://127.0.0.1:9001"}, 1000))
    await settle()
    assert [e["service"] for e in await drain(subscription)] == ["live"]  # a stream is open: at once
