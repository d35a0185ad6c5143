"""Which of the run's processes made a participant call: the one that holds
the other end of the call's TCP connection.

The recording participants run in the chaos process, so a call arrives on
a connection whose far end (the peer's address and port) is a socket of a
node or worker process the run started. For each such process, the TCP
table of its network namespace (``/proc/PID/net/tcp``, so nodes in their
own namespaces are seen too) gives the inode of the socket whose local end
is that peer and whose remote end is the participant, and ``/proc/PID/fd``
says whether this process holds it. A socket belongs to one process: the
supervisor's children inherit no descriptors.

Linux and IPv4 only (the participants listen on 127.0.0.1 or on the run's
bridge). A caller that cannot be found - it exited or was killed before
the lookup, or ``/proc`` cannot be read - is ``UNKNOWN``: a lower bound,
never a guess. Looked up once per connection (the callers keep theirs
alive), cached by the connection's transport; a lookup reads one TCP table
per namespace and the descriptors of a few processes.
"""

from __future__ import annotations

import os
import socket
import weakref
from collections.abc import Callable, Mapping

from aiohttp import web

__all__ = ["UNKNOWN", "CallerLookup", "process_holding"]

UNKNOWN = "unknown"


def _proc_address(host: str, port: int) -> str | None:
    """``host:port`` as /proc/net/tcp writes it (IPv4, little-endian hex), or None."""
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    return f"{packed[::-1].hex().upper()}:{port:04X}"


def _socket_inode(pid: int, local: str, remote: str) -> int | None:
    """The inode of the TCP socket local -> remote in pid's network namespace."""
    try:
        with open(f"/proc/{pid}/net/tcp") as table:
            next(table, None)  # the header
            for line in table:
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                    return int(fields[9]) or None
    except (OSError, ValueError):
        return None
    return None


def _holds(pid: int, inode: int) -> bool:
    target = f"socket:[{inode}]"
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}") == target:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def process_holding(peer: tuple[str, int], local: tuple[str, int], pids: Mapping[str, int]) -> str | None:
    """The name (of ``pids``: name -> pid) of the process holding the client
    end of the TCP connection ``peer`` -> ``local``, or None."""
    peer_proc, local_proc = _proc_address(*peer), _proc_address(*local)
    if peer_proc is None or local_proc is None:
        return None
    inode_by_namespace: dict[int, int | None] = {}
    for name, pid in pids.items():
        try:
            namespace = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:  # exited
            continue
        if namespace not in inode_by_namespace:
            inode_by_namespace[namespace] = _socket_inode(pid, peer_proc, local_proc)
        inode = inode_by_namespace[namespace]
        if inode is not None and _holds(pid, inode):
            return name
    return None


class CallerLookup:
    """``lookup(request)``: the name of the process that sent ``request``
    (of ``pids()``, called at each new connection), else UNKNOWN."""

    def __init__(self, pids: Callable[[], Mapping[str, int]]) -> None:
        self._pids = pids
        self._by_transport: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self.lookups = 0

    def __call__(self, request: web.Request) -> str:
        transport = request.transport
        if transport is None:
            return UNKNOWN
        known = self._by_transport.get(transport)
        if known is not None:
            return known
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        if not (isinstance(peer, tuple) and isinstance(local, tuple)):
            return UNKNOWN
        self.lookups += 1
        name = process_holding(peer[:2], local[:2], self._pids())
        if name is None:
            return UNKNOWN
        self._by_transport[transport] = name
        return name
