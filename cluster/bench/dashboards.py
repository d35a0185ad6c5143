"""``coordinator bench --dashboards N``: N dashboard pages (``/ui/``) open in
a real headless Chromium while the workload runs, each on a follower (as an
operator's dashboard would be: the page reads its node's replica and event
stream, and polls every node's ``/v1/cluster`` and ``/metrics``).

The browser runs at the lowest CPU priority (``nice 19``): the figure is
what the dashboards cost the cluster, not what a browser rendering N
animated pages costs a machine it shares with the cluster (a dashboard runs
on an operator's machine); its own CPU is reported beside.

One Chromium process holds the N pages as tabs: headless Chromium opens one
target from its command line, so the others are opened through its DevTools
endpoint (``PUT /json/new``), which listens on loopback only, on a port the
browser picks, for the run's length, with a profile of the run's own.

What it costs is measured, not assumed: the browser's CPU (every process of
its tree) and, from the nodes' own ``coordinator_event_streams`` gauge, that
the N pages really hold their event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

__all__ = ["BROWSER_FLAGS", "CHROMIUM", "Dashboards", "DashboardsUnavailable"]

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing reaching for the internet (this machine's network is
# closed: without these Chromium keeps trying); the browser tests use them too.
BROWSER_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
FLAGS = (*BROWSER_FLAGS, "--window-size=1400,900", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")
START_S = 30.0
DASHBOARDS_MAX = 50


class DashboardsUnavailable(RuntimeError):
    """No Chromium here, or it did not start: the run cannot open dashboards."""


def _tree(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, ()))
    return found


def _cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _lowest_priority(pid: int) -> None:
    """A new session is a scheduler autogroup of its own (Linux with
    ``sched_autogroup_enabled``), weighed against the cluster's groups by the
    group's nice, not its processes': lower that too, where the kernel has it."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text("19")


class Dashboards:
    def __init__(self, urls: list[str]) -> None:
        if not 1 <= len(urls) <= DASHBOARDS_MAX:
            raise ValueError(f"--dashboards: 1 to {DASHBOARDS_MAX}")
        if not os.access(CHROMIUM, os.X_OK):
            raise DashboardsUnavailable(f"--dashboards needs Chromium at {CHROMIUM} (Debian's package chromium)")
        self.urls = urls
        self.process: subprocess.Popen | None = None
        self.profile: str | None = None
        self._cpu_before = 0.0

    async def start(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="coordinator-dashboards-")
        self.process = subprocess.Popen(
            ["nice", "-n", "19", CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", self.urls[0]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends the whole tree
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_S
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise DashboardsUnavailable(f"Chromium did not start (exit code {self.process.poll()})")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            for url in self.urls[1:]:
                async with session.put(f"http://127.0.0.1:{port}/json/new?{quote(url, safe='')}") as response:
                    if response.status != 200:
                        raise DashboardsUnavailable(f"Chromium did not open {url}: HTTP {response.status}")

    def mark(self) -> None:
        """The pages are up (the caller saw their streams): from now on the
        browser runs at the lowest priority, and the measured window starts."""
        if self.process is not None:
            _lowest_priority(self.process.pid)
        self._cpu_before = self.cpu_s_total()

    def cpu_s_total(self) -> float:
        return 0.0 if self.process is None else sum(_cpu_s(pid) for pid in _tree(self.process.pid))

    def cpu_s(self) -> float:
        """The browser's CPU seconds since :meth:`mark`."""
        return round(self.cpu_s_total() - self._cpu_before, 2)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.to_thread(self.process.wait)
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
