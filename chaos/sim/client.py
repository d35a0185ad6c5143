"""Simulated clients: requests to the nodes' API operations, and the workload.

A request goes to a node after a seeded delay and runs there as
:mod:`coordinator.cluster.api.operations` (what the HTTP and gRPC servers call) inside that
node's process; the answer comes back after another delay. A dead node
refuses, a node that dies mid-request resets the connection, and a slow
one times out - each an unknown outcome for that attempt. While the
nemesis restricts the clients to some nodes (``world.client_reach``), a
request to another node is unreachable (never sent). Like the real
client, :class:`SimClient` follows ``not_leader`` to the leader, retries
``no_leader`` / ``not_written`` / ``outcome_unknown`` and lost answers
(every write is idempotent), and gives up after a bounded number of
attempts or seconds. :class:`SimWorkload` is ``coordinator.chaos.workload`` on it:
the same mix of sagas (some declined, some awaiting a signal), 2PC
transactions (some with a no vote), signals and registry reads and
writes, every operation recorded in the History.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from coordinator.chaos.workload import REGISTRY_KEYS, REGISTRY_VALUES, WorkloadMix
from coordinator.cluster.api import operations
from coordinator.cluster.core.errors import ApiError

if TYPE_CHECKING:  # pragma: no cover
    from coordinator.cluster.core.node import Node

    from .world import World

__all__ = ["SimClient", "SimWorkload"]

RETRIED_CODES = frozenset({"no_leader", "not_written", "outcome_unknown"})
Operation = Callable[["Node"], Awaitable[Any]]


class _NoAnswer(Exception):
    """No answer from the node: refused, reset or timed out."""


class SimClient:
    def __init__(
        self,
        world: World,
        rng: random.Random,
        *,
        attempts: int = 8,
        timeout_s: float = 5.0,
        budget_s: float = 12.0,
        delay_s: tuple[float, float] = (0.0005, 0.005),
    ) -> None:
        self.world = world
        self.rng = rng
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self.delay_s = delay_s
        self.hint: str | None = None

    async def _send(self, node_id: str, operation: Operation) -> Any:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(*self.delay_s))
        reach = self.world.client_reach
        if reach is not None and node_id not in reach:
            raise _NoAnswer("unreachable")  # no route to it: the request never left
        slot = self.world.cluster.slots[node_id]
        node, process = slot.node, slot.process
        if node is None or process is None:
            raise _NoAnswer("refused")
        task = loop.create_task(operation(node), context=process.context)
        task.add_done_callback(_retrieve)  # an answer nobody waits for any more is not an error
        done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        if not done:
            raise _NoAnswer("timeout")  # the node goes on with it
        if task.cancelled():
            raise _NoAnswer("reset")  # the node died
        await asyncio.sleep(self.rng.uniform(*self.delay_s))
        error = task.exception()
        if error is not None and not isinstance(error, ApiError):
            self.world.cluster._error(f"{node_id}: the API raised {error!r}")  # HTTP would answer 500
            raise ApiError(repr(error))
        if error is not None:
            raise error
        return task.result()

    async def call(self, operation: Operation) -> tuple[str, Any]:
        """("ok", value) | ("fail", code): definitely not done | ("unknown", code).

        A definite refusal after an attempt whose outcome is unknown is not
        definite: the first attempt may have done it (a retried delete
        answers not_found), so the call is unknown."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget_s
        last, target, backoff_s = "no_attempt", None, 0.1
        maybe_done = False
        ids = self.world.cluster.ids
        for _ in range(self.attempts):
            if loop.time() > deadline:
                break
            node_id = target or self.hint or self.rng.choice(ids)
            target = None
            try:
                value = await self._send(node_id, operation)
            except operations.LeaderElsewhere as redirect:
                self.hint = target = redirect.leader.id
                last = "not_leader"
                continue
            except ApiError as error:
                if error.code not in RETRIED_CODES:
                    definite = (error.status < 500 or error.code == "suspended") and not maybe_done
                    return ("fail" if definite else "unknown"), error.code
                last = error.code
                maybe_done = maybe_done or error.code == "outcome_unknown"
            except _NoAnswer as no_answer:
                last = str(no_answer)
                maybe_done = maybe_done or last not in ("refused", "unreachable")
            else:
                self.hint = node_id
                return "ok", value
            self.hint = None
            await asyncio.sleep(backoff_s * self.rng.uniform(0.5, 1.5))
            backoff_s = min(1.0, backoff_s * 2)
        return "unknown", last


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


