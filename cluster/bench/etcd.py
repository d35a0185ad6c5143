"""The etcd baseline of ``coordinator bench --workload registry --baseline etcd``.

Where an ``etcd`` binary is installed (Debian's ``etcd-server``, 3.4; the
project never requires it), start a three-member etcd on free loopback
ports in a temporary directory, drive its JSON gateway (``POST
/v3/kv/put``, base64 key and value) with the client that drives our
registry (:class:`coordinator.client.Coordinator` through :func:`coordinator.cluster.bench.load.clients`:
the same HTTP transport, sessions, timeouts and retry policy as ``PUT
/v1/services/{name}``) at the same concurrency, and stop the members by PID. etcd fsyncs its WAL, as we do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from coordinator.cluster.bench.load import clients, closed_loop, registry_write, summary
from coordinator.cluster.bench.stats import proc_stats, stop_processes
from coordinator.cluster.launcher.local import free_base_port

__all__ = ["etcd_binary", "etcd_command", "run_etcd_baseline"]

MEMBERS = 3
HEALTH_WAIT_S = 30.0
# The last: where `make test` unpacks Debian's etcd-server into the venv.
FALLBACK_PATHS = ("/usr/bin/etcd", "/usr/local/bin/etcd", os.path.join(sys.prefix, "etcd", "usr", "bin", "etcd"))
MISSING = "baseline etcd: no etcd binary on PATH or in /usr/bin (Debian: apt-get install etcd-server); baseline null"
NOTE = "etcd (Debian etcd-server) three members on loopback, driven through its JSON gateway by our registry's client; etcd fsyncs its WAL"


def etcd_binary(
    which: Callable[[str], str | None] = shutil.which, fallbacks: tuple[str, ...] = FALLBACK_PATHS
) -> str | None:
    """The etcd server binary: on PATH, else a usual place; None if absent."""
    found = which("etcd")
    if found:
        return found
    return next((path for path in fallbacks if os.access(path, os.X_OK)), None)


def etcd_command(
    binary: str, index: int, client_ports: list[int], peer_ports: list[int], data_dir: Path, token: str
) -> list[str]:
    """The command line of member ``index`` (0-based) of a loopback cluster."""
    name = f"e{index + 1}"
    cluster = ",".join(f"e{i + 1}=http://127.0.0.1:{port}" for i, port in enumerate(peer_ports))
    return [
        binary,
        "--name",
        name,
        "--data-dir",
        str(data_dir / name),
        "--listen-client-urls",
        f"http://127.0.0.1:{client_ports[index]}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{client_ports[index]}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer_ports[index]}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer_ports[index]}",
        "--initial-cluster",
        cluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        token,
        "--logger",
        "zap",
        "--log-level",
        "warn",
    ]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _healthy(urls: list[str]) -> bool:
    deadline = time.monotonic() + HEALTH_WAIT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            healthy = 0
            for url in urls:
                try:
                    async with session.get(url + "/health") as response:
                        healthy += response.status == 200 and json.loads(await response.text()).get("health") == "true"
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    pass
            if healthy == len(urls):
                return True
            await asyncio.sleep(0.2)
    return False


async def run_etcd_baseline(
    concurrency: int, duration_s: float, warmup_s: float, binary: str | None = None
) -> dict | None:
    """The baseline's figures, or None (one line on stderr) without etcd or when it would not start."""
    binary = binary or etcd_binary()
    if binary is None:
        print(MISSING, file=sys.stderr)
        return None
    print(
        f"baseline etcd: three members ({binary}), {concurrency} in flight, {warmup_s:g} s warm-up + {duration_s:g} s ...",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="coordinator-bench-etcd-") as tmp:
        root = Path(tmp)
        base = free_base_port(MEMBERS)
        client_ports = [base + i for i in range(1, MEMBERS + 1)]
        peer_ports = [base + 1000 + i for i in range(1, MEMBERS + 1)]
        token = f"bench-{os.getpid()}-{base}"
        urls = [f"http://127.0.0.1:{port}" for port in client_ports]
        processes: list[subprocess.Popen] = []
        try:
            for index in range(MEMBERS):
                with open(root / f"e{index + 1}.log", "ab") as log_file:
                    processes.append(
                        subprocess.Popen(
                            etcd_command(binary, index, client_ports, peer_ports, root, token),
                            stdin=subprocess.DEVNULL,
                            stdout=log_file,
                            stderr=subprocess.STDOUT,
                        )
                    )
            if not await _healthy(urls):
                print(
                    f"baseline etcd: the members did not become healthy in {HEALTH_WAIT_S:g} s (logs in {root}); baseline null",
                    file=sys.stderr,
                )
                return None
            async with clients(urls, concurrency) as pool:

                async def put(number: int) -> None:
                    name, url = registry_write()
                    await pool[number % len(pool)]._request(
                        "POST", "/v3/kv/put", {"key": _b64(name), "value": _b64(url)}
                    )

                results, elapsed = await closed_loop(put, concurrency, warmup_s, duration_s)
            nodes = [
                {
                    "id": f"e{i + 1}",
                    "cpu_s_total": round(proc_stats(p.pid)[0], 2),
                    "rss_mb_max": round(proc_stats(p.pid)[1], 1),
                }
                for i, p in enumerate(processes)
            ]
        finally:
            stop_processes(processes)
    figures = summary("etcd-put", concurrency, results, elapsed)
    return {
        "name": "etcd",
        "unit": "puts",
        "version": _version(binary),
        "note": NOTE,
        "nodes": nodes,
        **{
            k: figures[k]
            for k in ("concurrency", "duration_s", "completed", "errors", "throughput_per_s", "latency_ms")
        },
    }


def _version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("etcd Version")), "unknown"
    )
