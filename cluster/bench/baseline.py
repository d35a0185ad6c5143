"""The raw PySyncObj baseline of ``coordinator bench --baseline pysyncobj``.

Three processes on loopback, each a plain ``SyncObj`` with one
``@replicated`` method that counts a small ``bytes`` command: PySyncObj as
shipped, with the ``SyncObjConf`` choices we make (``password``, bind on
127.0.0.1, ``appendEntriesUseBatch`` off, no fork, the timeouts of the
default :class:`~coordinator.consensus.RaftSettings`, a journal and a full-dump file in
a temporary directory).

Not the same durability: PySyncObj's own journal is an mmap and never
fsyncs; ours (:mod:`coordinator.consensus.journal`) fsyncs before an entry counts. The
baseline is the faster of the two on that account.

The load runs inside the leader process: ``concurrency`` closed-loop
asynchronous calls (each callback, on PySyncObj's tick thread, issues the
next call). No HTTP, no client process: the ceiling the library reaches
on this machine, which our whole stack (HTTP, state machine, fsync) is
compared against.

Run as ``python -m coordinator.cluster.bench.baseline --self HOST:PORT --partner ...``
(one node; the one that leads runs the load and writes ``--result``);
:func:`run_pysyncobj_baseline` starts and stops (by PID) all three.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pysyncobj import SyncObj, SyncObjConf, replicated

from coordinator.cluster.bench.stats import latency_summary_ms, proc_stats, stop_processes
from coordinator.cluster.core.config import generate_secret, read_secret
from coordinator.cluster.launcher.local import free_base_port
from coordinator.cluster.launcher.supervisor import PARENT_PID_ENV, die_with_parent
from coordinator.consensus import RaftSettings

__all__ = ["COMMAND_BYTES", "run_pysyncobj_baseline"]

COMMAND_BYTES = 64
NODES = 3
LEADER_WAIT_S = 30.0
# Once a leader is known, let the cluster settle before the load starts.
SETTLE_S = 0.5
# How long the parent waits for the result beyond warm-up and duration.
RESULT_SLACK_S = 60.0
LATENCIES_MAX = 2_000_000
NOTE = (
    "raw PySyncObj 0.3.17, three processes on loopback, load in the leader process; "
    "its journal never fsyncs, ours fsyncs before an entry counts"
)


class BaselineNode(SyncObj):
    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf)
        self._writes = 0

    @replicated
    def write(self, command: bytes) -> int:
        self._writes += 1
        return self._writes


def baseline_conf(
    secret: str, self_address: str, data_dir: Path, settings: RaftSettings = RaftSettings()
) -> SyncObjConf:
    """Our SyncObjConf choices (coordinator.consensus.pysyncobj_log) minus our journal and hooks."""
    return SyncObjConf(
        password=secret,
        bindAddress=self_address,
        journalFile=str(data_dir / "raft.journal"),
        fullDumpFile=str(data_dir / "raft.dump"),
        useFork=False,
        appendEntriesUseBatch=False,
        raftMinTimeout=settings.election_timeout_min_s,
        raftMaxTimeout=settings.election_timeout_max_s,
        appendEntriesPeriod=settings.heartbeat_s,
        leaderFallbackTimeout=settings.leader_lease_s,
        connectionTimeout=settings.connection_timeout_s,
        connectionRetryTime=settings.connection_retry_s,
        logCompactionMinEntries=settings.compaction_min_entries,
        logCompactionMinTime=settings.compaction_min_time_s,
        dynamicMembershipChange=False,
        commandsWaitLeader=True,
    )


def drive(node: BaselineNode, concurrency: int, warmup_s: float, duration_s: float) -> dict:
    """``concurrency`` closed-loop async calls for warm-up plus duration; the
    figures of the calls answered inside the measured window."""
    command = os.urandom(COMMAND_BYTES)
    measure_from = time.monotonic() + warmup_s
    until = measure_from + duration_s
    latencies_s: list[float] = []
    errors: dict[str, int] = {}
    finished = threading.Event()
    in_flight = [concurrency]

    def issue() -> None:
        sent = time.perf_counter()

        def answered(result: object, error: int) -> None:  # PySyncObj's tick thread
            now = time.monotonic()
            if error != 0:
                errors[str(error)] = errors.get(str(error), 0) + 1
            elif measure_from <= now < until and len(latencies_s) < LATENCIES_MAX:
                latencies_s.append(time.perf_counter() - sent)
            if now < until:
                issue()
                return
            in_flight[0] -= 1
            if in_flight[0] == 0:
                finished.set()

        node.write(command, callback=answered)

    for _ in range(concurrency):
        issue()
    finished.wait(timeout=warmup_s + duration_s + RESULT_SLACK_S / 2)
    return {
        "completed": len(latencies_s),
        "throughput_per_s": round(len(latencies_s) / duration_s, 1),
        "latency_ms": latency_summary_ms(list(latencies_s)),
        "errors": dict(errors),
    }


def node_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator.cluster.bench.baseline")
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partner", action="append", default=[])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    die_with_parent()
    data_dir = Path(args.dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    node = BaselineNode(
        args.self_address, args.partner, baseline_conf(read_secret(Path(args.secret_file)), args.self_address, data_dir)
    )
    deadline = time.monotonic() + LEADER_WAIT_S
    while node._getLeader() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(SETTLE_S)
    if node._isLeader():
        figures = drive(node, args.concurrency, args.warmup, args.duration)
        figures["leader"] = args.self_address
        partial = Path(args.result + ".partial")
        partial.write_text(json.dumps(figures))
        partial.rename(args.result)
    while True:  # followers, and the leader once done, wait for the parent's SIGTERM
        time.sleep(1.0)


async def run_pysyncobj_baseline(concurrency: int, duration_s: float, warmup_s: float) -> dict | None:
    """Start the three processes, wait for the leader's figures, stop them by PID.
    None (and one line on stderr) when no figures came."""
    print(
        f"baseline pysyncobj: three raw PySyncObj processes, {concurrency} in flight, "
        f"{warmup_s:g} s warm-up + {duration_s:g} s ...",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="coordinator-bench-pysyncobj-") as tmp:
        root = Path(tmp)
        secret_file = root / "secret"
        generate_secret(secret_file)
        base = free_base_port(NODES)
        addresses = [f"127.0.0.1:{base + i}" for i in range(1, NODES + 1)]
        result_file = root / "result.json"
        processes: list[subprocess.Popen] = []
        try:
            for address in addresses:
                processes.append(
                    _spawn(address, addresses, root, secret_file, result_file, concurrency, warmup_s, duration_s)
                )
            deadline = time.monotonic() + LEADER_WAIT_S + warmup_s + duration_s + RESULT_SLACK_S
            while not result_file.exists() and time.monotonic() < deadline:
                if any(p.poll() is not None for p in processes):
                    break
                await asyncio.sleep(0.2)
            if not result_file.exists():
                print(
                    f"baseline pysyncobj: no figures (exited: {[p.returncode for p in processes]}); baseline null",
                    file=sys.stderr,
                )
                return None
            figures = json.loads(result_file.read_text())
            nodes = [_node_figures(address, p.pid) for address, p in zip(addresses, processes, strict=True)]
        finally:
            stop_processes(processes)
    return {
        "name": "pysyncobj",
        "unit": "writes",
        "concurrency": concurrency,
        "duration_s": duration_s,
        "command_bytes": COMMAND_BYTES,
        "fsync": False,
        "load": "in the leader process, closed-loop async calls",
        "note": NOTE,
        "nodes": nodes,
        **figures,
    }


def _spawn(
    address: str,
    addresses: list[str],
    root: Path,
    secret_file: Path,
    result_file: Path,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> subprocess.Popen:
    partners = [a for a in addresses if a != address]
    name = address.rsplit(":", 1)[1]
    command = [
        sys.executable,
        "-m",
        "coordinator.cluster.bench.baseline",
        "--self",
        address,
        "--dir",
        str(root / name),
        "--secret-file",
        str(secret_file),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup_s),
        "--duration",
        str(duration_s),
        "--result",
        str(result_file),
    ]
    for partner in partners:
        command += ["--partner", partner]
    with open(root / f"{name}.log", "ab") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        )


def _node_figures(address: str, pid: int) -> dict:
    cpu_s, rss_mb = proc_stats(pid)
    return {"id": address, "cpu_s_total": round(cpu_s, 2), "rss_mb_max": round(rss_mb, 1)}


if __name__ == "__main__":
    sys.exit(node_main())
