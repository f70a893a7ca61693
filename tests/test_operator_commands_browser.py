"""Commands from the operator page in a real browser: Playwright driving Debian's Chromium against `flexedge cloud
--http` (a real process, TLS with the fleet PKI) and a real van, `flexedge run` supervised as its unit does it
(tests/helpers/unit.py), over the TLS broker. The fleet operator sends a selftest and sees the van's answer
arrive live; sends upload_logs and downloads the log; a station manager of another station is refused, the
manager of the van's station may send only the station commands. Screenshots in tests/artifacts/operator/.
"""
from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from cloud_sync.cloud import CloudDb
from device.testbench.broker import MosquittoBroker
from tests.helpers.fleet import STATION, FleetPki, device_config
from tests.helpers.sync_harness import wait_until
from tests.helpers.unit import UnitSupervisor
from tests.test_console_browser import chromium
from tests.test_operator_browser import ARTIFACTS, DESK, PHONE, WAIT_MS, cloud_process, log_in, shot

DEVICE = "van-web"
ANSWER_MS = 90_000  # a command's answer: the van runs it, its result event goes up and is acked


def _online(db_path: Path) -> bool:
    db = CloudDb(db_path)
    try:
        status = {row["device"]: row["status"] for row in db.device_view()}.get(DEVICE)
    finally:
        db.close()
    return bool(status) and status["state"] == "online"


async def send(page: Page, name: str, args: str = "") -> None:
    await page.get_by_test_id("command-name").select_option(name)
    if args:
        await page.get_by_test_id("command-args").fill(args)
    await page.get_by_test_id("command-send").click()
    await expect(page.get_by_test_id("toast")).to_contain_text(f"{name} sent to {DEVICE}", timeout=WAIT_MS)


async def open_van(page: Page) -> None:
    await expect(page.get_by_test_id(f"link-{DEVICE}")).to_have_text("online", timeout=WAIT_MS)
    await page.locator(f'#vans tr[data-device="{DEVICE}"]').click()
    await expect(page.get_by_test_id("command-title")).to_contain_text(DEVICE, timeout=WAIT_MS)


async def operator_flow(browser: Browser, url: str) -> None:
    desk = await log_in(browser, url, DESK, "olga")
    await open_van(desk)
    options = desk.locator("#command-name option")
    await expect(options).to_have_text(["selftest", "upload_logs", "restart", "set_config", "update"])

    # selftest: sent, shown as sent by olga, then the van's answer arrives on the open page.
    await send(desk, "selftest")
    selftest = desk.get_by_test_id("command-selftest").first
    await expect(selftest.get_by_test_id("command-who")).to_contain_text("sent by olga", timeout=WAIT_MS)
    await expect(selftest.get_by_test_id("command-status")).to_have_text("ok", timeout=ANSWER_MS)
    await expect(selftest).to_contain_text("pass")
    await shot(desk, "operator-08-command-selftest")

    # upload_logs: the log as a download once the cloud has the blob and its sha256 matched.
    await send(desk, "upload_logs", "since_s=600")
    logs = desk.get_by_test_id("command-upload_logs").first
    await expect(logs.get_by_test_id("command-status")).to_have_text("ok", timeout=ANSWER_MS)
    link = logs.locator('[data-testid^="blob-"]')
    await expect(link).to_be_visible(timeout=WAIT_MS)
    await expect(logs.locator(".flag")).to_have_count(0, timeout=WAIT_MS)  # the file arrived, checked
    async with desk.expect_download() as download:
        await link.click()
    text = gzip.decompress(Path(await (await download.value).path()).read_bytes()).decode()
    assert "selftest" in text
    phone = await log_in(browser, url, PHONE, "olga")
    await open_van(phone)
    await expect(phone.get_by_test_id("command-upload_logs").first.get_by_test_id("command-status")).to_have_text(
        "ok", timeout=WAIT_MS)
    await shot(desk, "operator-09-command-logs")
    await shot(phone, "operator-09-command-logs")

    # A station manager of another station: the van is not theirs to see or to command.
    dora = await log_in(browser, url, PHONE, "dora")
    await expect(dora.locator("#blocks tr")).not_to_have_count(0, timeout=WAIT_MS)
    assert await dora.locator(f'#vans tr[data-device="{DEVICE}"]').count() == 0
    csrf = await dora.evaluate("me.csrf")
    refused = await dora.request.post(f"{url}api/vans/{DEVICE}/commands", data={"name": "selftest"},
                                      headers={"X-Flexedge-CSRF": csrf})
    assert refused.status == 404 and (await refused.json())["error"] == "no such van"

    # The manager of the van's station: the station commands only; a set_config is refused.
    mark = await log_in(browser, url, DESK, "mark")
    await open_van(mark)
    await expect(mark.locator("#command-name option")).to_have_text(["selftest", "upload_logs", "restart"])
    csrf = await mark.evaluate("me.csrf")
    refused = await mark.request.post(f"{url}api/vans/{DEVICE}/commands", headers={"X-Flexedge-CSRF": csrf},
                                      data={"name": "set_config", "pairs": ["sync.status_interval_s=30"]})
    assert refused.status == 403 and "fleet operators" in (await refused.json())["error"]
    await expect(mark.get_by_test_id("command-selftest").first.get_by_test_id("command-who")).to_contain_text(
        "sent by olga")  # who sent what, on every page that shows the van
    await shot(mark, "operator-10-command-manager")


def test_commands_from_the_operator_page(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    van_dir = tmp_path / DEVICE
    van_dir.mkdir()
    config = device_config(van_dir, fleet, tls_broker.port, DEVICE, """status_interval_s = 5
[logging]
level = "INFO"
file = "agent.log"
[gps]
enabled = false
""")
    with cloud_process(fleet, tls_broker.port, tmp_path) as url:
        unit = UnitSupervisor(config, van_dir / "agent.stderr").start()
        try:
            db_path = tmp_path / "cloud.db"
            wait_until(lambda: _online(db_path), 60, "the van online")
            # The van won a block at its station (as the dispatcher grants a claim): a station manager's van.
            db = CloudDb(db_path)
            try:
                db.grant("B-NORTH", DEVICE, STATION, max_open=2)
            finally:
                db.close()

            async def scenario() -> None:
                async with chromium() as browser:
                    await operator_flow(browser, url)
            asyncio.run(scenario())
        finally:
            unit.stop()
        assert unit.exits == [0]  # no command restarted it; stopped as the unit is
    audit = (tmp_path / "cloud.db.commands.jsonl").read_text().splitlines()
    assert len(audit) == 2 and all('"operator": "olga"' in line for line in audit)
