"""The console in a real browser: Playwright driving Debian's Chromium against a running agent.

The driver flow goes through the real cloud link (TLS mosquitto + the reference cloud): the offer arrives from
the cloud, the claim is granted by it and the route comes back. Scans go in as the scanner loop sends them, the
arrival comes from GPS fixes through the real geofence tracker, the proof photos from the simulated camera
through the shipped house-number model. The broker is stopped after loading: the deliveries happen offline and
the outbox drains when it is back. Screenshots: tests/artifacts/console/.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from cloud_sync.device_sync import DeviceSync
from device.agent import Agent
from device.cloud_adapter import CloudAdapter
from device.config import ConsoleSection, GpsSection
from device.console.server import ConsoleServer
from device.contract.domain import Role
from device.positioning import setup as positioning
from device.store import EventStore, RetentionPolicy
from device.testbench.broker import MosquittoBroker
from device.workflow import StagingPlanReceived
from device.workflow.runner import WorkflowRunner
from firmware_bridge.fix import Fix, FixMode
from tests.helpers.console import (
    build_agent,
    camera_photo_taker,
    console_block,
    console_plan,
    console_route,
)
from tests.helpers.fleet import FleetPki
from tests.helpers.sync_harness import start_cloud, sync_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
CAB = {"width": 800, "height": 480}  # the official Pi touchscreen
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def running(agent: Agent, data_dir: Path) -> AsyncIterator[str]:
    """The agent's loops and its console, as `flexedge run` starts them; yields the console's URL."""
    server = ConsoleServer(agent, ConsoleSection(enabled=True, port=0, state_interval_s=0.5), data_dir)
    stop = asyncio.Event()
    await server.start()
    task = asyncio.ensure_future(agent.run(stop))
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        stop.set()
        await task
        await server.stop()
        agent.store.close()


async def open_page(browser: Browser, url: str, viewport: dict, name: str) -> Page:
    """What a new user sees first: the pairing screen with the code (the cab screen is a loopback client)."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(url)
    shown = page.get_by_test_id("pair-code-shown")
    await expect(shown).to_have_text(re.compile(r"^\d{6}$"), timeout=WAIT_MS)
    await shot(page, f"{name}-01-pairing")
    await page.get_by_test_id("pair-code").fill("999999x")
    await page.get_by_test_id("pair-button").click()
    await expect(page.get_by_test_id("pair-error")).to_contain_text("wrong or expired")
    await page.get_by_test_id("pair-code").fill(await shown.inner_text())
    await page.get_by_test_id("pair-button").click()
    await expect(page.locator("#pair")).to_be_hidden(timeout=WAIT_MS)
    return page


