"""A block taken back from its van, end to end with real processes: the TLS mosquitto, `flexedge cloud --http` (the
operator page over TLS with the fleet PKI), and a van (`flexedge run`, supervised as its unit runs it) driven through
its own console's API as the cab screen drives it. The van claims a block and loads two packages; the station's
manager re-offers the block from the page's API; the van is told by a signed `withdraw_block`, records
`block.withdrawn` with the two packages to return, answers `ok`, and claims the block again (its route now a newer
version). The page shows whom the block was taken from and the van's answer; nothing the van stored is lost.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from cloud_sync.cloud import CloudDb
from device.console.api import REQUEST_HEADER, TOKEN_HEADER
from device.testbench.broker import MosquittoBroker
from device.testbench.procs import free_tcp_port, wait_for_port
from tests.helpers.fleet import FleetPki, device_config
from tests.helpers.sync_harness import wait_until
from tests.helpers.unit import UnitSupervisor
from tests.test_console_run import _request as console_request
from tests.test_operator_browser import PASSWORD, cloud_process

DEVICE = "van-back"  # this test's van alone (its certificate is made by the fleet fixture)
BLOCK = "B-NORTH"  # tests.helpers.console.console_block: PKG-001 .. PKG-004
ANSWER_S = 90.0  # the van runs the command, its result goes up and is acked


class Cab:
    """The van's console as its screen uses it: paired once, then the view and the driver's actions."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api"
        code = self._call("pairing-code")[1]["code"]
        self.headers = {TOKEN_HEADER: self._call("pair", {"code": code}, {REQUEST_HEADER: "1"})[1]["token"],
                        REQUEST_HEADER: "1"}

    def _call(self, path: str, data: dict[str, Any] | None = None, headers: dict[str, str] | None = None
              ) -> tuple[int, dict[str, Any]]:
        return console_request(f"{self.base}/{path}", data, headers)

    def view(self) -> dict[str, Any]:
        return dict(self._call("view", headers=self.headers)[1]["view"])

    def act(self, path: str, **data: Any) -> dict[str, Any]:
        status, doc = self._call(path, data, self.headers)
        assert status == 200 and doc["accepted"], doc
        return doc


