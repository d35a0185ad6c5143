"""``[executor]`` in the cluster file: what the leader's executor
(cluster/executor/executor.py) runs with - how many workflows it takes in,
when a participant's circuit breaker opens, how long finished workflows are
kept. The core holds it with the rest of the configuration."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExecutorSettings"]


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    inflight_workflows_max: int = 10_000
    breaker_failures_to_open: int = 5
    breaker_slow_interval_s: float = 2.0
    retention_s: float = 24 * 3600.0
    retention_count: int = 10_000
    retention_check_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.inflight_workflows_max <= 1_000_000:
            raise ValueError("inflight_workflows_max must be in 1..1000000")
        if self.breaker_failures_to_open < 1 or self.breaker_slow_interval_s <= 0:
            raise ValueError("breaker_failures_to_open >= 1 and breaker_slow_interval_s > 0 are required")
        if self.retention_s < 0 or self.retention_count < 0 or self.retention_check_s <= 0:
            raise ValueError("retention_s, retention_count >= 0 and retention_check_s > 0 are required")
