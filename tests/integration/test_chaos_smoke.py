"""`coordinator chaos` as a smoke run: a real cluster, leader kills and
pauses every few seconds under a mixed workload, then every checker."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

DURATION_S = 75


def test_chaos_smoke_passes_every_checker(tmp_path):
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "chaos", "--duration", str(DURATION_S), "--seed", "7",
         "--faults", "kill,pause,restart-all", "--rate", "25", "--report", str(report_path)],
        capture_output=True, text=True, timeout=DURATION_S + 240,
    )
    print(result.stdout[-4000:], result.stderr[-2000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["seed"] == 7
    assert {c["name"] for c in report["checkers"]} >= {
        "acknowledged", "twopc_atomicity", "sagas", "effects_once", "registry_linearizable", "convergence", "liveness"}
    assert all(c["passed"] or c.get("verdict") == "unknown" for c in report["checkers"])
    assert report["operations"]["ok"] >= 300
    assert report["workflows"]["sagas"] and report["workflows"]["transactions"]
    assert len(report["faults"]) >= DURATION_S // 10, report["faults"]
