"""The CLI's usage errors and failures: one line on stderr, exit 2 or 1."""

import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["up", "--nodes", "zero"],
        ["services", "add"],
        ["node", "--config", "x.toml"],
    ],
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
