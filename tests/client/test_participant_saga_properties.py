"""Property: any sequence of action/compensation deliveries for one saga step
keeps the participant rules (hypothesis prints the failing sequence): a
compensation handler runs only after an action that answered definitely."""

from __future__ import annotations

import asyncio
import functools
import json

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.client.participant import NULL_COMPENSATION_BODY, MemoryStore, saga_participant

PHASES = st.sampled_from(["action", "compensation"])
# What the handler does if it is called: answer a status, or raise.
OUTCOMES = st.sampled_from([200, 201, 422, 408, 503, "raise"])
DELIVERIES = st.lists(st.tuples(PHASES, OUTCOMES), max_size=12)


@functools.cache
def delivery(phase: str) -> web.Request:
    """One request per phase, built once: the middleware only reads it."""
    return make_mocked_request("POST", f"/{phase}", headers={"Idempotency-Key": f"saga-1/step/{phase}"})


def is_definite(status: int) -> bool:
    return 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429))


@settings(max_examples=300, deadline=None)
@given(deliveries=DELIVERIES)
def test_one_step_under_any_delivery_order(deliveries: list[tuple[str, int | str]]) -> None:
    asyncio.run(check_deliveries(deliveries))


async def check_deliveries(deliveries: list[tuple[str, int | str]]) -> None:
    store = MemoryStore()
    middleware = saga_participant(store)
    definite_runs: list[str] = []
    first_definite: dict[str, tuple[int, object]] = {}
    compensation_delivered = False

    for phase, outcome in deliveries:
        ran = False

        async def handler(request: web.Request, phase: str = phase, outcome: int | str = outcome) -> web.Response:
            nonlocal ran
            ran = True
            if outcome == "raise":
                raise RuntimeError("handler failed")
            return web.json_response({"phase": phase, "run": len(definite_runs)}, status=outcome)

        try:
            response = await middleware(delivery(phase), handler)
            answer = (response.status, json.loads(response.body))
        except RuntimeError:
            answer = (500, None)
        action_left_trace = "action" in definite_runs
        if ran and is_definite(answer[0]):
            # Only an action that answered definitely leaves a trace: one
            # that answered 408/503 or raised had no effect (saga.py).
            definite_runs.append(phase)

        if phase == "action" and ran:
            # Never an action once its compensation was delivered (hanging action).
            assert not compensation_delivered
        if phase == "compensation" and ran:
            assert action_left_trace
        if phase == "compensation" and not action_left_trace:
            assert not ran and answer == (200, NULL_COMPENSATION_BODY)
        if phase == "action" and compensation_delivered and phase not in first_definite:
            assert answer[0] == 409 and answer[1]["error"]["code"] == "compensated"
        if phase in first_definite:
            # Exactly once: a definite answer is replayed, the handler never reruns.
            assert not ran and answer == first_definite[phase]
        elif is_definite(answer[0]):
            first_definite[phase] = answer
        compensation_delivered = compensation_delivered or phase == "compensation"
