"""An action that answered 5xx leaves no trace: its compensation does nothing (seed 532).

Found by ``coordinator simulate --seed 532``: the ``ship`` action of a saga
was refused three times (participant outage), then answered 503 by the
participant's handler; out of retries the step ended ``unknown`` and the
saga compensated it - and the participant kit, which had marked the action
*attempted* before calling the handler, ran the compensation handler: a
business effect (cancelling a shipment never made; in a payments service,
refunding a charge never taken). The ``sagas`` checker reported it as
``compensation_without_action``; the checker was right.

The kit's rule is now: a handler that *returned* a non-definite answer or
raised leaves no trace, so the compensation gets the null-compensation
tombstone and the compensation handler is not called (see
client/participant/saga.py). This scenario drives the schedule's essence
through the real coordinator in the simulator: every ``ship`` action
answers 503 from the handler, the step runs out of retries, and the saga
compensates.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from coordinator.chaos.checkers import check_sagas
from coordinator.chaos.orders import order_saga
from coordinator.chaos.participants import Flaky, Script
from coordinator.chaos.sim import SimSettings, World
from coordinator.chaos.sim.run import finish, start
from coordinator.cluster.api import operations

SAGA = "saga-no-trace"
TERMINAL = ("completed", "compensated")


def _run_saga(ship_rule) -> tuple[dict, World, Path]:
    data_dir = Path(tempfile.mkdtemp(prefix="coordinator-sim-no-trace-"))
    world = World(11, SimSettings(faults=(), min_ok_operations=0), data_dir)
    try:
        return _drive(world, ship_rule), world, data_dir
    except BaseException:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        raise


def _drive(world: World, ship_rule) -> dict:
    world.quiet()
    shipping = world.participants["shipping"].service
    shipping.set_script(Script().with_path("/shipments", ship_rule))
    workload = world.run(start(world))
    definition = order_saga(SAGA, attempts=3)
    outcome = world.run(
        workload.record(
            0, "submit_saga", SAGA, definition, lambda n: operations.submit_workflow(n, "saga", json.dumps(definition))
        )
    )
    if outcome != "ok":
        pytest.fail(f"scenario: the saga was not accepted ({outcome})")

    async def terminal() -> dict:
        for _ in range(60):
            outcome, view = await workload.client.call(lambda n: operations.get_workflow(n, "saga", SAGA, wait_s=5))
            if outcome == "ok" and view["state"] in TERMINAL:
                return view
            await asyncio.sleep(0.5)
        pytest.fail("scenario: the saga did not end within the bound")

    view = world.run(terminal())
    world.run(finish(world, workload))
    return view


def _effects(world: World, service: str) -> list[str]:
    return [e.idempotency_key for e in world.participants[service].service.effects]


def test_an_action_answered_503_until_out_of_retries_is_compensated_without_effect():
    view, world, data_dir = _run_saga(Flaky(failures=1000, status=503))
    try:
        assert view["state"] == "compensated", view["state"]
        ship = next(s for s in view["steps"] if s["name"] == "ship")
        assert ship["attempts"] == 3
        assert _effects(world, "shipping") == [], "neither the action nor its compensation may have an effect"
        answered = [
            r
            for r in world.participants["shipping"].service.requests
            if r.idempotency_key == f"{SAGA}/ship/compensation"
        ]
        assert answered and all(r.status == 200 for r in answered), "the compensation gets the null tombstone"
        assert f"{SAGA}/charge/compensation" in _effects(world, "payments"), "earlier steps are undone"
        result = check_sagas(world.history)
        assert result.passed, result.violations
    finally:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_an_action_that_succeeded_after_a_503_is_compensated_for_real():
    """The other side of the rule: a 503 then a 2xx is an action that ran."""
    view, world, data_dir = _run_saga(Flaky(failures=1, status=503))
    try:
        assert view["state"] == "completed", view["state"]
        assert _effects(world, "shipping") == [f"{SAGA}/ship/action"]
    finally:
        world.close()
        shutil.rmtree(data_dir, ignore_errors=True)
