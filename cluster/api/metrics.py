"""Prometheus text exposition of a node's Raft and API figures, by ``prometheus_client``.

The figures live where they are measured (the log's stats, the state, the
executor, the HTTP counters), so the node has one custom collector that
reads them at scrape time (``prometheus_client``'s pattern for exporting
figures owned elsewhere), in a registry of its own: nothing is global,
several nodes in one process (the simulator, tests) never share a metric.
Every metric carries the ``node`` label; the names are those of the
hand-written exposition this replaced.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from coordinator.cluster.core.node import Node
from coordinator.consensus.stats import Histogram

__all__ = ["NodeCollector", "render_metrics"]

ROLES = ("leader", "follower", "candidate")


def _gauge(name: str, help_text: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["node"])
    family.add_metric([node], value)
    return family


def _counter(name: str, help_text: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=["node"])
    family.add_metric([node], value)
    return family


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily, node: str, samples: list[tuple[str, float]]
) -> GaugeMetricFamily | CounterMetricFamily:
    for label, value in samples:
        family.add_metric([node, label], value)
    return family


def _histogram(name: str, help_text: str, node: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets, total, count = histogram.snapshot()
    family = HistogramMetricFamily(name, help_text, labels=["node"])
    family.add_metric(
        [node], [(f"{bound:g}", cumulative) for bound, cumulative in buckets] + [("+Inf", count)], sum_value=total
    )
    return family


class NodeCollector:
    """Reads one node's figures when Prometheus scrapes."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        status = node.log.status()
        stats = node.log.stats
        n = node.config.node.id
        yield _gauge("coordinator_raft_term", "Current Raft term.", n, status.term)
        yield _gauge("coordinator_raft_commit_index", "Raft commit index known to this node.", n, status.commit_index)
        yield _gauge("coordinator_raft_applied_index", "Last log index applied here.", n, status.applied_index)
        role = GaugeMetricFamily("coordinator_raft_role", "1 for this node's current role.", labels=["node", "role"])
        yield _labelled(role, n, [(r, int(status.role.value == r)) for r in ROLES])
        yield _gauge("coordinator_raft_has_quorum", "1 if this node hears a majority.", n, int(status.has_quorum))
        hub = self.node.events
        yield _gauge("coordinator_event_streams", "Open GET /v1/events streams on this node.", n, len(hub.subscribers))
        yield _counter(
            "coordinator_event_streams_dropped",
            "Event streams dropped because their reader fell behind ([limits] events_queue_size).",
            n,
            hub.dropped,
        )
        peers = GaugeMetricFamily(
            "coordinator_raft_peer_connected", "1 if the Raft connection to the peer is up.", labels=["node", "peer"]
        )
        yield _labelled(peers, n, [(peer, int(up)) for peer, up in sorted(status.peers.items())])
        proposals = CounterMetricFamily(
            "coordinator_proposals",
            "Proposals by outcome (applied, rejected, not_written, unknown, timeout).",
            labels=["node", "outcome"],
        )
        yield _labelled(proposals, n, sorted(stats.proposals.items()) or [("applied", 0)])
        yield _counter(
            "coordinator_applied_rejections", "Entries applied as recorded rejections.", n, stats.applied_rejections
        )
        yield _counter(
            "coordinator_stale_term_entries",
            "Entries refused because a later leader appended what an earlier one proposed.",
            n,
            stats.stale_term_entries,
        )
        yield _counter(
            "coordinator_entries_applied", "Log entries applied here (a batch counts once).", n, stats.entries_applied
        )
        yield _counter(
            "coordinator_commands_applied",
            "Commands applied here (each command of a batch).",
            n,
            stats.commands_applied,
        )
        yield _counter(
            "coordinator_read_barriers", "Barrier entries proposed for linearizable reads.", n, stats.barriers
        )
        yield _counter("coordinator_barrier_reads", "Reads served after a barrier.", n, stats.barrier_reads)
        snapshots = node.log.snapshots if hasattr(node.log, "snapshots") else None
        if snapshots is not None:
            yield _counter("coordinator_snapshots_taken", "Snapshots written at log compaction.", n, snapshots.taken)
            yield _counter("coordinator_snapshots_restored", "Snapshots loaded.", n, snapshots.restored)
        yield _counter(
            "coordinator_raft_resent_entries",
            "Times a follower re-received entries it had applied (PySyncObj resends; same entries).",
            n,
            node.truncations.count,
        )
        yield _histogram(
            "coordinator_apply_seconds", "Time to apply one entry to the state machine.", n, stats.apply_seconds
        )
        yield _histogram(
            "coordinator_commit_seconds", "Time from proposal to applied result on the leader.", n, stats.commit_seconds
        )
        with node.log.reading():
            services = len(node.state.registry.services)
            in_flight = [("saga", len(node.state.sagas.active)), ("tx", len(node.state.transactions.active))]
            kept = [("saga", len(node.state.sagas.items)), ("tx", len(node.state.transactions.items))]
        yield _gauge("coordinator_services", "Registered participant services.", n, services)
        workflows = GaugeMetricFamily(
            "coordinator_workflows_in_flight", "Unfinished workflows by kind.", labels=["node", "kind"]
        )
        yield _labelled(workflows, n, in_flight)
        kept_family = GaugeMetricFamily(
            "coordinator_workflows_kept",
            "Workflows kept (in flight and terminal, until retention prunes them) by kind.",
            labels=["node", "kind"],
        )
        yield _labelled(kept_family, n, kept)
        executor = node.executor.view()
        yield _gauge(
            "coordinator_executor_calls_in_flight",
            "Participant calls in flight on this node.",
            n,
            executor["calls_in_flight"],
        )
        workers = executor["workers"]  # the dispatcher's (cluster/executor/dispatch.py); zero in local mode
        yield _gauge(
            "coordinator_workers_connected",
            "Transition workers admitted by this leader.",
            n,
            workers["workers_connected"],
        )
        yield _gauge(
            "coordinator_worker_commands_queued",
            "Participant calls waiting for a worker that can take them (remote and auto modes).",
            n,
            workers["commands_queued"],
        )
        yield _counter(
            "coordinator_worker_dispatches", "Participant calls leased to workers.", n, workers["dispatched_total"]
        )
        yield _counter(
            "coordinator_worker_redispatches",
            "Calls leased again after a worker lost them or answered malformed.",
            n,
            workers["redispatches_total"],
        )
        yield _counter(
            "coordinator_worker_leases_lost",
            "Calls whose worker lost its lease (its stream ended, or it missed heartbeats).",
            n,
            workers["leases_lost_total"],
        )
        yield _counter(
            "coordinator_worker_reports_dropped",
            "Worker reports dropped (not held, another fence, malformed).",
            n,
            workers["reports_dropped_total"],
        )
        breakers = GaugeMetricFamily(
            "coordinator_breaker_open",
            "1 while the circuit breaker of a participant service is open.",
            labels=["node", "service"],
        )
        yield _labelled(breakers, n, [(name, int(b["open"])) for name, b in executor["breakers"].items()] or [("", 0)])
        responses = CounterMetricFamily(
            "coordinator_http_responses", "HTTP responses by status.", labels=["node", "status"]
        )
        yield _labelled(responses, n, [(str(k), v) for k, v in sorted(node.http_responses.items())] or [("200", 0)])


def render_metrics(node: Node) -> str:
    """The node's figures in the Prometheus text format (version 0.0.4).
    A registry per scrape is cheap (registering reads nothing: no
    ``describe``, ``auto_describe`` off) and holds no state between scrapes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return generate_latest(registry).decode()
