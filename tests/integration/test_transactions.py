"""Two-phase commit on a real three-node cluster, including leader kills at
each point: after some votes, after the decision, during phase 2."""

import asyncio
import contextlib
import re
import time

import pytest

from coordinator.chaos.participants import Flaky, Script, Slow, Vote, effects_by_key, start_recording_service
from coordinator.client import Conflict, Coordinator, InvalidRequest

pytestmark = pytest.mark.integration

SERVICES = ("bank-a", "bank-b", "ledger")


@contextlib.asynccontextmanager
async def banks(cluster, scripts=None):
    scripts = scripts or {}
    running = {name: await start_recording_service(name, scripts.get(name, Script())) for name in SERVICES}
    try:
        leader = await cluster.wait_leader()
        for name, service in running.items():
            assert (await cluster.put_service(leader, name, service.url)).status == 200
        async with Coordinator([cluster.url(i) for i in cluster.ids], attempts=20) as client:
            yield running, client
    finally:
        for service in running.values():
            await service.close()


def transfer(tx_id, timeout_s=10):
    return {
        "id": tx_id,
        "participants": [
            {
                "service": s,
                "prepare": {"path": "/prepare", "body": {"amount": 10}},
                "commit": {"path": "/commit"},
                "abort": {"path": "/abort"},
            }
            for s in SERVICES
        ],
        "timeout_s": timeout_s,
    }


def phases(services, tx_id):
    """service -> the kinds of effect it saw for this transaction, in order."""
    return {
        name: [
            e.kind for e in sorted(s.service.effects, key=lambda e: e.at_s) if e.idempotency_key.startswith(f"{tx_id}/")
        ]
        for name, s in services.items()
    }


def assert_one_effect_per_key(services):
    doubled = {k: len(v) for k, v in effects_by_key(services.values()).items() if len(v) > 1}
    assert not doubled, doubled


