"""The chaos workload: concurrent clients submitting sagas (some failing,
some slow, some awaiting a signal) and 2PC transactions (some with a no
vote), and reading and writing the service registry; every operation is
recorded in the History as invoke / ok / fail / unknown."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from coordinator.client import Coordinator, CoordinatorError, NotFound, Rejected

from .history import History
from .orders import order_saga

__all__ = ["Workload", "REGISTRY_KEYS"]

REGISTRY_KEYS = ("reg-a", "reg-b", "reg-c")
REGISTRY_VALUES = 50


class WorkloadMix:
    """The seeded mix both workloads draw from (this one over HTTP, the
    simulation's in ``coordinator.chaos.sim.client``): order sagas, some declined, some
    awaiting a signal; 2PC transactions, some with a no vote."""

    def __init__(self, rng: random.Random, *, rate_per_s: float, processes: int) -> None:
        self.rng = rng
        self.rate_per_s = rate_per_s
        self.processes = processes
        self.sagas: list[str] = []
        self.transactions: list[str] = []
        self.awaiting: list[str] = []
        self._counter = 0

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def saga(self) -> tuple[str, dict]:
        saga_id = self._next_id("saga")
        definition = order_saga(saga_id, timeout_s=2, attempts=4)
        roll = self.rng.random()
        if roll < 0.2:  # a definite failure: compensate the earlier steps
            definition["steps"][2]["action"]["path"] = "/charges/declined"
        elif roll < 0.3:  # waits for a signal, or times out and compensates
            definition["steps"].insert(1, {"name": "approval", "await": "approved", "timeout_s": 4})
            self.awaiting.append(saga_id)
        return saga_id, definition

    def transaction(self, no_vote: bool | None = None) -> tuple[str, dict]:
        tx_id = self._next_id("tx")
        no_vote = self.rng.random() < 0.2 if no_vote is None else no_vote
        participants = [
            {
                "service": s,
                "prepare": {"path": "/prepare-no" if (no_vote and s == "payments") else "/prepare"},
                "commit": {"path": "/commit"},
                "abort": {"path": "/abort"},
            }
            for s in ("inventory", "payments", "shipping")
        ]
        return tx_id, {"id": tx_id, "participants": participants, "timeout_s": 5}


class Workload(WorkloadMix):
    def __init__(
        self, client: Coordinator, history: History, rng: random.Random, *, rate_per_s: float, processes: int
    ) -> None:
        super().__init__(rng, rate_per_s=rate_per_s, processes=processes)
        self.client = client
        self.history = history

    async def _record(self, process: int, kind: str, key: str, value: Any, call) -> Any:
        handle = self.history.invoke(process, kind, key, value)
        try:
            result = await call()
        except NotFound:
            if kind == "registry_get":
                handle.ok(None)
                return None
            handle.fail("not_found")
            return None
        except Rejected as error:
            handle.fail(error.code)
            return None
        except CoordinatorError as error:  # no leader, unavailable, timeout, outcome unknown
            handle.unknown(error.code)
            return None
        handle.ok(result)
        return result

    async def _one(self, process: int) -> None:
        roll = self.rng.random()
        c = self.client
        if roll < 0.3:
            saga_id, definition = self.saga()
            self.sagas.append(saga_id)
            await self._record(process, "submit_saga", saga_id, definition, lambda: _id(c.submit_saga(definition)))
        elif roll < 0.5:
            tx_id, definition = self.transaction()
            self.transactions.append(tx_id)
            await self._record(process, "submit_tx", tx_id, definition, lambda: _id(c.submit_transaction(definition)))
        elif roll < 0.55 and self.awaiting:
            saga_id = self.awaiting.pop(self.rng.randrange(len(self.awaiting)))
            await self._record(
                process, "signal", saga_id, {"ok": True}, lambda: c.signal_saga(saga_id, "approved", {"ok": True})
            )
        else:
            key = self.rng.choice(REGISTRY_KEYS)
            op = self.rng.random()
            if op < 0.45:
                url = f"http://127.0.0.1:{20000 + self.rng.randrange(REGISTRY_VALUES)}"
                await self._record(process, "registry_put", key, url, lambda: _url(c.put_service(key, url)))
            elif op < 0.9:
                await self._record(process, "registry_get", key, None, lambda: _url(c.get_service(key)))
            else:
                await self._record(process, "registry_delete", key, None, lambda: _url(c.delete_service(key)))

    async def run(self, until_s: float) -> None:
        async def process(n: int) -> None:
            pause_s = self.processes / self.rate_per_s
            while time.monotonic() < until_s:
                started = time.monotonic()
                await self._one(n)
                await asyncio.sleep(max(0.0, pause_s - (time.monotonic() - started)) * self.rng.uniform(0.5, 1.5))

        await asyncio.gather(*(process(n) for n in range(self.processes)))


async def _id(submission) -> str:
    return (await submission).id


async def _url(call) -> str | None:
    return (await call).url
