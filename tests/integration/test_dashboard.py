"""The dashboard (``/ui/``) in a real browser: Debian's headless Chromium,
driven by Selenium through chromedriver, against a real three-node cluster
with tokens and the demo services.

- the page loads from a follower with no console errors;
- a saga submitted through the client shows within 2 s without a reload,
  in the live feed, animated on the topology, and in the workflows list;
- a saga whose payment is declined shows its compensations in reverse
  order in its timeline;
- redrive of a stuck saga from its page is refused with a ``read`` token
  and works with an ``operate`` one, typed into the page's token prompt;
- the page moves to another node when its own dies;
- SIGKILL of the leader: within 2 s the page shows the new leader.

Screenshots land in ``.artifacts/dashboard/`` (the README shows two).
``make test`` installs ``chromium`` and ``chromium-driver`` when it runs as
root; without them these tests skip, saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from coordinator.client import Coordinator
from coordinator.cluster.bench.dashboards import BROWSER_FLAGS, CHROMIUM
from coordinator.cluster.core.tokens import Role
from coordinator.cluster.demo.services import demo_saga, start_demo_services
from coordinator.cluster.launcher.local import LocalCluster, serve_on_loopback

CHROMEDRIVER = "/usr/bin/chromedriver"
missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - selenium is a test dependency
    missing.append("the selenium package")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        bool(missing), reason=f"browser tests need {', '.join(missing)} (make test installs them as root)"
    ),
]

READER, OPERATOR = "r" * 24, "o" * 24
SHOTS = Path(__file__).resolve().parents[2] / ".artifacts" / "dashboard"
APPEARS_S = 2.0  # the bound: a new saga, a new leader
WAIT_S = 20.0


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Page:
    """One Chromium tab. Selenium blocks, so every call runs in a thread:
    the demo services answer on this test's event loop meanwhile."""

    def __init__(self, token: str | None) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        self.profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
        for flag in (*BROWSER_FLAGS, "--window-size=1400,1000", f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        if token is not None:  # as if typed into this tab before: the page finds it in session storage
            script = f"sessionStorage.setItem('coordinator.token', {json.dumps(token)});"
            self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})

    async def call(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args):
        return await self.call(self.driver.execute_script, script, *args)

    async def wait(self, script: str, timeout_s: float = WAIT_S, *args):
        """Until ``script`` (a JS expression's body, ``return ...``) is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s} s: {script}")
            await asyncio.sleep(0.05)

    async def text(self, element_id: str) -> str:
        return await self.js(f"return document.getElementById({json.dumps(element_id)}).textContent")

    async def click(self, element_id: str) -> None:
        await self.js(f"document.getElementById({json.dumps(element_id)}).click()")

    async def errors(self) -> list[dict]:
        logs = await self.call(self.driver.get_log, "browser")
        return [entry for entry in logs if entry["level"] == "SEVERE"]

    async def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / name
        await self.call(self.driver.save_screenshot, str(path))
        return path

    async def close(self) -> None:
        await self.call(self.driver.quit)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    tokens_file = root / "tokens.toml"
    write_private(
        tokens_file,
        f'[[tokens]]\nname = "watcher"\nrole = "{Role.READ}"\ntoken = "{READER}"\n\n'
        f'[[tokens]]\nname = "operator"\nrole = "{Role.OPERATE}"\ntoken = "{OPERATOR}"\n',
    )
    cluster = LocalCluster(root / "cluster", token=True, tokens_file=tokens_file)
    cluster.start()
    services = await start_demo_services(lambda s, t: None, action_delay_s=0.3, keys=cluster.participant_keys)
    shop = Shop()
    runner, shop_url = await serve_on_loopback(shop.app())
    try:
        await cluster.wait_leader(timeout_s=40)
        urls = [cluster.url(i) for i in cluster.ids]
        async with Coordinator(urls, token=cluster.token, attempts=20) as client:
            for name, service in services.items():
                await client.put_service(name, service.url)
            await client.put_service("shop", shop_url)
            cluster.client = client  # type: ignore[attr-defined]
            cluster.shop = shop  # type: ignore[attr-defined]
            yield cluster
    finally:
        await runner.cleanup()
        for service in services.values():
            await service.close()
        await cluster.close()


class Shop:
    """A participant whose compensation fails until ``mend`` is set: a saga
    through it gets stuck, and a redrive after mending compensates it."""

    def __init__(self) -> None:
        self.mended = False

    def app(self) -> web.Application:
        async def ok(request):
            return web.json_response({"paid": True})

        async def undo(request):
            if self.mended:
                return web.json_response({"refunded": True})
            return web.json_response({"error": "refund system down"}, status=500)

        app = web.Application()
        app.router.add_post("/pay", ok)
        app.router.add_post("/refund", undo)
        return app


def stuck_saga(saga_id: str) -> dict:
    """pay succeeds, then the await times out: pay's compensation fails, stuck."""
    return {
        "id": saga_id,
        "steps": [
            {
                "name": "pay",
                "service": "shop",
                "action": {"method": "POST", "path": "/pay"},
                "compensation": {"method": "POST", "path": "/refund", "retry": {"max_attempts": 1}},
            },
            {"name": "approval", "await": "approve", "timeout_s": 0.2},
        ],
    }


