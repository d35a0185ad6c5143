"""Money moves between two real PostgreSQL databases through the cluster's
2PC, under a leader kill: none is created or lost, nothing stays prepared."""

import asyncio
import random

import pytest

from coordinator.client import Coordinator
from coordinator.cluster.demo.banks import start_banks, transfer

pytestmark = pytest.mark.integration

TRANSFERS = 24


async def test_transfers_keep_the_total_under_a_leader_kill(cluster):
    async with start_banks(lambda service, text: None) as banks:
        if banks.kind != "postgresql":
            pytest.skip(banks.note)
        total = banks.total()
        assert total == 200
        async with Coordinator([cluster.url(i) for i in cluster.ids], attempts=20) as c:
            for name, url in banks.urls.items():
                await c.put_service(name, url)
            rng = random.Random(7)
            print("seed 7")
            ids = [f"move-{n}" for n in range(TRANSFERS)]
            amounts = {tx_id: rng.choice([5, 10, 20, 150]) for tx_id in ids}  # 150 can never be covered: a no vote

            async def submit(tx_id, delay_s):
                await asyncio.sleep(delay_s)
                await c.submit_transaction(transfer(tx_id, amounts[tx_id]))

            leader = await cluster.wait_leader()
            submissions = asyncio.gather(*(submit(tx_id, n * 0.02) for n, tx_id in enumerate(ids)))
            await asyncio.sleep(0.2)
            cluster.supervisor.kill(leader)
            await submissions
            finished = await asyncio.gather(*(c.wait_transaction(tx_id, timeout=60) for tx_id in ids))
            # Liveness after the kill, once it settled: a transfer that can be
            # covered commits. (Those in flight across the kill may all abort
            # on a loaded machine: each prepare holds alice's row until phase
            # two, so the others wait on the lock and vote no at the statement
            # timeout while the new leader is elected - safe, and not a claim.)
            after = await c.submit_transaction(transfer("move-after", 5))
            after = await c.wait_transaction(after.id, timeout=60)
        states = {tx.id: tx.state for tx in finished}
        print("across the kill:", sorted(states.values()).count("committed"), "of", TRANSFERS, "committed")
        assert set(states.values()) <= {"committed", "aborted"}, states
        assert all(states[tx_id] == "aborted" for tx_id in ids if amounts[tx_id] == 150)
        assert after.state == "committed", after.history
        assert banks.total() == total, "money was created or lost"
        assert banks.in_doubt() == 0, "a prepared transaction was left behind in pg_prepared_xacts"