async def _submit(node: Node, kind: str, definition: dict) -> str:
    view, _created = await operations.submit_workflow(node, kind, json.dumps(definition))
    return view["id"]


class SimWorkload(WorkloadMix):
    def __init__(
        self, world: World, client: SimClient, rng: random.Random, *, rate_per_s: float, processes: int
    ) -> None:
        super().__init__(rng, rate_per_s=rate_per_s, processes=processes)
        self.world = world
        self.client = client

    async def record(
        self,
        process: int | str,
        kind: str,
        key: str | None,
        value: Any,
        operation: Operation,
        *,
        absent_is_ok: bool = False,
    ) -> str:
        handle = self.world.history.invoke(process, kind, key, value)
        watch = self.world.register_watch
        watch.invoked(handle.id, kind, key, value)
        outcome, result = await self.client.call(operation)
        if outcome == "ok":
            handle.ok(result)
        elif outcome == "fail" and absent_is_ok and result == "not_found":
            outcome, result = "ok", None
            handle.ok(None)
        elif outcome == "fail":
            handle.fail(result)
        else:
            handle.unknown(result)
        watch.completed(handle.id, outcome, result)
        self.world.trace.event("op", process, kind, key, outcome, result)
        return outcome

    async def submit_saga(self, process: int | str, saga_id: str, definition: dict) -> str:
        self.sagas.append(saga_id)
        return await self.record(process, "submit_saga", saga_id, definition, lambda n: _submit(n, "saga", definition))

    async def submit_transaction(self, process: int | str, tx_id: str, definition: dict) -> str:
        self.transactions.append(tx_id)
        return await self.record(process, "submit_tx", tx_id, definition, lambda n: _submit(n, "tx", definition))

    async def one(self, process: int) -> None:
        roll = self.rng.random()
        if roll < 0.3:
            await self.submit_saga(process, *self.saga())
        elif roll < 0.5:
            await self.submit_transaction(process, *self.transaction())
        elif roll < 0.55 and self.awaiting:
            saga_id = self.awaiting.pop(self.rng.randrange(len(self.awaiting)))
            await self.record(
                process,
                "signal",
                saga_id,
                {"ok": True},
                lambda n: operations.signal_saga(n, saga_id, "approved", json.dumps({"ok": True})),
            )
        else:
            await self.registry(process)

    async def registry(self, process: int | str) -> None:
        """A registry read or write. A write carries one request id for all its
        attempts, as the client library's do (cluster/stores/requests.py)."""
        key = self.rng.choice(REGISTRY_KEYS)
        op = self.rng.random()
        request_id = f"{process}-{self.rng.getrandbits(48):012x}"
        if op < 0.45:
            url = f"http://127.0.0.1:{20000 + self.rng.randrange(REGISTRY_VALUES)}"
            body = json.dumps({"url": url})
            await self.record(
                process,
                "registry_put",
                key,
                url,
                lambda n: _url(operations.put_service(n, key, body, request_id=request_id)),
            )
        elif op < 0.9:
            await self.record(
                process,
                "registry_get",
                key,
                None,
                lambda n: _url(operations.get_service(n, key, stale=None)),
                absent_is_ok=True,
            )
        else:
            await self.record(
                process,
                "registry_delete",
                key,
                None,
                lambda n: _url(operations.delete_service(n, key, request_id=request_id)),
            )

    async def run(self, until_s: float) -> None:
        loop = asyncio.get_running_loop()

        async def process(n: int) -> None:
            pause_s = self.processes / self.rate_per_s
            while loop.time() < until_s:
                started = loop.time()
                await self.one(n)
                await asyncio.sleep(max(0.0, pause_s - (loop.time() - started)) * self.rng.uniform(0.5, 1.5))

        await asyncio.gather(*(process(n) for n in range(self.processes)))


async def _url(call: Awaitable[dict]) -> str | None:
    return (await call)["url"]
