"""Where a node's CPU per workflow goes, by path: the tables of BENCHMARKS.md
("Cost per workflow").

    python docs/bench/cost-2026-12-04/parts.py FILE:MS[:tick] [FILE:MS[:tick] ...]

FILE is a py-spy profile of one node taken with ``--gil`` (only the thread
holding the GIL is sampled, so a sample is CPU the interpreter spent, not a
thread waiting for the GIL or in a system call) and ``--format raw
--function``; MS is that node's CPU ms per workflow in the same run. Each
sample counts once, for the first path below found in its stack from the
innermost frame outwards; the shares are turned into milliseconds with MS.
Time a thread spends outside the GIL (uvloop's I/O, fdatasync, AES-GCM) is
in MS but not in the samples: the table spreads it over the paths in
proportion, so read it as a split of the interpreter's work. On a machine
with more runnable threads than cores a thread can be descheduled while it
holds the GIL and still be sampled; ``:tick`` keeps only the samples of
PySyncObj's tick thread (a follower's: 93-95 % of its CPU by
/proc/PID/task/*/stat, where its event loop's rare callbacks were
oversampled that way).
"""

from __future__ import annotations

import sys
from collections import Counter

PATHS = (
    ("participant calls: aiohttp client", ("aiohttp/client", "aiohttp/connector", "aiohttp/client_reqrep")),
    ("participant calls: caller (URL, signing, retries, breaker)", ("http_caller.py", "signing.py", "callers.py")),
    ("apply: definitions parsed", ("definition.py:", "saga/fields.py", "grammar/checks.py")),
    ("apply: event hub", ("core/events.py",)),
    ("apply: state machine step", ("saga/machine.py", "twopc/machine.py", "saga/calls.py", "saga/updates.py")),
    ("apply: stores (keep, pack, outcomes)", ("cluster/stores/",)),
    ("apply: decode, dispatch", ("applier.py", "core/state.py", "consensus/codec.py")),
    ("Raft: journal", ("journal.py",)),
    (
        "Raft: frames (seal, open, pickle, zlib)",
        ("peer_frames.py", "fernet.py", "pysyncobj/pickle", "tcp_connection.py"),
    ),
    ("Raft: PySyncObj (log, messages, poll)", ("pysyncobj/", "pysyncobj_log.py", "raft_guard.py")),
    ("executor: drivers, proposals", ("cluster/executor/", "consensus/base.py", "consensus/batching.py")),
    ("HTTP API: our handlers", ("cluster/api/",)),
    ("HTTP API: aiohttp server", ("aiohttp/web", "aiohttp/http_", "aiohttp/streams")),
)


def path(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in PATHS:
            if any(key in frame for key in keys):
                return name
    return "other (interpreter, asyncio, uvloop callbacks)"


def split(file: str, tick_only: bool = False) -> tuple[Counter, int]:
    counts: Counter = Counter()
    total = 0
    with open(file, errors="replace") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if tick_only and "_autoTickThread" not in stack:
                continue
            if stack and count.isdigit():
                counts[path(stack.split(";"))] += int(count)
                total += int(count)
    return counts, total


def main(args: list[str]) -> None:
    columns = []
    for arg in args:
        file, ms, *only = arg.split(":")
        counts, total = split(file, only == ["tick"])
        columns.append((file.rsplit("/", 1)[-1] + (" (tick thread)" if only else ""), counts, total, float(ms)))
    names = [name for name, _ in PATHS] + ["other (interpreter, asyncio, uvloop callbacks)"]
    print("| path, ms per workflow | " + " | ".join(c[0] for c in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name in names:
        if not any(c[1][name] for c in columns):
            continue
        cells = [f"{c[1][name] / c[2] * c[3]:.2f} ({100 * c[1][name] / c[2]:.0f} %)" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| **CPU ms per workflow** | " + " | ".join(f"**{c[3]:.2f}**" for c in columns) + " |")
    print("| samples | " + " | ".join(str(c[2]) for c in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
