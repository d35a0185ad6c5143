"""``coordinator simulate`` (or ``python -m chaos.sim``): simulated runs from seeds.

    coordinator simulate --seed 7                 # one run; prints the seed, the checkers, the trace digest
    coordinator simulate --seed 7 --replay        # twice: the trace digests must be equal
    coordinator simulate --seeds 0-19 --duration 20
    coordinator simulate --seed 7 --trace t.txt --history h.json --report r.json

A run that fails prints the command that replays it. The process runs with
PYTHONHASHSEED=0 (it re-executes itself with it when needed), so a seed
replays the same trace in any process on the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from chaos.checkers import report_json

from .nemesis import FAULTS
from .run import SimResult, simulate
from .world import PLANTED_BUGS, SNAPSHOTS_OFTEN, SimSettings

__all__ = ["add_simulate_parser", "cmd_simulate", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SEEDS_MAX = 100_000
HASH_SEED = "0"


def _seeds(text: str) -> list[int]:
    """``7``, ``0-19`` or ``1,5,9``."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise argparse.ArgumentTypeError(f"seeds: expected N, A-B or N,M,...; got {text!r}")
        seeds.extend(range(int(low), int(high or low) + 1))
    if not 1 <= len(seeds) <= SEEDS_MAX:
        raise argparse.ArgumentTypeError(f"seeds: 1 to {SEEDS_MAX} seeds")
    return seeds


def _arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="the seed of one run (default: a random one, printed)")
    which.add_argument("--seeds", type=_seeds, help="several runs: N, A-B or N,M,...")
    parser.add_argument("--duration", type=float, default=30.0, help="simulated seconds under faults")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--rate", type=float, default=6.0, help="client operations per simulated second")
    parser.add_argument("--snapshots-often", action="store_true",
                        help="compact the log every 150 entries or 20 s (production: 5000 or 300 s)")
    parser.add_argument("--planted-bug", choices=PLANTED_BUGS, help="plant a bug the checkers must catch")
    parser.add_argument("--replay", action="store_true", help="run each seed twice and compare the trace digests")
    parser.add_argument("--trace", metavar="FILE", help="write the trace of the (last) run here")
    parser.add_argument("--history", metavar="FILE", help="write the history of the (last) run here")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report of the (last) run here")
    return parser


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``simulate`` on the ``coordinator`` command's subparsers."""
    parser = commands.add_parser("simulate", help="the whole cluster in one process, simulated from a seed")
    _arguments(parser).set_defaults(run=cmd_simulate)


def _settings(args: argparse.Namespace) -> SimSettings:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"--faults: unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
    extra = {"raft": SNAPSHOTS_OFTEN} if args.snapshots_often else {}
    return SimSettings(nodes=args.nodes, duration_s=args.duration, faults=faults, rate_per_s=args.rate,
                       planted_bug=args.planted_bug,
                       trace_lines=2_000_000 if args.trace else 0, **extra)


def _replay_command(seed: int, argv: list[str]) -> str:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--seed", "--seeds"):
            skip = True
        elif not arg.startswith(("--seed=", "--seeds=")):
            kept.append(arg)
    return " ".join(["coordinator simulate", "--seed", str(seed), *kept])


def _write(args: argparse.Namespace, result: SimResult) -> None:
    if args.trace:
        Path(args.trace).write_text("\n".join(result.trace_lines) + "\n")
    if args.history:
        result.history.dump(args.history)
    if args.report:
        report = report_json(result.history, result.results, result.seed, round(result.virtual_s, 1), [])
        report["trace_digest"] = result.trace_digest
        report["stats"] = result.stats
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


def cmd_simulate(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        arguments = argv[1:] if argv and argv[0] == "simulate" else argv
        os.execv(sys.executable, [sys.executable, "-m", "chaos.sim", *arguments])
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"coordinator simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    seeds = args.seeds or [args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")]
    failed: list[int] = []
    for seed in seeds:
        print(f"simulate: seed {seed}", flush=True)
        result = simulate(seed, settings)
        print(result.summary(), flush=True)
        if args.replay:
            again = simulate(seed, settings)
            same = again.trace_digest == result.trace_digest
            print(f"replay: trace {again.trace_digest} {'identical' if same else 'DIFFERENT'}", flush=True)
            if not same:
                failed.append(seed)
        if not result.passed:
            failed.append(seed)
            print(f"replay with: {_replay_command(seed, argv)}", flush=True)
        _write(args, result)
    if len(seeds) > 1:
        print(f"simulate: {len(seeds) - len(set(failed))}/{len(seeds)} seeds passed"
              + (f"; failed: {sorted(set(failed))}" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _arguments(argparse.ArgumentParser(prog="coordinator simulate", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    return cmd_simulate(args, argv)
