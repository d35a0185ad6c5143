"""Sagas told as stories: what the coordinator asks for, step by step.

`Story` holds one saga, a clock and every effect the machine emitted, so a
test reads like what happens to the saga: `story.succeed("orders", ...)`,
`story.fail("payments")`, then asserts on `story.calls()`.
"""

from __future__ import annotations

import pytest

from coordinator import twopc
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
    SagaState,
    SagaStatus,
    SignalReceived,
    limits,
    next_deadline,
    parse_definition,
    pending_effects,
    start,
    step,
    to_api,
    with_id,
)

T0_MS = 1_700_000_000_000


def action_step(
    name: str, service: str | None = None, body: object = None, compensation: bool | dict = True, **extra: object
) -> dict:
    """An action step calling POST /{name}; compensation POST /{name}/undo."""
    raw: dict = {"name": name, "service": service or name, "action": {"method": "POST", "path": f"/{name}"}}
    if body is not None:
        raw["action"]["body"] = body
    if compensation is True:
        raw["compensation"] = {"method": "POST", "path": f"/{name}/undo"}
    elif isinstance(compensation, dict):
        raw["compensation"] = compensation
    raw.update(extra)
    return raw


def await_step(name: str, signal: str, timeout_s: float | None = None) -> dict:
    raw: dict = {"name": name, "await": signal}
    if timeout_s is not None:
        raw["timeout_s"] = timeout_s
    return raw


def saga_definition(*steps: dict, saga_id: str = "saga-1", timeout_s: float | None = None) -> dict:
    raw: dict = {"id": saga_id, "steps": list(steps)}
    if timeout_s is not None:
        raw["timeout_s"] = timeout_s
    return raw


def order_saga() -> dict:
    """The demo's order saga: orders, inventory, payments, shipping."""
    return saga_definition(
        action_step(
            "orders",
            body={"sku": "W-1", "qty": 3},
            compensation={
                "method": "POST",
                "path": "/orders/cancel",
                "body": {"order": "${steps.orders.output.order_id}"},
            },
        ),
        action_step("inventory", body={"order": "${steps.orders.output.order_id}", "sku": "W-1", "qty": 3}),
        action_step(
            "payments", body={"order": "${steps.orders.output.order_id}", "amount": "${steps.orders.output.total}"}
        ),
        action_step("shipping", body={"order": "${steps.orders.output.order_id}"}, compensation=False),
        saga_id="order-42",
    )


class Story:
    """One saga driven event by event; the clock moves 10 ms per event."""

    def __init__(self, raw: dict, at_ms: int = T0_MS) -> None:
        definition = parse_definition(raw)
        if definition.id is None:
            definition = with_id(definition, "saga-generated")
        self.now = at_ms
        self.state, effects = start(definition, at_ms)
        self.effects: list[Effect] = list(effects)
        self.last: tuple[Effect, ...] = effects

    # -- reading ----------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.state.status.value

    def step_states(self) -> dict[str, str]:
        return {
            spec.name: s.status.value for spec, s in zip(self.state.definition.steps, self.state.steps, strict=True)
        }

    def index(self, name: str) -> int:
        return self.state.definition.step_names.index(name)

    def calls(self) -> list[str]:
        """Every effect so far, as "action orders", "compensate orders",
        "await approval", "finished compensated"."""
        return [describe(e) for e in self.effects]

    def history(self) -> list[str]:
        return [r.event.value for r in self.state.history]

    # -- events -------------------------------------------------------------------

    def apply(self, event: Event) -> tuple[Effect, ...]:
        self.state, self.last = step(self.state, event)
        self.effects.extend(self.last)
        return self.last

    def _at(self) -> int:
        self.now += 10
        return self.now

    def succeed(self, name: str, output: object = None, attempts: int = 1) -> tuple[Effect, ...]:
        return self.apply(
            ActionSucceeded(
                step=self.index(name), output=output if output is not None else {}, attempts=attempts, at_ms=self._at()
            )
        )

    def fail(self, name: str, error: str = "declined", attempts: int = 1) -> tuple[Effect, ...]:
        return self.apply(ActionFailed(step=self.index(name), error=error, attempts=attempts, at_ms=self._at()))

    def unknown(self, name: str, error: str = "timed out", attempts: int = 5) -> tuple[Effect, ...]:
        return self.apply(ActionUnknown(step=self.index(name), error=error, attempts=attempts, at_ms=self._at()))

    def compensated(self, name: str, attempts: int = 1) -> tuple[Effect, ...]:
        return self.apply(CompensationSucceeded(step=self.index(name), attempts=attempts, at_ms=self._at()))

    def exhausted(self, name: str, error: str = "503", attempts: int = 20) -> tuple[Effect, ...]:
        return self.apply(
            CompensationExhausted(step=self.index(name), error=error, attempts=attempts, at_ms=self._at())
        )

    def signal(self, name: str, payload: object = None) -> tuple[Effect, ...]:
        return self.apply(SignalReceived(name=name, payload=payload, at_ms=self._at()))

    def deadline(self, kind: str, step_index: int | None, at_ms: int) -> tuple[Effect, ...]:
        self.now = max(self.now, at_ms)
        return self.apply(DeadlineReached(kind=kind, step=step_index, at_ms=at_ms))

    def redrive(self) -> tuple[Effect, ...]:
        return self.apply(Redrive(at_ms=self._at()))

    def pending(self) -> tuple[Effect, ...]:
        return pending_effects(self.state)


