"""``coordinator demo``: a local three-node cluster, the four demo services,
and the scenarios of README.md, "The demo", printed as they happen.

1. the order saga, happy path;
2. the payment declined: the saga compensates inventory, then orders;
3. two-phase commit over three participants: one commits, one aborts on a no vote;
4. a saga whose leader is SIGKILLed mid-way; another node finishes it.

With ``ui`` (``coordinator demo --ui``) it then keeps the cluster and the
services up and submits a slow stream of demo workflows for the dashboard
(``/ui/`` on any node): orders that complete, some whose payment is
declined (they compensate), some that wait for a signal the stream sends a
little later, and transactions that commit or abort - until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import signal
import sys
import tempfile
from pathlib import Path

from coordinator.client import Coordinator, Saga, Transaction
from coordinator.cluster.demo.banks import start_banks, transfer
from coordinator.cluster.demo.services import demo_saga, demo_transaction, start_demo_services
from coordinator.cluster.launcher.local import LocalCluster

__all__ = ["run_demo"]

SCENARIO_TIMEOUT_S = 60.0
STREAM_EVERY_S = 1.5  # one demo workflow this often in --ui mode
SIGNAL_AFTER = 4  # a waiting order gets its signal this many workflows later


def say(text: str) -> None:
    print(text, flush=True)


async def _follow(client: Coordinator, saga_id: str, timeout_s: float = SCENARIO_TIMEOUT_S) -> Saga:
    """Print each history record of the saga as it is committed, until it ends."""
    printed = 0
    saga = None
    async for saga in client.watch_saga(saga_id, timeout=timeout_s):
        for record in saga.history[printed:]:
            details = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("at", "event") and v is not None)
            say(f"    {record['at'][11:23]}  {saga_id}: {record['event']}" + (f" ({details})" if details else ""))
        printed = len(saga.history)
    assert saga is not None
    return saga


async def _scenario(title: str) -> None:
    say("")
    say(f"== {title}")


async def run_demo(ui: bool = False) -> int:
    logging.basicConfig(level=logging.ERROR)  # the scenarios print what happens
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="coordinator-demo-") as root:
        cluster = LocalCluster(Path(root) / "cluster")
        say(f"starting a three-node cluster in {root}")
        cluster.start()
        services = await start_demo_services(
            lambda service, text: say(f"      | {text}"), action_delay_s=0.05, keys=cluster.participant_keys
        )
        try:
            leader = await cluster.wait_leader()
            say(f"leader: {leader}; nodes: " + ", ".join(f"{n.id} {n.http_url}" for n in cluster.config.nodes))
            async with Coordinator([cluster.url(i) for i in cluster.ids], attempts=20) as client:
                for name, service in services.items():
                    await client.put_service(name, service.url)
                    say(f"registered {name} at {service.url}")
                await _happy_path(client, failures)
                await _declined(client, failures)
                await _two_phase_commit(client, failures)
                await _bank_transfer(client, failures, cluster.participant_keys)
                await _leader_killed(client, cluster, failures)
                if ui:
                    await _stream_for_the_dashboard(client, cluster)
        finally:
            for service in services.values():
                await service.close()
            await cluster.close()
            say("")
            say("stopped the cluster and the demo services")
    if failures:
        for failure in failures:
            print(f"coordinator demo: {failure}", file=sys.stderr)
        return 1
    say("demo finished: every scenario ended as expected")
    return 0


async def _happy_path(client: Coordinator, failures: list[str]) -> None:
    await _scenario("1. the order saga: create-order -> reserve-inventory -> charge-payment -> schedule-shipping")
    saga = await client.submit_saga(demo_saga("order-1"))
    saga = await _follow(client, saga.id)
    say(f"    => {saga.id} {saga.state}")
    if saga.state != "completed":
        failures.append(f"order-1 ended {saga.state}, expected completed")


async def _declined(client: Coordinator, failures: list[str]) -> None:
    await _scenario("2. the payment is declined: compensate inventory, then orders, in reverse order")
    saga = await client.submit_saga(demo_saga("order-2", card="declined"))
    saga = await _follow(client, saga.id)
    say(f"    => {saga.id} {saga.state}: {saga.failure['error'] if saga.failure else ''}")
    if saga.state != "compensated":
        failures.append(f"order-2 ended {saga.state}, expected compensated")


async def _follow_transaction(client: Coordinator, tx_id: str) -> Transaction:
    tx = await client.wait_transaction(tx_id, timeout=SCENARIO_TIMEOUT_S)
    for record in tx.history:
        details = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("at", "event"))
        say(f"    {record['at'][11:23]}  {tx_id}: {record['event']}" + (f" ({details})" if details else ""))
    return tx


async def _two_phase_commit(client: Coordinator, failures: list[str]) -> None:
    await _scenario("3. two-phase commit over inventory, payments and shipping")
    tx = await client.submit_transaction(demo_transaction("tx-1"))
    tx = await _follow_transaction(client, tx.id)
    say(f"    => {tx.id} {tx.state}")
    if tx.state != "committed":
        failures.append(f"tx-1 ended {tx.state}, expected committed")
    say("  and one the payment service votes no on: every participant aborts")
    tx = await client.submit_transaction(demo_transaction("tx-2", card="declined"))
    tx = await _follow_transaction(client, tx.id)
    say(f"    => {tx.id} {tx.state}")
    if tx.state != "aborted":
        failures.append(f"tx-2 ended {tx.state}, expected aborted")


async def _bank_transfer(client: Coordinator, failures: list[str], keys: dict[str, bytes]) -> None:
    await _scenario("3b. a transfer between two databases: alice at bank-a pays bob at bank-b")
    async with start_banks(lambda service, text: say(f"      | {text}"), keys=keys) as banks:
        if banks.kind == "postgresql":
            say("    two PostgreSQL 15 databases on a temporary server (PREPARE TRANSACTION / COMMIT PREPARED)")
        else:
            say(f"    {banks.note}; the banks are SQLite-backed demo services instead")
        for name, url in banks.urls.items():
            await client.put_service(name, url)
        say(f"    total money before: {banks.total()}")
        for tx_id, amount, expected in (("transfer-1", 30, "committed"), ("transfer-2", 500, "aborted")):
            say(f"  {tx_id}: {amount}")
            tx = await client.submit_transaction(transfer(tx_id, amount))
            tx = await _follow_transaction(client, tx.id)
            say(f"    => {tx.id} {tx.state}")
            if tx.state != expected:
                failures.append(f"{tx_id} ended {tx.state}, expected {expected}")
        say(f"    total money after: {banks.total()}; prepared transactions left: {banks.in_doubt()}")
        if banks.total() != 200 or banks.in_doubt():
            failures.append("the transfers created or lost money, or left a prepared transaction")


async def _leader_killed(client: Coordinator, cluster: LocalCluster, failures: list[str]) -> None:
    await _scenario("4. the leader is killed (SIGKILL) mid-saga; another node finishes it")
    definition = copy.deepcopy(demo_saga("order-3"))
    definition["steps"].insert(2, {"name": "fraud-review", "await": "reviewed", "timeout_s": 60})
    saga = await client.submit_saga(definition)
    while (saga := await client.get_saga(saga.id)).step("fraud-review")["state"] != "running":
        await asyncio.sleep(0.05)
    leader = await cluster.wait_leader()
    say(f"    order-3 waits at fraud-review; SIGKILL the leader {leader} (pid {cluster.supervisor.pid(leader)})")
    cluster.supervisor.kill(leader)
    new_leader = await cluster.wait_leader(among=[i for i in cluster.ids if i != leader], exclude=leader)
    say(f"    {new_leader} is the new leader; send the reviewed signal to it")
    await client.signal_saga(saga.id, "reviewed", {"verdict": "ok"})
    saga = await _follow(client, saga.id)
    say(f"    => {saga.id} {saga.state}, finished by {new_leader}")
    if saga.state != "completed":
        failures.append(f"order-3 ended {saga.state}, expected completed")
    cluster.supervisor.start(leader)
    say(f"    {leader} restarted from its data dir")


async def _stream_for_the_dashboard(client: Coordinator, cluster: LocalCluster) -> None:
    """Until SIGINT or SIGTERM: one demo workflow every STREAM_EVERY_S."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await cluster.wait_leader()
    say("")
    say("== the dashboard")
    say(
        f"    open {cluster.url(cluster.ids[0])}/ui/ (every node serves it: "
        + ", ".join(f"{cluster.url(i)}/ui/" for i in cluster.ids[1:])
        + ")"
    )
    say(f"    a demo workflow every {STREAM_EVERY_S:g} s: orders, declined payments, orders awaiting a signal,")
    say("    transactions that commit or abort. Ctrl-C stops it all.")
    waiting: list[tuple[int, str]] = []
    try:
        for n in itertools.count(1):
            try:
                await _one_for_the_dashboard(client, n, waiting)
            except Exception as error:  # noqa: BLE001 - a failover mid-way: the stream goes on
                say(f"    live-{n}: {type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STREAM_EVERY_S)
            if stop.is_set():
                return
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _one_for_the_dashboard(client: Coordinator, n: int, waiting: list[tuple[int, str]]) -> None:
    while waiting and waiting[0][0] <= n:
        _, saga_id = waiting.pop(0)
        await client.signal_saga(saga_id, "reviewed", {"verdict": "ok"})
    if n % 3 == 0:
        await client.submit_transaction(demo_transaction(f"live-{n}", card="declined" if n % 2 else "4242"))
        say(f"    live-{n}: a transaction{' the payment votes no on' if n % 2 else ''}")
        return
    if n % 5 == 0:
        definition = copy.deepcopy(demo_saga(f"live-{n}"))
        definition["steps"].insert(2, {"name": "fraud-review", "await": "reviewed", "timeout_s": 300})
        saga = await client.submit_saga(definition)
        waiting.append((n + SIGNAL_AFTER, saga.id))
        say(f"    live-{n}: an order waiting for the reviewed signal")
        return
    declined = n % 4 == 0
    await client.submit_saga(demo_saga(f"live-{n}", card="declined" if declined else "4242"))
    say(f"    live-{n}: an order{' whose payment is declined' if declined else ''}")
