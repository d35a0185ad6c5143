"""``[limits]`` in the cluster file: the byte budget of the kept state, and
what one client may hold open on a node.

Workflows were bounded by count only (``WORKFLOWS_KEPT_MAX``): about 1,100
sagas of 1 MiB made a snapshot over 1 GiB (``SNAPSHOT_BYTES_MAX`` in
consensus/snapshot.py), and a node could not load it again. Now every kept
workflow is charged its encoded size (cluster/stores/kept.py) and every recorded
outcome its output's (cluster/stores/saga.py); a submission that would push the
charged total over ``state_bytes_max`` is refused (429 ``overloaded``), and
one whose own charge is over ``workflow_bytes_max`` too (413 ``too_large``).

The leader puts the limits it runs with into each submit command, and the
state machine checks the command's limits at apply time
(cluster/stores/admission.py) - a refusal is a recorded rejection - so every replica decides the same even if cluster
files differ, and entries written before this check replay as they applied.

Per client (remote address), a node holds at most ``long_polls_per_client_max``
long polls (``GET ...?wait=``, gRPC ``wait_s``) and ``watches_per_client_max``
gRPC Watch streams (cluster/core/client_slots.py); more answer 429 / RESOURCE_EXHAUSTED
``overloaded``. The event stream (``GET /v1/events``, cluster/core/events.py)
keeps the last ``events_ring_size`` events for resuming, serves at most
``events_subscribers_max`` streams per node and ``events_per_client_max`` per
client (more: 429 ``overloaded``), and drops a stream whose reader falls
``events_queue_size`` events behind. A Watch ends after ``watch_life_s`` with UNAVAILABLE
``watch_expired`` and the client reopens it (client/_grpc.py). An idle HTTP
keep-alive or gRPC connection is closed after ``idle_connection_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.consensus import ENTRY_BYTES_MAX
from coordinator.consensus.snapshot import SNAPSHOT_BYTES_MAX

__all__ = ["Limits", "STATE_BYTES_MAX_DEFAULT", "WORKFLOW_BYTES_MAX_DEFAULT", "OVERLOADED_RETRY_AFTER_S"]

STATE_BYTES_MAX_DEFAULT = 256 * 1024 * 1024
# Any definition that fits in a log entry, by default.
WORKFLOW_BYTES_MAX_DEFAULT = ENTRY_BYTES_MAX
# The budget is charged by encoded size; a snapshot holds more (the registry,
# an active workflow's outputs until it ends): keep well below the load cap.
STATE_BYTES_MAX_MAX = SNAPSHOT_BYTES_MAX // 2
# Retention (cluster/executor/executor.py, retention_check_s) frees terminal workflows.
OVERLOADED_RETRY_AFTER_S = 5
# Well above the load generator's closed-loop clients on one host
# (BENCHMARKS.md: concurrency 64), well below the node's own caps
# (Node.WATCHERS_MAX long polls, grpc_api.WATCH_STREAMS_MAX watches).
LONG_POLLS_PER_CLIENT_DEFAULT = 256
WATCHES_PER_CLIENT_DEFAULT = 100
WATCH_LIFE_S_DEFAULT = 600.0
# About a minute of a busy node's events (a saga of a few steps yields ~6
# events per submission) to resume from; an event is a few hundred bytes.
EVENTS_RING_SIZE_DEFAULT = 10_000
EVENTS_QUEUE_SIZE_DEFAULT = 1_000
EVENTS_SUBSCRIBERS_MAX_DEFAULT = 64
EVENTS_PER_CLIENT_DEFAULT = 16
# aiohttp's own default is 3630 s.
IDLE_CONNECTION_S_DEFAULT = 75.0


@dataclass(frozen=True, slots=True)
class Limits:
    state_bytes_max: int = STATE_BYTES_MAX_DEFAULT
    workflow_bytes_max: int = WORKFLOW_BYTES_MAX_DEFAULT
    long_polls_per_client_max: int = LONG_POLLS_PER_CLIENT_DEFAULT
    watches_per_client_max: int = WATCHES_PER_CLIENT_DEFAULT
    watch_life_s: float = WATCH_LIFE_S_DEFAULT
    idle_connection_s: float = IDLE_CONNECTION_S_DEFAULT
    events_ring_size: int = EVENTS_RING_SIZE_DEFAULT
    events_queue_size: int = EVENTS_QUEUE_SIZE_DEFAULT
    events_subscribers_max: int = EVENTS_SUBSCRIBERS_MAX_DEFAULT
    events_per_client_max: int = EVENTS_PER_CLIENT_DEFAULT

    def __post_init__(self) -> None:
        if not 1 <= self.state_bytes_max <= STATE_BYTES_MAX_MAX:
            raise ValueError(f"state_bytes_max must be in 1..{STATE_BYTES_MAX_MAX}")
        if not 1 <= self.workflow_bytes_max <= self.state_bytes_max:
            raise ValueError("workflow_bytes_max must be in 1..state_bytes_max")
        if not 1 <= self.long_polls_per_client_max <= 100_000 or not 1 <= self.watches_per_client_max <= 100_000:
            raise ValueError("long_polls_per_client_max and watches_per_client_max must be in 1..100000")
        if not 0 < self.watch_life_s <= 24 * 3600 or not 0 < self.idle_connection_s <= 24 * 3600:
            raise ValueError("watch_life_s and idle_connection_s must be in (0, 86400]")
        if not 1 <= self.events_ring_size <= 1_000_000 or not 1 <= self.events_queue_size <= 1_000_000:
            raise ValueError("events_ring_size and events_queue_size must be in 1..1000000")
        if not 1 <= self.events_subscribers_max <= 10_000 or not 1 <= self.events_per_client_max <= 10_000:
            raise ValueError("events_subscribers_max and events_per_client_max must be in 1..10000")

    def to_command(self) -> dict:
        """As the leader writes them into a submit command."""
        return {"state_bytes_max": self.state_bytes_max, "workflow_bytes_max": self.workflow_bytes_max}
