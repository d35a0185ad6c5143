"""Recording participants, driven over loopback HTTP like the coordinator does."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from coordinator.chaos.participants import (
    Chaos,
    Effect,
    Fail,
    Flaky,
    Ok,
    RecordingService,
    RunningService,
    Script,
    Slow,
    Vote,
    deterministic_id,
    duplicate_effects,
    effects_by_key,
    fetch_effects,
    put_script,
    start_recording_service,
)

TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
async def running() -> AsyncIterator[RunningService]:
    service = await start_recording_service("orders")
    async with service:
        yield service


def headers(key: str, fence: str | None = "1:1") -> dict[str, str]:
    result = {"Idempotency-Key": key}
    if fence is not None:
        result["Coordinator-Fence"] = fence
    return result


async def call(
    session: aiohttp.ClientSession,
    running: RunningService,
    path: str,
    key: str | None,
    body: object = None,
    fence: str | None = "1:1",
    timeout_s: float = 5,
) -> tuple[int, dict, bool]:
    sent = {} if key is None else headers(key, fence)
    async with session.post(
        running.url + path, json=body, headers=sent, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as response:
        answer = await response.json()
        return response.status, answer, response.headers.get("Idempotent-Replayed") == "true"


async def test_ok_answers_output_and_records_one_effect(session, running) -> None:
    running.service.set_script(Script(paths={"/orders": Ok({"order_id": "ord-1"})}))

    status, body, replayed = await call(session, running, "/orders", "saga-1/create-order/action", {"sku": "W-1"})

    assert (status, replayed) == (200, False)
    assert body == {
        "service": "orders",
        "key": "saga-1/create-order/action",
        "id": deterministic_id("orders", "saga-1/create-order/action"),
        "order_id": "ord-1",
    }
    [effect] = running.service.effects
    assert (effect.service, effect.method, effect.path) == ("orders", "POST", "/orders")
    assert (effect.idempotency_key, effect.fence, effect.kind) == ("saga-1/create-order/action", "1:1", "action")
    assert (effect.body, effect.output) == ({"sku": "W-1"}, body)


async def test_repeating_a_successful_call_replays_without_a_new_effect(session, running) -> None:
    first = await call(session, running, "/orders", "saga-1/a/action", {"n": 1})
    again = await call(session, running, "/orders", "saga-1/a/action", {"n": 1})

    assert again == (200, first[1], True)
    assert len(running.service.effects) == 1
    assert [r.replayed for r in running.service.requests] == [False, True]
    assert [r.status for r in running.service.requests] == [200, 200]


async def test_deterministic_id_is_stable_and_depends_on_the_key(session) -> None:
    key = "saga-9/charge/action"
    expected = "payments-" + hashlib.sha1(key.encode()).hexdigest()[:12]
    ids = []
    for _ in range(2):  # two separate services of the same name
        async with await start_recording_service("payments") as running:
            ids.append((await call(session, running, "/charges", key))[1]["id"])

    assert ids == [expected, expected]
    assert deterministic_id("payments", "saga-9/other/action") != expected


async def test_fail_is_a_request_but_not_an_effect(session, running) -> None:
    running.service.set_script(Script(default=Fail(402, "declined")))

    first = await call(session, running, "/charges", "saga-2/charge/action")
    again = await call(session, running, "/charges", "saga-2/charge/action")

    assert first[0] == 402
    assert first[1] == {"error": {"code": "declined", "message": "orders: scripted failure"}}
    assert again == (402, first[1], True)  # a definite failure is stored and replayed
    assert running.service.effects == []
    assert [r.status for r in running.service.requests] == [402, 402]


async def test_flaky_called_three_times_with_one_key_records_exactly_one_effect(session, running) -> None:
    running.service.set_script(Script(paths={"/orders": Flaky(2)}))

    answers = [await call(session, running, "/orders", "saga-3/a/action") for _ in range(3)]

    assert [status for status, _, _ in answers] == [503, 503, 200]
    assert answers[0][1]["error"]["code"] == "flaky"
    assert len(running.service.effects) == 1
    assert duplicate_effects([running]) == []
    # Failures count per key: another key fails twice again.
    assert (await call(session, running, "/orders", "saga-4/a/action"))[0] == 503


async def test_slow_times_the_caller_out_and_the_retry_gets_the_one_answer(session, running) -> None:
    running.service.set_script(Script(default=Slow(0.5)))

    with pytest.raises(asyncio.TimeoutError):
        await call(session, running, "/shipments", "saga-5/ship/action", timeout_s=0.1)
    status, body, replayed = await call(session, running, "/shipments", "saga-5/ship/action")

    # The first handler kept running, stored its answer; the retry waited
    # on the kit's lock and got it replayed.
    assert (status, replayed) == (200, True)
    assert body["id"] == deterministic_id("orders", "saga-5/ship/action")
    assert len(running.service.effects) == 1


async def test_vote_answers_prepare_and_ok_votes_yes_by_default(session, running) -> None:
    running.service.set_script(Script(paths={"/bank/prepare": Vote("no")}))

    no = await call(session, running, "/bank/prepare", "tx-1/bank/prepare", {"amount": 5})
    yes = await call(session, running, "/ledger/prepare", "tx-1/ledger/prepare")
    commit = await call(session, running, "/ledger/commit", "tx-1/ledger/commit")

    assert (no[0], no[1]["vote"]) == (200, "no")
    assert (yes[0], yes[1]["vote"]) == (200, "yes")
    assert commit[0] == 200 and "vote" not in commit[1]
    assert [e.kind for e in running.service.effects] == ["prepare", "prepare", "commit"]


async def test_chaos_is_reproducible_from_its_seed(session) -> None:
    seed = 20240607
    print(f"chaos seed {seed}")
    script = Script(default=Chaos(seed, error_rate=0.4, slow_rate=0.2, slow_s=0.01))
    statuses = []
    for _ in range(2):
        async with await start_recording_service("chaotic", script) as running:
            statuses.append([(await call(session, running, "/x", f"s-{i}/x/action"))[0] for i in range(30)])

    assert statuses[0] == statuses[1]
    assert set(statuses[0]) == {200, 503}


async def test_refused_calls_are_requests_but_not_effects(session, running) -> None:
    missing = await call(session, running, "/orders", None)
    await call(session, running, "/orders", "saga-6/a/action", fence="2:1")
    stale = await call(session, running, "/orders", "saga-6/b/action", fence="1:9")
    null = await call(session, running, "/orders/cancel", "saga-6/c/compensation", fence="2:2")

    assert missing[0] == 400
    assert (stale[0], stale[1]["error"]["code"]) == (409, "stale_fence")
    assert null[:2] == (200, {"compensated": False, "reason": "action never seen"})
    assert [e.idempotency_key for e in running.service.effects] == ["saga-6/a/action"]
    assert len(running.service.requests) == 4


async def test_http_effects_match_the_in_process_list(session, running) -> None:
    await call(session, running, "/orders", "saga-7/a/action", {"sku": "W-2", "qty": 1})
    await call(session, running, "/orders/cancel", "saga-7/a/compensation", {"order": "x"})

    fetched = await fetch_effects(session, running.url)
    async with session.get(running.url + "/_requests") as response:
        requests = (await response.json())["requests"]

    assert fetched == running.service.effects
    assert [e.kind for e in fetched] == ["action", "compensation"]
    assert [r["idempotency_key"] for r in requests] == ["saga-7/a/action", "saga-7/a/compensation"]


async def test_script_over_http_and_reset(session, running) -> None:
    await put_script(session, running.url, Script(paths={"/orders": Fail(409, "sold_out")}))
    async with session.put(running.url + "/_script", json={"default": {"rule": "nope"}}) as bad:
        assert bad.status == 400
        assert "default.rule" in (await bad.json())["error"]["message"]
    async with session.get(running.url + "/_script") as response:
        assert Script.from_json(await response.json()) == running.service.script

    assert (await call(session, running, "/orders", "saga-8/a/action"))[0] == 409
    assert (await call(session, running, "/other", "saga-8/b/action"))[0] == 200
    async with session.post(running.url + "/_reset") as response:
        assert response.status == 200
    again = await call(session, running, "/other", "saga-8/b/action")

    assert again[2] is False  # stored answers were forgotten: the handler ran again
    assert [e.idempotency_key for e in running.service.effects] == ["saga-8/b/action"]
    assert len(running.service.requests) == 1
    async with session.get(running.url + "/_nothing") as response:
        assert response.status == 404


def effect(service: str, key: str, at_s: float) -> Effect:
    return Effect(at_s, service, "POST", "/p", key, None, "action", None, {})


def test_effects_by_key_and_duplicates_across_services() -> None:
    a = [effect("a", "s/1/action", 2.0), effect("a", "s/2/action", 1.0)]
    b = [effect("b", "s/1/action", 1.5)]

    grouped = effects_by_key([a, b])

    assert [e.service for e in grouped["s/1/action"]] == ["b", "a"]  # time order
    assert duplicate_effects([a, b]) == ["s/1/action"]
    assert duplicate_effects([a]) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fail(status=200),
        lambda: Flaky(failures=-1),
        lambda: Slow(delay_s=-1),
        lambda: Vote("maybe"),
        lambda: Chaos(1, error_rate=0.7, slow_rate=0.5),
        lambda: Script(paths={"orders": Ok()}),
        lambda: Script(paths={"/_effects": Ok()}),
        lambda: Script.from_json({"paths": {"/x": {"rule": "slow", "delay_s": "1"}}}),
    ],
)
def test_bad_rules_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_script_json_round_trip() -> None:
    script = Script(
        default=Chaos(3, 0.1, 0.1, 0.5),
        paths={"/a": Ok({"x": 1}), "/b": Fail(), "/c": Flaky(2, 500), "/d": Slow(1), "/e": Vote("no")},
    )
    assert Script.from_json(script.to_json()) == script


async def test_a_crash_cancels_handlers_and_a_restart_keeps_the_stored_answers(session, running) -> None:
    """coordinator chaos's participant-crash: a call in flight loses its
    connection and leaves no effect; after the restart, on the same address,
    an answered key is replayed, not run again."""
    running.service.set_script(Script(paths={"/slow": Slow(delay_s=30)}))
    first = await call(session, running, "/orders", "saga-1/a/action", {"n": 1})
    in_flight = asyncio.ensure_future(call(session, running, "/slow", "saga-2/a/action"))
    await asyncio.sleep(0.2)
    await running.crash()
    with pytest.raises(aiohttp.ClientError):
        await in_flight
    with pytest.raises(aiohttp.ClientError):
        await call(session, running, "/orders", "saga-3/a/action", timeout_s=1)
    await running.restart()
    again = await call(session, running, "/orders", "saga-1/a/action", {"n": 1})
    assert again == (200, first[1], True)
    assert [e.idempotency_key for e in running.service.effects] == ["saga-1/a/action"]
    assert running.crashes == 1


async def test_a_compensation_after_a_crash_mid_action_undoes_nothing(session, running) -> None:
    """The kit keeps the attempt mark of an action stopped by a crash (it may
    have had effects) and calls the compensation handler; the recording
    service then has nothing to undo and, like a correct handler, records no
    business effect (found by the simulation's participant crashes). An
    action that ran after the crash is compensated for real."""
    running.service.set_script(Script(paths={"/slow": Slow(delay_s=30)}))
    in_flight = asyncio.ensure_future(call(session, running, "/slow", "saga-1/a/action"))
    await asyncio.sleep(0.2)
    await running.crash()
    with pytest.raises(aiohttp.ClientError):
        await in_flight
    await running.restart()
    assert running.service.interrupted == {"saga-1/a/action"}
    status, answer, _ = await call(session, running, "/slow/cancel", "saga-1/a/compensation")
    assert (status, answer) == (200, {"compensated": False, "reason": "nothing to undo"})
    assert running.service.effects == []

    running.service.set_script(Script(paths={"/slow": Slow(delay_s=30)}))
    in_flight = asyncio.ensure_future(call(session, running, "/slow", "saga-2/a/action"))
    await asyncio.sleep(0.2)
    await running.crash()
    with pytest.raises(aiohttp.ClientError):
        await in_flight
    await running.restart()
    running.service.set_script(Script())
    assert (await call(session, running, "/slow", "saga-2/a/action"))[0] == 200  # the retry runs it
    assert (await call(session, running, "/slow/cancel", "saga-2/a/compensation"))[0] == 200
    assert [e.idempotency_key for e in running.service.effects] == ["saga-2/a/action", "saga-2/a/compensation"]


def test_only_a_compensation_of_an_interrupted_action_is_a_no_op() -> None:
    """Any other compensation without an action effect is recorded, so the
    checkers still see it (compensation_without_action)."""
    service = RecordingService("orders")
    service.interrupted.add("saga-1/a/action")
    assert service._nothing_to_undo("saga-1/a/compensation")
    assert not service._nothing_to_undo("saga-2/a/compensation")  # its action was never interrupted
    assert not service._nothing_to_undo("saga-1/a/action")
