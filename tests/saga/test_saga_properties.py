"""Random sagas driven by a random executor that is fair in the end.

Each example draws a definition, then a sequence of moves: answers to the
effect in flight (success, definite failure, unknown outcome, an output too
large to keep, exhausted compensation, signal, await deadline), duplicates
of events already applied, junk events, stray signals, saga deadlines,
redrives and waits. Then the executor turns fair: it answers every effect
with success and redrives a stuck saga. Hypothesis' default reporting is
kept: a failure prints the shrunk example with every draw, the example
database replays it on the next run, and `--hypothesis-seed=N` replays a
whole run.
"""

from __future__ import annotations

import json
from dataclasses import replace

import msgpack
from hypothesis import event, given, settings
from hypothesis import strategies as st

from coordinator.saga import (
    ActionFailed,
    ActionSucceeded,
    ActionUnknown,
    AwaitSignal,
    CallAction,
    CallCompensation,
    CompensationExhausted,
    CompensationSucceeded,
    DeadlineReached,
    Effect,
    Event,
    Finished,
    Redrive,
    SagaDefinition,
    SagaStatus,
    SignalReceived,
    StepStatus,
    limits,
    next_deadline,
    parse_definition,
    pending_effects,
    start,
    state_from_dict,
    state_to_dict,
    step,
    to_api,
)

T0_MS = 1_700_000_000_000
SIGNALS = ("approved", "shipped")
GOING = (SagaStatus.STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
PAYLOADS = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=5),
    st.dictionaries(st.sampled_from(["by", "id", "note"]), st.integers(0, 9), max_size=3),
)
# Every output an executor reports carries an "id", which later bodies and
# compensations may reference; a reference to "missing" fails at dispatch.
OUTPUTS = st.fixed_dictionaries({"id": st.integers(0, 10**6)}, optional={"note": st.text(max_size=5)})


def reference(name: str, path: str | None = None) -> str:
    return "${steps." + name + ".output" + ("" if path is None else "." + path) + "}"


@st.composite
def definitions(draw: st.DrawFn) -> SagaDefinition:
    steps: list[dict] = []
    actions: list[str] = []
    awaits: list[str] = []
    for index in range(draw(st.integers(1, 5))):
        name = f"s{index}"
        if draw(st.integers(0, 3)) == 0:
            signal = draw(st.sampled_from(SIGNALS))
            steps.append({"name": name, "await": signal, "timeout_s": draw(st.sampled_from([1, 60]))})
            awaits.append(name)
            continue
        body: dict = {"step": name}
        if actions and draw(st.booleans()):
            body["ref"] = reference(draw(st.sampled_from(actions)), draw(st.sampled_from(["id", "id", "missing"])))
        if awaits and draw(st.booleans()):
            body["signal"] = reference(draw(st.sampled_from(awaits)))
        raw: dict = {"name": name, "service": "svc", "action": {"method": "POST", "path": f"/{name}", "body": body}}
        if draw(st.integers(0, 3)) > 0:
            undo: dict = {"undo": name}
            if actions and draw(st.booleans()):
                undo["ref"] = reference(draw(st.sampled_from(actions)), "id")
            raw["compensation"] = {"method": "POST", "path": f"/{name}/undo", "body": undo}
        steps.append(raw)
        actions.append(name)
    timeout_s = draw(st.sampled_from([None, None, 5, 120]))
    return parse_definition({"id": "saga-p", "steps": steps, "timeout_s": timeout_s})


