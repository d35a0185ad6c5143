"""`coordinator demo` runs every scenario on a real cluster and exits 0."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_every_scenario_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "coordinator", "demo"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "=> order-1 completed" in out
    assert "=> order-2 compensated" in out
    assert out.index("| inventory: released") < out.index("| orders: cancelled")
    assert "=> tx-1 committed" in out and "=> tx-2 aborted" in out
    assert "=> transfer-1 committed" in out and "=> transfer-2 aborted" in out
    assert "total money after: 200; prepared transactions left: 0" in out
    assert "SIGKILL the leader" in out and "=> order-3 completed" in out
    assert "Traceback" not in out + result.stderr
