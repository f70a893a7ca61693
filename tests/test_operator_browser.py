"""The operator page in a real browser: Playwright driving Debian's Chromium against `flexedge cloud --http`
(a real process, TLS with the fleet PKI) fed by real agents over the TLS broker.

van-a is a whole agent (workflow, store, sync, photo upload, the simulated camera with the shipped model):
it claims the block through the cloud, loads, drives to S1 on GPS fixes, proves S1 with a matching photo
and a signature, gets a wrong-house photo at S2 (refused) and no access at S3. sim-000's sync forges a batch
(a hash that does not follow): the page shows the chain flag. A station manager of another station sees
nothing of them. van-b is `flexedge run` in a process of its own with GPS breadcrumbs waiting in its outbox: the
page shows their age, and when the process is SIGKILLed the broker's Last Will turns it offline within its status
interval. Screenshots at 1366x768 and 390x844 in tests/artifacts/operator/.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from cloud_sync.device_sync import DeviceSync
from cloud_sync.messages import EventBatch
from device.agent import Agent
from device.cloud_adapter import CloudAdapter
from device.config import GpsSection
from device.contract.domain import Event, EventType, Role, iso_utc
from device.contract.position import Position
from device.paths import store_path
from device.positioning import setup as positioning
from device.store import EventStore, RetentionPolicy
from device.testbench.broker import MosquittoBroker
from device.workflow import (
    ArrivedAt,
    ClaimRequested,
    ExceptionReason,
    ExceptionReported,
    LoadingDone,
    SignatureCaptured,
)
from device.workflow.runner import WorkflowRunner
from tests.helpers.console import camera_photo_taker, console_block, console_route
from tests.helpers.fleet import FLEET, OTHER_STATION, STATION, FleetPki, device_config
from tests.helpers.sync_harness import RawClient, sync_settings, wait_for
from tests.test_console_browser import chromium, drive
from tests.test_operator_analytics import by_hand

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "operator"
DESK = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20_000
PASSWORD = "station-password-1"
STATUS_S = 1.0  # van-a's status interval in this test
KILLED_STATUS_S = 5  # van-b's (the shortest a unit's config allows) ...
KILLED_WILL_DELAY_S = 1  # ... and the delay of its Last Will
KILLED_AT = (47.6075, -122.3385)  # van-b's breadcrumbs end here


def _cli(*args: str, stdin: str | None = None, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], cwd=REPO, input=stdin, text=True,
                          capture_output=True, timeout=60, **kw)


@contextlib.contextmanager
def cloud_process(fleet: FleetPki, broker_port: int, workdir: Path) -> Iterator[str]:
    """`flexedge cloud --http` with the test's blocks; yields the page's URL from its ready line."""
    blocks = workdir / "blocks.json"
    other = dataclasses.replace(console_block("B-OTHER"), station=OTHER_STATION)
    blocks.write_text(json.dumps([{"block": b.to_dict(), "route": console_route(b.id).to_dict()}
                                  for b in (console_block(), other)]))
    accounts = workdir / "operators.sqlite"
    for name, role in (("olga", ("--role", "operator")), ("mark", ("--role", "manager", "--station", STATION)),
                       ("dora", ("--role", "manager", "--station", OTHER_STATION))):
        made = _cli("cloud", "user", "add", name, "--accounts", str(accounts), *role, "--password-stdin",
                    stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stdout + made.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "cloud", "--db", str(workdir / "cloud.db"), "--fleet", FLEET,
         "--broker", f"127.0.0.1:{broker_port}", "--pki", str(fleet.pki.dir), "--client-prefix", "cloud-web",
         "--blocks", str(blocks), "--http", "127.0.0.1:0", "--accounts", str(accounts), "--live-interval", "0.5",
         "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "FLEXEDGE_DATA_DIR": str(workdir / "cloud-data")})
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("ready"), proc.stderr.read() if proc.poll() is not None else ready
        yield ready["http"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err[-2000:]


def served_by_fleet_ca(url: str, fleet: FleetPki) -> str:
    """The page's certificate chains to the fleet CA (what a station laptop that trusts the CA checks)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    context = ssl.create_default_context(cafile=str(fleet.pki.ca_cert))
    with socket.create_connection((host, int(port)), 5) as raw, context.wrap_socket(raw, server_hostname=host) as s:
        return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]


