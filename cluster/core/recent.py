"""The last minutes of a node, for the dashboard's cluster page: ``GET
/v1/cluster/recent``.

Every ``interval_s`` the node process (cluster/launcher/process.py) takes
one sample of what the node already measures - commands applied, workflows
that reached a terminal state here (counted by the event hub), the leader's
proposal-to-applied histogram, participant calls in flight - and keeps the
window since the previous sample: rates per second and the commit p99 of
that window (the upper bound of the histogram bucket that holds it, as
Prometheus' ``histogram_quantile`` would answer from the same buckets). The
last ``size`` windows are kept: ten minutes of five-second windows by
default. Nothing replicated is read; a follower's windows are its own (its
commit histogram is empty: only a leader proposes).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from coordinator.grammar import format_ms

__all__ = ["INTERVAL_S", "RecentStats", "Sample", "quantile_bound"]

INTERVAL_S = 5.0
WINDOWS = 120  # ten minutes of INTERVAL_S


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float  # wall clock
    commands: int
    finished: int
    commit_buckets: tuple[tuple[float, int], ...]  # (upper bound s, cumulative count)
    commit_count: int
    calls_in_flight: int


def quantile_bound(q: float, before: Sample, after: Sample) -> float | None:
    """The upper bound (seconds) of the bucket holding the q-quantile of the
    observations between two samples; None without any, inf above the last bound."""
    count = after.commit_count - before.commit_count
    if count <= 0:
        return None
    earlier = dict(before.commit_buckets)
    for bound, cumulative in after.commit_buckets:
        if cumulative - earlier.get(bound, 0) >= q * count:
            return bound
    return float("inf")


class RecentStats:
    def __init__(self, size: int = WINDOWS, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.windows: collections.deque[dict] = collections.deque(maxlen=size)
        self._last: Sample | None = None

    def add(self, sample: Sample) -> None:
        last, self._last = self._last, sample
        if last is None or sample.at_s <= last.at_s:
            return
        seconds = sample.at_s - last.at_s
        p99 = quantile_bound(0.99, last, sample)
        self.windows.append(
            {
                "at": format_ms(int(sample.at_s * 1000)),
                "seconds": round(seconds, 3),
                "commands_per_s": round((sample.commands - last.commands) / seconds, 2),
                "workflows_finished_per_s": round((sample.finished - last.finished) / seconds, 2),
                "commit_p99_ms": None if p99 is None else (None if p99 == float("inf") else round(p99 * 1000, 3)),
                "commits": sample.commit_count - last.commit_count,
                "calls_in_flight": sample.calls_in_flight,
            }
        )

    def view(self) -> list[dict]:
        return list(self.windows)
