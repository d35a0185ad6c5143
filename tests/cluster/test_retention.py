"""Retention prunes everything past it at each check, not one batch."""

import random

from coordinator.cluster.core.executor_settings import ExecutorSettings
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.executor import Executor
from coordinator.cluster.stores.workflows import PRUNE_BATCH_MAX


class _Driver:
    def __init__(self, kind: str, ids: list[str]) -> None:
        self.kind, self.ids = kind, ids

    def prunable(self, at_ms: int) -> list[str]:
        return list(self.ids)


def _executor(drivers: dict, proposed: list, stop_after: int | None = None) -> Executor:
    settings = ExecutorSettings()
    breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s)
    callers = ParticipantCallers(http=None)  # no call is made
    executor = Executor(
        None, None, settings, callers=callers, breakers=breakers, clock=lambda: 1_700_000_000.0, rng=random.Random(1)
    )
    executor.generation = 7
    executor.drivers = drivers

    async def propose(command, generation):
        assert generation == 7
        proposed.append((command.kind, command.body["ids"]))
        if stop_after is not None and len(proposed) >= stop_after:
            executor.generation += 1  # leadership lost while pruning

    executor.propose = propose
    return executor


async def test_every_workflow_past_retention_is_proposed_in_bounded_batches():
    sagas = [f"s{i}" for i in range(2 * PRUNE_BATCH_MAX + 5)]
    proposed: list = []
    executor = _executor({"saga": _Driver("saga", sagas), "tx": _Driver("tx", ["t1"])}, proposed)
    assert await executor.prune_retained(7) == len(sagas) + 1
    assert [kind for kind, _ in proposed] == ["saga.prune"] * 3 + ["tx.prune"]
    assert all(len(ids) <= PRUNE_BATCH_MAX for _, ids in proposed)
    assert [i for _, ids in proposed[:3] for i in ids] == sagas
    assert proposed[3][1] == ["t1"]


async def test_pruning_stops_when_leadership_changes():
    proposed: list = []
    executor = _executor(
        {"saga": _Driver("saga", [f"s{i}" for i in range(3 * PRUNE_BATCH_MAX)])}, proposed, stop_after=1
    )
    assert await executor.prune_retained(7) == PRUNE_BATCH_MAX
    assert len(proposed) == 1


async def test_nothing_past_retention_proposes_nothing():
    proposed: list = []
    executor = _executor({"saga": _Driver("saga", [])}, proposed)
    assert await executor.prune_retained(7) == 0
    assert proposed == []
