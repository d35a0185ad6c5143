"""The pure parts of ``coordinator bench``: percentiles, ratios, the JSON
shape a baseline adds, the options it refuses, the etcd-missing path, the
profile reader and the chart's series. No cluster, no timing asserted."""

import math
import subprocess
import sys

import pytest

from coordinator.cluster.bench import etcd as bench_etcd
from coordinator.cluster.bench.chart import main as chart_main
from coordinator.cluster.bench.chart import series
from coordinator.cluster.bench.etcd import etcd_binary, etcd_command, run_etcd_baseline
from coordinator.cluster.bench.failover import Observations, fence_term
from coordinator.cluster.bench.run import (
    BenchOptions,
    attach_baseline,
    cpu_per_workflow,
    profile_of_mode,
    worker_capacity,
)
from coordinator.cluster.bench.stats import (
    commands_committed,
    distribution_ms,
    latency_summary_ms,
    percentile,
    ratio,
    top_functions,
)


# -- percentiles and ratios ---------------------------------------------------------------
def test_percentile_is_nearest_rank_and_zero_when_empty():
    assert percentile([], 0.5) == 0.0
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile(list(reversed(values)), 0.0) == 1.0


def test_p99_of_twenty_runs_is_the_worst_run():
    runs = [100.0] * 19 + [900.0]
    assert percentile(runs, 0.99) == 900.0
    assert distribution_ms(runs) == {"count": 20, "p50": 100.0, "p99": 900.0, "max": 900.0}


def test_latency_summary_is_in_milliseconds():
    summary = latency_summary_ms([0.001, 0.002, 0.003, 0.010])
    assert summary == {"p50": 3.0, "p90": 10.0, "p99": 10.0, "max": 10.0}
    assert latency_summary_ms([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}


@pytest.mark.parametrize(
    "ours, theirs, expected",
    [(1500.0, 1000.0, 1.5), (1.0, 3.0, 0.333), (None, 10.0, None), (10.0, None, None), (10.0, 0.0, None)],
)
def test_ratio(ours, theirs, expected):
    assert ratio(ours, theirs) == expected


def _ours(**overrides):
    result = {
        "workload": "saga2",
        "concurrency": 8,
        "duration_s": 5.0,
        "completed": 500,
        "throughput_per_s": 100.0,
        "latency_ms": {"p50": 1, "p90": 2, "p99": 3, "max": 4},
        "entries_per_workflow": 3.0,
        "log_entries_per_s": 300.0,
        "commands_per_s": 450.0,
        "nodes": [],
        "baseline": None,
        "ratio": None,
    }
    result.update(overrides)
    return result


def test_pysyncobj_ratio_is_committed_commands_per_s_over_its_writes_per_s():
    result = attach_baseline(_ours(), {"name": "pysyncobj", "throughput_per_s": 600.0})
    assert result["ratio"] == 0.75  # 450 commands/s; group commit packs them into 300 Raft entries/s
    assert result["ratio_basis"] == "commands"
    assert result["entry_ratio"] == 0.5
    assert result["workflow_ratio"] == round(100.0 / 600.0, 3)
    assert result["baseline"]["name"] == "pysyncobj"


def test_without_the_nodes_counters_the_ratio_falls_back_to_raft_entries():
    result = attach_baseline(_ours(commands_per_s=None), {"name": "pysyncobj", "throughput_per_s": 600.0})
    assert result["ratio"] == 0.5 and result["ratio_basis"] == "raft entries"


def test_commands_committed_reads_the_applied_commands_counter_or_none():
    metrics = "\n".join(
        [
            "# TYPE coordinator_commands_applied_total counter",
            'coordinator_proposals_total{node="n1",outcome="applied"} 120',
            'coordinator_commands_applied_total{node="n1"} 345',
            'coordinator_raft_commit_index{node="n1"} 40',
        ]
    )
    assert commands_committed(metrics) == 345
    assert commands_committed('coordinator_proposals_total{node="n1",outcome="applied"} 120') is None
    assert commands_committed("") is None


def test_etcd_ratio_is_registry_writes_per_s_over_its_puts_per_s():
    result = attach_baseline(
        _ours(workload="registry", throughput_per_s=900.0, commands_per_s=910.0),
        {"name": "etcd", "throughput_per_s": 3000.0},
    )
    assert result["ratio"] == 0.3
    assert "workflow_ratio" not in result


def test_no_baseline_leaves_ratio_null():
    result = attach_baseline(_ours(), None)
    assert result["baseline"] is None and result["ratio"] is None


# -- options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"baseline": "etcd"}, "--workload registry"),
        ({"workload": "failover", "baseline": "pysyncobj"}, "failover"),
        ({"workload": "failover", "nodes": 1}, "--nodes 3"),
        ({"baseline": "zookeeper"}, "--baseline"),
        ({"concurrency": 0}, "--concurrency"),
        ({"workload": "failover", "tls": True}, "--tls"),
    ],
)
def test_options_refuse_what_cannot_be_measured(overrides, words):
    with pytest.raises(ValueError, match=words):
        BenchOptions(**overrides)


