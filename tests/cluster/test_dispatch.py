"""The dispatcher (cluster/executor/dispatch.py) on an in-memory link: who
makes each call by mode, leases, pinning, refusals, dropped reports."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.executor.dispatch import (
    Cancel,
    Dispatch,
    Dispatcher,
    Heartbeat,
    Report,
    Welcome,
    WorkerHello,
    WorkerRefused,
)
from coordinator.cluster.executor.http_caller import CallOutcome, CallSpec

SERVICE = {"name": "orders", "url": "http://127.0.0.1:9001"}


class Link:
    def __init__(self) -> None:
        self.sent: list = []
        self.closed = False
        self.problem = None

    def send(self, message) -> None:
        assert not self.closed, "sent after close"
        self.sent.append(message)

    def close(self, problem) -> None:
        self.closed, self.problem = True, problem

    def dispatches(self) -> list[Dispatch]:
        return [m for m in self.sent if isinstance(m, Dispatch)]


class LocalCallers:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, service, spec, operation) -> CallOutcome:
        self.calls.append(spec.idempotency_key)
        return CallOutcome("ok", output={"by": "leader"}, attempts=1)

    async def close(self) -> None:
        pass


def spec(key: str = "s1/create/action", release: str | None = None) -> CallSpec:
    return CallSpec(
        "orders", SERVICE["url"], "POST", "/orders", {"n": 1}, key, "3:7", 5.0, 3, 0.1, 1.0, release=release
    )


def dispatcher(mode: str = "remote", *, ids=("w1", "w2"), releases=(), lease_s=5.0) -> tuple[Dispatcher, LocalCallers]:
    local = LocalCallers()
    workers = WorkerSettings(ids=ids, releases=releases, heartbeat_s=min(1.0, lease_s / 2), lease_s=lease_s)
    d = Dispatcher(ExecutorSettings(mode=mode), workers, local, node_id="n1", clock=lambda: 1_700_000_000.0)
    d.start_leading("3:7")
    return d, local


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def answer(d: Dispatcher, session, dispatch: Dispatch, outcome: str = "ok", output=None, fence=None) -> None:
    d.report(session, Report(dispatch.dispatch_id, fence or dispatch.spec.fence, outcome, output, "", 1))


async def test_local_mode_calls_from_the_leader_and_refuses_workers() -> None:
    d, local = dispatcher("local")
    outcome = await d.call(SERVICE, spec(), "execute")
    assert outcome.output == {"by": "leader"} and local.calls == ["s1/create/action"]
    with pytest.raises(WorkerRefused) as refused:
        d.connect(WorkerHello("w1", "1.0"), Link())
    assert refused.value.problem.code == "local_mode"
    assert d.view()["workers"][0]["admitted"] is False


async def test_remote_mode_queues_until_a_worker_connects_and_never_calls_locally() -> None:
    d, local = dispatcher("remote")
    task = asyncio.ensure_future(d.call(SERVICE, spec(), "execute"))
    await settle()
    assert d.queued() == 1 and not task.done() and local.calls == []
    link = Link()
    session = d.connect(WorkerHello("w1", "1.0", capacity=4), link)
    assert isinstance(link.sent[0], Welcome)
    (dispatch,) = link.dispatches()
    assert dispatch.spec.idempotency_key == "s1/create/action" and dispatch.registration == {"url": SERVICE["url"]}
    answer(d, session, dispatch, output={"order_id": 7})
    outcome = await asyncio.wait_for(task, 1)
    assert outcome == CallOutcome("ok", output={"order_id": 7}, attempts=1)
    assert local.calls == [] and d.queued() == 0 and d.view()["workers"][0]["completed"] == 1


async def test_a_lost_lease_goes_to_another_worker_with_the_same_key() -> None:
    d, _ = dispatcher()
    one, two = Link(), Link()
    first = d.connect(WorkerHello("w1", "1.0", capacity=1), one)
    task = asyncio.ensure_future(d.call(SERVICE, spec(), "execute"))
    await settle()
    (leased,) = one.dispatches()
    second = d.connect(WorkerHello("w2", "1.0", capacity=1), two)
    assert two.dispatches() == []
    d.disconnected(first, "killed")
    (again,) = two.dispatches()
    assert again.spec.idempotency_key == leased.spec.idempotency_key and again.dispatch_id == leased.dispatch_id
    assert d.counters()["leases_lost_total"] == 1 and d.counters()["redispatches_total"] == 1
    answer(d, first, leased, output={"late": True})  # the lost session's report: dropped
    assert not task.done()
    answer(d, second, again, output={"done": 2})
    assert (await asyncio.wait_for(task, 1)).output == {"done": 2}


async def test_reports_not_held_or_with_another_fence_are_dropped_with_an_error() -> None:
    d, _ = dispatcher()
    link = Link()
    session = d.connect(WorkerHello("w1", "1.0"), link)
    task = asyncio.ensure_future(d.call(SERVICE, spec(), "execute"))
    await settle()
    (dispatch,) = link.dispatches()
    d.report(session, Report("3-7-999", "3:7", "ok"))
    answer(d, session, dispatch, fence="2:1")
    answer(d, session, dispatch, outcome="maybe")
    codes = [(m.code, m.dispatch_id) for m in link.sent if type(m).__name__ == "WorkerProblem"]
    assert codes == [("not_held", "3-7-999"), ("stale_fence", dispatch.dispatch_id), ("invalid", dispatch.dispatch_id)]
    assert not task.done() and not link.closed
    (_, redispatched) = link.dispatches()  # the malformed answer is no answer: leased again
    answer(d, session, redispatched, outcome="failed")
    assert (await asyncio.wait_for(task, 1)).kind == "failed"


async def test_refusals_say_why() -> None:
    d, _ = dispatcher(releases=("1.0",))
    cases = [
        (WorkerHello("w9", "1.0"), "unknown_worker"),
        (WorkerHello("w1", "2.0"), "release_refused"),
        (WorkerHello("W 1", "1.0"), "invalid"),
        (WorkerHello("w1", "1.0", capacity=0), "invalid"),
        (WorkerHello("w1", "1.0", services=("Not A Name",)), "invalid"),
    ]
    for hello, code in cases:
        with pytest.raises(WorkerRefused) as refused:
            d.connect(hello, Link())
        assert refused.value.problem.code == code, hello
    view = {w["id"]: w for w in d.view()["workers"]}
    assert view["w9"]["admitted"] is False and "not in [workers] ids" in view["w9"]["reason"]
    assert "2.0" in view["w1"]["reason"]
    d.stop_leading()
    with pytest.raises(WorkerRefused) as refused:
        d.connect(WorkerHello("w1", "1.0"), Link())
    assert refused.value.problem.code == "not_leader"


async def test_a_pinned_call_waits_for_its_release_even_in_auto_mode() -> None:
    d, local = dispatcher("auto")
    old = Link()
    d.connect(WorkerHello("w1", "1.0"), old)
    task = asyncio.ensure_future(d.call(SERVICE, spec(release="2.0"), "execute"))
    await settle()
    assert old.dispatches() == [] and local.calls == [] and d.queued() == 1
    new = Link()
    session = d.connect(WorkerHello("w2", "2.0"), new)
    (dispatch,) = new.dispatches()
    answer(d, session, dispatch, output=1)
    assert (await asyncio.wait_for(task, 1)).output == 1 and old.dispatches() == [] and local.calls == []


async def test_auto_mode_falls_back_to_the_leader_when_no_worker_can_take_the_call() -> None:
    d, local = dispatcher("auto")
    assert (await d.call(SERVICE, spec("a"), "execute")).output == {"by": "leader"}
    link = Link()
    session = d.connect(WorkerHello("w1", "1.0", services=("payments",)), link)
    assert (await d.call(SERVICE, spec("b"), "execute")).output == {"by": "leader"}  # w1 cannot reach orders
    d.disconnected(session, "gone")
    link = Link()
    session = d.connect(WorkerHello("w2", "1.0"), link)
    task = asyncio.ensure_future(d.call(SERVICE, spec("c"), "execute"))
    await settle()
    assert len(link.dispatches()) == 1
    d.disconnected(session, "killed mid-call")  # no worker left: the leader makes it
    assert (await asyncio.wait_for(task, 1)).output == {"by": "leader"}
    assert local.calls == ["a", "b", "c"]


async def test_capacity_and_cancel() -> None:
    d, _ = dispatcher()
    link = Link()
    session = d.connect(WorkerHello("w1", "1.0", capacity=1), link)
    first = asyncio.ensure_future(d.call(SERVICE, spec("k1"), "execute"))
    second = asyncio.ensure_future(d.call(SERVICE, spec("k2"), "execute"))
    await settle()
    assert [x.spec.idempotency_key for x in link.dispatches()] == ["k1"] and d.queued() == 1
    first.cancel()  # its workflow no longer needs it
    await settle()
    assert isinstance(link.sent[-2], Cancel) and link.sent[-2].dispatch_id == link.dispatches()[0].dispatch_id
    assert [x.spec.idempotency_key for x in link.dispatches()] == ["k1", "k2"]
    answer(d, session, link.dispatches()[1])
    assert (await asyncio.wait_for(second, 1)).kind == "ok"


async def test_a_silent_worker_loses_its_leases() -> None:
    d, _ = dispatcher(lease_s=0.2)
    quiet, alive = Link(), Link()
    d.connect(WorkerHello("w1", "1.0", capacity=1), quiet)
    task = asyncio.ensure_future(d.call(SERVICE, spec(), "execute"))
    await settle()
    assert len(quiet.dispatches()) == 1
    beating = d.connect(WorkerHello("w2", "1.0"), alive)
    for _ in range(40):
        d.heartbeat(beating, Heartbeat())
        await asyncio.sleep(0.05)
        if quiet.closed:
            break
    assert quiet.closed and quiet.problem.code == "lease_lost"
    (again,) = alive.dispatches()
    answer(d, beating, again, output="ok")
    assert (await asyncio.wait_for(task, 1)).output == "ok"
    assert not alive.closed


async def test_a_leader_that_did_not_run_for_a_lease_does_not_take_the_leases_of_workers_it_did_not_hear() -> None:
    """A leader stopped (SIGSTOP) or with its loop stalled past a lease wakes
    with its workers' heartbeats of that time unread: their leases stand;
    a worker silent after that still loses them."""
    d, _ = dispatcher(lease_s=0.2)
    link = Link()
    session = d.connect(WorkerHello("w1", "1.0"), link)
    task = asyncio.ensure_future(d.call(SERVICE, spec(), "execute"))
    await settle()
    (held,) = link.dispatches()
    d.heartbeat(session, Heartbeat())
    time.sleep(0.6)  # the loop does not run for three leases; the watch's tick is due long before
    await settle()
    assert not link.closed, link.problem
    d.heartbeat(session, Heartbeat())  # what the worker sent meanwhile, read now
    for _ in range(6):
        await asyncio.sleep(0.05)
        d.heartbeat(session, Heartbeat())
    assert not link.closed and d.leases_lost_total == 0
    answer(d, session, held, output="ok")
    assert (await asyncio.wait_for(task, 1)).output == "ok"
    await asyncio.sleep(0.5)  # silent now, the loop running: the lease is lost
    assert link.closed and link.problem.code == "lease_lost"


async def test_losing_leadership_ends_every_session_and_the_same_id_replaces_its_old_session() -> None:
    d, _ = dispatcher()
    old, new = Link(), Link()
    d.connect(WorkerHello("w1", "1.0"), old)
    d.connect(WorkerHello("w1", "1.0"), new)
    assert old.closed and old.problem.code == "replaced" and not new.closed
    d.stop_leading()
    assert new.closed and new.problem.code == "not_leader" and d.view()["workers"] == []


async def test_intake_is_suspended_only_when_every_worker_that_reaches_a_service_has_its_breaker_open() -> None:
    d, _ = dispatcher()
    a = d.connect(WorkerHello("w1", "1.0"), Link())
    b = d.connect(WorkerHello("w2", "1.0", services=("payments",)), Link())
    d.heartbeat(a, Heartbeat(("orders", "payments")))
    assert d.open_services() == {"orders"}
    d.heartbeat(b, Heartbeat(("payments",)))
    assert d.open_services() == {"orders", "payments"}