def describe(effect: Effect) -> str:
    if isinstance(effect, CallAction):
        return f"action {effect.name}"
    if isinstance(effect, CallCompensation):
        return f"compensate {effect.name}"
    if isinstance(effect, AwaitSignal):
        return f"await {effect.name}"
    assert isinstance(effect, Finished)
    return f"finished {effect.state.value}"


def assert_no_op(state: SagaState, event: Event) -> None:
    """Applying `event` to `state` changes nothing and asks for nothing."""
    new_state, effects = step(state, event)
    assert new_state is state
    assert effects == ()


ORDER_STEPS = ["orders", "inventory", "payments", "shipping"]


def test_happy_path_runs_the_four_steps_in_order_and_completes():
    story = Story(order_saga())
    assert story.status == "started"
    [call] = story.last
    assert isinstance(call, CallAction)
    assert (call.service, call.method, call.path) == ("orders", "POST", "/orders")
    assert call.body == {"qty": 3, "sku": "W-1"}
    assert call.idempotency_key == "order-42/orders/action"
    assert call.timeout_s == 5 and call.retry.max_attempts == 5

    [call] = story.succeed("orders", {"order_id": "o-7", "total": 42.5})
    assert story.status == "running"
    assert call.name == "inventory"
    assert call.body == {"order": "o-7", "sku": "W-1", "qty": 3}
    [call] = story.succeed("inventory", {"reserved": True})
    assert call.body == {"order": "o-7", "amount": 42.5}
    story.succeed("payments", {"charge": "c-1"})
    [finished] = story.succeed("shipping", {"tracking": "T-1"})

    assert finished == Finished(saga_id="order-42", state=SagaStatus.COMPLETED)
    assert story.status == "completed"
    assert story.calls() == [f"action {name}" for name in ORDER_STEPS] + ["finished completed"]
    assert set(story.step_states().values()) == {"succeeded"}
    assert story.history() == ["started"] + ["step_succeeded"] * 4 + ["completed"]
    api = to_api(story.state)
    assert api["state"] == "completed" and api["failure"] is None
    assert api["steps"][0]["output"] == {"order_id": "o-7", "total": 42.5}
    assert story.pending() == () and next_deadline(story.state) is None


@pytest.mark.parametrize("failing", range(len(ORDER_STEPS)))
def test_a_failed_step_compensates_exactly_the_earlier_steps_in_reverse(failing):
    story = Story(order_saga())
    for name in ORDER_STEPS[:failing]:
        story.succeed(name, {"order_id": "o-7", "total": 1})
    story.fail(ORDER_STEPS[failing], error="402 payment declined")

    earlier = ORDER_STEPS[:failing]
    # shipping has no compensation: it is passed over without a call.
    expected = [f"compensate {n}" for n in reversed(earlier) if n != "shipping"]
    while story.status == "compensating":
        [call] = story.pending()
        assert isinstance(call, CallCompensation)
        story.compensated(call.name)

    assert story.status == "compensated"
    compensations = [c for c in story.calls() if c.startswith("compensate")]
    assert compensations == expected
    assert story.calls()[-1] == "finished compensated"
    states = story.step_states()
    assert [states[n] for n in earlier] == ["compensated"] * failing
    assert states[ORDER_STEPS[failing]] == "failed"
    assert all(states[n] == "skipped" for n in ORDER_STEPS[failing + 1 :])
    failure = to_api(story.state)["failure"]
    assert failure == {"reason": "step_failed", "step": ORDER_STEPS[failing], "error": "402 payment declined"}
    assert story.history()[failing + 1 : failing + 4] == ["step_failed", "failed", "compensating"]


