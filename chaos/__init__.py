"""Chaos: faults, a recorded workload and checkers, as ``coordinator chaos``.

- ``chaos.nemesis``: SIGKILL and restart, SIGSTOP/SIGCONT, restart-all (a
  partition is not built yet and is skipped, saying so);
- ``chaos.workload``: concurrent clients, every operation recorded;
- ``chaos.participants``: participants that record every effect;
- ``chaos.history`` and ``chaos.checkers`` (with ``chaos.linearizability``);
- ``chaos.run``: the whole run and its report.
"""

__all__: list[str] = []
