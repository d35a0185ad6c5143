"""Owner-only files: a node's directory holds every body, output and signal.

Everything the coordinator creates - the data directory, each node's
directory, journal, snapshot, log, cluster file and secrets - is the
owner's alone: directories :data:`PRIVATE_DIR_MODE`, files
:data:`PRIVATE_FILE_MODE`. Code that creates a file passes the mode
explicitly; a node and ``coordinator up`` also set :data:`OWNER_ONLY_UMASK`
once at start for what PySyncObj creates itself (the snapshot it receives,
``pysyncobj/serializer.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OWNER_ONLY_UMASK", "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_dir", "owner_only_umask"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
OWNER_ONLY_UMASK = 0o077


def owner_only_umask() -> None:
    """Set once at process start: files nobody gave a mode get the owner's only."""
    os.umask(OWNER_ONLY_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) owner-only; tighten it if it exists.
    Parents that already exist are left as they are: they may be shared."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path
