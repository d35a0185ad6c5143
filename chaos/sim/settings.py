"""What one simulated run is configured with: :class:`SimSettings`, the
faults the nemesis can inject and the bugs the simulation can plant.

The nemesis (:mod:`coordinator.chaos.sim.nemesis`) describes each fault of
FAULTS and injects them; the world (:mod:`coordinator.chaos.sim.world`)
builds a run from these settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.cluster.core.executor_settings import WorkerSettings
from coordinator.cluster.executor.executor import ExecutorSettings
from coordinator.consensus import RaftSettings

from .network import LinkFaults
from .participants import ParticipantFaults

__all__ = [
    "FAULTS",
    "NODES_MAX",
    "PLANTED_BUGS",
    "SNAPSHOTS_OFTEN",
    "WORKER_FAULTS",
    "WORKERS_MAX",
    "SimSettings",
    "sim_worker_settings",
]

# What the nemesis injects, in the order it draws from (see its docstring).
FAULTS = (
    "crash",
    "power-loss-all",
    "stall",
    "partition",
    "partition-leader",
    "participant-outage",
    "participant-crash",
    "link-flap",
    "slow-disk",
    "clock-skew",
    "client-reach",
    # Only in a run with workers (remote or auto executor mode): last, so a
    # run without workers draws its faults as before they existed.
    "worker-kill",
    "worker-pause",
    "worker-partition",
)
WORKER_FAULTS = ("worker-kill", "worker-pause", "worker-partition")

# Bugs the checkers must catch (the simulation's self-test):
#   participant_without_idempotency  payments runs every delivery of a call again
#   journal_ignores_sync             the journal's fsync makes nothing durable
#   stale_reads                      registry GETs served from the local replica, without the
#                                    leader check and barrier (a follower, a deposed leader)
#   participant_forgets_on_crash     a crashed participant restarts with an empty idempotency store
#   election_on_every_reset          a node stands for election at once on every connection reset
#   sync_returns_early               under a disk stall the journal's sync returns (and the node
#                                    acknowledges) before the data is durable
#   skew_beyond_bound                clock-skew jumps up to 4x the declared bound
PLANTED_BUGS = (
    "participant_without_idempotency",
    "journal_ignores_sync",
    "stale_reads",
    "participant_forgets_on_crash",
    "election_on_every_reset",
    "sync_returns_early",
    "skew_beyond_bound",
)
NODES_MAX = 7
WORKERS_MAX = 5


def sim_worker_settings(count: int) -> WorkerSettings:
    """[workers] of a simulated run (chaos/sim/workers.py): w1..wN, short heartbeats and leases."""
    return WorkerSettings(ids=tuple(f"w{i}" for i in range(1, count + 1)), heartbeat_s=0.25, lease_s=1.0)


def _raft_settings() -> RaftSettings:
    return RaftSettings(fsync=False)  # the simulated disk keeps the sync points; no real fsync


# Log compaction every 150 entries or 20 s: snapshots are taken, loaded on
# restart and sent to lagging followers within a short run. (Production
# compacts every 5000 entries or 300 s.) It exposed the PySyncObj bug that
# coordinator.consensus.pysyncobj_log._snapshot_commit guards against.
SNAPSHOTS_OFTEN = RaftSettings(fsync=False, compaction_min_entries=150, compaction_min_time_s=20.0)


@dataclass(frozen=True)
class SimSettings:
    nodes: int = 3
    duration_s: float = 30.0  # simulated seconds of workload under faults
    settle_s_max: float = 120.0  # after healing: until every workflow is terminal
    rate_per_s: float = 6.0
    processes: int = 4
    faults: tuple[str, ...] = FAULTS
    fault_interval_s: tuple[float, float] = (1.5, 4.0)
    link_faults: LinkFaults = field(default_factory=LinkFaults)
    participant_faults: ParticipantFaults = field(default_factory=ParticipantFaults)
    raft: RaftSettings = field(default_factory=_raft_settings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    min_ok_operations: int = 5
    trace_lines: int = 0  # lines of the trace kept for reading (0: only its digest)
    planted_bug: str | None = None
    # Transition workers beside the nodes (chaos/sim/workers.py), with
    # executor.mode "remote" or "auto"; None: the seed decides (simulate()).
    workers: int | None = 0

    def __post_init__(self) -> None:
        if self.workers is not None and not 0 <= self.workers <= WORKERS_MAX:
            raise ValueError(f"workers must be 0..{WORKERS_MAX}")
        if self.workers and self.executor.mode == "local":
            raise ValueError("workers need executor mode remote or auto")
        if not 1 <= self.nodes <= NODES_MAX:
            raise ValueError(f"nodes must be 1..{NODES_MAX}")
        if self.duration_s < 0 or self.settle_s_max <= 0 or self.rate_per_s <= 0 or self.processes < 1:
            raise ValueError("duration_s >= 0, settle_s_max > 0, rate_per_s > 0 and processes >= 1 are required")
        if self.planted_bug is not None and self.planted_bug not in PLANTED_BUGS:
            raise ValueError(f"planted_bug must be one of {PLANTED_BUGS}")
