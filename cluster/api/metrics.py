"""Prometheus text exposition of a node's Raft and API figures."""

from __future__ import annotations

from coordinator.cluster.core.node import Node
from coordinator.consensus.stats import Histogram

__all__ = ["render_metrics"]


def _histogram(lines: list[str], name: str, help_text: str, histogram: Histogram, labels: str) -> None:
    buckets, total, count = histogram.snapshot()
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound, cumulative in buckets:
        lines.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {cumulative}')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    lines.append(f"{name}_sum{{{labels}}} {total:.6f}")
    lines.append(f"{name}_count{{{labels}}} {count}")


def _simple(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{labels}}} {value}" for labels, value in samples]


def render_metrics(node: Node) -> str:
    status = node.log.status()
    stats = node.log.stats
    n = f'node="{node.config.node.id}"'
    lines: list[str] = []
    _simple(lines, "coordinator_raft_term", "gauge", "Current Raft term.", [(n, status.term)])
    _simple(
        lines,
        "coordinator_raft_commit_index",
        "gauge",
        "Raft commit index known to this node.",
        [(n, status.commit_index)],
    )
    _simple(
        lines, "coordinator_raft_applied_index", "gauge", "Last log index applied here.", [(n, status.applied_index)]
    )
    _simple(
        lines,
        "coordinator_raft_role",
        "gauge",
        "1 for this node's current role.",
        [(f'{n},role="{role}"', int(status.role.value == role)) for role in ("leader", "follower", "candidate")],
    )
    _simple(
        lines, "coordinator_raft_has_quorum", "gauge", "1 if this node hears a majority.", [(n, int(status.has_quorum))]
    )
    _simple(
        lines,
        "coordinator_raft_peer_connected",
        "gauge",
        "1 if the Raft connection to the peer is up.",
        [(f'{n},peer="{peer}"', int(up)) for peer, up in sorted(status.peers.items())],
    )
    _simple(
        lines,
        "coordinator_proposals_total",
        "counter",
        "Proposals by outcome (applied, rejected, not_written, unknown, timeout).",
        [(f'{n},outcome="{k}"', v) for k, v in sorted(stats.proposals.items())] or [(f'{n},outcome="applied"', 0)],
    )
    _simple(
        lines,
        "coordinator_applied_rejections_total",
        "counter",
        "Entries applied as recorded rejections.",
        [(n, stats.applied_rejections)],
    )
    _simple(
        lines,
        "coordinator_stale_term_entries_total",
        "counter",
        "Entries refused because a later leader appended what an earlier one proposed.",
        [(n, stats.stale_term_entries)],
    )
    _simple(
        lines,
        "coordinator_entries_applied_total",
        "counter",
        "Log entries applied here (a batch counts once).",
        [(n, stats.entries_applied)],
    )
    _simple(
        lines,
        "coordinator_commands_applied_total",
        "counter",
        "Commands applied here (each command of a batch).",
        [(n, stats.commands_applied)],
    )
    _simple(
        lines,
        "coordinator_read_barriers_total",
        "counter",
        "Barrier entries proposed for linearizable reads.",
        [(n, stats.barriers)],
    )
    _simple(
        lines, "coordinator_barrier_reads_total", "counter", "Reads served after a barrier.", [(n, stats.barrier_reads)]
    )
    snapshots = node.log.snapshots if hasattr(node.log, "snapshots") else None
    if snapshots is not None:
        _simple(
            lines,
            "coordinator_snapshots_taken_total",
            "counter",
            "Snapshots written at log compaction.",
            [(n, snapshots.taken)],
        )
        _simple(
            lines, "coordinator_snapshots_restored_total", "counter", "Snapshots loaded.", [(n, snapshots.restored)]
        )
    _simple(
        lines,
        "coordinator_raft_resent_entries_total",
        "counter",
        "Times a follower re-received entries it had applied (PySyncObj resends; same entries).",
        [(n, node.truncations.count)],
    )
    _histogram(
        lines, "coordinator_apply_seconds", "Time to apply one entry to the state machine.", stats.apply_seconds, n
    )
    _histogram(
        lines,
        "coordinator_commit_seconds",
        "Time from proposal to applied result on the leader.",
        stats.commit_seconds,
        n,
    )
    with node.log.reading():
        services = len(node.state.registry.services)
    _simple(lines, "coordinator_services", "gauge", "Registered participant services.", [(n, services)])
    with node.log.reading():
        workflows = [("saga", len(node.state.sagas.active)), ("tx", len(node.state.transactions.active))]
        kept = [("saga", len(node.state.sagas.items)), ("tx", len(node.state.transactions.items))]
    _simple(
        lines,
        "coordinator_workflows_in_flight",
        "gauge",
        "Unfinished workflows by kind.",
        [(f'{n},kind="{k}"', v) for k, v in workflows],
    )
    _simple(
        lines,
        "coordinator_workflows_kept",
        "gauge",
        "Workflows kept (in flight and terminal, until retention prunes them) by kind.",
        [(f'{n},kind="{k}"', v) for k, v in kept],
    )
    executor = node.executor.view()
    _simple(
        lines,
        "coordinator_executor_calls_in_flight",
        "gauge",
        "Participant calls in flight on this node.",
        [(n, executor["calls_in_flight"])],
    )
    breakers = executor["breakers"]
    _simple(
        lines,
        "coordinator_breaker_open",
        "gauge",
        "1 while the circuit breaker of a participant service is open.",
        [(f'{n},service="{name}"', int(b["open"])) for name, b in breakers.items()] or [(f'{n},service=""', 0)],
    )
    _simple(
        lines,
        "coordinator_http_responses_total",
        "counter",
        "HTTP responses by status.",
        [(f'{n},status="{k}"', v) for k, v in sorted(node.http_responses.items())] or [(f'{n},status="200"', 0)],
    )
    return "\n".join(lines) + "\n"