async def until(predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_all_yes_commits_everywhere(cluster):
    async with banks(cluster) as (services, c):
        tx = await c.submit_transaction(transfer("t-commit"))
        assert tx.state == "preparing"
        tx = await c.wait_transaction("t-commit", timeout=20)
        assert (tx.state, tx.decision) == ("committed", "commit")
        assert {p["state"] for p in tx.participants} == {"committed"}
        assert phases(services, "t-commit") == {s: ["prepare", "commit"] for s in SERVICES}
        assert_one_effect_per_key(services)
        # Each vote and acknowledgement names the fence its call carried, and how long it took.
        calls = [r for r in tx.history if r["event"] in ("vote", "acknowledged")]
        assert sorted((r["event"], r["service"]) for r in calls) == sorted(
            (event, s) for event in ("vote", "acknowledged") for s in SERVICES
        )
        sent = {(r.idempotency_key, r.fence) for s in services.values() for r in s.service.requests}
        for record in calls:
            assert re.fullmatch(r"[0-9]+:[0-9]+", record["fence"]), record
            phase = "prepare" if record["event"] == "vote" else record["phase"]
            assert (f"t-commit/{record['service']}/{phase}", record["fence"]) in sent, record
            assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0, record
        assert all("duration_ms" not in r for r in tx.history if r["event"] in ("started", "decided", "committed"))


async def test_one_no_vote_aborts_every_participant(cluster):
    async with banks(cluster, {"ledger": Script().with_path("/prepare", Vote("no"))}) as (services, c):
        await c.submit_transaction(transfer("t-no"))
        tx = await c.wait_transaction("t-no", timeout=20)
        assert (tx.state, tx.decision) == ("aborted", "abort")
        assert tx.participant("ledger")["vote"] == "no"
        seen = phases(services, "t-no")
        assert all("commit" not in kinds for kinds in seen.values())
        assert all(kinds[-1] == "abort" for kinds in seen.values()), seen


async def test_a_participant_that_times_out_in_prepare_aborts_all(cluster):
    async with banks(cluster, {"bank-b": Script().with_path("/prepare", Flaky(failures=1000, status=503))}) as (
        services,
        c,
    ):
        await c.submit_transaction(transfer("t-slow", timeout_s=1))
        tx = await c.wait_transaction("t-slow", timeout=20)
        assert (tx.state, tx.decision) == ("aborted", "abort")
        assert any(h["event"] == "timed_out" for h in tx.history)
        assert all("commit" not in kinds for kinds in phases(services, "t-slow").values())


async def test_leader_killed_after_some_votes_the_next_leader_asks_again_and_commits(cluster):
    async with banks(cluster, {"ledger": Script().with_path("/prepare", Slow(delay_s=1.0))}) as (services, c):
        await c.submit_transaction(transfer("t-a"))
        await until(lambda: _votes(c, "t-a", 2))
        leader = await cluster.wait_leader()
        cluster.supervisor.kill(leader)
        tx = await c.wait_transaction("t-a", timeout=40)
        assert (tx.state, tx.decision) == ("committed", "commit")  # re-asked, not rolled back
        assert phases(services, "t-a") == {s: ["prepare", "commit"] for s in SERVICES}
        assert_one_effect_per_key(services)


async def test_leader_killed_after_the_decision_before_phase_two_took_effect(cluster):
    refusing = Script().with_path("/commit", Flaky(failures=1000, status=503))
    async with banks(cluster, {s: refusing for s in SERVICES}) as (services, c):
        await c.submit_transaction(transfer("t-b"))
        await until(lambda: _state(c, "t-b", "committing"))
        assert all(kinds == ["prepare"] for kinds in phases(services, "t-b").values())
        leader = await cluster.wait_leader()
        cluster.supervisor.kill(leader)
        for service in services.values():
            service.service.set_script(Script())
        tx = await c.wait_transaction("t-b", timeout=40)
        assert (tx.state, tx.decision) == ("committed", "commit")
        assert phases(services, "t-b") == {s: ["prepare", "commit"] for s in SERVICES}
        assert_one_effect_per_key(services)


async def test_leader_killed_during_phase_two(cluster):
    scripts = {"ledger": Script().with_path("/commit", Slow(delay_s=1.0))}
    async with banks(cluster, scripts) as (services, c):
        await c.submit_transaction(transfer("t-c"))
        await until(lambda: _committed_effects(services, "t-c", 2))
        leader = await cluster.wait_leader()
        cluster.supervisor.kill(leader)
        tx = await c.wait_transaction("t-c", timeout=40)
        assert (tx.state, tx.decision) == ("committed", "commit")
        assert phases(services, "t-c") == {s: ["prepare", "commit"] for s in SERVICES}
        assert_one_effect_per_key(services)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["participants"][0].update(service="nowhere"), "participants[0].service"),
        (lambda d: d["participants"].append(dict(d["participants"][0])), "participants"),
        (lambda d: d.update(timeout_s=-1), "timeout_s"),
        (lambda d: d["participants"][0]["prepare"].update(path="http://evil/x"), "participants[0].prepare.path"),
        (lambda d: d.update(participants=[]), "participants"),
        (lambda d: d.update(release="-x"), "release"),
    ],
)
async def test_bad_transactions_get_400_naming_the_field_and_change_nothing(cluster, mutate, field):
    async with banks(cluster) as (services, c):
        definition = transfer("t-bad")
        mutate(definition)
        with pytest.raises(InvalidRequest) as info:
            await c.submit_transaction(definition)
        assert field in str(info.value), str(info.value)
        assert await c.list_transactions() == []
        assert not any(s.service.requests for s in services.values())


async def test_the_same_id_with_another_definition_is_a_conflict(cluster):
    async with banks(cluster) as (_, c):
        await c.submit_transaction(transfer("t-same"))
        other = transfer("t-same")
        other["timeout_s"] = 20
        with pytest.raises(Conflict):
            await c.submit_transaction(other)
        again = await c.submit_transaction(transfer("t-same"))
        assert again.id == "t-same"


async def test_a_pinned_transaction_is_refused_in_local_mode(cluster):
    """As a pinned saga (tests/integration/test_sagas.py): 400 naming release, nothing stored."""
    async with banks(cluster) as (_, c):
        with pytest.raises(InvalidRequest) as refused:
            await c.submit_transaction({**transfer("t-pinned"), "release": "2.4.1"})
        assert refused.value.field == "release"
        leader = await cluster.wait_leader()
        assert (await cluster.request("GET", leader, "/v1/transactions/t-pinned")).status == 404


async def _votes(c, tx_id, n):
    tx = await c.get_transaction(tx_id)
    return sum(1 for p in tx.participants if p["vote"]) >= n


async def _state(c, tx_id, state):
    return (await c.get_transaction(tx_id)).state == state


async def _committed_effects(services, tx_id, n):
    return sum(1 for kinds in phases(services, tx_id).values() if "commit" in kinds) >= n
