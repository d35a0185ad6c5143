"""`coordinator demo --ui`: the scenarios, then the cluster stays up with a
slow stream of demo workflows for the dashboard until SIGINT (Ctrl-C);
`coordinator up` names the dashboard's URL."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from coordinator.cluster.launcher.local import free_base_port

pytestmark = pytest.mark.integration

STARTED_S = 240.0  # the scenarios first, as `coordinator demo` runs them


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def test_demo_ui_keeps_the_cluster_up_with_a_stream_of_workflows_until_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "demo", "--ui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + STARTED_S
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "the demo ended before the dashboard stream: " + "".join(lines[-40:])
            lines.append(line)
            match = re.search(r"open (http://\S+/ui/)", line)
            url = match.group(1) if match else None
        assert url is not None, "".join(lines[-40:])
        status, content_type, page = get(url)
        assert status == 200 and content_type.startswith("text/html") and "/ui/app.js" in page
        base = url.removesuffix("/ui/")
        # The stream goes on: new live-N workflows of both kinds appear.
        seen: set[str] = set()
        until = time.monotonic() + 30
        while time.monotonic() < until and not ({"saga", "tx"} <= {kind for kind, _ in seen} and len(seen) >= 4):
            for kind, plural in (("saga", "sagas"), ("tx", "transactions")):
                body = json.loads(get(f"{base}/v1/{plural}?stale=true&limit=1000")[2])
                seen |= {(kind, w["id"]) for w in body[plural] if w["id"].startswith("live-")}
            time.sleep(0.5)
        assert {"saga", "tx"} <= {kind for kind, _ in seen} and len(seen) >= 4, seen
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        lines.append(rest)
        assert process.returncode == 0, "".join(lines[-60:])
        out = "".join(lines)
        assert "demo finished: every scenario ended as expected" in out
        assert "stopped the cluster and the demo services" in out and "Traceback" not in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_coordinator_up_prints_the_dashboard_url_and_serves_it(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "up", "--data-dir", str(tmp_path / "up")]
        + ["--base-port", str(free_base_port(3))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            match = re.match(r"dashboard: (http://\S+/ui/)", line)
            url = match.group(1) if match else None
        assert url is not None, "".join(lines)
        status, content_type, _ = get(url)
        assert status == 200 and content_type.startswith("text/html")
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