def _cloud(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = CloudDb(db_path)
    try:
        return db._read(sql, args)
    finally:
        db.close()


def _events(db_path: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(body) for (body,) in _cloud(db_path, "SELECT body FROM events WHERE device = ? AND type = ? "
                                                            "ORDER BY seq", DEVICE, kind)]


def _online(db_path: Path) -> bool:
    return bool(_cloud(db_path, "SELECT 1 FROM devices WHERE device = ? AND status LIKE '%\"online\"%'", DEVICE))


def _page_session(fleet: FleetPki) -> aiohttp.ClientSession:
    """A browser's cookie jar; the page serves a certificate of the fleet PKI."""
    tls = ssl.create_default_context(cafile=str(fleet.pki.ca_cert))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _log_in(session: aiohttp.ClientSession, url: str) -> str:
    """The station's manager logs in; returns the CSRF token."""
    r = await session.post(f"{url}api/login", json={"name": "mark", "password": PASSWORD})
    assert r.status == 200, await r.text()
    return str((await r.json())["csrf"])


async def _page(session: aiohttp.ClientSession, url: str, path: str) -> Any:
    r = await session.get(f"{url}api/{path}")
    assert r.status == 200, await r.text()
    return await r.json()


def test_a_reoffered_block_is_taken_back_from_its_van_which_claims_again(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    van_dir = tmp_path / DEVICE
    van_dir.mkdir()
    console_port = free_tcp_port()
    config = device_config(van_dir, fleet, tls_broker.port, DEVICE, f"""status_interval_s = 5
[logging]
level = "INFO"
file = "agent.log"
[gps]
enabled = false
[console]
enabled = true
port = {console_port}
""")
    with cloud_process(fleet, tls_broker.port, tmp_path) as url:
        db_path = tmp_path / "cloud.db"
        unit = UnitSupervisor(config, van_dir / "agent.stderr").start()
        try:
            wait_for_port(console_port, timeout_s=60)
            cab = Cab(console_port)
            wait_until(lambda: BLOCK in [b["id"] for b in cab.view()["offers"]], 60, "the station's offers")
            cab.act("claim", block_id=BLOCK)
            wait_until(lambda: cab.view()["phase"] == "loading", 60, "the route, then loading")
            for code in ("PKG-001", "PKG-002"):
                cab.act("scan", code=code)
            wait_until(lambda: len(_events(db_path, "package.scanned")) == 2, 60, "the scans in the cloud")

            async def reoffer() -> None:
                async with _page_session(fleet) as session:
                    r = await session.post(f"{url}api/blocks/{BLOCK}/reoffer",
                                           headers={"X-Flexedge-CSRF": await _log_in(session, url)})
                    assert r.status == 200, await r.text()
                    doc = await r.json()
                    assert doc["winner"] == DEVICE and doc["told"]["name"] == "withdraw_block"
                    assert doc["told"]["args"] == {"block": BLOCK} and doc["told"]["operator"] == "mark"
                    # The van is told, does it, and says so: the page shows the answer on the block's row.
                    deadline = asyncio.get_running_loop().time() + ANSWER_S
                    while True:
                        fleet_view = await _page(session, url, "fleet")
                        withdrawn = next(b for b in fleet_view["blocks"] if b["id"] == BLOCK)["withdrawn"]
                        if withdrawn["told"] == "ok":
                            break
                        assert withdrawn["told"] == "sent" and asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.5)
                    assert withdrawn["device"] == DEVICE and withdrawn["return_packages"] == ["PKG-001", "PKG-002"]
                    listed = (await _page(session, url, f"vans/{DEVICE}/commands"))["commands"]
                    assert [(i["id"], i["name"], i["status"], i["operator"]) for i in listed] == \
                        [(doc["told"]["id"], "withdraw_block", "ok", "mark")]
                    assert (await _page(session, url, f"vans/{DEVICE}"))["block"] is None  # still the station's van
            asyncio.run(reoffer())

            # The van: back among the offers, told what to return; the event says what it held.
            view = cab.view()
            assert view["phase"] == "offered" and view["block"] is None
            assert view["withdrawn"]["block"] == BLOCK and view["withdrawn"]["return_packages"] == ["PKG-001",
                                                                                                     "PKG-002"]
            wait_until(lambda: len(_events(db_path, "block.withdrawn")) == 1, 60, "block.withdrawn in the cloud")
            withdrawn_event = _events(db_path, "block.withdrawn")[0]
            assert withdrawn_event["block"] == BLOCK and withdrawn_event["data"]["phase"] == "loading"
            assert withdrawn_event["data"]["return_packages"] == ["PKG-001", "PKG-002"]

            # Free to claim again, the same block: the re-offer raised its route version, so the van takes it.
            cab.act("claim", block_id=BLOCK)
            wait_until(lambda: cab.view()["phase"] == "loading", 60, "the block won again, loading")
            assert cab.view()["route_version"] == 2 and cab.view()["withdrawn"] is None
            assert _cloud(db_path, "SELECT winner, route_version FROM blocks WHERE id = ?", BLOCK) == [(DEVICE, 2)]
            wait_until(lambda: len(_events(db_path, "block.claimed")) == 2, 60, "the second grant in the cloud")

            async def won_again() -> None:
                async with _page_session(fleet) as session:
                    await _log_in(session, url)
                    block = next(b for b in (await _page(session, url, "fleet"))["blocks"] if b["id"] == BLOCK)
                    assert (block["winner"], block["withdrawn"]) == (DEVICE, None)
            asyncio.run(won_again())
        finally:
            unit.stop()
        assert unit.exits == [0]
    # Nothing lost, nothing twice: the chain the cloud verified holds the van's every event, the first scans too.
    assert _cloud(db_path, "SELECT COUNT(*) FROM flags WHERE device = ?", DEVICE) == [(0,)]
    assert len(_events(db_path, "package.scanned")) == 2
    results = _events(db_path, "command.result")
    assert [(r["data"]["name"], r["data"]["status"]) for r in results] == [("withdraw_block", "ok")]
