"""Who sent a participant call: the process holding the other end of its
connection (coordinator.chaos.callers), as the chaos run's ``workers``
checker reads it."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest

from coordinator.chaos.callers import UNKNOWN, CallerLookup, process_holding
from coordinator.chaos.participants import start_recording_service

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CALL = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=b"{}", method="POST", headers={"Idempotency-Key": sys.argv[2]})
print(urllib.request.urlopen(request, timeout=5).status)
"""


async def _call_from_child(url: str, key: str, started: list[int]) -> str:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CALL, url, key, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    started.append(child.pid)
    stdout, stderr = await asyncio.wait_for(child.communicate(), 10)
    assert child.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def test_each_call_is_put_to_the_process_that_sent_it() -> None:
    children: list[int] = []
    pids = {"n1": os.getppid()}  # a process that sends nothing

    def running() -> dict[str, int]:
        return {**pids, **{f"w{i + 1}": pid for i, pid in enumerate(children)}, "me": os.getpid()}

    lookup = CallerLookup(running)
    async with await start_recording_service("orders", caller_of=lookup) as running_service:
        url = running_service.url + "/orders"
        assert await _call_from_child(url, "saga-1/a/action", children) == "200"
        assert await _call_from_child(url, "saga-2/a/action", children) == "200"
        async with aiohttp.ClientSession() as session:
            for n in range(3):  # one kept-alive connection: looked up once
                headers = {"Idempotency-Key": f"saga-3/{n}/action"}
                async with session.post(url, json={}, headers=headers) as response:
                    assert response.status == 200
        callers = [r.caller for r in running_service.service.requests]
    assert callers == ["w1", "w2", "me", "me", "me"]
    assert lookup.lookups == 3


async def test_a_sender_not_among_the_processes_is_unknown() -> None:
    lookup = CallerLookup(lambda: {"n1": os.getppid()})
    async with await start_recording_service("orders", caller_of=lookup) as running_service:
        async with aiohttp.ClientSession() as session:
            async with session.post(running_service.url + "/x", json={}, headers={"Idempotency-Key": "k/a/action"}):
                pass
        assert [r.caller for r in running_service.service.requests] == [UNKNOWN]


def test_no_process_holds_a_connection_that_does_not_exist() -> None:
    assert process_holding(("127.0.0.1", 1), ("127.0.0.1", 2), {"me": os.getpid()}) is None
    assert process_holding(("::1", 1), ("::1", 2), {"me": os.getpid()}) is None
    assert process_holding(("127.0.0.1", 1), ("127.0.0.1", 2), {"gone": 2**22 + 7}) is None
