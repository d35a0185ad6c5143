"""Seeds nobody chose: besides the fixed seeds of test_simulation.py, each
commit runs a window of EXPLORE_SEEDS seeds picked from its hash, in worker
processes (``coordinator simulate --seeds A-B --jobs N``). A failure lists
the failing seeds and the commands that replay them.

    COORDINATOR_EXPLORE_SEEDS=5000-5099 .venv/bin/python -m pytest tests/chaos/test_simulation_explore.py
    .venv/bin/python -m pytest -m "not explore"        # the suite without the window
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.chaos.sim import cli

REPO = Path(__file__).resolve().parents[2]
EXPLORE_SEEDS = 40
# Windows start at EXPLORE_BASE or above: away from the fixed seeds of the suite (0-13).
EXPLORE_BASE = 1_000
EXPLORE_SPAN = 1_000_000
FALLBACK_COMMIT = "5eed0000"  # outside a git checkout: always the same window
SEED_DURATION_S = 15.0  # as the fixed seeds
GIT_S_MAX = 10
EXPLORE_S_MAX = 540  # the whole window, on a loaded machine; about 30-40 s on 2 idle cores
SEEDS_ENV = "COORDINATOR_EXPLORE_SEEDS"


def commit_hash() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=GIT_S_MAX
        )
    except (OSError, subprocess.TimeoutExpired):
        return FALLBACK_COMMIT
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else FALLBACK_COMMIT


def _origin(commit: str, environ: dict[str, str]) -> str:
    return f"from ${SEEDS_ENV}" if environ.get(SEEDS_ENV, "").strip() else f"from commit {commit[:8]}"


def explore_window(commit: str, environ: dict[str, str]) -> str:
    """``A-B``: from the environment if set, else EXPLORE_SEEDS seeds from the commit hash."""
    if environ.get(SEEDS_ENV, "").strip():
        return environ[SEEDS_ENV].strip()
    first = EXPLORE_BASE + int(commit[:8], 16) % EXPLORE_SPAN
    return f"{first}-{first + EXPLORE_SEEDS - 1}"


def test_the_window_comes_from_the_commit_unless_set():
    window = explore_window("4daa5453193a359b1785eaaf7fe0cb6a55b16398", {})
    assert window == f"{EXPLORE_BASE + 0x4DAA5453 % EXPLORE_SPAN}-{EXPLORE_BASE + 0x4DAA5453 % EXPLORE_SPAN + 39}"
    assert explore_window(FALLBACK_COMMIT, {}) == explore_window(FALLBACK_COMMIT, {})
    first, last = map(int, explore_window("ffffffff" + "0" * 32, {}).split("-"))
    assert EXPLORE_BASE <= first and last - first + 1 == EXPLORE_SEEDS
    assert explore_window("0" * 40, {SEEDS_ENV: " 7-9 "}) == "7-9"


def _failures(stdout: str) -> str:
    """The summary's failing seeds and replay commands."""
    summary = stdout.split("simulate summary\n", 1)[-1]
    return "\n".join(line for line in summary.splitlines() if line.startswith(("failed seeds", "replay ")))


@pytest.mark.explore
@pytest.mark.timeout(EXPLORE_S_MAX + 60)
def test_a_window_of_seeds_from_the_commit_passes(capsys):
    commit = commit_hash()
    window, origin = explore_window(commit, dict(os.environ)), _origin(commit, dict(os.environ))
    jobs = cli.default_jobs()
    with capsys.disabled():
        print(f"\nexplore: seeds {window} ({origin}), --duration {SEED_DURATION_S:g}, {jobs} jobs")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.chaos.sim",
            "--seeds",
            window,
            "--jobs",
            str(jobs),
            "--duration",
            f"{SEED_DURATION_S:g}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=EXPLORE_S_MAX,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    with capsys.disabled():
        print("\n".join(f"explore: {line}" for line in done.stdout.split("simulate summary\n", 1)[-1].splitlines()))
    assert done.returncode == cli.EXIT_OK, (
        f"explore window {window} ({origin}): exit {done.returncode}\n{_failures(done.stdout)}\n\n"
        f"{done.stdout[-20_000:]}{done.stderr[-5_000:]}"
    )
    assert "simulate summary\n" in done.stdout, done.stdout
