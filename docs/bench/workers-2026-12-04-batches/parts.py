"""The leader's CPU per saga by part, from py-spy folded stacks: the
"where the milliseconds go" table of BENCHMARKS.md ("Workers").

    python docs/bench/workers-2026-12-04-batches/parts.py FILE:MS [FILE:MS ...]

FILE is a profile of ``coordinator bench --profile`` (``--format raw
--function``), MS the leader's CPU ms per workflow of the same run. Each
sample counts once, for the innermost frame that names a part; a sample
whose innermost frame is the event loop's ``Runner.run`` (native time under
uvloop: its I/O, and gRPC's completions run by Cython) or a thread's
``Thread.run`` without Python frames (gRPC's poller thread) is counted as
such. Shares of samples are turned into milliseconds with MS: py-spy counts
a runnable thread waiting for a core as busy, so on a loaded machine the
split is approximate.
"""

from __future__ import annotations

import sys
from collections import Counter

PARTS = (
    ("worker stream: message encoding", ("worker_wire.py",)),
    ("worker stream: dispatcher", ("executor/dispatch.py",)),
    ("worker stream: grpc.aio (Python-visible)", ("grpc_workers.py", "grpc/aio", "CoordinatorService.Work")),
    ("participant calls", ("http_caller.py", "aiohttp/client", "callers.py", "aiohappyeyeballs", "signing.py")),
    ("Raft (PySyncObj, journal, fsync)", ("pysyncobj", "journal.py")),
    ("applying commands", ("applier.py",)),
    ("event hub", ("events.py", "http_events")),
    ("HTTP API", ("aiohttp/web", "http_api.py", "operations.py")),
    ("executor drivers", ("reconciler.py", "executor.py", "executor/saga.py")),
)


def part(frames: list[str]) -> str:
    leaf = frames[-1]
    if leaf.startswith("Thread.run (threading.py"):
        return "gRPC poller thread (native)"
    if leaf.startswith("Runner.run (asyncio/runners.py"):
        return "event loop, native (uvloop I/O, gRPC completions)"
    for frame in reversed(frames):
        for name, keys in PARTS:
            if any(key in frame for key in keys):
                return name
    return "other"


def parts(path: str) -> tuple[Counter, int]:
    counts: Counter = Counter()
    total = 0
    with open(path, errors="replace") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if stack and count.isdigit():
                counts[part(stack.split(";"))] += int(count)
                total += int(count)
    return counts, total


def main(args: list[str]) -> None:
    columns = []
    for arg in args:
        path, _, ms = arg.rpartition(":")
        counts, total = parts(path)
        columns.append((path, counts, total, float(ms)))
    names = sorted(
        {name for _, counts, _, _ in columns for name in counts},
        key=lambda n: -max(c[n] / t * ms for _, c, t, ms in columns),
    )
    print("| part | " + " | ".join(path.rsplit("/", 1)[-1] for path, *_ in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name in names:
        cells = [f"{100 * c[name] / t:.1f} % = {c[name] / t * ms:.2f} ms" for _, c, t, ms in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| samples | " + " | ".join(str(t) for _, _, t, _ in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