def test_the_cli_refuses_etcd_for_a_saga_workload_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", "bench", "--workload", "saga2", "--baseline", "etcd"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--workload registry" in result.stderr


# -- etcd -----------------------------------------------------------------------------------
def test_etcd_binary_is_none_without_one(tmp_path):
    assert etcd_binary(which=lambda name: None, fallbacks=(str(tmp_path / "etcd"),)) is None
    assert etcd_binary(which=lambda name: "/opt/x/etcd", fallbacks=()) == "/opt/x/etcd"


async def test_without_etcd_the_baseline_is_null_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(bench_etcd, "etcd_binary", lambda: None)
    assert await run_etcd_baseline(4, 1.0, 0.0) is None
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no etcd binary" in err and "baseline null" in err
    result = attach_baseline(_ours(workload="registry"), None)
    assert result["ratio"] is None


def test_etcd_members_listen_on_loopback_only(tmp_path):
    command = etcd_command("/usr/bin/etcd", 1, [2001, 2002, 2003], [3001, 3002, 3003], tmp_path, "t")
    urls = [command[i + 1] for i, arg in enumerate(command) if arg.endswith("-urls")]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert command[command.index("--name") + 1] == "e2"
    assert command[command.index("--listen-client-urls") + 1] == "http://127.0.0.1:2002"
    assert command[command.index("--initial-cluster") + 1] == (
        "e1=http://127.0.0.1:3001,e2=http://127.0.0.1:3002,e3=http://127.0.0.1:3003"
    )


# -- failover bookkeeping ----------------------------------------------------------------------
def test_fence_term():
    assert fence_term("7:1234") == 7
    assert fence_term(None) == -1 and fence_term("") == -1 and fence_term("x:1") == -1


def test_failover_counts_only_writes_sent_after_the_kill_and_calls_of_a_later_term():
    seen = Observations()
    seen.writes = [(9.0, 10.2), (10.1, 10.9), (10.3, 10.6)]  # (sent, answered)
    assert seen.first_write_after(10.0) == 10.6  # the one sent before the kill does not count
    seen.calls = [(10.1, 3, "a"), (10.4, 4, "b"), (10.5, 4, "a"), (10.7, 5, "a")]  # (arrival, term, saga)
    assert seen.first_resumed_call(10.0, 3, {"a"}) == 10.5
    assert seen.first_resumed_call(10.0, 5, {"a"}) is None
    assert seen.first_write_after(11.0) is None


# -- the profile and the chart -------------------------------------------------------------------
def test_top_functions_ranks_by_own_samples():
    folded = "\n".join(
        [
            "main (a.py:1);loop (a.py:5);fsync (j.py:9) 30",
            "main (a.py:1);loop (a.py:5) 10",
            "main (a.py:1);loop (a.py:5);encode (c.py:2) 60",
            "not a stack line",
        ]
    )
    samples, rows = top_functions(folded, limit=3)
    assert samples == 100
    assert [r["function"] for r in rows] == ["encode (c.py:2)", "fsync (j.py:9)", "loop (a.py:5)"]
    assert rows[0] == {"function": "encode (c.py:2)", "self_pct": 60.0, "total_pct": 60.0}
    assert rows[2]["total_pct"] == 100.0
    assert top_functions("", limit=5) == (0, [])


