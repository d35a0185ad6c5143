"""``coordinator simulate`` (or ``python -m coordinator.chaos.sim``): simulated runs from seeds.

    coordinator simulate --seed 7                 # one run; prints the seed, the checkers, the trace digest
    coordinator simulate --seed 7 --replay        # twice: the trace digests must be equal
    coordinator simulate --seeds 0-999 --duration 20          # in worker processes, one per core
    coordinator simulate --seeds 0-19 --jobs 1                # in this process, one after the other
    coordinator simulate --seed 7 --trace t.txt --history h.json --report r.json

A run that fails prints the command that replays it. The process runs with
PYTHONHASHSEED=0 (it re-executes itself with it when needed), and so do its
worker processes, so a seed replays the same trace in any process on the
same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from coordinator.chaos.checkers import report_json
from coordinator.cluster.core.executor_settings import ExecutorSettings

from .run import SimResult, simulate
from .settings import FAULTS, PLANTED_BUGS, SNAPSHOTS_OFTEN, WORKERS_MAX, SimSettings

__all__ = ["SeedOutcome", "add_simulate_parser", "cmd_simulate", "main", "run_seeds"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
SEEDS_MAX = 100_000
JOBS_MAX = 256
HASH_SEED = "0"
TRACE_LINES_KEPT = 2_000_000
# A --seeds run prints a progress line at most this often (and after the last seed).
PROGRESS_EVERY_S = 5.0
# A worker told to stop (Ctrl-C) unwinds its run; after this long it is killed.
STOP_WAIT_S = 10.0
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# What the replay command of one seed leaves out: the seed selection, the
# parallelism and the summary file of the run it came from.
_REPLAY_DROPS = ("--seed", "--seeds", "--jobs", "--summary")


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit code 2 (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _seed_range(part: str) -> range:
    low, dash, high = part.strip().partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        raise argparse.ArgumentTypeError(f"expected N, A-B or N,M,... (seeds >= 0), got {part.strip()!r}")
    first, last = int(low), int(high) if dash else int(low)
    if last < first:
        raise argparse.ArgumentTypeError(f"{part.strip()!r}: A-B needs A <= B")
    if last - first + 1 > SEEDS_MAX:
        raise argparse.ArgumentTypeError(f"at most {SEEDS_MAX} seeds, got {part.strip()!r}")
    return range(first, last + 1)


def _seeds(text: str) -> list[int]:
    """``7``, ``0-19`` or ``1,5,9`` (a seed listed twice runs once)."""
    seeds: dict[int, None] = {}
    for part in text.split(","):
        seeds.update(dict.fromkeys(_seed_range(part)))
        if len(seeds) > SEEDS_MAX:
            raise argparse.ArgumentTypeError(f"at most {SEEDS_MAX} seeds")
    return list(seeds)


def _jobs(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= JOBS_MAX:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {JOBS_MAX}, got {text!r}")
    return int(text)


def _arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--seed",
        type=int,
        help="the seed of one run, in this process; prints its whole checker table (default: a random seed, printed)",
    )
    which.add_argument(
        "--seeds",
        type=_seeds,
        help="several runs: N, A-B or N,M,...; prints progress, each "
        "failing seed with its replay command, then a summary",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help=f"worker processes for --seeds, 1 to {JOBS_MAX} (default: os.cpu_count()); "
        "1 runs the seeds in this process",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="simulated seconds under faults")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--rate", type=float, default=6.0, help="client operations per simulated second")
    parser.add_argument(
        "--workers",
        type=int,
        choices=range(0, WORKERS_MAX + 1),
        metavar=f"0-{WORKERS_MAX}",
        help="transition workers, the cluster in remote executor mode (default: the seed decides - about one "
        "seed in three runs 1-3 workers in remote or auto mode; none with --planted-bug); 0: none, local mode",
    )
    parser.add_argument(
        "--executor-mode",
        choices=("remote", "auto"),
        help="with --workers N (N > 0): the executor mode (default remote)",
    )
    parser.add_argument(
        "--snapshots-often",
        action="store_true",
        help="compact the log every 150 entries or 20 s (production: 5000 or 300 s)",
    )
    parser.add_argument("--planted-bug", choices=PLANTED_BUGS, help="plant a bug the checkers must catch")
    parser.add_argument("--replay", action="store_true", help="run each seed twice and compare the trace digests")
    parser.add_argument(
        "--trace",
        metavar="FILE",
        help="write the trace of the run here (with --seeds: of the last seed listed, whichever process runs it)",
    )
    parser.add_argument(
        "--history", metavar="FILE", help="write the history of the run here (with --seeds: of the last seed listed)"
    )
    parser.add_argument(
        "--report", metavar="FILE", help="write the JSON report of the run here (with --seeds: of the last seed listed)"
    )
    parser.add_argument("--summary", metavar="FILE", help="with --seeds: write the summary here too")
    return parser


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``simulate`` on the ``coordinator`` command's subparsers."""
    parser = commands.add_parser(
        "simulate", help="the whole cluster in one process, simulated from a seed", description=__doc__.split("\n")[0]
    )
    _arguments(parser).set_defaults(run=cmd_simulate)


