"""``python -m chaos.sim --seed N``: see :mod:`chaos.sim.cli`."""

import logging
import sys

from .cli import main

logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
sys.exit(main())
