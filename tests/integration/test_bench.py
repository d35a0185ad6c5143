"""`coordinator bench` end to end, short: our cluster, then a baseline in the
same invocation; the JSON has the KEYS below and the ratio is a number.
No speed is asserted: the figures depend on the machine and its load."""

import json
import os
import subprocess
import sys

import pytest

from coordinator.cluster.bench.dashboards import CHROMIUM
from coordinator.cluster.bench.etcd import etcd_binary

pytestmark = pytest.mark.integration

KEYS = {
    "workload",
    "concurrency",
    "duration_s",
    "completed",
    "throughput_per_s",
    "latency_ms",
    "entries_per_workflow",
    "nodes",
    "baseline",
    "ratio",
}


def bench(tmp_path, *args, timeout_s=120):
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", "bench", *args, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report.read_text()), result.stdout


def test_bench_with_the_pysyncobj_baseline_writes_the_issue_shape(tmp_path):
    result, stdout = bench(
        tmp_path,
        "--workload",
        "saga2",
        "--concurrency",
        "4",
        "--duration",
        "3",
        "--warmup",
        "0.5",
        "--baseline",
        "pysyncobj",
    )
    assert KEYS <= set(result)
    assert result["workload"] == "saga2" and result["concurrency"] == 4 and result["completed"] > 0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert [n["id"] for n in result["nodes"]] == ["n1", "n2", "n3"]
    assert all(
        set(n) == {"id", "cpu_s", "rss_mb_max", "role", "cpu_ms_per_workflow"} and n["rss_mb_max"] > 0
        for n in result["nodes"]
    )
    assert sorted(n["role"] for n in result["nodes"]) == ["follower", "follower", "leader"]
    baseline = result["baseline"]
    assert baseline["name"] == "pysyncobj" and baseline["fsync"] is False
    assert isinstance(baseline["throughput_per_s"], float) and baseline["throughput_per_s"] > 0
    assert isinstance(result["ratio"], float) and result["ratio"] > 0
    # commands/s when the nodes export coordinator_commands_applied_total, else Raft entries/s
    ours = result["commands_per_s"] if result["commands_per_s"] is not None else result["log_entries_per_s"]
    assert ours > 0
    assert result["ratio"] == round(ours / baseline["throughput_per_s"], 3)
    assert result["entry_ratio"] == round(result["log_entries_per_s"] / baseline["throughput_per_s"], 3)
    assert "never fsyncs" in stdout and "ratio" in stdout


def test_bench_over_tls_reports_the_cpu_each_workflow_costs(tmp_path):
    result, stdout = bench(
        tmp_path, "--workload", "saga2", "--concurrency", "4", "--duration", "2", "--warmup", "0.5", "--tls"
    )
    assert result["tls"] is True and result["completed"] > 0 and not result["errors"]
    cost = result["cpu_ms_per_workflow"]
    assert set(cost) == {"total", "leader", "followers", "client", "workers"} and cost["leader"] > 0
    assert cost["workers"] == 0  # local mode: no worker
    assert cost["total"] == pytest.approx(cost["leader"] + cost["followers"] + cost["client"], abs=0.01)
    assert "TLS" in stdout.splitlines()[0] or "  TLS" in stdout


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM} (make test installs Debian's chromium as root)"
)
def test_bench_with_dashboards_runs_without_then_with_the_pages_open(tmp_path):
    result, stdout = bench(
        tmp_path, "--workload", "saga2", "--concurrency", "4", "--duration", "2", "--warmup", "1", "--dashboards", "2"
    )
    dashboards = result["dashboards"]
    assert dashboards["count"] == 2 and len(dashboards["on"]) == 2
    assert dashboards["event_streams_open"] == 2  # both pages really hold their event stream
    assert dashboards["browser_cpu_s"] > 0
    assert dashboards["throughput_without_per_s"] > 0 and dashboards["throughput_change"] is not None
    assert "dashboards: 2 open on" in stdout and "without them: throughput" in stdout


def test_bench_with_workers_runs_local_then_remote_mode_and_compares(tmp_path):
    result, stdout = bench(
        tmp_path, "--workload", "saga2", "--concurrency", "4", "--duration", "2", "--warmup", "1", "--workers", "2"
    )
    assert result["executor_mode"] == "remote"
    workers = result["workers"]
    local, remote = workers["local"], workers["remote"]
    assert workers["count"] == 2 and local["completed"] > 0 and remote["completed"] > 0
    processes = remote["worker_processes"]
    assert [w["id"] for w in processes] == ["w1", "w2"]
    assert sum(w["cpu_s"] for w in processes) > 0  # the workers made the calls
    assert all(w["cpu_ms_per_workflow"] is not None for w in processes)
    assert remote["worker_capacity"] == 16  # concurrency 4 over 2 workers, raised to a worker's default
    # every call of the remote run went through a worker: two per saga2 completed in the window,
    # less the first calls of the (at most 4) sagas already running when the window opened
    assert remote["worker_dispatches"]["dispatched"] >= 2 * (remote["completed"] - 4) > 0
    assert local["cpu_ms_per_workflow"]["workers"] == 0
    assert remote["cpu_ms_per_workflow"]["workers"] > 0
    for run in (local, remote):  # each process's CPU per workflow, with its role
        assert sorted(n["role"] for n in run["nodes"]) == ["follower", "follower", "leader"]
        assert all(n["cpu_ms_per_workflow"] is not None for n in run["nodes"])
        assert run["client_cpu_ms_per_workflow"] is not None
    assert workers["leader_cpu_ratio"] > 0 and workers["target_met"] in (True, False)
    assert "executor modes" in stdout and "remote over local" in stdout and "worker w1: cpu" in stdout
    assert "w1 (worker)" in stdout and "calls leased to the workers" in stdout


def test_bench_workers_need_a_workflow_workload():
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", "bench", "--workload", "registry", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--workers" in result.stderr


def test_bench_dashboards_need_a_cluster_the_bench_starts():
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", "bench", "--dashboards", "2", "--endpoints", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--dashboards" in result.stderr


@pytest.mark.skipif(etcd_binary() is None, reason="no etcd binary (Debian: apt-get install etcd-server)")
def test_bench_registry_against_etcd(tmp_path):
    result, _ = bench(
        tmp_path,
        "--workload",
        "registry",
        "--concurrency",
        "8",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--baseline",
        "etcd",
    )
    assert result["baseline"]["name"] == "etcd" and result["baseline"]["throughput_per_s"] > 0
    assert result["baseline"]["errors"] == {}
    assert result["ratio"] == round(result["throughput_per_s"] / result["baseline"]["throughput_per_s"], 3)


def test_bench_failover_kills_the_leader_and_reports_both_delays(tmp_path):
    result, stdout = bench(tmp_path, "--workload", "failover", "--runs", "2", "--warmup", "1", timeout_s=180)
    assert result["runs"] == 2
    assert len(result["failover_ms"]) + result["missed"]["failover"] == 2
    assert len(result["resume_ms"]) + result["missed"]["resume"] == 2
    assert result["failover_ms"] and all(v > 0 for v in result["failover_ms"] + result["resume_ms"])
    assert result["completed"] > 0
    assert "kill -> next committed write" in stdout
