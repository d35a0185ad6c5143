"""``python -m coordinator.chaos.sim --seed N``: see :mod:`coordinator.chaos.sim.cli`."""

import sys

from .cli import configure_logging, main

if __name__ == "__main__":  # not when a spawned worker process imports it
    configure_logging()
    sys.exit(main())
