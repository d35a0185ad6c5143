"""Sagas on a real three-node cluster against recording participants."""

import re

import pytest

from coordinator.chaos.orders import order_saga, participants
from coordinator.chaos.participants import Fail, Flaky, Script, Slow, effects_by_key
from coordinator.client import Conflict, Coordinator, InvalidRequest

pytestmark = pytest.mark.integration


def client_for(cluster):
    return Coordinator([cluster.url(i) for i in cluster.ids])


async def test_the_order_saga_completes_with_one_effect_per_step(cluster):
    async with participants(cluster) as services, client_for(cluster) as c:
        saga = await c.submit_saga(order_saga("order-1"))
        assert saga.id == "order-1"
        saga = await c.wait_saga("order-1", timeout=20)
        assert saga.state == "completed"
        assert [s["state"] for s in saga.steps] == ["succeeded"] * 4
        effects = effects_by_key(services.values())
        assert sorted(effects) == sorted(f"order-1/{s}/action" for s in ("create-order", "reserve", "charge", "ship"))
        assert all(len(v) == 1 for v in effects.values())
        order_id = saga.step("create-order")["output"]["id"]
        charge = effects["order-1/charge/action"][0]
        assert charge.body == {"amount": 30, "order": order_id}  # substitution
        term = (await cluster.cluster_view(await cluster.wait_leader()))["term"]
        assert charge.fence.startswith(f"{term}:")
        # ?definition=true (the dashboard's workflow page): the definition as
        # stored, also from a follower's replica; without it, none.
        leader = await cluster.wait_leader()
        follower = next(i for i in cluster.ids if i != leader)
        view = (await cluster.request("GET", follower, "/v1/sagas/order-1?stale=true&definition=true")).json
        submitted = order_saga("order-1")
        assert view["definition"]["id"] == "order-1"
        assert [s["name"] for s in view["definition"]["steps"]] == [s["name"] for s in submitted["steps"]]
        assert view["definition"]["steps"][0]["action"]["path"] == submitted["steps"][0]["action"]["path"]
        assert "definition" not in (await cluster.request("GET", follower, "/v1/sagas/order-1?stale=true")).json
        # The same id and definition again: 200 with the same saga, nothing new runs.
        again = await c.submit_saga(order_saga("order-1"))
        assert again.state == "completed"
        assert len(effects_by_key(services.values())) == 4
        # Each step's record names the fence its call carried, and how long it took.
        succeeded = [r for r in saga.history if r["event"] == "step_succeeded"]
        assert [r["step"] for r in succeeded] == ["create-order", "reserve", "charge", "ship"]
        for record in succeeded:
            assert re.fullmatch(r"[0-9]+:[0-9]+", record["fence"]) and record["fence"] == charge.fence, record
            assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0, record
        assert all("fence" not in r for r in saga.history if r["event"] in ("started", "completed"))


async def test_payment_declined_compensates_inventory_then_orders(cluster):
    scripts = {"payments": Script().with_path("/charges", Fail(status=402, error="declined"))}
    async with participants(cluster, scripts) as services, client_for(cluster) as c:
        await c.submit_saga(order_saga("declined-1"))
        saga = await c.wait_saga("declined-1", timeout=20)
        assert saga.state == "compensated"
        assert saga.failure["reason"] == "step_failed" and saga.failure["step"] == "charge"
        assert [s["state"] for s in saga.steps] == ["compensated", "compensated", "failed", "skipped"]
        compensations = sorted(
            (e for s in services.values() for e in s.service.effects if e.kind == "compensation"), key=lambda e: e.at_s
        )
        assert [e.service for e in compensations] == ["inventory", "orders"]
        assert compensations[0].body == {"reservation": saga.step("reserve")["output"]["id"]}
        assert not services["shipping"].service.effects
        assert not services["payments"].service.effects  # a declined charge took no effect


async def test_5xx_and_timeouts_are_retried_with_the_same_key_and_take_effect_once(cluster):
    scripts = {
        "inventory": Script().with_path("/reservations", Flaky(failures=2, status=503)),
        "payments": Script().with_path("/charges", Slow(delay_s=0.8)),
    }
    async with participants(cluster, scripts) as services, client_for(cluster) as c:
        await c.submit_saga(order_saga("flaky-1", timeout_s=0.3, attempts=8))
        saga = await c.wait_saga("flaky-1", timeout=30)
        assert saga.state == "completed", saga.raw
        assert saga.step("reserve")["attempts"] == 3
        assert saga.step("charge")["attempts"] >= 2
        # The duration spans every attempt: at least the first one's 0.3 s timeout.
        [charged] = [r for r in saga.history if r["event"] == "step_succeeded" and r["step"] == "charge"]
        assert charged["attempts"] >= 2 and charged["duration_ms"] >= 300, charged
        inventory_requests = [r for r in services["inventory"].service.requests if r.path == "/reservations"]
        assert {r.idempotency_key for r in inventory_requests} == {"flaky-1/reserve/action"}
        assert len(inventory_requests) == 3
        assert all(len(v) == 1 for v in effects_by_key(services.values()).values())