class Run:
    """One saga, its executor and everything that happened to it."""

    def __init__(self, definition: SagaDefinition, data: st.DataObject) -> None:
        self.data = data
        self.now = T0_MS
        self.definition = definition
        self.state, effects = start(definition, self.now)
        self.trace: list[Effect] = []
        self.applied: list[Event] = []
        self.in_flight: Effect | None = None
        self.note(effects)
        self.check()

    def draw(self, strategy: st.SearchStrategy):
        return self.data.draw(strategy)

    def tick(self) -> int:
        self.now += self.draw(st.integers(0, 2_000))
        return self.now

    # -- applying and checking ---------------------------------------------------

    def apply(self, event: Event) -> None:
        before = self.state
        self.state, effects = step(before, event)
        if self.state is before:
            assert effects == ()
        else:
            self.applied.append(event)
        if before.status not in (SagaStatus.STARTED, SagaStatus.RUNNING):
            assert not any(isinstance(e, (CallAction, AwaitSignal)) for e in effects)
        self.note(effects)
        self.check()

    def note(self, effects: tuple[Effect, ...]) -> None:
        assert len(effects) <= 1
        for effect in effects:
            self.trace.append(effect)
            if not isinstance(effect, Finished):
                self.in_flight = effect

    def check(self) -> None:
        state = self.state
        plain = msgpack.unpackb(msgpack.packb(state_to_dict(state)))
        assert state_from_dict(plain) == state
        json.dumps(to_api(state))
        assert len(state.history) <= limits.history_records_max(len(state.steps))
        expected = (self.in_flight,) if state.status in GOING else ()
        assert pending_effects(state) == expected

    # -- the executor ------------------------------------------------------------

    def answer(self, fair: bool) -> None:
        pending = pending_effects(self.state)
        if not pending:
            if self.state.status is SagaStatus.STUCK:
                self.apply(Redrive(at_ms=self.tick()))
            return
        [effect] = pending
        if isinstance(effect, CallAction):
            self.apply(self.action_outcome(effect, fair))
        elif isinstance(effect, CallCompensation):
            attempts = self.draw(st.integers(1, 20))
            if fair or self.draw(st.booleans()):
                self.apply(
                    CompensationSucceeded(
                        step=effect.step, attempts=attempts, at_ms=self.tick(), redrives=effect.redrives
                    )
                )
            else:
                self.apply(
                    CompensationExhausted(
                        step=effect.step, error="503", attempts=attempts, at_ms=self.tick(), redrives=effect.redrives
                    )
                )
        elif fair or self.draw(st.booleans()):
            self.apply(SignalReceived(name=effect.signal, payload=self.draw(PAYLOADS), at_ms=self.tick()))
        else:
            self.now = max(self.now, effect.deadline_at_ms)
            self.apply(DeadlineReached(kind="step", step=effect.step, at_ms=self.now))

    def action_outcome(self, call: CallAction, fair: bool) -> Event:
        kind = "ok" if fair else self.draw(st.sampled_from(["ok", "ok", "ok", "failed", "unknown", "huge"]))
        attempts, at_ms = self.draw(st.integers(1, 5)), self.tick()
        if kind == "ok":
            return ActionSucceeded(step=call.step, output=self.draw(OUTPUTS), attempts=attempts, at_ms=at_ms)
        if kind == "huge":
            output = {"id": 1, "blob": "x" * limits.STEP_OUTPUT_BYTES_MAX}
            return ActionSucceeded(step=call.step, output=output, attempts=attempts, at_ms=at_ms)
        if kind == "failed":
            return ActionFailed(step=call.step, error="409 conflict", attempts=attempts, at_ms=at_ms)
        return ActionUnknown(step=call.step, error="timed out", attempts=attempts, at_ms=at_ms)

    # -- moves of the random phase -------------------------------------------------

    def move(self) -> None:
        move = self.draw(st.sampled_from(["answer"] * 4 + ["replay", "junk", "signal", "deadline", "redrive", "wait"]))
        if move == "answer":
            self.answer(fair=False)
        elif move == "replay" and self.applied:
            event = self.draw(st.sampled_from(self.applied))
            before = self.state
            self.apply(replace(event, at_ms=self.tick()))
            if not may_apply_again(event):
                assert self.state is before, f"a duplicate {event} changed the saga"
        elif move == "junk":
            self.apply(self.draw(junk_events(len(self.state.steps), self.now)))
        elif move == "signal":
            name = self.draw(st.sampled_from(SIGNALS + ("noise",)))
            self.apply(SignalReceived(name=name, payload=self.draw(PAYLOADS), at_ms=self.tick()))
        elif move == "deadline" and (deadline := next_deadline(self.state)) is not None:
            at_ms = deadline[0] + self.draw(st.integers(-5, 5))
            self.now = max(self.now, at_ms)
            self.apply(replace(deadline[1], at_ms=at_ms))
        elif move == "redrive":
            self.apply(Redrive(at_ms=self.tick()))
        elif move == "wait":
            self.now += self.draw(st.integers(0, 200_000))

    def settle(self) -> None:
        """The executor turns fair: the saga must then finish."""
        for _ in range(4 * len(self.state.steps) + 8):
            if self.state.terminal:
                return
            self.answer(fair=True)
        raise AssertionError(f"a fair executor did not finish: {self.state.status}")