def test_the_first_step_failing_means_nothing_to_compensate():
    story = Story(order_saga())
    [finished] = story.fail("orders")
    assert finished == Finished(saga_id="order-42", state=SagaStatus.COMPENSATED)
    assert story.history() == ["started", "step_failed", "failed", "compensating", "compensated"]


def test_an_unknown_outcome_is_compensated_first():
    story = Story(order_saga())
    story.succeed("orders", {"order_id": "o-7", "total": 1})
    story.succeed("inventory")
    [call] = story.unknown("payments", error="503 after 5 attempts")
    # "unknown", then at once "compensating": the history keeps the outcome.
    assert story.step_states()["payments"] == "compensating"
    assert story.history()[-3:] == ["step_unknown", "failed", "compensating"]
    assert to_api(story.state)["steps"][2]["error"] == "503 after 5 attempts"
    assert call.name == "payments" and call.idempotency_key == "order-42/payments/compensation"
    story.compensated("payments")
    story.compensated("inventory")
    [call] = story.last
    assert call.body == {"order": "o-7"}
    story.compensated("orders")
    assert story.status == "compensated"
    assert [c for c in story.calls() if c.startswith("compensate")] == [
        "compensate payments",
        "compensate inventory",
        "compensate orders",
    ]


def test_exhausted_compensation_makes_the_saga_stuck_until_redriven():
    story = Story(order_saga())
    story.succeed("orders", {"order_id": "o-7", "total": 1})
    story.succeed("inventory")
    story.fail("payments")
    assert story.exhausted("inventory", error="503 Service Unavailable") == ()
    assert story.status == "stuck"
    assert story.step_states()["inventory"] == "compensating"
    assert story.pending() == ()
    assert_no_op(story.state, CompensationSucceeded(step=1, attempts=1, at_ms=story.now))

    [again] = story.redrive()
    assert story.status == "compensating"
    assert isinstance(again, CallCompensation) and again.name == "inventory"
    assert story.pending() == (again,)
    story.compensated("inventory")
    story.compensated("orders")
    assert story.status == "compensated"
    assert story.history()[-6:] == [
        "stuck",
        "redrive",
        "compensating",
        "compensation_succeeded",
        "compensation_succeeded",
        "compensated",
    ]
    api_step = to_api(story.state)["steps"][1]
    assert api_step["compensation_error"] == "503 Service Unavailable"


def test_a_late_outcome_of_a_call_from_before_a_redrive_is_ignored():
    story = Story(order_saga())
    story.succeed("orders", {"order_id": "o-7", "total": 1})
    [call] = story.fail("inventory")
    assert call.redrives == 0
    story.exhausted("orders")
    [again] = story.redrive()
    assert again.redrives == 1
    late = CompensationExhausted(step=0, error="late", attempts=20, at_ms=story.now, redrives=0)
    assert_no_op(story.state, late)
    story.apply(CompensationSucceeded(step=0, attempts=1, at_ms=story.now, redrives=1))
    assert story.status == "compensated"


def test_redrive_is_a_no_op_unless_stuck():
    story = Story(order_saga())
    assert_no_op(story.state, Redrive(at_ms=story.now + 1))
    story.fail("orders")
    assert_no_op(story.state, Redrive(at_ms=story.now + 1))


def test_endless_redrives_keep_working_with_a_bounded_history():
    story = Story(order_saga())
    story.succeed("orders", {"order_id": "o-7", "total": 1})
    story.fail("inventory")
    cycles = limits.REDRIVES_RECORDED_MAX + 10
    for _ in range(cycles):
        story.exhausted("orders")
        story.redrive()
    assert story.state.redrives == cycles
    assert len(story.state.history) <= limits.history_records_max(4)
    story.compensated("orders")
    assert story.status == "compensated"


