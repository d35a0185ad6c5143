"""The arithmetic of ``coordinator bench``: percentiles, ratios, summaries,
process figures from ``/proc`` and the reading of a py-spy profile. Pure
except :func:`proc_stats`; tested in ``tests/cluster/test_bench.py``."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

__all__ = [
    "metric_value",
    "commands_committed",
    "distribution_ms",
    "latency_summary_ms",
    "percentile",
    "proc_stats",
    "ratio",
    "top_functions",
]

# Commands a node applied, each member of a group-commit batch counted: the
# node's state-machine throughput. Read only if a node exports it.
COMMANDS_METRIC = "coordinator_commands_applied_total"
# Rows :func:`top_functions` answers at most.
TOP_FUNCTIONS_MAX = 100


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 <= q <= 1) of ``values``; 0.0 when empty.

    With 20 values, p99 is the largest: a tail figure over few runs is their worst."""
    assert 0.0 <= q <= 1.0, q
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_summary_ms(latencies_s: list[float]) -> dict[str, float]:
    """{p50, p90, p99, max} in milliseconds, rounded to 0.01 ms."""
    return {
        "p50": round(percentile(latencies_s, 0.50) * 1000, 2),
        "p90": round(percentile(latencies_s, 0.90) * 1000, 2),
        "p99": round(percentile(latencies_s, 0.99) * 1000, 2),
        "max": round(max(latencies_s, default=0.0) * 1000, 2),
    }


def distribution_ms(values_ms: list[float]) -> dict[str, float | int]:
    """{count, p50, p99, max} of figures already in milliseconds."""
    return {
        "count": len(values_ms),
        "p50": round(percentile(values_ms, 0.50), 1),
        "p99": round(percentile(values_ms, 0.99), 1),
        "max": round(max(values_ms, default=0.0), 1),
    }


def ratio(ours_per_s: float | None, theirs_per_s: float | None) -> float | None:
    """``ours / theirs`` to three decimals; None when either is missing or theirs is not positive."""
    if ours_per_s is None or theirs_per_s is None or theirs_per_s <= 0:
        return None
    return round(ours_per_s / theirs_per_s, 3)


def commands_committed(metrics_text: str) -> int | None:
    """The node's applied-commands counter (COMMANDS_METRIC) from its
    ``/metrics`` text; None when it exports none. Group commit puts several
    commands in one Raft entry, so the commit index counts entries, not commands.

    ``coordinator_proposals_total`` is no substitute: the executor's proposal
    of a step outcome is cancelled by the state change it causes before it is
    counted, so it misses most commands of a workflow."""
    return metric_value(metrics_text, COMMANDS_METRIC)


def metric_value(metrics_text: str, name: str) -> int | None:
    """The value of the first sample of ``name`` in a node's ``/metrics``
    text (each node labels its own samples with its id); None without one."""
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a live process, from /proc; (0, 0) if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        status = Path(f"/proc/{pid}/status").read_text()
        hwm_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return cpu_s, hwm_kb / 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0.0


def top_functions(folded: str, limit: int = 15) -> tuple[int, list[dict]]:
    """Read folded stacks (py-spy ``--format raw``: ``frame;frame;... COUNT``
    per line, outermost first) and answer (samples, rows): the functions with
    the most samples, each ``{"function", "self_pct", "total_pct"}``, by self
    time first. ``total`` counts a sample once per function even under recursion."""
    assert 0 < limit <= TOP_FUNCTIONS_MAX, limit
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return 0, []
    ranked = sorted(total, key=lambda f: (own[f], total[f]), reverse=True)[:limit]
    rows = [
        {"function": f, "self_pct": round(100 * own[f] / samples, 1), "total_pct": round(100 * total[f] / samples, 1)}
        for f in ranked
    ]
    return samples, rows


STOP_GRACE_S = 5.0


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM the processes a baseline started (by their Popen), then SIGKILL what outlives the grace."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_GRACE_S)