async def test_an_unknown_outcome_is_compensated(cluster):
    scripts = {"shipping": Script().with_path("/shipments", Flaky(failures=100, status=500))}
    async with participants(cluster, scripts) as services, client_for(cluster) as c:
        await c.submit_saga(order_saga("unknown-1", attempts=2))
        saga = await c.wait_saga("unknown-1", timeout=20)
        assert saga.state == "compensated"
        assert saga.step("ship")["state"] == "compensated"  # unknown: it may have taken effect
        kinds = [
            (e.service, e.kind)
            for e in sorted((e for s in services.values() for e in s.service.effects), key=lambda e: e.at_s)
        ]
        assert kinds[-3:] == [("payments", "compensation"), ("inventory", "compensation"), ("orders", "compensation")]
        # Every ship action answered 500 from its handler: it left no trace, so the
        # compensation the coordinator sent is the kit's null compensation, no effect.
        assert services["shipping"].service.effects == []
        sent = [r for r in services["shipping"].service.requests if r.idempotency_key == "unknown-1/ship/compensation"]
        assert sent and sent[0].status == 200


async def test_await_step_resumes_on_signal_and_its_deadline_compensates(cluster):
    async with participants(cluster) as services, client_for(cluster) as c:
        waiting = order_saga("await-1")
        waiting["steps"].insert(1, {"name": "approval", "await": "approved", "timeout_s": 30})
        await c.submit_saga(waiting)
        saga = await c.get_saga("await-1")
        assert saga.state in ("started", "running")
        answer = await c.signal_saga("await-1", "approved", {"by": "alice"})
        assert answer["changed"] is True
        saga = await c.wait_saga("await-1", timeout=20)
        assert saga.state == "completed" and saga.step("approval")["output"] == {"by": "alice"}

        late = order_saga("await-2")
        late["steps"].insert(1, {"name": "approval", "await": "approved", "timeout_s": 0.5})
        await c.submit_saga(late)
        saga = await c.wait_saga("await-2", timeout=20)
        assert saga.state == "compensated" and saga.failure["reason"] == "timed_out"
        assert [e.kind for e in services["orders"].service.effects if e.idempotency_key.startswith("await-2/")] == [
            "action",
            "compensation",
        ]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["steps"][0].update(service="nowhere"), "steps[0].service"),
        (lambda d: d["steps"][1].update(name="create-order"), "steps[1].name"),
        (lambda d: d["steps"][0]["action"].update(body={"x": "${steps.ship.output.id}"}), "steps[0].action.body"),
        (lambda d: d.update(steps=[dict(d["steps"][0], name=f"s{i}") for i in range(65)]), "steps"),
        (
            lambda d: d["steps"][0].update(retry={"max_attempts": 0, "backoff_s": 0.1, "max_backoff_s": 1}),
            "steps[0].retry.max_attempts",
        ),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d.update(release="a b"), "release"),
    ],
)
async def test_bad_definitions_get_400_naming_the_field_and_change_nothing(cluster, mutate, field):
    async with participants(cluster) as services, client_for(cluster) as c:
        definition = order_saga("bad-1")
        mutate(definition)
        with pytest.raises(InvalidRequest) as info:
            await c.submit_saga(definition)
        assert field in str(info.value), str(info.value)
        assert await c.list_sagas() == []
        assert not any(s.service.requests for s in services.values())


async def test_an_id_reused_with_another_definition_is_a_conflict(cluster):
    async with participants(cluster), client_for(cluster) as c:
        await c.submit_saga(order_saga("same-id"))
        other = order_saga("same-id")
        other["steps"] = other["steps"][:2]
        with pytest.raises(Conflict):
            await c.submit_saga(other)
        saga = await c.wait_saga("same-id", timeout=20)
        assert len(saga.steps) == 4


async def test_a_pinned_saga_is_refused_in_local_mode(cluster):
    """Only workers run a saga pinned to a release; this cluster's executor is
    local (the leader makes every call), so one is refused with 400 naming
    release, and nothing is stored (tests/integration/test_workers.py runs
    pinned sagas in remote mode)."""
    async with participants(cluster), client_for(cluster) as c:
        with pytest.raises(InvalidRequest) as refused:
            await c.submit_saga({**order_saga("pinned-1"), "release": "2.4.1"})
        assert refused.value.field == "release" and "local" in str(refused.value)
        leader = await cluster.wait_leader()
        assert (await cluster.request("GET", leader, "/v1/sagas/pinned-1")).status == 404


async def test_outcome_replay_lists_successful_outcomes_in_log_order(cluster):
    scripts = {"payments": Script().with_path("/charges", Fail(status=402))}
    async with participants(cluster, scripts), client_for(cluster) as c:
        await c.submit_saga(order_saga("replay-1"))
        await c.wait_saga("replay-1", timeout=20)
        outcomes = (await c.service_outcomes("orders"))["outcomes"]
        assert [(o["saga"], o["kind"]) for o in outcomes] == [("replay-1", "action"), ("replay-1", "compensation")]
        assert outcomes[0]["index"] < outcomes[1]["index"]
        later = (await c.service_outcomes("orders", after=outcomes[0]["index"]))["outcomes"]
        assert later == outcomes[1:]
