"""Counters and histograms the node exports on /metrics (no dependency)."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

__all__ = ["Histogram", "LogStats", "LATENCY_BUCKETS_S"]

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """A cumulative histogram in seconds, safe to observe from any thread."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
            self.total += seconds
            self.count += 1

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        with self._lock:
            cumulative, running = [], 0
            # counts has one more slot than buckets: above the largest bound (+Inf, which is `count`)
            for bound, n in zip(self.buckets, self.counts, strict=False):
                running += n
                cumulative.append((bound, running))
            return cumulative, self.total, self.count


@dataclass
class LogStats:
    proposals: dict[str, int] = field(default_factory=dict)  # outcome -> count
    apply_seconds: Histogram = field(default_factory=Histogram)
    commit_seconds: Histogram = field(default_factory=Histogram)  # propose -> applied result
    barriers: int = 0
    barrier_reads: int = 0
    applied_rejections: int = 0
    entries_applied: int = 0  # log entries (a batch entry counts once)
    commands_applied: int = 0  # commands in them, barriers included
    stale_term_entries: int = 0  # entries refused: proposed in another term (see coordinator.consensus.applier)

    def count_proposal(self, outcome: str) -> None:
        self.proposals[outcome] = self.proposals.get(outcome, 0) + 1
