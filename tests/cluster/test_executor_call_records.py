"""The executor's outcome events carry the fence it sent and the call's
duration, from the first attempt to the outcome (retries, backoff and 2PC's
phase-two rounds included), measured on the event loop's clock: the
simulator's virtual one here, as in `coordinator simulate`."""

import asyncio
import random

from coordinator import saga, twopc
from coordinator.chaos.sim.clock import Process, VirtualClock, VirtualLoop
from coordinator.cluster.core.executor_settings import ExecutorSettings
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.executor import Executor
from coordinator.cluster.executor.http_caller import CallOutcome
from coordinator.grammar.limits import CALL_DURATION_MS_MAX

FENCE = "3:41"


def executor(clock: VirtualClock, answers: list[tuple[float, CallOutcome]], sent: list) -> Executor:
    """An executor leading at FENCE whose calls take, one after the other,
    the given (seconds, outcome); ``sent`` collects each call's fence."""
    settings = ExecutorSettings()
    breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s)
    node = Executor(
        None,  # type: ignore[arg-type] - no log: nothing is proposed
        None,  # type: ignore[arg-type]
        settings,
        callers=ParticipantCallers(http=None),  # type: ignore[arg-type]
        breakers=breakers,
        clock=clock.wall,
        rng=random.Random(1),
    )
    node.leading, node.fence = True, FENCE

    async def call(service, spec, operation):
        seconds, outcome = answers.pop(0)
        sent.append(spec.fence)
        await asyncio.sleep(seconds)
        return outcome

    node.call = call  # type: ignore[method-assign]
    return node


def run(coroutine_factory, clock: VirtualClock):
    loop = VirtualLoop(clock)
    try:
        return loop.run_until_complete(coroutine_factory())
    finally:
        loop.close()


def saga_effect(compensation: bool = False):
    definition = saga.parse_definition(
        {
            "id": "s",
            "steps": [
                {
                    "name": "pay",
                    "service": "pay",
                    "action": {"method": "POST", "path": "/pay"},
                    "compensation": {"method": "POST", "path": "/refund"},
                }
            ],
        }
    )
    state, [effect] = saga.start(definition, 0)
    if compensation:
        state, [effect] = saga.step(state, saga.ActionUnknown(step=0, error="timeout", attempts=5, at_ms=1))
    return effect


def test_a_saga_action_reports_its_fence_and_duration():
    clock, sent = VirtualClock(), []
    node = executor(clock, [(1.2345, CallOutcome("ok", {"id": 7}, attempts=3))], sent)
    event = run(lambda: node.sagas._perform(saga_effect(), {"url": "http://pay"}), clock)
    assert event == {
        "type": "action_succeeded",
        "output": {"id": 7},
        "step": 0,
        "attempts": 3,
        "fence": FENCE,
        "duration_ms": 1234,
    }
    assert sent == [FENCE]
    assert saga.event_from_dict({**event, "at_ms": 5}).duration_ms == 1234  # the machine takes it


def test_a_saga_compensation_reports_them_too():
    clock, sent = VirtualClock(), []
    node = executor(clock, [(0.0, CallOutcome("unknown", error="503", attempts=20))], sent)
    event = run(lambda: node.sagas._perform(saga_effect(compensation=True), None), clock)
    assert (event["type"], event["fence"], event["duration_ms"]) == ("compensation_exhausted", FENCE, 0)


def test_a_wall_clock_step_does_not_change_a_duration():
    """The simulator's skew nemesis jumps a node's wall clock; a call's
    duration is measured on the loop's clock, which never jumps."""
    clock, sent = VirtualClock(), []
    node = executor(clock, [(0.5, CallOutcome("failed", error="400", attempts=1))], sent)
    process = Process("n1#1")

    async def perform():
        task = asyncio.get_running_loop().create_task(node.sagas._perform(saga_effect(), None))
        await asyncio.sleep(0.25)
        clock.offsets["n1"] = -3600.0  # the node's wall clock steps back an hour mid-call
        return await task

    loop = VirtualLoop(clock)
    try:
        event = loop.run_until_complete(loop.create_task(perform(), context=process.context))
    finally:
        loop.close()
    assert process.run(node.now_ms) == int((clock.true_wall() - 3600) * 1000)  # its wall clock did step
    assert (event["type"], event["duration_ms"]) == ("action_failed", 500)


def transaction_effects():
    definition = twopc.parse_definition(
        {
            "id": "t",
            "participants": [
                {"service": "a", "prepare": {"path": "/p"}, "commit": {"path": "/c"}, "abort": {"path": "/x"}}
            ],
        }
    )
    state, [prepare] = twopc.start(definition, 0)
    state, [commit] = twopc.step(state, twopc.VoteReceived("a", "yes", at_ms=1))
    return prepare, commit


def test_a_vote_reports_the_prepare_call():
    clock, sent = VirtualClock(), []
    node = executor(clock, [(0.02, CallOutcome("ok", {"vote": "yes"}, attempts=1))], sent)
    prepare, _ = transaction_effects()
    event = run(lambda: node.transactions._perform(prepare, None, "prepare"), clock)
    assert event == {"type": "vote", "service": "a", "vote": "yes", "fence": FENCE, "duration_ms": 20}


def test_an_ack_reports_every_round_of_phase_two():
    clock, sent = VirtualClock(), []
    answers = [(1.0, CallOutcome("failed", error="409", attempts=1)), (2.0, CallOutcome("ok", attempts=1))]
    node = executor(clock, answers, sent)
    _, commit = transaction_effects()
    event = run(lambda: node.transactions._perform(commit, None, "commit"), clock)
    assert sent == [FENCE, FENCE]
    # 1 s and 2 s of calls, and the backoff between the rounds (0.05 s, jittered by half).
    assert 3000 + 25 <= event["duration_ms"] <= 3000 + 75
    assert {k: event[k] for k in ("type", "service", "phase", "fence")} == {
        "type": "ack",
        "service": "a",
        "phase": "commit",
        "fence": FENCE,
    }
    assert twopc.Acknowledged("a", "commit", 5, fence=event["fence"], duration_ms=event["duration_ms"])


def test_a_duration_past_the_bound_is_reported_as_the_bound():
    clock, sent = VirtualClock(), []
    days_s = CALL_DURATION_MS_MAX / 1000 + 86_400
    node = executor(clock, [(days_s, CallOutcome("ok", {"vote": "no"}, attempts=1))], sent)
    prepare, _ = transaction_effects()
    event = run(lambda: node.transactions._perform(prepare, None, "prepare"), clock)
    assert event["duration_ms"] == CALL_DURATION_MS_MAX