async def leader_and_followers(local) -> tuple[str, list[str]]:
    leader = await local.wait_leader()
    return leader, [i for i in local.ids if i != leader]


@pytest_asyncio.fixture(loop_scope="module")
async def page():
    opened: list[Page] = []

    async def open_page(token: str | None = READER) -> Page:
        tab = await asyncio.to_thread(Page, token)
        opened.append(tab)
        return tab

    yield open_page
    for tab in opened:
        await tab.close()


async def live(tab: Page, url: str) -> None:
    """Open the dashboard at ``url`` and wait until its event stream is live."""
    await tab.open(url)
    await tab.wait("return document.getElementById('stream-state').textContent === 'live'")


async def test_the_page_loads_from_a_follower_without_console_errors(local, page):
    leader, followers = await leader_and_followers(local)
    tab = await page()
    await live(tab, local.url(followers[0]) + "/ui/")
    await tab.wait(f"return document.getElementById('leader-id').textContent === {json.dumps(leader)}")
    assert await tab.text("node-id") == followers[0]
    assert await tab.text("node-role") == "follower"
    await tab.wait("return document.querySelectorAll('#topology .raft-node').length === 3")
    await tab.wait("return document.querySelectorAll('#topology .service').length === 5")
    leader_mark = await tab.js("return document.querySelector('#topology .raft-node.leader').dataset.node")
    assert leader_mark == leader
    for view in ("workflows", "cluster", "topology"):
        await tab.js(f"window.location.hash = '#/{view}'")
        await tab.wait(f"return !document.getElementById('view-{view}').hidden")
    await tab.wait("return document.querySelectorAll('#nodes tbody tr').length === 3")
    assert await tab.errors() == []


async def test_a_submitted_saga_shows_within_2_s_and_its_calls_animate_on_the_topology(local, page):
    _, followers = await leader_and_followers(local)
    tab = await page()
    await live(tab, local.url(followers[0]) + "/ui/#/topology")
    # Record every packet the page animates (they leave the page once they
    # arrive; a redraw of the topology moves those in flight, counted once).
    await tab.js(
        "window.packets = []; const seen = new WeakSet();"
        "new MutationObserver((changes) => { for (const c of changes) for (const n of c.addedNodes)"
        "  if (n.classList && n.classList.contains('packet') && !seen.has(n)) {"
        "    seen.add(n); window.packets.push(n.dataset.label); } })"
        ".observe(document.getElementById('topology'), {childList: true});"
    )
    submitted = time.monotonic()
    await local.client.submit_saga(demo_saga("ui-happy"))
    await tab.wait("return document.querySelector('#feed li[data-workflow=\"ui-happy\"]')", APPEARS_S)
    assert time.monotonic() - submitted <= APPEARS_S
    await tab.wait("return window.packets.includes('[STEP 1] create-order')")
    await tab.shot("topology-first-call.png")
    await local.client.wait_saga("ui-happy", timeout=WAIT_S)
    await tab.wait("return window.packets.includes('[OK] schedule-shipping')")
    packets = await tab.js("return window.packets")
    steps = [p for p in packets if p.startswith("[STEP")]
    assert steps == [
        "[STEP 1] create-order",
        "[STEP 2] reserve-inventory",
        "[STEP 3] charge-payment",
        "[STEP 4] schedule-shipping",
    ]
    # The workflows list: a new saga appears without a reload.
    await tab.js("window.location.hash = '#/workflows'")
    await tab.wait("return document.querySelector('#workflows tr[data-id=\"ui-happy\"]')")
    submitted = time.monotonic()
    await local.client.submit_saga(demo_saga("ui-listed"))
    await tab.wait("return document.querySelector('#workflows tr[data-id=\"ui-listed\"]')", APPEARS_S)
    assert time.monotonic() - submitted <= APPEARS_S
    assert await tab.errors() == []


