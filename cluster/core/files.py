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
import stat
from pathlib import Path

__all__ = [
    "OWNER_ONLY_UMASK",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "owner_only_problem",
    "owner_only_umask",
    "private_dir",
]

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


def owner_only_problem(info: os.stat_result, path: Path, what: str) -> str | None:
    """Why a file holding a secret or a key (``what``, with this ``stat``)
    must not be used: not a regular file, another user's, or readable by
    group or others; None when it is the owner's alone."""
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: {what} is not a regular file"
    if info.st_uid != os.geteuid():
        return f"{path}: {what} is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path}: {what} is readable by others; run chmod 600 {path}"
    return None