async def shot(page: Page, name: str) -> None:
    size = page.viewport_size
    await page.screenshot(path=ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png", full_page=True)


async def drive(agent: Agent, start: tuple[float, float], end: tuple[float, float], seconds: int,
                t0: datetime) -> datetime:
    """One GPS fix a second along a straight line (the fix times carry the clock: the dwell needs no waiting)."""
    for i in range(1, seconds + 1):
        f = i / seconds
        lat, lon = start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f
        await agent.on_fix(Fix(t0 + timedelta(seconds=i), lat, lon, FixMode.FIX_3D, eph=4.0, speed=8.0))
    return t0 + timedelta(seconds=seconds)


def test_driver_flow_in_chromium(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cloud = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db")
    data_dir = tmp_path / "van"
    data_dir.mkdir()

    async def scenario() -> None:
        store = EventStore(data_dir / "events.db", RetentionPolicy())
        sync = DeviceSync(store, sync_settings("van-b"), fleet.broker_settings("van-b", tls_broker.port),
                          fleet.verifier)
        take_photo, close_camera, _ = camera_photo_taker(data_dir)
        agent = Agent(store=store, runner=await WorkflowRunner.open(store, Role.VEHICLE), role=Role.VEHICLE,
                      cloud=CloudAdapter(sync), take_photo=take_photo,
                      tracker_factory=lambda stops: positioning.tracker(GpsSection(), stops))
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(close_camera)
            url = await stack.enter_async_context(running(agent, data_dir))
            browser = await stack.enter_async_context(chromium())
            await driver_flow(agent, url, browser)

    async def driver_flow(agent: Agent, url: str, browser: Browser) -> None:
        cab = await open_page(browser, url, CAB, "driver")
        phone = await open_page(browser, url, PHONE, "driver")
        for page in (cab, phone):
            await expect(page.get_by_test_id("sync")).to_contain_text("ONLINE", timeout=WAIT_MS)

        # The cloud offers the block; the driver claims it on the cab screen; the cloud grants it.
        await asyncio.to_thread(cloud.call, cloud.peer.add_blocks([(console_block(), console_route())]))
        claim = cab.get_by_test_id("claim-B-NORTH")
        await expect(claim).to_be_visible(timeout=WAIT_MS)
        await expect(phone.get_by_test_id("claim-B-NORTH")).to_be_visible(timeout=WAIT_MS)
        await shot(cab, "driver-02-offers")
        await shot(phone, "driver-02-offers")
        await claim.click()
        for page in (cab, phone):  # both screens follow live
            await expect(page.get_by_test_id("phase")).to_contain_text("loading · B-NORTH", timeout=WAIT_MS)
            await expect(page.get_by_test_id("load-count")).to_have_text("0 / 4")

        # The scanner: three packages of the route and one that is not on it.
        for code in ("PKG-001", "PKG-002"):
            await agent.scan(code)
        await expect(cab.get_by_test_id("load-count")).to_have_text("2 / 4")
        await agent.scan("PKG-777")
        await agent.scan("PKG-003")
        await expect(cab.get_by_test_id("load-count")).to_have_text("3 / 4")
        await expect(cab.locator('tr[data-package="PKG-004"]')).to_have_class("expected")
        await expect(cab.locator('tr[data-package="PKG-001"]')).to_have_class("loaded")
        await expect(cab.locator('[data-extra="PKG-777"]')).to_contain_text("unknown")
        await expect(cab.get_by_test_id("toast")).to_contain_text("PKG-003 ok (3/4)")
        await shot(cab, "driver-03-loading")
        await shot(phone, "driver-03-loading")
        await agent.scan("PKG-004")
        await expect(phone.get_by_test_id("load-count")).to_have_text("4 / 4")
        await cab.get_by_test_id("loading-done").click()
        # The cloud becomes unreachable: the console says so and keeps working (it talks only to the agent).
        await asyncio.to_thread(tls_broker.stop)
        await expect(cab.get_by_test_id("sync")).to_contain_text("OFFLINE", timeout=WAIT_MS)

        # On the road: fixes from 600 m south of S1; the map, distance and ETA; then the geofence arrival.
        await expect(cab.get_by_test_id("map")).to_be_visible(timeout=WAIT_MS)
        s1 = (47.6100, -122.3400)
        t = await drive(agent, (47.6046, -122.3400), (47.6073, -122.3400), 10, datetime.now(timezone.utc))
        await expect(cab.get_by_test_id("distance")).to_contain_text(" m · ", timeout=WAIT_MS)
        await expect(cab.get_by_test_id("address")).to_have_text("12A Pine St")
        await expect(cab.locator('#map g[data-stop="S1"]')).to_have_class("next")
        await expect(cab.get_by_test_id("van")).to_be_visible()
        await shot(cab, "driver-04-next-stop")
        await shot(phone, "driver-04-next-stop")
        t = await drive(agent, (47.6073, -122.3400), s1, 10, t)
        await drive(agent, s1, s1, 25, t)  # dwell inside the stop's radius
        await expect(cab.get_by_test_id("phase")).to_contain_text("at stop", timeout=WAIT_MS)

        # The proof photo through the camera step: the verdict and the box drawn over the photo.
        await cab.get_by_test_id("take-photo").click()
        await expect(cab.get_by_test_id("verdict")).to_have_attribute("data-verdict", "match", timeout=WAIT_MS)
        await expect(cab.get_by_test_id("verdict")).to_contain_text("12A matches")
        await expect(cab.get_by_test_id("photo-box")).to_have_count(1)
        await shot(cab, "driver-05-photo")
        # PKG-002 is handed over in person: sign on the pad.
        await expect(cab.get_by_test_id("sign-box")).to_be_visible()
        pad = cab.get_by_test_id("signature-pad")
        await pad.scroll_into_view_if_needed()
        box = await pad.bounding_box()
        await cab.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
        await cab.mouse.down()
        for i in range(1, 12):
            await cab.mouse.move(box["x"] + 20 + i * 25, box["y"] + box["height"] / 2 + (-1) ** i * 25)
        await cab.mouse.up()
        await shot(cab, "driver-06-signature")
        await shot(phone, "driver-06-at-stop")
        await cab.get_by_test_id("sign-send").click()
        await expect(cab.get_by_test_id("address")).to_have_text("40 Cedar Ave", timeout=WAIT_MS)

        # S2 by the driver's "I am here": the photo shows 12A, not 40 (a mismatch, never a delivery); the
        # customer refuses the package. S3 cannot be accessed: a second exception ends the block.
        await cab.get_by_test_id("arrive").click()
        await expect(cab.get_by_test_id("phase")).to_contain_text("at stop", timeout=WAIT_MS)
        await cab.get_by_test_id("take-photo").click()
        verdict = cab.get_by_test_id("verdict")
        await expect(verdict).to_have_attribute("data-verdict", "mismatch", timeout=WAIT_MS)
        await expect(verdict).to_contain_text("Photo shows 12A, this is 40")
        await expect(cab.get_by_test_id("photo-box")).to_have_count(1)
        await shot(cab, "driver-07-mismatch")
        await cab.get_by_test_id("exception-refused").click()
        await expect(cab.get_by_test_id("address")).to_have_text("7 Birch Ln", timeout=WAIT_MS)
        await cab.get_by_test_id("arrive").click()
        await expect(cab.get_by_test_id("exception-no_access")).to_be_visible(timeout=WAIT_MS)
        await cab.get_by_test_id("exception-no_access").click()
        for page in (cab, phone):
            await expect(page.get_by_test_id("phase")).to_contain_text("block complete", timeout=WAIT_MS)
            await expect(page.get_by_test_id("summary")).to_contain_text("2 / 4")
        await shot(cab, "driver-08-summary")
        await shot(phone, "driver-08-summary")
        await asyncio.to_thread(tls_broker.start)  # back in range: the outbox drains
        await expect(phone.get_by_test_id("sync")).to_have_text("ONLINE · outbox 0", timeout=30_000)
        summary = agent.runner.workflow.summary()
        assert (summary.delivered, summary.exceptions) == (2, 2)
        assert summary.photo_checks == {"match": 1, "mismatch": 1}
        assert agent.counters.photos == 2

    try:
        asyncio.run(scenario())
    finally:
        cloud.stop()


def test_dock_screen_in_chromium(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def scenario() -> None:
        agent = await build_agent(tmp_path, Role.DOCK)
        async with running(agent, tmp_path) as url, chromium() as browser:
            wall = await open_page(browser, url, CAB, "dock")
            phone = await open_page(browser, url, PHONE, "dock")
            await agent.submit(StagingPlanReceived(console_plan()))  # as the cloud sends it
            await expect(wall.locator('tr[data-route="B-SOUTH"]')).to_contain_text("0 / 2", timeout=WAIT_MS)
            await agent.scan("PKG-101")
            result = wall.get_by_test_id("stage-result")
            await expect(result).to_have_text("B-SOUTH / bag B-SOUTH-1PKG-101", timeout=WAIT_MS)
            await expect(result).to_have_class("stage ok")
            await expect(wall.locator('tr[data-route="B-SOUTH"]')).to_contain_text("1 / 2")
            await agent.scan("PKG-001")
            await expect(wall.locator('tr[data-route="B-NORTH"]')).to_have_class("complete", timeout=WAIT_MS)
            await shot(wall, "dock-01-staged")
            await agent.scan("PKG-404")
            await expect(result).to_have_text("UNKNOWNPKG-404", timeout=WAIT_MS)
            await expect(result).to_have_class("stage problem")
            await expect(phone.get_by_test_id("stage-result")).to_have_text("UNKNOWNPKG-404", timeout=WAIT_MS)
            await shot(wall, "dock-02-problem")
            await shot(phone, "dock-02-problem")

    asyncio.run(scenario())
