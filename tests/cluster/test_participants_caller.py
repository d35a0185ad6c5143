"""The HTTP caller: classification, retries with one key, and the breaker."""

import asyncio

import aiohttp
import pytest
from aiohttp import web

from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.http_caller import CallSpec, HttpCaller


class Target:
    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []

    async def handle(self, request):
        self.seen.append(
            (request.headers.get("Idempotency-Key"), request.headers.get("Coordinator-Fence"), await request.text())
        )
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "sleep":
            await asyncio.sleep(1)
            return web.json_response({"late": True})
        status, body = answer
        return web.json_response(body, status=status)


@pytest.fixture
async def serve():
    runners = []

    async def start(answers):
        target = Target(answers)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", target.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return target, f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def spec(url, attempts=4, timeout_s=0.3):
    return CallSpec("svc", url, "POST", "/do", {"a": 1}, "s1/step/action", "3:17", timeout_s, attempts, 0.01, 0.02)


async def call(url, breakers=None, **kw):
    async with aiohttp.ClientSession() as session:
        return await HttpCaller(session, breakers or Breakers(5, 0.05)).call(spec(url, **kw))


async def test_2xx_is_ok_with_the_json_output_and_the_contract_headers(serve):
    target, url = await serve([(201, {"order_id": "o-1"})])
    outcome = await call(url)
    assert (outcome.kind, outcome.output, outcome.attempts) == ("ok", {"order_id": "o-1"}, 1)
    assert target.seen == [("s1/step/action", "3:17", '{"a": 1}')]


@pytest.mark.parametrize("status", [400, 402, 404, 409, 422])
async def test_a_4xx_is_a_definite_failure_not_retried(serve, status):
    target, url = await serve([(status, {"error": "no"})])
    outcome = await call(url)
    assert outcome.kind == "failed" and outcome.attempts == 1 and f"HTTP {status}" in outcome.error


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_408_429_and_5xx_are_retried_with_the_same_key(serve, status):
    target, url = await serve([(status, {}), (status, {}), (200, {"ok": 1})])
    outcome = await call(url)
    assert (outcome.kind, outcome.attempts) == ("ok", 3)
    assert {key for key, _, _ in target.seen} == {"s1/step/action"}


async def test_a_stale_fence_is_retried_as_unknown_not_a_business_failure(serve):
    """The participant saw a newer leader's fence: this call came from a
    deposed leader. Recorded as a definite failure, the step would not be
    compensated while a delayed copy of the call could still run the action
    (found by the simulation); it is retried, and out of retries unknown."""
    stale = {"error": {"code": "stale_fence", "message": "fence term 2 is lower than term 3 already seen"}}
    target, url = await serve([(409, stale)])
    breakers = Breakers(2, 0.05)
    outcome = await call(url, breakers, attempts=3)
    assert (outcome.kind, outcome.attempts) == ("unknown", 3) and "stale_fence" in outcome.error
    assert len(target.seen) == 3 and not breakers.is_open("svc")  # the service is healthy
    conflict = {"error": {"code": "compensated", "message": "already compensated"}}
    target, url = await serve([(409, conflict)])
    assert (await call(url)).kind == "failed"  # any other 409 is the business saying no


async def test_out_of_retries_is_unknown(serve):
    _, url = await serve([(503, {})])
    outcome = await call(url, attempts=3)
    assert outcome.kind == "unknown" and outcome.attempts == 3


async def test_timeouts_and_refused_connections_are_unknown_after_the_budget(serve):
    _, url = await serve(["sleep"])
    outcome = await call(url, attempts=2, timeout_s=0.1)
    assert outcome.kind == "unknown" and outcome.attempts == 2
    refused = await call("http://127.0.0.1:1", attempts=2)
    assert refused.kind == "unknown" and "Connect" in refused.error


async def test_an_open_breaker_keeps_retrying_slowly_without_spending_the_budget(serve):
    breakers = Breakers(failures_to_open=2, slow_interval_s=0.05)
    answers = [(503, {})] * 6 + [(200, {"done": True})]
    target, url = await serve(answers)
    outcome = await call(url, breakers=breakers, attempts=3)
    # Three budgeted attempts would have ended in 'unknown'; with the breaker
    # open after two failures the later attempts are free, and it succeeds.
    assert outcome.kind == "ok" and outcome.attempts == 7
    assert not breakers.is_open("svc")  # the first success closed it
    assert breakers.view()["svc"]["opened_total"] == 1


async def test_a_guarded_literal_address_is_never_called_and_its_answer_never_shown(serve):
    # 0.0.0.0 reaches this host like 169.254.169.254 reaches a cloud's
    # metadata service: a saga would get the answer back in its output.
    target, url = await serve([(200, {"secret": "instance-credentials"})])
    port = url.rsplit(":", 1)[1]
    outcome = await call(f"http://0.0.0.0:{port}")
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    assert "refused by the [services] address policy" in outcome.error
    assert "instance-credentials" not in outcome.error and outcome.output is None
    assert target.seen == []


@pytest.mark.parametrize(("backoff_s", "max_backoff_s"), [(0.1, 2.0), (0.05, 30.0), (1.0, 1.0), (0.0, 5.0)])
def test_the_backoff_bound_is_tenacitys_wait_exponential(backoff_s, max_backoff_s):
    """The retry loop is written out (hot path); its waits stay tenacity's."""
    from tenacity import wait_exponential

    from coordinator.cluster.executor.http_caller import backoff_bound_s

    spec = CallSpec("s", "http://127.0.0.1:1", "GET", "/p", None, "k", "f", 1.0, 3, backoff_s, max_backoff_s)
    tenacity_bound = wait_exponential(multiplier=backoff_s, max=max_backoff_s)

    class State:  # the one field wait_exponential reads of tenacity's RetryCallState
        attempt_number = 0

    for attempts in range(1, 1200):
        State.attempt_number = attempts
        assert backoff_bound_s(spec, attempts) == pytest.approx(tenacity_bound(State))