async def shot(page: Page, name: str) -> None:
    size = page.viewport_size
    await page.screenshot(path=ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png", full_page=True)


OVERFLOWING = """() => [...document.querySelectorAll('#app th, #app td, #app button, #app a, #app input')]
  .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > window.innerWidth + 1)
  .map((e) => e.tagName + ' ' + e.textContent.slice(0, 40))"""


async def all_in_view(page: Page) -> None:
    """Usable at this width: no cell, button, link or field past the right edge (nothing to scroll sideways for)."""
    assert await page.evaluate(OVERFLOWING) == [], page.viewport_size
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def log_in(browser: Browser, url: str, viewport: dict, name: str, shoot: str | None = None,
                 password: str = PASSWORD) -> Page:
    context: BrowserContext = await browser.new_context(viewport=viewport, ignore_https_errors=True)
    page = await context.new_page()
    await page.goto(url)
    await expect(page.get_by_test_id("login-button")).to_be_visible(timeout=WAIT_MS)
    if shoot:
        await page.get_by_test_id("login-name").fill(name)
        await page.get_by_test_id("login-password").fill("not the password")
        await page.get_by_test_id("login-button").click()
        await expect(page.get_by_test_id("login-error")).to_contain_text("wrong name or password")
        await shot(page, shoot)
    await page.get_by_test_id("login-name").fill(name)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-button").click()
    await expect(page.get_by_test_id("who")).to_contain_text(name, timeout=WAIT_MS)
    return page


async def run_van_a(agent: Agent, sync: DeviceSync) -> None:
    """The driver's day as the hardware and the driver feed it to the agent."""
    for _ in range(200):  # the offer comes from the cloud
        if (await agent.submit(ClaimRequested("B-NORTH"))).accepted:
            break
        await asyncio.sleep(0.1)
    await wait_for(lambda: agent.runner.workflow.phase.value == "loading", 20, "the grant and the route")
    for code in ("PKG-001", "PKG-002", "PKG-003", "PKG-004"):
        await agent.scan(code)
    assert (await agent.submit(LoadingDone())).accepted
    s1 = (47.6100, -122.3400)
    t = await drive(agent, (47.6046, -122.3400), s1, 20, datetime.now(timezone.utc))
    await drive(agent, s1, s1, 25, t)  # dwell: the geofence arrival
    await wait_for(lambda: agent.runner.workflow.phase.value == "at_stop", 20, "arrival at S1")
    outcome = await agent.photo()
    assert outcome is not None and outcome.accepted
    strokes = (((10.0, 40.0), (60.0, 10.0), (110.0, 45.0), (160.0, 12.0)),)
    assert (await agent.submit(SignatureCaptured("S1", ("PKG-002",), strokes=strokes))).accepted
    assert (await agent.submit(ArrivedAt("S2"))).accepted
    assert (await agent.photo()) is not None  # the door shows 12A: a wrong house
    assert (await agent.submit(ExceptionReported("S2", ExceptionReason.REFUSED))).accepted
    assert (await agent.submit(ArrivedAt("S3"))).accepted
    assert (await agent.submit(ExceptionReported("S3", ExceptionReason.NO_ACCESS))).accepted



@contextlib.contextmanager
def killable_van(fleet: FleetPki, broker_port: int, workdir: Path) -> Iterator[subprocess.Popen]:
    """van-b as a unit runs it (`flexedge run`, its own process), with three GPS breadcrumbs in its outbox that
    wait for more (telemetry goes up in batches of track_min_batch, or after track_linger_s)."""
    workdir.mkdir()
    config = device_config(workdir, fleet, broker_port, "van-b",
                           f"status_interval_s = {KILLED_STATUS_S}\nwill_delay_s = {KILLED_WILL_DELAY_S}\n"
                           "track_min_batch = 24\ntrack_linger_s = 3600\n[gps]\nenabled = false\n"
                           '[logging]\nlevel = "WARNING"')
    (workdir / "data").mkdir()
    now = datetime.now(timezone.utc)
    with EventStore(store_path(workdir / "data")) as store:
        store.append_many([Event(EventType.GPS_FIX, {}, fix=Position.from_dict(
            {"time": iso_utc(now - timedelta(seconds=30 - i)), "mode": 3, "lat": KILLED_AT[0] - (2 - i) / 2000,
             "lon": KILLED_AT[1], "eph": 4.0})) for i in range(3)])
    with (workdir / "agent.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config", str(config)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(20)


def cloud_rows(cloud_db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{cloud_db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def forged_batch(directory: Path, device: str) -> bytes:
    """A real device store's first events, one hash replaced: the cloud's chain check must flag it."""
    with EventStore(directory / f"{device}.db") as store:
        store.append_many([Event(EventType.HEALTH, {"n": i}) for i in range(3)])
        events = [orjson.loads(e.body) | {"hash": e.hash} for e in store.pending()]
    events[1]["hash"] = "f" * 64
    return EventBatch("forged-1", device, 0, 1, tuple(events)).to_payload()


def test_operator_page_in_chromium(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    van_dir = tmp_path / "van-a"
    van_dir.mkdir()

    async def scenario(url: str, van_b: subprocess.Popen) -> None:
        store = EventStore(van_dir / "events.db", RetentionPolicy())
        sync = DeviceSync(store, sync_settings("van-a", status_interval_s=STATUS_S),
                          fleet.broker_settings("van-a", tls_broker.port), fleet.verifier)
        take_photo, close_camera, _ = camera_photo_taker(van_dir)
        agent = Agent(store=store, runner=await WorkflowRunner.open(store, Role.VEHICLE), role=Role.VEHICLE,
                      cloud=CloudAdapter(sync), take_photo=take_photo,
                      tracker_factory=lambda stops: positioning.tracker(GpsSection(), stops))
        stop = asyncio.Event()
        running = asyncio.ensure_future(agent.run(stop))
        try:
            async with chromium() as browser:
                await operator_flow(browser, url, agent, sync, stop, running, van_b)
        finally:
            stop.set()
            await running
            close_camera()
            store.close()

    async def operator_flow(browser: Browser, url: str, agent: Agent, sync: DeviceSync, stop: asyncio.Event,
                            running: asyncio.Future, van_b: subprocess.Popen) -> None:
        desk = await log_in(browser, url, DESK, "olga", shoot="operator-01-login")
        phone = await log_in(browser, url, PHONE, "olga")
        for page in (desk, phone):  # the vans appear live once their status arrives
            await expect(page.get_by_test_id("link-van-a")).to_have_text("online", timeout=WAIT_MS)
            await expect(page.get_by_test_id("link-van-b")).to_have_text("online", timeout=WAIT_MS)

        await run_van_a(agent, sync)
        await sync.wait_drained(30)
        # The agent uploads its proof photos behind the events; the cloud checks each against its event.
        await wait_for(lambda: cloud_rows(tmp_path / "cloud.db", "SELECT COUNT(*) FROM photo_files "
                                                                 "WHERE status = 'ok'")[0][0] == 2, 60,
                       "both proof photos in the cloud, checked")
        summary = agent.runner.workflow.summary()
        assert (summary.delivered, summary.exceptions) == (2, 2)
        await expect(desk.get_by_test_id("block-state-B-NORTH")).to_have_text("late", timeout=WAIT_MS)
        await expect(desk.locator('#vans tr[data-device="van-a"]')).to_contain_text("B-NORTH 3/3")
        await expect(desk.get_by_test_id("outbox-van-a")).to_have_text("0", timeout=WAIT_MS)
        for page in (desk, phone):  # on the map where its last fix put it, with its route progress
            await expect(page.get_by_test_id("van-van-a")).to_contain_text("van-a 3/3", timeout=WAIT_MS)
        for page in (desk, phone):
            await all_in_view(page)
            await shot(page, "operator-02-fleet")

        # A delivery's proof in two clicks: the van, then the stop.
        await desk.locator('#vans tr[data-device="van-a"]').click()
        await desk.get_by_test_id("stop-S1").click()
        verdict = desk.get_by_test_id("verdict").first
        await expect(verdict).to_contain_text("match · read 12A · expected 12A", timeout=WAIT_MS)
        await expect(desk.get_by_test_id("photo-box")).to_have_count(1, timeout=WAIT_MS)
        await expect(desk.get_by_test_id("signature")).to_be_visible()
        await expect(desk.get_by_test_id("proof")).to_contain_text("GPS 47.61000")
        await shot(desk, "operator-03-proof")
        await phone.locator('#vans tr[data-device="van-a"]').click()
        await phone.get_by_test_id("stop-S2").click()
        await expect(phone.get_by_test_id("verdict").first).to_contain_text("mismatch · read 12A · expected 40",
                                                                            timeout=WAIT_MS)
        await expect(phone.get_by_test_id("proof")).to_contain_text("refused")
        await all_in_view(phone)
        await shot(phone, "operator-03-proof")

        # The analytics table against the same figures computed by hand from the van's own events.
        hand = by_hand([Event.from_dict(orjson.loads(body)) for (body,) in cloud_rows(
            tmp_path / "cloud.db", "SELECT body FROM events WHERE device = 'van-a' ORDER BY seq")],
            datetime.now(timezone.utc).strftime("%Y-%m-%d"))
        row = desk.locator('#analytics tr[data-device="van-a"]')
        await expect(row.locator('[data-metric="on_time"]')).to_contain_text(
            f"({hand['on_time'][0]}/{hand['on_time'][1]})", timeout=WAIT_MS)
        for key in ("first_attempt", "photo_match"):
            await expect(row.locator(f'[data-metric="{key}"]')).to_contain_text(f"({hand[key][0]}/{hand[key][1]})")
        await expect(row.locator('[data-metric="retakes"]')).to_have_text(str(hand["retakes"]))
        # The test's stops take a fraction of a second: julianday's resolution (~10 us) shows in the last digits.
        shown = float(await row.locator('[data-metric="stops_per_hour"]').inner_text())
        assert shown == pytest.approx(hand["stops_per_hour"], rel=1e-3)
        await expect(row.locator('[data-metric="exceptions"]')).to_contain_text("refused 1")
        await expect(desk.get_by_test_id("definitions")).to_contain_text("stops completed ÷ hours")
        await desk.get_by_test_id("analytics").scroll_into_view_if_needed()
        await all_in_view(desk)
        await shot(desk, "operator-04-analytics")

        # A forged batch: the chain flag appears live.
        with RawClient(fleet.broker_settings("sim-000", tls_broker.port), "sim-000") as forger:
            forger.publish(f"flex/v1/{FLEET}/dev/sim-000/events", forged_batch(tmp_path, "sim-000"))
        await expect(desk.get_by_test_id("flags-sim-000")).to_contain_text("integrity", timeout=WAIT_MS)
        await desk.locator('#vans tr[data-device="sim-000"]').click()
        await expect(desk.get_by_test_id("van-flags")).to_contain_text("integrity: chain break at #2", timeout=WAIT_MS)
        await shot(desk, "operator-05-chain-flag")

        # The CSV of the day.
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        csv_text = await (await desk.request.get(f"{url}api/export.csv?day={day}")).text()
        assert "van-a" in csv_text and "photo.checked" in csv_text

        # A station manager of another station sees none of it, not even by URL.
        dora = await log_in(browser, url, PHONE, "dora")
        await expect(dora.get_by_test_id("who")).to_contain_text(f"station {OTHER_STATION}")
        await expect(dora.locator('#blocks tr[data-block="B-OTHER"]')).to_be_visible(timeout=WAIT_MS)
        assert await dora.locator("#vans tbody tr").count() == 0
        assert await dora.locator('#blocks tr[data-block="B-NORTH"]').count() == 0
        assert (await dora.request.get(f"{url}api/vans/van-a")).status == 404
        assert (await dora.request.get(f"{url}api/vans/van-a/stops/S1")).status == 404
        await shot(dora, "operator-06-other-station")
        mark = await log_in(browser, url, DESK, "mark")
        await expect(mark.get_by_test_id("van-van-a")).to_be_visible(timeout=WAIT_MS)

        # van-b's breadcrumbs wait in its outbox: the page shows how long the oldest has waited, by now.
        pending = desk.get_by_test_id("pending-van-b")
        await expect(pending).to_have_text(re.compile(r"^\d+ (s|min)$"), timeout=WAIT_MS)
        waited = float(await pending.get_attribute("data-seconds") or "0")
        assert waited > 0  # stored before the van started, still unsent
        await expect(desk.get_by_test_id("outbox-van-b")).to_have_text(re.compile(r"^[1-9]\d*$"))
        # On the map although the cloud has none of its breadcrumbs yet: the status carries the newest waiting one.
        await expect(desk.get_by_test_id("van-van-b")).to_be_visible()

        # van-b's process dies (SIGKILL: no goodbye): the broker publishes its Last Will after the will delay,
        # and the page shows it offline within the van's status interval, its backlog still there and ageing.
        killed = time.monotonic()
        van_b.send_signal(signal.SIGKILL)
        await asyncio.to_thread(van_b.wait, 20)
        await expect(desk.get_by_test_id("link-van-b")).to_have_text("offline", timeout=KILLED_STATUS_S * 1000)
        offline_after_s = time.monotonic() - killed
        assert offline_after_s <= KILLED_STATUS_S, offline_after_s
        await expect(phone.get_by_test_id("link-van-b")).to_have_text("offline", timeout=WAIT_MS)
        await expect(pending).to_have_text(re.compile(r"^\d+ (s|min)$"))
        assert float(await pending.get_attribute("data-seconds") or "0") >= waited
        (ARTIFACTS / "offline-after.json").write_text(json.dumps({"sigkill_to_offline_on_page_s": offline_after_s,
                                                                 "will_delay_s": KILLED_WILL_DELAY_S,
                                                                 "status_interval_s": KILLED_STATUS_S}))
        for page in (desk, phone):
            await all_in_view(page)
            await shot(page, "operator-07-offline")

        # van-a stops cleanly: its retained goodbye says so ("stopped", not the will).
        stop.set()
        await running
        for page in (desk, phone):
            await expect(page.get_by_test_id("link-van-a")).to_have_text("stopped", timeout=WAIT_MS)

        # Re-offer the block: the dispatcher puts it back on the station's offers.
        desk.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await desk.get_by_test_id("reoffer-B-NORTH").click()
        await expect(desk.get_by_test_id("block-state-B-NORTH")).to_have_text("unclaimed", timeout=WAIT_MS)
        await expect(desk.get_by_test_id("toast")).to_contain_text("on offer again; van-a was told")
        # Its van was sent a withdraw_block; stopped, it has not answered: the row says so.
        withdrawn = desk.get_by_test_id("withdrawn-B-NORTH")
        await expect(withdrawn).to_contain_text("taken from van-a: told, no answer yet", timeout=WAIT_MS)
        await expect(withdrawn).to_have_attribute("data-told", "sent")

    with cloud_process(fleet, tls_broker.port, tmp_path) as url, \
            killable_van(fleet, tls_broker.port, tmp_path / "van-b") as van_b:
        assert served_by_fleet_ca(url, fleet) == "operator-web"
        asyncio.run(scenario(url, van_b))
    assert van_b.returncode == -signal.SIGKILL