async def test_a_declined_payment_shows_its_compensations_in_reverse_order(local, page):
    _, followers = await leader_and_followers(local)
    tab = await page()
    await live(tab, local.url(followers[1]) + "/ui/#/topology")
    await local.client.submit_saga(demo_saga("ui-declined", card="declined"))
    # the compensations animate too, in their own colour
    await tab.wait("return document.querySelector('#topology .packet.comp')")
    await tab.shot("topology.png")
    saga = await local.client.wait_saga("ui-declined", timeout=WAIT_S)
    assert saga.state == "compensated"
    feed = await tab.wait(
        "const lines = [...document.querySelectorAll('#feed li[data-workflow=\"ui-declined\"]')]"
        ".map((li) => li.textContent); return lines.some((l) => l.includes('[DONE]')) && lines"
    )
    compensations = [line for line in reversed(feed) if "[COMPENSATE]" in line]
    assert [c.split("[COMPENSATE] ")[1].split(" ")[0] for c in compensations] == ["reserve-inventory", "create-order"]
    assert any("[DECLINED] charge-payment" in line for line in feed)
    await tab.js("window.location.hash = '#/saga/ui-declined'")
    await tab.wait(
        "return document.getElementById('wf-state') && document.getElementById('wf-state').textContent === 'compensated'"
    )
    rows = await tab.js(
        "return [...document.querySelectorAll('#timeline tbody tr')].map((r) => [r.dataset.event, r.dataset.step, r.className])"
    )
    forward = [step for event, step, _ in rows if event == "step_succeeded"]
    undone = [step for event, step, _ in rows if event == "compensation_succeeded"]
    assert forward == ["create-order", "reserve-inventory"]
    assert undone == ["reserve-inventory", "create-order"]  # reverse order
    assert all(cls == "compensation" for event, _, cls in rows if event == "compensation_succeeded")
    keys = await tab.js(
        "return [...document.querySelectorAll('#timeline tbody tr')].filter((r) => r.dataset.event === "
        "'compensation_succeeded').map((r) => r.children[4].textContent)"
    )
    assert keys == ["ui-declined/reserve-inventory/compensation", "ui-declined/create-order/compensation"]
    await tab.js("document.getElementById('wf-title').scrollIntoView()")
    await tab.shot("timeline.png")
    assert await tab.errors() == []


async def test_redrive_from_the_page_is_refused_to_a_read_token_and_works_with_operate(local, page):
    leader, followers = await leader_and_followers(local)
    local.shop.mended = False
    await local.client.submit_saga(stuck_saga("ui-stuck"))
    deadline = time.monotonic() + WAIT_S
    while (await local.client.get_saga("ui-stuck")).state != "stuck":
        assert time.monotonic() < deadline, "the saga did not get stuck"
        await asyncio.sleep(0.1)
    tab = await page(READER)
    await live(tab, local.url(followers[0]) + "/ui/#/saga/ui-stuck")
    await tab.wait("return document.getElementById('wf-state').textContent === 'stuck'")
    assert await tab.js("return !document.getElementById('wf-redrive').hidden")
    await tab.click("wf-redrive")
    await tab.wait("return document.getElementById('confirm-dialog').open")
    await tab.click("confirm-ok")
    result = await tab.wait("return document.getElementById('wf-action-result').textContent")
    assert result.startswith("refused:") and "needs role operate" in result, result
    assert (await local.client.get_saga("ui-stuck")).state == "stuck"
    # The operator types an operate token into the page's prompt and tries again.
    local.shop.mended = True
    await tab.click("token-button")
    await tab.wait("return document.getElementById('token-dialog').open")
    await tab.call(tab.driver.find_element(By.ID, "token-input").send_keys, OPERATOR)
    await tab.click("token-save")
    await tab.click("wf-redrive")
    await tab.wait("return document.getElementById('confirm-dialog').open")
    await tab.click("confirm-ok")
    result = await tab.wait("return document.getElementById('wf-action-result').textContent.startsWith('redriven')")
    await tab.wait("return document.getElementById('wf-state').textContent === 'compensated'")
    history = (await local.client.get_saga("ui-stuck")).history
    redrives = [r for r in history if r["event"] == "redrive"]
    assert len(redrives) == 1 and redrives[0]["by"] == "operator"
    assert await tab.js("return document.getElementById('wf-redrive').hidden")


