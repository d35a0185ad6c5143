"""In one process, the CPU one node spends applying one workflow's commands,
through the real entry path (codec, applier, ClusterState, event hub with no
stream open): the "apply" rows of BENCHMARKS.md ("Cost per workflow").

    python docs/bench/cost-2026-12-04/apply_bench.py saga2|twopc3 [N]

Prints microseconds of process CPU per workflow over N workflows (after 200
to warm up), with the garbage collector as a node sets it
(cluster/launcher/event_loop.py) when that module has ``tune_gc``.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid

from coordinator.cluster.core.events import EventHub
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command
from coordinator.consensus.applier import Applier
from coordinator.consensus.codec import encode_command
from coordinator.consensus.stats import LogStats

SERVICES = ("p0", "p1", "p2")
CALL = {"fence": "3:17", "duration_ms": 2}


def saga2() -> list[tuple[str, dict]]:
    saga_id = uuid.uuid4().hex
    steps = [
        {
            "name": f"s{i}",
            "service": SERVICES[i],
            "action": {"method": "POST", "path": "/do", "body": {"n": i}},
            "compensation": {"method": "POST", "path": "/undo"},
        }
        for i in range(2)
    ]
    commands = [("saga.submit", {"definition": {"id": saga_id, "steps": steps}, "limits": Limits().to_command()})]
    for i in range(2):
        event = {"type": "action_succeeded", "step": i, "output": {"ok": True}, "attempts": 1, **CALL}
        commands.append(("saga.event", {"id": saga_id, "event": event}))
    return commands


def twopc3() -> list[tuple[str, dict]]:
    tx_id = uuid.uuid4().hex
    participants = [
        {"service": s, "prepare": {"path": "/prepare"}, "commit": {"path": "/commit"}, "abort": {"path": "/abort"}}
        for s in SERVICES
    ]
    commands = [
        ("tx.submit", {"definition": {"id": tx_id, "participants": participants}, "limits": Limits().to_command()})
    ]
    commands += [
        ("tx.event", {"id": tx_id, "event": {"type": "vote", "service": s, "vote": "yes", **CALL}}) for s in SERVICES
    ]
    commands += [
        ("tx.event", {"id": tx_id, "event": {"type": "ack", "service": s, "phase": "commit", **CALL}}) for s in SERVICES
    ]
    return commands


def main(workload: str, count: int) -> None:
    state = ClusterState()
    state.observer = EventHub(ring_size=10_000, queue_size=1_000, subscribers_max=10, clock=time.time)
    applier = Applier(state, threading.RLock(), LogStats())
    index = 0

    def apply(kind: str, body: dict) -> None:
        nonlocal index
        index += 1
        applier.apply_entry(index, encode_command(Command(kind, body, 1_733_000_000_000 + index)))

    for name in SERVICES:
        apply("service.put", {"name": name, "url": f"http://127.0.0.1:1/{name}"})
    make = {"saga2": saga2, "twopc3": twopc3}[workload]
    workflows = [make() for _ in range(count + 200)]
    for commands in workflows[:200]:
        for kind, body in commands:
            apply(kind, body)
    try:
        from coordinator.cluster.launcher.event_loop import tune_gc
    except ImportError:  # a release before it
        pass
    else:
        tune_gc()
    started = time.process_time()
    for commands in workflows[200:]:
        for kind, body in commands:
            apply(kind, body)
    print(f"{workload}: {(time.process_time() - started) / count * 1e6:.0f} us of CPU per workflow applied")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3000)
