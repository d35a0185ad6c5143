"""`coordinator chaos --workers 2`: a real cluster in remote executor mode
with two worker processes, under leader kills, worker kills (SIGKILL, then a
restart) and worker pauses (SIGSTOP past the lease), then every checker:
no acknowledged write lost, 2PC atomic, sagas compensated in order, one
effect per idempotency key, the registry linearizable, the replicas equal,
every workflow finished - and calls were leased to the workers, and leases
were lost and their calls leased again."""

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
    workers = report["workers"]
    assert workers["workers"] == 2 and workers["dispatched_total"] > 100
    assert workers["leases_lost_total"] >= 1 and workers["redispatches_total"] >= 1, workers