def test_saga_deadline_while_a_step_runs_times_the_saga_out():
    story = Story(
        saga_definition(action_step("orders"), action_step("payments"), action_step("shipping"), timeout_s=30)
    )
    story.succeed("orders")
    deadline_ms, event = next_deadline(story.state)
    assert deadline_ms == T0_MS + 30_000
    assert event == DeadlineReached(kind="saga", step=None, at_ms=deadline_ms)

    assert_no_op(story.state, DeadlineReached(kind="saga", step=None, at_ms=deadline_ms - 1))
    [call] = story.deadline("saga", None, deadline_ms)
    # payments may have taken effect: it is unknown, so compensated first.
    assert story.step_states() == {"orders": "succeeded", "payments": "compensating", "shipping": "skipped"}
    assert call.name == "payments"
    assert to_api(story.state)["failure"] == {
        "reason": "timed_out",
        "step": "payments",
        "error": "saga deadline of 30 s passed",
    }
    assert story.history()[-3:] == ["step_unknown", "timed_out", "compensating"]
    assert next_deadline(story.state) is None
    story.compensated("payments")
    story.compensated("orders")
    assert story.status == "compensated"


def test_await_step_waits_for_its_signal_and_passes_the_payload_on():
    story = Story(
        saga_definition(
            action_step("orders"),
            await_step("approval", "approved", timeout_s=300),
            action_step("payments", body={"approver": "${steps.approval.output.by}"}),
        )
    )
    [wait] = story.succeed("orders")
    assert wait == AwaitSignal(
        saga_id="saga-1", step=1, name="approval", signal="approved", deadline_at_ms=story.now + 300_000
    )
    assert story.pending() == (wait,)
    assert next_deadline(story.state) == (
        wait.deadline_at_ms,
        DeadlineReached(kind="step", step=1, at_ms=wait.deadline_at_ms),
    )
    assert story.signal("rejected", {"by": "eve"}) == ()
    [call] = story.signal("approved", {"by": "bob"})
    assert call.body == {"approver": "bob"}
    assert story.step_states()["approval"] == "succeeded"
    assert to_api(story.state)["steps"][1]["output"] == {"by": "bob"}


def test_a_signal_sent_early_is_kept_for_its_await_step():
    story = Story(saga_definition(action_step("orders"), await_step("approval", "approved"), action_step("payments")))
    assert story.signal("approved", {"by": "amy"}) == ()
    assert story.signal("approved", {"by": "bob"}) == ()  # the latest one wins
    assert story.history() == ["started", "signal"]
    [call] = story.succeed("orders")
    assert call.name == "payments"
    assert story.state.signals == ()
    assert to_api(story.state)["steps"][1]["output"] == {"by": "bob"}


def test_signals_no_step_waits_for_are_dropped():
    story = Story(saga_definition(action_step("orders"), await_step("approval", "approved")))
    assert_no_op(story.state, SignalReceived(name="other", payload=1, at_ms=story.now))
    assert_no_op(story.state, SignalReceived(name="bad name!", payload=1, at_ms=story.now))


def test_await_deadline_times_the_saga_out_and_compensates():
    story = Story(
        saga_definition(
            action_step("orders"), await_step("approval", "approved", timeout_s=60), action_step("payments")
        )
    )
    [wait] = story.succeed("orders")
    assert_no_op(story.state, DeadlineReached(kind="step", step=0, at_ms=wait.deadline_at_ms))
    [call] = story.deadline("step", 1, wait.deadline_at_ms)
    assert story.step_states() == {"orders": "compensating", "approval": "failed", "payments": "skipped"}
    assert story.history()[-3:] == ["step_failed", "timed_out", "compensating"]
    assert to_api(story.state)["failure"] == {
        "reason": "timed_out",
        "step": "approval",
        "error": "no signal 'approved' within 60 s",
    }
    assert call.name == "orders"
    story.compensated("orders")
    assert story.status == "compensated"
    assert story.signal("approved", {}) == ()


def test_a_reference_that_does_not_resolve_fails_the_step_without_calling_it():
    story = Story(
        saga_definition(
            action_step("orders"), action_step("payments", body={"order": "${steps.orders.output.order_id}"})
        )
    )
    [call] = story.succeed("orders", {"id": "o-7"})
    assert call == story.last[0] and isinstance(call, CallCompensation)
    assert story.calls() == ["action orders", "compensate orders"]
    assert story.step_states()["payments"] == "failed"
    error = to_api(story.state)["steps"][1]["error"]
    assert error.startswith("substitution failed:") and "order_id" in error