def _settings(args: argparse.Namespace) -> SimSettings:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"--faults: unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
    extra: dict = {"raft": SNAPSHOTS_OFTEN} if args.snapshots_often else {}
    extra["workers"] = args.workers if args.workers is not None else (0 if args.planted_bug else None)
    if args.executor_mode and not args.workers:
        raise ValueError("--executor-mode needs --workers N with N > 0")
    if args.workers:
        extra["executor"] = ExecutorSettings(mode=args.executor_mode or "remote")
    return SimSettings(
        nodes=args.nodes,
        duration_s=args.duration,
        faults=faults,
        rate_per_s=args.rate,
        planted_bug=args.planted_bug,
        trace_lines=TRACE_LINES_KEPT if args.trace else 0,
        **extra,
    )


def _replay_command(seed: int, argv: list[str]) -> str:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _REPLAY_DROPS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _REPLAY_DROPS)):
            kept.append(arg)
    return " ".join(["coordinator simulate", "--seed", str(seed), *kept])


@dataclass(frozen=True)
class Outputs:
    """The files a run writes (None: not asked)."""

    trace: str | None = None
    history: str | None = None
    report: str | None = None

    def wanted(self) -> bool:
        return any((self.trace, self.history, self.report))


def _write(outputs: Outputs, result: SimResult) -> None:
    if outputs.trace:
        Path(outputs.trace).write_text("\n".join(result.trace_lines) + "\n")
    if outputs.history:
        result.history.dump(outputs.history)
    if outputs.report:
        report = report_json(result.history, result.results, result.seed, round(result.virtual_s, 1), [])
        report["trace_digest"] = result.trace_digest
        report["stats"] = result.stats
        Path(outputs.report).write_text(json.dumps(report, indent=2) + "\n")


def _ensure_hash_seed(argv: list[str]) -> None:
    """Re-execute as ``python -m coordinator.chaos.sim`` with PYTHONHASHSEED=0 unless already so."""
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        os.execv(sys.executable, [sys.executable, "-m", "coordinator.chaos.sim", *argv])


