"""``coordinator bench --profile FILE``: py-spy samples the leader node for
the measured window and writes folded stacks (``frame;frame;... COUNT``, one
stack a line) to FILE; speedscope (https://www.speedscope.app, or the
``speedscope`` command) and ``flamegraph.pl`` open it as a flame graph. The
top functions are printed at the end of the run.

py-spy is optional (``pip install -e '.[bench]'``); without it the run goes
on unprofiled. It samples with ``--nonblocking`` (never pauses the node) at
SAMPLE_RATE_HZ; on a 2-core machine its own CPU still competes with the nodes.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from coordinator.cluster.bench.stats import top_functions

__all__ = ["Profiler", "py_spy_binary"]

SAMPLE_RATE_HZ = 100
TOP_ROWS = 15
# How long py-spy may take past the sampled duration to write its file.
FINISH_SLACK_S = 20.0
INSTALL_HINT = (
    "py-spy is not installed: .venv/bin/pip install py-spy (or pip install -e '.[bench]'); running without a profile"
)


def py_spy_binary() -> str | None:
    """py-spy beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


class Profiler:
    """One py-spy recording of one process; does nothing when ``path`` is None."""

    def __init__(self, path: str | None, binary: str | None = None) -> None:
        self.path = path
        self._binary = binary
        self._process: subprocess.Popen | None = None
        self._pid: int | None = None

    def start(self, pid: int | None, duration_s: float) -> None:
        if self.path is None:
            return
        binary = self._binary or py_spy_binary()
        if binary is None:
            print(INSTALL_HINT, file=sys.stderr)
            return
        if pid is None:
            print(
                "--profile: no local leader process to sample (a cluster of --endpoints?); running without a profile",
                file=sys.stderr,
            )
            return
        self._pid = pid
        self._process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(duration_s))),
                "--rate",
                str(SAMPLE_RATE_HZ),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--output",
                self.path,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def finish(self) -> dict | None:
        """Wait for py-spy to write its file; print and answer the top functions."""
        process = self._process
        if process is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            _, stderr = await loop.run_in_executor(None, lambda: process.communicate(timeout=FINISH_SLACK_S))
        except subprocess.TimeoutExpired:
            await self.stop()
            print("--profile: py-spy did not finish; no profile", file=sys.stderr)
            return None
        self._process = None
        path = Path(self.path)
        if process.returncode != 0 or not path.is_file():
            print(
                f"--profile: py-spy failed ({process.returncode}): {stderr.decode(errors='replace').strip()[-300:]}",
                file=sys.stderr,
            )
            return None
        samples, rows = top_functions(path.read_text(errors="replace"), TOP_ROWS)
        print(render_top(self._pid, samples, rows, self.path), file=sys.stderr)
        return {"file": self.path, "pid": self._pid, "samples": samples, "top": rows}

    async def stop(self) -> None:
        """End a py-spy still running (by its PID)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, lambda: process.wait(timeout=5))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def render_top(pid: int | None, samples: int, rows: list[dict], path: str) -> str:
    lines = [
        f"profile of the leader (pid {pid}): {samples} samples at {SAMPLE_RATE_HZ} Hz -> {path} (folded stacks: speedscope, flamegraph.pl)",
        f"{'self %':>7} {'total %':>8}  function (file:line)",
    ]
    lines += [f"{r['self_pct']:7.1f} {r['total_pct']:8.1f}  {r['function']}" for r in rows]
    return "\n".join(lines)