async def test_bulk_redrive_by_filter_previews_confirms_and_redrives(local, page):
    _, followers = await leader_and_followers(local)
    local.shop.mended = False
    for n in (1, 2):
        await local.client.submit_saga(stuck_saga(f"ui-bulk-{n}"))
    for n in (1, 2):
        deadline = time.monotonic() + WAIT_S
        while (await local.client.get_saga(f"ui-bulk-{n}")).state != "stuck":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    local.shop.mended = True
    tab = await page(OPERATOR)
    await live(tab, local.url(followers[1]) + "/ui/#/workflows")
    # filters: the shop's stuck sagas whose id has "ui-bulk"; the stuck chip counts them
    await tab.js(
        "const s = document.getElementById('f-service'); s.value = 'shop'; s.dispatchEvent(new Event('change'))"
    )
    await tab.call(tab.driver.find_element(By.ID, "f-q").send_keys, "ui-bulk")
    await tab.wait("return document.querySelector('#counts .chip[data-state=\"stuck\"]')?.textContent === 'stuck 2'")
    await tab.js("document.querySelector('#counts .chip[data-state=\"stuck\"]').click()")
    await tab.wait("return document.querySelectorAll('#workflows tbody tr').length === 2")
    await tab.shot("workflows.png")
    await tab.click("bulk-redrive")
    await tab.wait("return document.getElementById('confirm-dialog').open")
    text = await tab.text("confirm-text")
    assert text.startswith("2 stuck saga(s) match. Redrive 2 now"), text
    for n in (1, 2):  # the preview changed nothing
        assert (await local.client.get_saga(f"ui-bulk-{n}")).state == "stuck"
    await tab.click("confirm-ok")
    result = await tab.wait("return document.getElementById('bulk-result').textContent")
    assert result == "redriven 2 of 2; 0 left", result
    for n in (1, 2):
        deadline = time.monotonic() + WAIT_S
        while (saga := await local.client.get_saga(f"ui-bulk-{n}")).state != "compensated":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert [r.get("by") for r in saga.history if r["event"] == "redrive"] == ["operator"]
    await tab.wait("return document.querySelector('#counts .chip[data-state=\"stuck\"]')?.textContent === 'stuck 0'")
    assert await tab.errors() == []


async def test_the_page_moves_to_another_node_when_its_own_dies(local, page):
    _, followers = await leader_and_followers(local)
    gone = followers[0]
    tab = await page()
    await live(tab, local.url(gone) + "/ui/#/topology")
    local.supervisor.kill(gone)
    try:
        await tab.wait(f"return document.getElementById('node-id').textContent !== {json.dumps(gone)}", WAIT_S)
        await tab.wait("return document.getElementById('stream-state').textContent === 'live'")
        # still live: a saga submitted now shows in the feed from the other node's stream
        await local.client.submit_saga(demo_saga("ui-moved"))
        await tab.wait("return document.querySelector('#feed li[data-workflow=\"ui-moved\"]')", APPEARS_S * 2)
        await tab.wait(f"return document.querySelector('#topology .raft-node.down[data-node={json.dumps(gone)}]')")
    finally:
        local.supervisor.start(gone)
    await local.wait_leader(timeout_s=40)


async def test_sigkill_of_the_leader_shows_the_new_leader_within_2_s(local, page):
    old, followers = await leader_and_followers(local)
    tab = await page()
    await live(tab, local.url(followers[0]) + "/ui/#/cluster")
    await tab.wait(f"return document.getElementById('leader-id').textContent === {json.dumps(old)}")
    local.supervisor.kill(old)
    killed = time.monotonic()
    try:
        new = await tab.wait(
            f"const id = document.getElementById('leader-id').textContent; return id !== {json.dumps(old)} "
            "&& id !== 'none' && id !== '?' && id",
            WAIT_S,
        )
        shown_after_s = time.monotonic() - killed
        assert new in followers
        assert shown_after_s <= APPEARS_S, f"the new leader showed {shown_after_s:.2f} s after the kill"
        await tab.wait(f"return document.querySelector('#nodes tr[data-node={json.dumps(new)}] .role.leader')")
        # the charts come from the nodes' own last minutes, full at first sight
        await tab.wait("return document.querySelectorAll('#chart-applied polyline[points*=\",\"]').length >= 2")
        await tab.shot("cluster.png")
    finally:
        local.supervisor.start(old)
    await local.wait_leader(timeout_s=40)