def test_an_unknown_step_is_still_compensated_with_unresolved_references_as_null():
    story = Story(
        saga_definition(
            action_step(
                "orders",
                compensation={
                    "method": "POST",
                    "path": "/orders/cancel",
                    "body": {"order": "${steps.orders.output.order_id}", "reason": "saga failed"},
                },
            )
        )
    )
    [call] = story.unknown("orders")
    assert isinstance(call, CallCompensation) and call.name == "orders"
    # The participant finds what to undo by the Idempotency-Key.
    assert call.body == {"order": None, "reason": "saga failed"}
    assert call.idempotency_key == "saga-1/orders/compensation"
    story.compensated("orders")
    assert story.status == "compensated"


def test_an_output_too_large_to_keep_counts_as_unknown():
    story = Story(saga_definition(action_step("orders"), action_step("payments")))
    big = {"blob": "x" * limits.STEP_OUTPUT_BYTES_MAX}
    [call] = story.succeed("orders", big)
    assert story.history()[-3:] == ["step_unknown", "failed", "compensating"]
    assert "over the limit of 65536" in to_api(story.state)["steps"][0]["error"]
    assert call.name == "orders" and isinstance(call, CallCompensation)


def test_duplicate_and_late_events_change_nothing():
    story = Story(order_saga())
    first = ActionSucceeded(step=0, output={"order_id": "o", "total": 1}, attempts=1, at_ms=T0_MS + 5)
    story.apply(first)
    assert_no_op(story.state, first)  # duplicate
    assert_no_op(story.state, ActionFailed(step=0, error="x", attempts=1, at_ms=T0_MS + 6))
    assert_no_op(story.state, ActionSucceeded(step=3, output={}, attempts=1, at_ms=T0_MS + 7))
    assert_no_op(story.state, ActionSucceeded(step=99, output={}, attempts=1, at_ms=T0_MS + 7))
    assert_no_op(story.state, CompensationSucceeded(step=0, attempts=1, at_ms=T0_MS + 8))
    assert_no_op(story.state, DeadlineReached(kind="saga", step=None, at_ms=T0_MS + 9))
    story.fail("inventory")
    assert_no_op(story.state, ActionSucceeded(step=1, output={}, attempts=2, at_ms=story.now))
    story.compensated("orders")
    assert story.status == "compensated"
    for event in (first, Redrive(at_ms=story.now), SignalReceived(name="a", payload=1, at_ms=story.now)):
        assert_no_op(story.state, event)  # terminal


def test_junk_events_change_nothing():
    story = Story(order_saga())
    for junk in (
        ActionSucceeded(step="0", output={}, attempts=1, at_ms=T0_MS),  # type: ignore[arg-type]
        ActionSucceeded(step=True, output={}, attempts=1, at_ms=T0_MS),  # bool is not an index
        ActionSucceeded(step=0, output={}, attempts=-1, at_ms=T0_MS),
        ActionSucceeded(step=0, output={}, attempts=1, at_ms=None),  # type: ignore[arg-type]
        DeadlineReached(kind="nonsense", step=0, at_ms=T0_MS * 2),
        SignalReceived(name="approved", payload=float("nan"), at_ms=T0_MS),
    ):
        assert_no_op(story.state, junk)  # type: ignore[arg-type]


@pytest.mark.parametrize("terminal", [False, True], ids=["running", "terminal"])
@pytest.mark.parametrize(
    "not_an_event",
    [object(), None, "redrive", {"type": "redrive", "at_ms": T0_MS}, twopc.DeadlineReached(at_ms=T0_MS * 2)],
    ids=["object", "None", "str", "plain", "twopc-deadline"],
)
def test_what_is_not_a_saga_event_is_a_type_error(not_an_event, terminal):
    """The answer of twopc's step too (tests/twopc/test_twopc_scenarios.py):
    a non-event is a bug of the caller, never a no-op - not even the other
    machine's DeadlineReached, not even for a terminal saga."""
    story = Story(saga_definition(await_step("approval", "approved")))
    if terminal:
        story.apply(SignalReceived(name="approved", payload=None, at_ms=story.now))
        assert story.status == "completed"
    with pytest.raises(TypeError, match="not a saga event"):
        step(story.state, not_an_event)
