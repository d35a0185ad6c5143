"""Deterministic simulation: the whole cluster in one process, driven by a seed.

Real PySyncObj nodes (``autoTick=False``) with the real journal, snapshots,
applier, state machine, executor and drivers, on a simulated network,
clock, disk (power loss) and participants; the chaos workload and the
chaos checkers; a trace digest that a replay of the seed reproduces.

- ``coordinator.chaos.sim.run``: :func:`simulate` (one seed, judged) and :class:`SimResult`;
- ``coordinator.chaos.sim.settings``: :class:`SimSettings`, the faults and the planted bugs;
- ``coordinator.chaos.sim.world``: :class:`World` (what a run owns, built from its seed and settings);
- ``coordinator.chaos.sim.cluster``: nodes, ticks, crashes, stalls, partitions, invariants;
- ``coordinator.chaos.sim.network``, ``participants``, ``disk``, ``clock``: the simulated edges;
- ``coordinator.chaos.sim.client``, ``nemesis``: the workload and the faults;
- ``coordinator.chaos.sim.cli``: ``coordinator simulate --seed N``.
"""

from .run import SimResult, simulate
from .settings import PLANTED_BUGS, SimSettings
from .world import World

__all__ = ["PLANTED_BUGS", "SimResult", "SimSettings", "World", "simulate"]
