"""`coordinator chaos --workers 2`: a real cluster in remote executor mode
with two worker processes, under leader kills, worker kills (SIGKILL, then a
restart) and worker pauses (SIGSTOP past the lease), then every checker:
no acknowledged write lost, 2PC atomic, sagas compensated in order, one
effect per idempotency key, the registry linearizable, the replicas equal,
every workflow finished - and calls were leased to the workers, leases
were lost and their calls leased again, and every participant call whose
sender was found came from a worker process, none from a node.

Why a lost lease is as good as certain, not only likely: faults come one
at a time, so a paused worker stays paused past its lease (1.3-2.5 leases)
under a steady leader, which keeps leasing it calls until the lease runs
out (25 operations a second, several calls each; the least loaded worker
gets the next call, and the paused one is that as soon as the other holds
more); those calls are still needed when the lease is lost (step timeouts
of 2 s, longer than the 1.5 s lease), so they are leased again. Seed 7 has
several worker pauses and kills; each one alone makes it nearly sure."""

import json
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

DURATION_S = 35
SEED = 7  # its schedule (the kinds do not depend on timing) has leader kills, worker kills and worker pauses
RUN_TIMEOUT_S = DURATION_S + 150
COMMAND = [
    sys.executable, "-m", "coordinator", "chaos",
    "--workers", "2",
    "--duration", str(DURATION_S),
    "--seed", str(SEED),
    "--rate", "25",
    "--faults", "kill,worker-kill,worker-pause",
    "--aim", "leader",
    "--fault-interval", "3,5",
]  # fmt: skip


def test_chaos_with_workers_passes_every_checker(tmp_path):
    report_path = tmp_path / "report.json"
    process = subprocess.Popen(
        [*COMMAND, "--report", str(report_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the run stops its nodes and workers
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(stdout[-4000:], stderr[-2000:])
    assert process.returncode == 0, stdout[-4000:]
    report = json.loads(report_path.read_text())
    assert all(check["verdict"] == "pass" for check in report["checkers"]), report["checkers"]
    kinds = [fault["kind"] for fault in report["faults"]]
    assert {"kill", "worker-kill", "worker-pause"} <= set(kinds), kinds
    assert "workers" in {check["name"] for check in report["checkers"]}
    workers = report["workers"]
    assert workers["workers"] == 2 and workers["dispatched_total"] > 100
    assert workers["leases_lost_total"] >= 1 and workers["redispatches_total"] >= 1, workers
    callers = workers["calls_by_caller"]
    assert set(callers) <= {"w1", "w2", "unknown"}, callers  # no node process called a participant
    assert callers.get("w1", 0) + callers.get("w2", 0) > 100, callers
