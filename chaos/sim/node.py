"""One simulated node process: the real log, state machine and executor.

:func:`sim_node` builds a :class:`coordinator.cluster.core.node.Node` through its
constructor, without HTTP and gRPC servers (clients call
:mod:`coordinator.cluster.api.operations` on it directly), from the production
parts with their edges swapped - no subclass, no private method replaced:

- :func:`sim_log` is :class:`coordinator.consensus.PySyncObjLog` - a real PySyncObj
  ``SyncObj`` with the real journal, snapshots, applier and leadership
  barrier - built with ``auto_tick=False`` (the simulation ticks it), no
  password (no sockets to protect), the simulated transport, the
  crashable journal and a stable node hash;
- the executor is :class:`coordinator.cluster.executor.executor.Executor` whose
  ``HttpCaller`` talks to a :class:`~coordinator.chaos.sim.participants.SimSession`.

Observers see every applied entry and role change, for the invariants.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from coordinator.cluster.core.config import NodeConfig
from coordinator.cluster.core.node import Node
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.executor import Executor
from coordinator.cluster.executor.http_caller import HttpCaller
from coordinator.consensus import PySyncObjLog

from .network import SimNodeId
from .participants import SimSession

__all__ = ["Observer", "sim_log", "sim_node"]


class Observer(Protocol):
    def applied(self, node_id: str, index: int, data: bytes) -> None: ...

    def role(self, node_id: str, old: int, new: int, term: int) -> None: ...

    def fatal(self, node_id: str, message: str) -> None: ...

    def stamped(self, at_ms: int) -> None: ...


class SnapshotFailed(RuntimeError):
    """A snapshot could not be loaded: a real node would exit (status 70)."""


class _LogObserver:
    """What one node's log shows the cluster's Observer (a LogObserver)."""

    def __init__(self, node_id: str, observer: Observer) -> None:
        self._node_id = node_id
        self._observer = observer

    def proposing(self, command: Any) -> None:
        if command.at_ms:
            self._observer.stamped(command.at_ms)  # when, on the true clock, this stamp was taken

    def applying(self, index: int, data: bytes) -> None:
        self._observer.applied(self._node_id, index, data)

    def role_changed(self, old: int, new: int, term: int) -> None:
        self._observer.role(self._node_id, old, new, term)

    def fatal(self, message: str) -> None:
        self._observer.fatal(self._node_id, message)
        raise SnapshotFailed(message)


def sim_log(
    config: NodeConfig, state: ClusterState, observer: Observer, journal_class: type, transport_base: type
) -> PySyncObjLog:
    """The real log on the simulation's edges: ticked by the simulation
    (no tick thread), no password (no sockets), the simulated transport
    whose SimPoller replaces the poller (``select`` opens no file
    descriptor), the crashable journal and a stable node hash."""
    observed = _LogObserver(config.node.id, observer)
    return PySyncObjLog(
        self_address=config.node.raft,
        partner_addresses=[peer.raft for peer in config.peers],
        secret=None,
        data_dir=str(config.data_dir),
        state_machine=state,
        settings=config.cluster.raft,
        journal_class=journal_class,
        transport_base=transport_base,
        node_class=SimNodeId,
        auto_tick=False,
        poller="select",
        observer=observed,
        on_fatal=observed.fatal,
    )


def sim_node(
    config: NodeConfig,
    *,
    observer: Observer,
    journal_class: type,
    transport_base: type,
    session: SimSession,
    rng: random.Random,
    clock: Callable[[], float],
) -> Node:
    """A real Node (cluster/core/node.py) built through its constructor
    arguments, as cluster/launcher/process.py builds a node process's, with
    the simulation's edges: :func:`sim_log`, participant calls over
    ``session``, the virtual wall ``clock``, and ``rng``, seeded, for every
    draw of the node's own code (the breakers', the retries' and the
    proposals' jitter); PySyncObj draws from the global random."""
    state = ClusterState()
    log = sim_log(config, state, observer, journal_class, transport_base)
    settings = config.cluster.executor
    breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s, rng=rng)
    executor = Executor(
        log,
        state,
        settings,
        callers=ParticipantCallers(HttpCaller(session, breakers, rng=rng), on_close=(session.close,)),  # type: ignore[arg-type]
        breakers=breakers,
        clock=clock,
        rng=rng,
        workers=config.cluster.workers,
        node_id=config.node.id,
    )
    return Node(config, log=log, state=state, executor=executor, clock=clock)
