"""Start, signal and stop node processes by PID: ``coordinator up`` and the tests.

Only processes this supervisor started are ever signalled. A child asks the
kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, set by the
node itself at start: see :func:`die_with_parent`), so nodes end with the
supervisor even if it is killed. No ``preexec_fn``: the parent may use gRPC,
which does not support fork, so children are spawned without running Python
code between fork and exec.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from coordinator.cluster.core.config import ClusterConfig
from coordinator.cluster.core.files import PRIVATE_FILE_MODE, private_dir

__all__ = ["Supervisor"]

STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


PARENT_PID_ENV = "COORDINATOR_PARENT_PID"


def die_with_parent() -> None:
    """In a node started by a Supervisor: get SIGTERM when the supervisor dies,
    and exit at once if it already has."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not parent.isdigit():
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return
    if os.getppid() != int(parent):
        os._exit(1)


class Supervisor:
    """``launch_prefixes``: per node, words put before the node's command, such
    as ``ip netns exec NAMESPACE`` (which execs in place: the PID is the node's).
    ``insecure``: start nodes with ``--insecure`` (a non-loopback address
    without an API token; see ``insecure_bind_warning`` in cluster/cli.py)."""

    def __init__(
        self,
        cluster_file: Path,
        config: ClusterConfig,
        *,
        python: str = sys.executable,
        launch_prefixes: Mapping[str, Sequence[str]] | None = None,
        insecure: bool = False,
    ) -> None:
        self.cluster_file = Path(cluster_file)
        self.insecure = insecure
        self.config = config
        self.python = python
        self.launch_prefixes = {node_id: tuple(prefix) for node_id, prefix in (launch_prefixes or {}).items()}
        for process_id in self.launch_prefixes:
            if process_id not in config.workers.ids:
                config.node(process_id)
        self.processes: dict[str, subprocess.Popen] = {}

    def log_path(self, node_id: str) -> Path:
        """A node's log; a worker's (``start_worker``) is ``worker.log`` beside it."""
        if node_id in self.config.workers.ids:
            return self.config.data_dir / node_id / "worker.log"
        return self.config.data_dir / node_id / "node.log"

    def start(self, node_id: str) -> subprocess.Popen:
        self.config.node(node_id)
        return self._spawn(
            node_id,
            ["node", "--config", str(self.cluster_file), "--id", node_id, *(["--insecure"] if self.insecure else [])],
        )

    def start_worker(self, worker_id: str, args: Sequence[str] = ()) -> subprocess.Popen:
        """``coordinator worker`` with ``worker_id`` of ``[workers] ids``, and
        ``args`` (``--release``, ``--services``, ...). The same methods as a
        node's signal, pause, kill and stop it, by its id."""
        if worker_id not in self.config.workers.ids:
            raise ValueError(f"{worker_id!r} is not in [workers] ids")
        return self._spawn(worker_id, ["worker", "--config", str(self.cluster_file), "--id", worker_id, *args])

    def _spawn(self, process_id: str, command: list[str]) -> subprocess.Popen:
        current = self.processes.get(process_id)
        if current is not None and current.poll() is None:
            raise RuntimeError(f"{process_id} is already running (pid {current.pid})")
        log_path = self.log_path(process_id)
        private_dir(log_path.parent)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a log written before files were owner-only
        with os.fdopen(fd, "ab") as log_file:
            process = subprocess.Popen(
                [*self.launch_prefixes.get(process_id, ()), self.python, "-m", "coordinator", *command],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
            )
        self.processes[process_id] = process
        return process

    def start_all(self) -> None:
        for node in self.config.nodes:
            self.start(node.id)

    def alive(self, node_id: str) -> bool:
        process = self.processes.get(node_id)
        return process is not None and process.poll() is None

    def pid(self, node_id: str) -> int:
        return self.processes[node_id].pid

    def signal(self, node_id: str, sig: int) -> None:
        if self.alive(node_id):
            self.processes[node_id].send_signal(sig)

    def kill(self, node_id: str) -> None:
        """SIGKILL, and reap it."""
        process = self.processes.get(node_id)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_GRACE_S)

    def pause(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGCONT)

    def stop(self, node_id: str, grace_s: float = STOP_GRACE_S) -> int | None:
        process = self.processes.get(node_id)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused node cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace_s)
        return process.returncode

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace_s)

    def exited(self) -> dict[str, int]:
        return {node_id: p.returncode for node_id, p in self.processes.items() if p.poll() is not None}
