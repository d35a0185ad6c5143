"""Chaos: faults, a recorded workload and checkers, as ``coordinator chaos``.

- ``chaos.nemesis``: SIGKILL and restart, SIGSTOP/SIGCONT, restart-all, and
  a partition of one node (``chaos.netns``: nodes in network namespaces; root only);
- ``chaos.workload``: concurrent clients, every operation recorded;
- ``chaos.participants``: participants that record every effect;
- ``chaos.history`` and ``chaos.checkers`` (with ``chaos.linearizability``);
- ``chaos.run``: the whole run and its report.
"""

__all__: list[str] = []
