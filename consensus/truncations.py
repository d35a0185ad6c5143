"""Counting PySyncObj's resends of entries a follower already applied."""

from __future__ import annotations

import logging

__all__ = ["PYSYNCOBJ_LOGGER", "TruncationCounter"]

PYSYNCOBJ_LOGGER = "pysyncobj.syncobj"


class TruncationCounter(logging.Filter):
    """PySyncObj logs CRITICAL when a follower re-receives entries it already
    applied (the leader resends unacknowledged entries after a lagging
    acknowledgement): the entries are the same, so we count these instead of
    alarming operators, and keep the count on /metrics.

    It counts once added to PySyncObj's logger (``PYSYNCOBJ_LOGGER``), which
    is one per process: a node process adds its own
    (cluster/launcher/process.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("truncating already-applied log entries"):
            self.count += 1
            return False
        return True
