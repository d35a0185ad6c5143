"""``[executor] mode`` and ``[workers]`` in the cluster file, and the worker
stream's messages on the wire (cluster/executor/worker_wire.py)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.cluster.cli import _prepare_data_dir
from coordinator.cluster.core.config import ConfigError, load_cluster_file, local_cluster, write_cluster_file
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.executor.dispatch import (
    Cancel,
    Dispatch,
    Heartbeat,
    Report,
    Welcome,
    WorkerHello,
    WorkerProblem,
)
from coordinator.cluster.executor.http_caller import CallSpec
from coordinator.cluster.executor.worker_wire import (
    WireError,
    leader_message,
    read_leader_message,
    read_worker_message,
    worker_message,
)

NODE = "[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n"


def test_mode_and_workers_are_written_and_read_back(tmp_path):
    config = local_cluster(
        nodes=1,
        host="127.0.0.1",
        base_port=7100,
        data_dir=tmp_path,
        executor=ExecutorSettings(mode="remote"),
        workers=WorkerSettings(ids=("w1", "w2"), releases=("1.0", "2.0-rc.1"), heartbeat_s=0.5, lease_s=3.0),
    )
    write_cluster_file(tmp_path / "cluster.toml", config)
    loaded = load_cluster_file(tmp_path / "cluster.toml")
    assert loaded == config and loaded.executor.mode == "remote" and loaded.workers.ids == ("w1", "w2")
    plain = local_cluster(nodes=1, host="127.0.0.1", base_port=7100, data_dir=tmp_path)
    write_cluster_file(tmp_path / "plain.toml", plain)
    text = (tmp_path / "plain.toml").read_text()
    assert "[workers]" not in text and 'mode = "local"' in text
    assert load_cluster_file(tmp_path / "plain.toml").workers == WorkerSettings()


@pytest.mark.parametrize(
    "section, problem",
    [
        ("[executor]\nmode='cloud'\n", "mode must be one of"),
        ("[workers]\nids='w1'\n", "workers.ids: must be a list"),
        ("[workers]\nids=['W1']\n", "workers.ids"),
        ("[workers]\nids=['w1','w1']\n", "unique"),
        ("[workers]\nids=['n1']\n", "is a node's id"),
        ("[workers]\nreleases=['a b']\n", "workers.releases"),
        ("[workers]\nheartbeat_s=2\nlease_s=3\n", "lease_s"),
        ("[workers]\nlease_s=true\n", "workers.lease_s: must be a number"),
        ("[workers]\ncapacity=3\n", "workers.capacity: unknown setting"),
    ],
)
def test_bad_worker_settings_name_the_problem(tmp_path, section, problem):
    (tmp_path / "c.toml").write_text("[cluster]\nsecret_file='s'\n" + section + NODE)
    with pytest.raises(ConfigError) as info:
        load_cluster_file(tmp_path / "c.toml")
    assert problem in str(info.value)


def test_releases_empty_admits_any():
    assert WorkerSettings().admits("9.9") and not WorkerSettings(releases=("1.0",)).admits("9.9")


SPEC = CallSpec(
    "orders",
    "http://127.0.0.1:9001",
    "POST",
    "/orders",
    {"sku": "W-1", "n": [1, 2]},
    "s/a/action",
    "3:7",
    5.0,
    4,
    0.1,
    2.0,
)


@pytest.mark.parametrize(
    "message",
    [
        Welcome("n1", "3:7", 0.5, 3.0),
        Dispatch("3-7-1", "execute", {"url": "http://127.0.0.1:9001"}, SPEC),
        Dispatch(
            "3-7-2",
            "prepare",
            {"grpc": "127.0.0.1:9002", "tls": True},
            dataclasses.replace(SPEC, url="127.0.0.1:9002", body=None),
        ),
        Cancel("3-7-1"),
        WorkerProblem("not_leader", "n1 does not lead", leader="127.0.0.1:9102"),
        WorkerProblem("not_held", "no call", dispatch_id="3-7-9"),
    ],
)
def test_leader_messages_travel_unchanged(message):
    assert read_leader_message(pb.LeaderMessage.FromString(leader_message(message).SerializeToString())) == message


@pytest.mark.parametrize(
    "message",
    [
        WorkerHello("w1", "1.0", ("orders", "payments"), 8),
        Heartbeat(("payments",)),
        Report("3-7-1", "3:7", "ok", {"order_id": 7}, "", 2),
        Report("3-7-1", "3:7", "unknown", None, "timed out", 5),
    ],
)
def test_worker_messages_travel_unchanged(message):
    assert read_worker_message(pb.WorkerMessage.FromString(worker_message(message).SerializeToString())) == message


@pytest.mark.parametrize(
    "raw, problem",
    [
        (pb.WorkerMessage(), "empty"),
        (pb.WorkerMessage(report=pb.WorkerReport(dispatch_id="", outcome="ok")), "dispatch_id"),
        (pb.WorkerMessage(report=pb.WorkerReport(dispatch_id="x" * 65, outcome="ok")), "dispatch_id"),
        (pb.WorkerMessage(report=pb.WorkerReport(dispatch_id="a", outcome="ok", output_json="{")), "not JSON"),
        (pb.WorkerMessage(report=pb.WorkerReport(dispatch_id="a", output_json="1" * 70_000)), "over"),
    ],
)
def test_malformed_worker_messages_are_named(raw, problem):
    with pytest.raises(WireError) as info:
        read_worker_message(raw)
    assert problem in str(info.value)


def test_malformed_leader_messages_are_named():
    with pytest.raises(WireError, match="operation"):
        read_leader_message(pb.LeaderMessage(dispatch=pb.WorkerDispatch(operation="delete", registration_json="{}")))
    with pytest.raises(WireError, match="registration_json"):
        read_leader_message(pb.LeaderMessage(dispatch=pb.WorkerDispatch(operation="execute", registration_json="[]")))


def _up_args(data_dir, workers: int) -> argparse.Namespace:
    return argparse.Namespace(
        data_dir=str(data_dir),
        nodes=3,
        host="127.0.0.1",
        base_port=7100,
        token=False,
        tls=False,
        mtls=False,
        workers=workers,
    )


def test_up_with_workers_writes_remote_mode_and_keeps_to_it(tmp_path):
    cluster_file = _prepare_data_dir(_up_args(tmp_path / "d", 2))
    config = load_cluster_file(cluster_file)
    assert config.executor.mode == "remote" and config.workers.ids == ("w1", "w2")
    assert len(config.workers.releases) == 1  # this package's version
    assert _prepare_data_dir(_up_args(tmp_path / "d", 1)) == cluster_file  # w1 is among them
    with pytest.raises(ConfigError, match="remote executor mode"):
        _prepare_data_dir(_up_args(tmp_path / "d", 0))
    with pytest.raises(ConfigError, match="w1..w3"):
        _prepare_data_dir(_up_args(tmp_path / "d", 3))
    _prepare_data_dir(_up_args(tmp_path / "plain", 0))
    with pytest.raises(ConfigError, match="admits workers"):
        _prepare_data_dir(_up_args(tmp_path / "plain", 2))
