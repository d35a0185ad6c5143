"""``[executor]`` and ``[workers]`` in the cluster file: what the leader's
executor (cluster/executor/executor.py) runs with - how many workflows it
takes in, when a participant's circuit breaker opens, how long finished
workflows are kept, and who makes the participant calls (``mode``) - and
which transition workers it admits (cluster/executor/dispatch.py). The core
holds both with the rest of the configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinator.grammar.limits import RELEASE_PATTERN

__all__ = ["EXECUTOR_MODES", "RELEASE_PATTERN", "WORKER_ID_PATTERN", "ExecutorSettings", "WorkerSettings"]

# local: the leader makes every participant call itself (one process; the
# default). remote: only admitted workers make them - the leader never calls
# a participant, even with no worker connected (the calls wait, queued).
# auto: workers when one that can take the call is connected, else the leader.
EXECUTOR_MODES = ("local", "remote", "auto")
WORKER_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
WORKERS_MAX = 256


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    inflight_workflows_max: int = 10_000
    breaker_failures_to_open: int = 5
    breaker_slow_interval_s: float = 2.0
    retention_s: float = 24 * 3600.0
    retention_count: int = 10_000
    retention_check_s: float = 5.0
    mode: str = "local"

    def __post_init__(self) -> None:
        if not 1 <= self.inflight_workflows_max <= 1_000_000:
            raise ValueError("inflight_workflows_max must be in 1..1000000")
        if self.breaker_failures_to_open < 1 or self.breaker_slow_interval_s <= 0:
            raise ValueError("breaker_failures_to_open >= 1 and breaker_slow_interval_s > 0 are required")
        if self.retention_s < 0 or self.retention_count < 0 or self.retention_check_s <= 0:
            raise ValueError("retention_s, retention_count >= 0 and retention_check_s > 0 are required")
        if self.mode not in EXECUTOR_MODES:
            raise ValueError(f"mode must be one of {', '.join(repr(m) for m in EXECUTOR_MODES)} (got {self.mode!r})")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """``[workers]``: who may connect as a transition worker.

    ``ids``: the worker ids the cluster knows; any other is refused (none
    by default: a cluster admits no worker until its file names them).
    ``releases``: the releases admitted; empty admits any (a workflow that
    names a release still runs only on workers of that release).
    ``heartbeat_s``: how often a worker says it is alive; ``lease_s``: a
    worker silent this long loses its leases, and its calls go to another."""

    ids: tuple[str, ...] = ()
    releases: tuple[str, ...] = ()
    heartbeat_s: float = 1.0
    lease_s: float = 5.0

    def __post_init__(self) -> None:
        if len(self.ids) > WORKERS_MAX or len(self.releases) > WORKERS_MAX:
            raise ValueError(f"at most {WORKERS_MAX} ids and {WORKERS_MAX} releases")
        for value in self.ids:
            if not isinstance(value, str) or not WORKER_ID_PATTERN.fullmatch(value):
                raise ValueError(f"ids: {value!r} must match {WORKER_ID_PATTERN.pattern}")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids: must be unique")
        for value in self.releases:
            if not isinstance(value, str) or not RELEASE_PATTERN.fullmatch(value):
                raise ValueError(f"releases: {value!r} must match {RELEASE_PATTERN.pattern}")
        if not 0.05 <= self.heartbeat_s <= 60 or not self.heartbeat_s * 2 <= self.lease_s <= 600:
            raise ValueError("heartbeat_s must be in 0.05..60 and lease_s in 2*heartbeat_s..600")

    def admits(self, release: str) -> bool:
        return not self.releases or release in self.releases
