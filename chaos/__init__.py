"""Chaos: faults, a recorded workload and checkers, as ``coordinator chaos``.

- ``coordinator.chaos.nemesis``: SIGKILL and restart, SIGSTOP/SIGCONT, restart-all, and
  a partition of one node (``coordinator.chaos.netns``: nodes in network namespaces; root only);
- ``coordinator.chaos.workload``: concurrent clients, every operation recorded;
- ``coordinator.chaos.participants``: participants that record every effect (and, with
  ``coordinator.chaos.callers``, which process sent each call);
- ``coordinator.chaos.history`` and ``coordinator.chaos.checkers`` (with ``coordinator.chaos.linearizability``);
- ``coordinator.chaos.run``: the whole run and its report.
"""

__all__: list[str] = []