def test_chart_series_by_workload_and_baseline():
    results = [
        _ours(
            concurrency=16,
            throughput_per_s=200.0,
            baseline={"name": "pysyncobj", "unit": "writes", "throughput_per_s": 900.0, "latency_ms": {"p99": 40.0}},
        ),
        _ours(concurrency=1, throughput_per_s=50.0),
        {"workload": "failover", "concurrency": 12, "failover_ms": [1.0]},
    ]
    lines = series(results)
    assert [c for c, _, _ in lines["saga2"]] == [1, 16]
    assert lines["baseline pysyncobj writes"] == [(16, 900.0, 40.0)]
    assert lines["saga2 commands"][0][:2] == (16, 450.0) and math.isnan(lines["saga2 commands"][0][2])
    assert "failover" not in lines
    without_counter = series([_ours(commands_per_s=None, baseline=results[0]["baseline"])])
    assert without_counter["saga2 raft entries"][0][:2] == (8, 300.0)


def test_chart_averages_a_baseline_measured_beside_several_workloads():
    baseline = {"name": "pysyncobj", "unit": "writes", "latency_ms": {"p99": 10.0}}
    results = [
        _ours(workload=w, concurrency=4, baseline={**baseline, "throughput_per_s": t})
        for w, t in (("saga2", 400.0), ("twopc3", 600.0))
    ]
    assert series(results)["baseline pysyncobj writes"] == [(4, 500.0, 10.0)]


def test_chart_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    paths = []
    for concurrency, throughput in ((1, 40.0), (8, 120.0)):
        path = tmp_path / f"saga2-{concurrency}.json"
        path.write_text(__import__("json").dumps(_ours(concurrency=concurrency, throughput_per_s=throughput)))
        paths.append(str(path))
    output = tmp_path / "docs" / "bench.png"
    assert chart_main([*paths, "-o", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_per_workflow_splits_leader_followers_and_client():
    nodes = [{"id": "n1", "cpu_s": 1.0}, {"id": "n2", "cpu_s": 3.0}, {"id": "n3", "cpu_s": 1.5}]
    cost = cpu_per_workflow(nodes, "n2", client_cpu_s=2.0, completed=1000)
    assert cost == {"total": 7.5, "leader": 3.0, "followers": 2.5, "client": 2.0, "workers": 0.0}
    with_workers = cpu_per_workflow(nodes, "n2", client_cpu_s=2.0, completed=1000, workers_cpu_s=1.5)
    assert with_workers["workers"] == 1.5 and with_workers["total"] == 9.0
    assert cpu_per_workflow(nodes, "n2", 2.0, completed=0) is None
    assert cpu_per_workflow([], None, 2.0, completed=10) is None


def test_cpu_per_workflow_counts_the_workers_in_the_total():
    nodes = [{"id": "n1", "cpu_s": 1.0}, {"id": "n2", "cpu_s": 3.0}]
    cost = cpu_per_workflow(nodes, "n1", client_cpu_s=1.0, completed=500, workers_cpu_s=1.5)
    assert cost == {"total": 13.0, "leader": 2.0, "followers": 6.0, "client": 2.0, "workers": 3.0}


def test_bench_workers_share_the_calls_in_flight_and_hold_at_least_a_workers_default():
    assert worker_capacity("saga2", 64, 2) == 32  # one call at a time per saga
    assert worker_capacity("saga2", 64, 3) == 22  # rounded up: never fewer slots than calls
    assert worker_capacity("twopc3", 64, 2) == 96  # three prepares at once per transaction
    assert worker_capacity("saga2", 8, 2) == 16  # a worker's own default at least


def test_bench_profile_of_each_executor_mode_gets_its_own_file():
    assert profile_of_mode("out/bench-profile.folded", "local") == "out/bench-profile-local.folded"
    assert profile_of_mode("prof", "remote") == "prof-remote"
    assert profile_of_mode(None, "local") is None