def cmd_simulate(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    argv = argv[1:] if argv and argv[0] == "simulate" else argv  # as `coordinator simulate ...`
    _ensure_hash_seed(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"coordinator simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.summary and args.seeds is None:
        print("coordinator simulate: --summary needs --seeds", file=sys.stderr)
        return EXIT_USAGE
    outputs = Outputs(args.trace, args.history, args.report)
    if args.seeds is not None:
        jobs = args.jobs if args.jobs is not None else default_jobs()
        return _run_batch(args.seeds, settings, jobs, args.replay, outputs, argv, args.summary)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    return _run_single(seed, settings, args.replay, outputs, argv)


def default_jobs() -> int:
    return min(os.cpu_count() or 1, JOBS_MAX)


# -- one seed: the whole table ---------------------------------------------------------


def _run_single(seed: int, settings: SimSettings, replay: bool, outputs: Outputs, argv: list[str]) -> int:
    print(f"simulate: seed {seed}", flush=True)
    result = simulate(seed, settings)
    print(result.summary(), flush=True)
    passed = result.passed
    if replay:
        again = simulate(seed, settings)
        same = again.trace_digest == result.trace_digest
        print(f"replay: trace {again.trace_digest} {'identical' if same else 'DIFFERENT'}", flush=True)
        passed = passed and same
    if not passed:
        print(f"replay with: {_replay_command(seed, argv)}", flush=True)
    _write(outputs, result)
    return EXIT_OK if passed else EXIT_FAILED


# -- several seeds: in worker processes ------------------------------------------------


@dataclass(frozen=True)
class SeedJob:
    """One seed for a worker: what to run and what to write."""

    seed: int
    settings: SimSettings
    replay: bool = False
    outputs: Outputs = Outputs()


@dataclass(frozen=True)
class SeedOutcome:
    """What a worker sends back for one seed (small: no history, no trace)."""

    seed: int
    passed: bool
    trace_digest: str
    real_s: float
    failure_lines: tuple[str, ...] = ()
    fault_kinds: tuple[str, ...] = ()  # the kinds of fault the run injected, each once


def _failure_lines(result: SimResult) -> list[str]:
    """The first line of the summary, the failing checkers' rows and their violations."""
    failing = {r.name for r in result.failed()}
    head, header, *rest = result.summary().splitlines()
    rows = [line for line in rest if line.split(" ", 1)[0] in failing]
    violations = [line for line in rest if line.startswith("  ")]
    return [head, header, *rows, *violations]


def run_seed(job: SeedJob) -> SeedOutcome:
    """Run one seed (twice with replay) and judge it; an exception fails the seed."""
    started = time.perf_counter()
    try:
        result = simulate(job.seed, job.settings)
        lines = [] if result.passed else _failure_lines(result)
        if job.replay:
            again = simulate(job.seed, job.settings)
            if again.trace_digest != result.trace_digest:
                lines.append(f"replay: trace {again.trace_digest} DIFFERENT from {result.trace_digest}")
        if job.outputs.wanted():
            _write(job.outputs, result)
    except Exception as exc:  # noqa: BLE001 - a seed that raises is a failing seed, reported like one
        return SeedOutcome(
            job.seed,
            False,
            "",
            time.perf_counter() - started,
            (f"simulation seed {job.seed}: ERROR {type(exc).__name__}: {exc}",),
        )
    kinds = tuple(sorted({fault["kind"] for fault in result.history.faults}))
    return SeedOutcome(job.seed, not lines, result.trace_digest, time.perf_counter() - started, tuple(lines), kinds)


def configure_logging() -> None:
    logging.basicConfig(level=logging.ERROR, format=LOG_FORMAT)


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds the run, so its temporary directory is removed


def _worker_init() -> None:
    """In each worker: Ctrl-C is the parent's to handle, and its SIGTERM (the pool's
    terminate) unwinds; log as ``python -m coordinator.chaos.sim`` does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        raise RuntimeError(f"simulate worker: PYTHONHASHSEED must be {HASH_SEED} so that seeds replay")
    configure_logging()


def _seed_jobs(seeds: list[int], settings: SimSettings, replay: bool, outputs: Outputs) -> list[SeedJob]:
    """The last seed writes the files asked for; the others keep no trace lines."""
    quiet = dataclasses.replace(settings, trace_lines=0)
    jobs = [SeedJob(seed, quiet, replay) for seed in seeds[:-1]]
    return [*jobs, SeedJob(seeds[-1], settings, replay, outputs)]


class WorkerDied(RuntimeError):
    """A worker process ended abruptly (killed, out of memory): the seeds it had are lost."""


def run_seeds(jobs: list[SeedJob], workers: int) -> Iterator[SeedOutcome]:
    """Each seed's outcome as it finishes: in this process (workers == 1) or in worker processes.

    The workers (spawned with PYTHONHASHSEED=0) live for the whole run, so
    each pays the imports once and then takes seed after seed; a seed is
    one task, so a failure is reported as soon as it happens. Closing the
    iterator early (Ctrl-C) stops the workers; a worker that dies raises
    WorkerDied rather than waiting forever for its seed.
    """
    if workers == 1 or len(jobs) == 1:
        yield from map(run_seed, jobs)
        return
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        raise RuntimeError(f"run_seeds: PYTHONHASHSEED must be {HASH_SEED} (the workers inherit it)")
    executor = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
    )
    finished = False
    try:
        futures = [executor.submit(run_seed, job) for job in jobs]
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool as exc:
                raise WorkerDied(f"a worker process died abruptly ({exc})") from None
            yield outcome
        finished = True
    finally:
        if finished:
            executor.shutdown(wait=True)
        else:
            _stop(executor)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Cancel the seeds not started and terminate the workers (each unwinds its run)."""
    processes = list((executor._processes or {}).values())  # no public terminate before Python 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(STOP_WAIT_S)
        if process.is_alive():
            process.kill()


@dataclass
class _Tally:
    total: int
    jobs: int
    started: float
    outcomes: list[SeedOutcome] = dataclasses.field(default_factory=list)
    last_progress: float = 0.0

    def failed(self) -> list[SeedOutcome]:
        return sorted((o for o in self.outcomes if not o.passed), key=lambda o: o.seed)

    def wall_s(self) -> float:
        return time.monotonic() - self.started

    def mean_real_s(self) -> float:
        return sum(o.real_s for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0


def _progress_line(tally: _Tally) -> str:
    done = len(tally.outcomes)
    left_s = tally.wall_s() / done * (tally.total - done) if done else 0.0
    return (
        f"simulate: {done}/{tally.total} done, {len(tally.failed())} failed, {tally.mean_real_s():.2f} s/seed, "
        f"{tally.wall_s():.0f} s so far, about {left_s:.0f} s left"
    )


def _seeds_text(seeds: Iterable[int]) -> str:
    """``0-99`` or ``1,5,9-12``: the seeds as ranges."""
    spans: list[list[int]] = []
    for seed in sorted(seeds):
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _fault_counts(outcomes: Iterable[SeedOutcome]) -> str:
    """How many seeds injected each kind of fault: ``crash 812, partition 790``."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        for kind in outcome.fault_kinds:
            counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


def _summary(tally: _Tally, argv: list[str], stopped: str | None) -> str:
    failed = tally.failed()
    done = len(tally.outcomes)
    ran = f"{done} of {tally.total}, stopped" if stopped else str(done)
    rows = [
        ("seeds run", f"{ran} ({_seeds_text(o.seed for o in tally.outcomes) or 'none'}), {tally.jobs} jobs"),
        ("passed", str(done - len(failed))),
        ("failed", str(len(failed))),
        ("wall time", f"{tally.wall_s():.1f} s"),
        (
            "per seed",
            f"{tally.mean_real_s():.2f} s (mean real time of a run), "
            f"{tally.wall_s() / max(done, 1):.2f} s of wall time",
        ),
        ("failed seeds", _seeds_text(o.seed for o in failed) or "none"),
        ("seeds by fault", _fault_counts(tally.outcomes)),
    ]
    rows += [(f"replay {o.seed}", _replay_command(o.seed, argv)) for o in failed]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["simulate summary", *(f"{name:<{width}}  {value}" for name, value in rows)])


def _report(outcome: SeedOutcome, tally: _Tally, argv: list[str]) -> None:
    """A failing seed at once; a progress line at most every PROGRESS_EVERY_S and after the last."""
    tally.outcomes.append(outcome)
    if not outcome.passed:
        print("\n".join(outcome.failure_lines), flush=True)
        print(f"replay with: {_replay_command(outcome.seed, argv)}", flush=True)
    now = time.monotonic()
    if now - tally.last_progress >= PROGRESS_EVERY_S or len(tally.outcomes) == tally.total:
        tally.last_progress = now
        print(_progress_line(tally), flush=True)


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def _run_batch(
    seeds: list[int],
    settings: SimSettings,
    jobs: int,
    replay: bool,
    outputs: Outputs,
    argv: list[str],
    summary_path: str | None,
) -> int:
    tally = _Tally(total=len(seeds), jobs=min(jobs, len(seeds)), started=time.monotonic())
    tally.last_progress = tally.started
    print(f"simulate: {len(seeds)} seeds ({_seeds_text(seeds)}) on {tally.jobs} jobs", flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops the workers too
    stopped = None
    outcomes = run_seeds(_seed_jobs(seeds, settings, replay, outputs), jobs)
    try:
        for outcome in outcomes:
            _report(outcome, tally, argv)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except WorkerDied as exc:
        stopped = str(exc)
    finally:
        outcomes.close()  # stops the workers, if any
        signal.signal(signal.SIGTERM, previous)
    summary = _summary(tally, argv, stopped)
    print(summary, flush=True)
    if summary_path:
        Path(summary_path).write_text(summary + "\n")
    if stopped:
        print(f"simulate: stopped before the last seed: {stopped}", file=sys.stderr)
        return EXIT_INTERRUPTED if stopped == "interrupted" else EXIT_FAILED
    return EXIT_FAILED if tally.failed() else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _arguments(_Parser(prog="coordinator simulate", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    return cmd_simulate(args, argv)
