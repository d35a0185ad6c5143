"""The CLI's usage errors and failures: one line on stderr, exit 2 or 1."""

import dataclasses
import subprocess
import sys

import pytest

from coordinator.cluster.cli import UsageError, insecure_bind_warning
from coordinator.cluster.core.config import local_cluster


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    "args", [["frobnicate"], ["up", "--nodes", "zero"], ["services", "add"], ["node", "--config", "x.toml"]]
)
def test_usage_errors_exit_2_with_one_line(args):
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_status_with_no_reachable_node_fails_with_exit_1():
    result = run("status", "--endpoints", "http://127.0.0.1:1")
    assert result.returncode == 1
    assert "no" in result.stdout.splitlines()[1]


def test_an_operation_that_fails_is_one_line_and_exit_1(tmp_path):
    result = run("node", "--config", str(tmp_path / "missing.toml"), "--id", "n1")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no such cluster file" in result.stderr
    result = run("services", "list", "--endpoints", "http://127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_services_add_needs_a_url_or_grpc():
    result = run("services", "add", "orders", "--endpoints", "http://127.0.0.1:1")
    assert result.returncode == 2 and "URL or --grpc" in result.stderr


def test_services_add_tls_is_for_a_grpc_target_only():
    result = run("services", "add", "orders", "https://127.0.0.1:1", "--tls", "--endpoints", "http://127.0.0.1:1")
    assert result.returncode == 2 and "--tls is for --grpc" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_non_loopback_bind_without_a_token_is_refused_unless_insecure(tmp_path):
    result = run("up", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--base-port", "23100")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--insecure" in result.stderr and "0.0.0.0" in result.stderr
    cluster_file = tmp_path / "d" / "cluster.toml"
    result = run("node", "--config", str(cluster_file), "--id", "n1")
    assert result.returncode == 2 and "without a token" in result.stderr, result.stderr


def test_insecure_warns_loudly_and_loopback_or_a_token_need_nothing(tmp_path):
    exposed = local_cluster(nodes=3, host="0.0.0.0", base_port=23200, data_dir=tmp_path)
    with pytest.raises(UsageError):
        insecure_bind_warning(exposed, list(exposed.nodes), False)
    warning = insecure_bind_warning(exposed, list(exposed.nodes), True)
    assert warning.startswith("WARNING: INSECURE") and "NO API token" in warning
    with_token = dataclasses.replace(exposed, token_file=tmp_path / "api.token")
    assert insecure_bind_warning(with_token, list(with_token.nodes), False) is None
    loopback = local_cluster(nodes=3, host="127.0.0.1", base_port=23200, data_dir=tmp_path)
    assert insecure_bind_warning(loopback, list(loopback.nodes), False) is None
    named = local_cluster(nodes=1, host="localhost", base_port=23200, data_dir=tmp_path)
    assert insecure_bind_warning(named, list(named.nodes), False) is None


def _peer_tls_cluster(tmp_path):
    """A cluster file with [tls] peer = true and good files (tls/ca.crt, tls/n1.*)."""
    from coordinator.cluster.core.config import generate_secret, write_cluster_file
    from coordinator.cluster.core.tls import TlsSettings
    from coordinator.cluster.launcher.certs import local_tls

    tls_dir = tmp_path / "tls"
    local_tls(tls_dir, [("n1", "127.0.0.1")])
    config = local_cluster(nodes=1, host="127.0.0.1", base_port=23300, data_dir=tmp_path)
    tls = TlsSettings(str(tls_dir / "{id}.crt"), str(tls_dir / "{id}.key"), peer=True, peer_ca_file=tls_dir / "ca.crt")
    write_cluster_file(tmp_path / "cluster.toml", dataclasses.replace(config, tls=tls))
    generate_secret(config.secret_file)
    return tmp_path / "cluster.toml", tls_dir


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda d: (d / "ca.crt").write_text("not a certificate\n"), "ca.crt: not a CA certificate in PEM"),
        (lambda d: (d / "n1.key").chmod(0o644), "n1.key: the key is readable by others"),
        (lambda d: (d / "ca.crt").unlink(), "ca.crt: no such certificate file"),
    ],
)
def test_a_bad_peer_tls_file_stops_the_node_with_one_line_and_exit_1(tmp_path, spoil, says):
    cluster_file, tls_dir = _peer_tls_cluster(tmp_path)
    spoil(tls_dir)
    result = run("node", "--config", str(cluster_file), "--id", "n1")
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("answer", [EOFError, "", "n", "y"])
def test_bulk_redrive_asks_on_a_terminal_and_ctrl_d_or_no_redrives_nothing(monkeypatch, capsys, answer):
    from coordinator.cluster import cli

    calls = []

    def fake_client(args, action):
        class Client:
            async def redrive_sagas(self, **kwargs):
                calls.append(kwargs)
                dry = kwargs.get("dry_run", False)
                return {"matched": 2, "ids": ["a", "b"], "redriven": 0 if dry else 2, "remaining": 0, "dry_run": dry}

        import asyncio

        return asyncio.run(action(Client()))

    def fake_input(prompt):
        if answer is EOFError:
            raise EOFError
        return answer

    monkeypatch.setattr(cli, "_run_client", fake_client)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", fake_input)
    assert cli.main(["saga", "redrive", "--stuck", "--service", "shop"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 stuck saga(s) match; this call would redrive 2: a, b")
    if answer == "y":
        assert [c.get("dry_run", False) for c in calls] == [True, False] and "redriven 2 of 2" in out
    else:
        assert [c.get("dry_run", False) for c in calls] == [True] and "nothing redriven" in out