def may_apply_again(event: Event) -> bool:
    """Events that may rightly apply once more later: signals (a later await
    step may wait for the same name), redrives (a stuck saga may be redriven
    again), and compensation outcomes without a `redrives` epoch (after a
    redrive they cannot be told from an outcome of the new call)."""
    if isinstance(event, (SignalReceived, Redrive)):
        return True
    if isinstance(event, (CompensationSucceeded, CompensationExhausted)):
        return event.redrives is None
    return False


def junk_events(step_count: int, now: int) -> st.SearchStrategy[Event]:
    steps = st.integers(-1, step_count + 1)
    attempts = st.integers(-1, 3)
    at_ms = st.integers(now, now + 10**7)
    redrives = st.none() | st.integers(0, 3)
    return st.one_of(
        st.builds(ActionSucceeded, step=steps, output=OUTPUTS, attempts=attempts, at_ms=at_ms),
        st.builds(ActionFailed, step=steps, error=st.just("junk"), attempts=attempts, at_ms=at_ms),
        st.builds(ActionUnknown, step=steps, error=st.just("junk"), attempts=attempts, at_ms=at_ms),
        st.builds(CompensationSucceeded, step=steps, attempts=attempts, at_ms=at_ms, redrives=redrives),
        st.builds(
            CompensationExhausted, step=steps, error=st.just("junk"), attempts=attempts, at_ms=at_ms, redrives=redrives
        ),
        st.builds(
            DeadlineReached, kind=st.sampled_from(["saga", "step", "other"]), step=st.none() | steps, at_ms=at_ms
        ),
    )


def check_trace(run: Run) -> None:
    """What the effects emitted over the saga's whole life must show."""
    called: set[int] = set()
    compensated: list[int] = []
    for effect in run.trace:
        if isinstance(effect, (CallAction, AwaitSignal)):
            assert not compensated, "a step went forward after compensation began"
            if isinstance(effect, CallAction):
                called.add(effect.step)
        elif isinstance(effect, CallCompensation):
            assert effect.step in called, "compensation of a step never called"
            compensated.append(effect.step)
    # Strictly reverse order; the same step again only when redriven.
    distinct = [s for i, s in enumerate(compensated) if i == 0 or compensated[i - 1] != s]
    assert distinct == sorted(set(distinct), reverse=True)
    finished = [e for e in run.trace if isinstance(e, Finished)]
    assert finished == [run.trace[-1]] and finished[0].state is run.state.status


def check_final(run: Run) -> None:
    state = run.state
    statuses = [s.status for s in state.steps]
    if state.status is SagaStatus.COMPLETED:
        assert set(statuses) == {StepStatus.SUCCEEDED}
        return
    assert set(statuses) <= {StepStatus.COMPENSATED, StepStatus.FAILED, StepStatus.SKIPPED}
    definite = {e.step for e in run.applied if isinstance(e, ActionFailed)}
    for effect in run.trace:
        if isinstance(effect, CallAction) and statuses[effect.step] is StepStatus.FAILED:
            assert effect.step in definite, "an unknown outcome was not compensated"
    issued = {e.step for e in run.trace if isinstance(e, CallCompensation)}
    for index, spec in enumerate(state.definition.steps):
        if statuses[index] is StepStatus.COMPENSATED and getattr(spec, "compensation", None):
            assert index in issued, f"step {index} compensated without its call"


@settings(deadline=None)
@given(definitions(), st.data())
def test_a_fair_executor_always_finishes_the_saga(definition, data):
    run = Run(definition, data)
    for _ in range(data.draw(st.integers(0, 30))):
        run.move()
    run.settle()
    assert run.state.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    check_trace(run)
    check_final(run)
    event(f"ended {run.state.status.value}")
    for record in {r.event.value for r in run.state.history}:
        event(f"history has {record}")


@settings(deadline=None)
@given(definitions(), st.data())
def test_replaying_the_applied_events_gives_the_same_saga(definition, data):
    run = Run(definition, data)
    for _ in range(data.draw(st.integers(0, 30))):
        run.move()
    state, _ = start(definition, T0_MS)
    for applied in run.applied:
        state, _ = step(state, applied)
    assert state == run.state


@settings(deadline=None)
@given(definitions(), st.data())
def test_every_event_applied_twice_in_a_row_applies_once(definition, data):
    """What a retried Raft proposal does: the same entry twice."""
    run = Run(definition, data)
    for _ in range(data.draw(st.integers(0, 20))):
        count = len(run.applied)
        run.move()
        if len(run.applied) > count and not may_apply_again(run.applied[-1]):
            state = run.state
            again, effects = step(state, run.applied[-1])
            assert again is state and effects == ()
