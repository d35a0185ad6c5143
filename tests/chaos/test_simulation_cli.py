"""``coordinator simulate`` (coordinator.chaos.sim.cli): --seeds/--jobs parsing, seeds in
worker processes (same trace digest as in one process), the summary, a
failing seed's replay command, and Ctrl-C.

The runs use --duration 5: a seed then takes well under a second of real time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.chaos.sim import cli

REPO = Path(__file__).resolve().parents[2]
COORDINATOR = Path(sys.executable).parent / "coordinator"
RUN_S_MAX = 240  # a bounded wait for one command, however loaded the machine
SHORT = ["--duration", "5"]
# participant_without_idempotency fails most seeds at --duration 5 (effects_once:
# duplicate effects); which ones moves with any change of schedule, so the
# failing-seed test first finds one that fails and one that passes.
PLANTED = ["--planted-bug", "participant_without_idempotency"]
PLANTED_WINDOW = "0-15"
PASSING_SEED = 1  # without a planted bug every seed passes


def _simulate(*arguments: str, timeout_s: float = RUN_S_MAX) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.chaos.sim", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _digest(stdout: str, seed: int) -> str:
    match = re.search(rf"^simulation seed {seed}: \w+ \(.*, trace ([0-9a-f]{{32}})\)$", stdout, re.M)
    assert match, stdout
    return match.group(1)


def _summary_row(stdout: str, name: str) -> str:
    match = re.search(rf"^{name}  +(.*)$", stdout.split("simulate summary\n", 1)[-1], re.M)
    assert match, stdout
    return match.group(1)


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["--seeds", "5-1"],
        ["--seeds", "x"],
        ["--seeds", ""],
        ["--seeds", "1-"],
        ["--seeds", "-3"],
        ["--seeds", "1,,2"],
        ["--seeds", f"0-{cli.SEEDS_MAX}"],
        ["--jobs", "0"],
        ["--jobs", "-3"],
        ["--jobs", "abc"],
        ["--jobs", "2.5"],
        ["--jobs", str(cli.JOBS_MAX + 1)],
        ["--seed", "1", "--seeds", "2"],
    ],
)
def test_malformed_arguments_are_one_line_and_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--seeds", "0-1", *arguments] if arguments[0] == "--jobs" else arguments)
    out, err = capsys.readouterr()
    assert exited.value.code == cli.EXIT_USAGE
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("coordinator simulate: ") and "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        [str(COORDINATOR), "simulate", "--seeds", "5-1"],
        [str(COORDINATOR), "simulate", "--seeds", "0-3", "--jobs", "0"],
        [sys.executable, "-m", "coordinator.chaos.sim", "--jobs", "abc", "--seeds", "1-2"],
        [sys.executable, "-m", "coordinator.chaos.sim", "--seed", "1", "--summary", "s.txt"],
        [sys.executable, "-m", "coordinator.chaos.sim", "--seed", "1", "--executor-mode", "auto"],
        [sys.executable, "-m", "coordinator.chaos.sim", "--seed", "1", "--workers", "0", "--executor-mode", "auto"],
    ],
)
def test_the_commands_refuse_malformed_arguments_in_one_line(command, tmp_path):
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_S_MAX)
    assert done.returncode == cli.EXIT_USAGE, done
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""


def test_seeds_and_jobs_parse():
    assert cli._seeds("0-3,7,2") == [0, 1, 2, 3, 7]
    assert cli._seeds(" 9 ") == [9]
    assert cli._jobs("4") == 4 and cli._jobs(str(cli.JOBS_MAX)) == cli.JOBS_MAX
    assert cli._seeds_text([7, 0, 1, 2, 9, 10]) == "0-2,7,9-10"


def test_the_replay_command_keeps_the_settings_and_drops_the_batch():
    argv = ["--seeds", "0-99", "--jobs=4", "--duration", "5", "--summary", "s.txt", *PLANTED]
    assert cli._replay_command(17, argv) == (
        "coordinator simulate --seed 17 --duration 5 --planted-bug participant_without_idempotency"
    )


# -- runs ---------------------------------------------------------------------------------


def test_seeds_in_two_workers_pass_and_print_the_summary(tmp_path):
    summary = tmp_path / "summary.txt"
    done = _simulate("--seeds", "0-3", "--jobs", "2", *SHORT, "--summary", str(summary))
    assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
    assert done.stdout.startswith("simulate: 4 seeds (0-3) on 2 jobs\n")
    assert "simulate: 4/4 done, 0 failed" in done.stdout
    assert _summary_row(done.stdout, "seeds run") == "4 (0-3), 2 jobs"
    assert _summary_row(done.stdout, "passed") == "4" and _summary_row(done.stdout, "failed") == "0"
    assert re.fullmatch(r"\d+\.\d s", _summary_row(done.stdout, "wall time"))
    assert _summary_row(done.stdout, "failed seeds") == "none"
    assert summary.read_text().startswith("simulate summary\n") and summary.read_text() in done.stdout


def test_a_seed_in_a_worker_has_the_trace_of_a_seed_alone(tmp_path):
    """The report of the last seed listed is written by the worker that ran it."""
    report = tmp_path / "report.json"
    batch = _simulate("--seeds", f"{PASSING_SEED - 1}-{PASSING_SEED}", "--jobs", "2", *SHORT, "--report", str(report))
    assert batch.returncode == cli.EXIT_OK, batch.stdout + batch.stderr
    alone = _simulate("--seed", str(PASSING_SEED), *SHORT)
    assert alone.returncode == cli.EXIT_OK, alone.stdout + alone.stderr
    in_worker = json.loads(report.read_text())
    assert in_worker["seed"] == PASSING_SEED
    assert in_worker["trace_digest"] == _digest(alone.stdout, PASSING_SEED)


def _planted_failing_and_passing() -> tuple[int, int]:
    """A seed the planted bug fails and one it passes, from PLANTED_WINDOW."""
    window = _simulate("--seeds", PLANTED_WINDOW, "--jobs", "2", *SHORT, *PLANTED)
    failed = {int(s) for s in re.findall(r"^simulation seed (\d+): FAILED", window.stdout, re.M)}
    seeds = cli._seeds(PLANTED_WINDOW)
    passed = [s for s in seeds if s not in failed]
    if not failed or not passed:
        pytest.fail(f"scenario: the planted bug failed {sorted(failed)} of {PLANTED_WINDOW}: need both kinds")
    return min(failed), passed[0]


def test_a_failing_seed_is_reported_with_its_replay_command():
    FAILING_SEED, passing = _planted_failing_and_passing()  # noqa: N806 - read as the constant it was
    done = _simulate("--seeds", f"{FAILING_SEED},{passing}", "--jobs", "2", *SHORT, *PLANTED)
    assert done.returncode == cli.EXIT_FAILED, done.stdout + done.stderr
    replay = f"coordinator simulate --seed {FAILING_SEED} {' '.join(SHORT + PLANTED)}"
    assert f"replay with: {replay}\n" in done.stdout
    assert re.search(r"^effects_once +FAIL ", done.stdout, re.M), done.stdout
    assert _summary_row(done.stdout, "failed") == "1" and _summary_row(done.stdout, "passed") == "1"
    assert _summary_row(done.stdout, "failed seeds") == str(FAILING_SEED)
    assert _summary_row(done.stdout, f"replay {FAILING_SEED}") == replay
    # The replay command fails the same way, with the same trace.
    again = _simulate(*shlex.split(replay)[2:])
    assert again.returncode == cli.EXIT_FAILED, again.stdout
    assert _digest(again.stdout, FAILING_SEED) == _digest(done.stdout, FAILING_SEED)


def _workers(pid: int) -> list[int]:
    """The worker processes of ``pid`` (multiprocessing's spawned children)."""
    workers = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in command:
            workers.append(int(proc.name))
    return workers


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_ctrl_c_stops_the_workers_and_exits_non_zero():
    run = subprocess.Popen(
        [sys.executable, "-m", "coordinator.chaos.sim", "--seeds", "0-199", "--jobs", "2", *SHORT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # as a terminal's foreground job
    try:
        assert _wait_for(lambda: len(_workers(run.pid)) == 2, RUN_S_MAX), "no worker processes started"
        workers = _workers(run.pid)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=RUN_S_MAX)
    finally:
        run.kill()
    assert run.returncode == cli.EXIT_INTERRUPTED, out + err
    assert "stopped before the last seed: interrupted" in err and "Traceback" not in err, err
    assert "seeds run" in out and "of 200, stopped" in out, out
    assert _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), RUN_S_MAX), workers


def test_a_worker_that_dies_stops_the_run_instead_of_hanging_it():
    run = subprocess.Popen(
        [sys.executable, "-m", "coordinator.chaos.sim", "--seeds", "0-199", "--jobs", "2", *SHORT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        assert _wait_for(lambda: len(_workers(run.pid)) == 2, RUN_S_MAX), "no worker processes started"
        os.kill(_workers(run.pid)[0], signal.SIGKILL)
        out, err = run.communicate(timeout=RUN_S_MAX)
    finally:
        run.kill()
    assert run.returncode == cli.EXIT_FAILED, out + err
    assert "a worker process died abruptly" in err and "Traceback" not in err, err
    assert "of 200, stopped" in out, out
