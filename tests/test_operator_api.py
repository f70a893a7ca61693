"""The operator page's API over a real cloud database (the known day, stored by the real ingest), served by
the real aiohttp server on a loopback port: log-in, sessions, CSRF and Host checks, a station manager's
scope, the fleet view, a stop's proof and photo, the CSV export, the re-offer action, the live stream."""
from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest

from cloud_sync.cloud.presence import status_record
from cloud_sync.cloud.web import queries
from cloud_sync.cloud.web.accounts import MAX_FAILURES, AccountError, Accounts, Role
from cloud_sync.cloud.web.actions import Reoffered, reoffer
from cloud_sync.cloud.web.readonly import ReadOnlyDb
from cloud_sync.cloud.web.server import HttpSettings, OperatorServer
from cloud_sync.messages import Command, DeviceStatus, EventBatch, Presence
from device.contract.domain import Block, Event, EventType, Route
from device.store import EventStore
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import OTHER_STATION, STATION
from tests.helpers.operator import (
    DAY_TEXT,
    PENDING_RECEIVED_AGO_S,
    PENDING_S,
    PHOTO,
    at,
    block_a,
    ingest,
    known_day,
    van_a_day,
)

PASSWORD = "correct horse battery"


def make_accounts(path: Path) -> None:
    accounts = Accounts(path)
    try:
        accounts.add("olga", PASSWORD, Role.OPERATOR)
        accounts.add("mark", PASSWORD, Role.MANAGER, STATION)
        accounts.add("nina", PASSWORD, Role.MANAGER, OTHER_STATION)
    finally:
        accounts.close()


class Browser:
    """A cookie jar and the CSRF token, as the page keeps them."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base, self.csrf = session, base, ""

    async def login(self, name: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        r = await self.http.post(self.base + "api/login", json={"name": name, "password": password})
        if r.status == 200:
            self.csrf = (await r.json())["csrf"]
        return r

    async def get(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.http.get(self.base + path, **kw)

    async def post(self, path: str, csrf: bool = True, **kw: Any) -> aiohttp.ClientResponse:
        headers = {"X-Flexedge-CSRF": self.csrf} if csrf else {}
        headers.update(kw.pop("headers", {}))
        return await self.http.post(self.base + path, headers=headers, **kw)


@pytest.fixture
def cloud_db(tmp_path: Path, cloud_target: CloudTarget) -> CloudTarget:
    """The known day, once on each engine."""
    known_day(tmp_path, cloud_target)
    make_accounts(tmp_path / "ops.sqlite")
    return cloud_target


async def _serve(cloud_db: CloudTarget, reoffered: list[str]) -> OperatorServer:
    async def act(block_id: str) -> Reoffered:  # the dispatcher's part is in the browser and e2e tests
        reoffered.append(block_id)
        return Reoffered(block_id, STATION, None, None)
    home = cloud_db.photo_dir.parent
    server = OperatorServer(HttpSettings("127.0.0.1", 0, cloud_db.db, home / "ops.sqlite", live_interval_s=0.1,
                                         command_log=home / "commands.jsonl"), act)
    await server.start()
    return server


async def _browsers(server: OperatorServer, n: int) -> AsyncIterator[list[Browser]]:
    sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(n)]
    try:
        yield [Browser(s, server.url) for s in sessions]
    finally:
        for s in sessions:
            await s.close()


def run(cloud_db: CloudTarget, scenario: Any, browsers: int = 1) -> list[str]:
    reoffered: list[str] = []

    async def main() -> None:
        server = await _serve(cloud_db, reoffered)
        try:
            async for clients in _browsers(server, browsers):
                await scenario(*clients)
        finally:
            await server.stop()
    asyncio.run(main())
    return reoffered


def test_the_api_needs_a_session_and_a_right_password(cloud_db: CloudTarget) -> None:
    async def scenario(b: Browser) -> None:
        assert (await b.get("api/fleet")).status == 401
        page = await b.get("")
        assert page.status == 200 and "Flex Edge fleet" in await page.text()
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert (await b.login("olga", "wrong password!")).status == 401
        assert (await b.login("nobody")).status == 401
        r = await b.login("olga")
        assert r.status == 200
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        me = await (await b.get("api/me")).json()
        assert me["name"] == "olga" and me["station"] is None
        assert (await b.post("api/logout")).status == 200
        assert (await b.get("api/fleet")).status == 401
    run(cloud_db, scenario)


def test_wrong_passwords_lock_the_name_for_a_while(cloud_db: CloudTarget) -> None:
    async def scenario(b: Browser) -> None:
        for _ in range(MAX_FAILURES):
            assert (await b.login("olga", "wrong password!")).status == 401
        assert (await b.login("olga")).status == 429  # even the right password, until the lock ends
        assert (await b.login("mark")).status == 200  # other names are not affected
    run(cloud_db, scenario)


def test_posts_need_the_csrf_token_a_same_origin_and_a_known_host(cloud_db: CloudTarget) -> None:
    async def scenario(b: Browser) -> None:
        # Before a session: a log-in posted from another site (login CSRF) and any page under a foreign Host
        # name (DNS rebinding) are refused; the live stream needs a session like every other API path.
        evil = {"Origin": "http://evil.example"}
        assert (await b.http.post(b.base + "api/login", json={"name": "olga", "password": PASSWORD},
                                  headers=evil)).status == 403
        assert (await b.get("", headers={"Host": "evil.example"})).status == 403
        assert (await b.get("static/app.js", headers={"Host": "evil.example:443"})).status == 403
        assert (await b.get("api/events")).status == 401
        await b.login("olga")
        assert (await b.post("api/blocks/B-A/reoffer", headers={"X-Flexedge-CSRF": "0" * 43})).status == 403
        assert (await b.post("api/logout", csrf=False)).status == 403  # the session survives a forged log-out
        assert (await b.get("api/me")).status == 200
        assert (await b.get("api/events", headers={"Host": "rebound.example"})).status == 403
        assert (await b.post("api/blocks/B-A/reoffer", csrf=False)).status == 403
        assert (await b.post("api/blocks/B-A/reoffer", headers={"Origin": "http://evil.example"})).status == 403
        assert (await b.get("api/fleet", headers={"Host": "evil.example"})).status == 403
        assert (await b.get("api/fleet", headers={"Host": "localhost:1"})).status == 200
        ok = await b.post("api/blocks/B-A/reoffer")
        assert ok.status == 200, await ok.text()
        assert (await b.post("api/blocks/NOPE/reoffer")).status == 404
        assert (await b.get("api/vans/bad id!")).status in (400, 404)
        assert (await b.get("api/analytics?day=yesterday")).status == 400
    assert run(cloud_db, scenario) == ["B-A"]


def test_the_fleet_view(cloud_db: CloudTarget) -> None:
    async def scenario(b: Browser) -> None:
        await b.login("olga")
        doc = await (await b.get("api/fleet")).json()
        vans = {v["device"]: v for v in doc["vans"]}
        assert vans["van-a"]["link"] == "online" and vans["van-b"]["link"] == "offline"
        assert (vans["van-a"]["outbox_depth"], vans["van-a"]["last_ack_seq"]) == (3, 12)
        assert (vans["van-a"]["block"], vans["van-a"]["stops_done"], vans["van-a"]["stops"]) == ("B-A", 3, 3)
        assert vans["van-a"]["position"] == {"lat": 47.611, "lon": -122.339}
        # The oldest pending event's age in the status, aged by the cloud's clock since it received the status.
        assert PENDING_S + PENDING_RECEIVED_AGO_S <= vans["van-a"]["oldest_pending_s"] < PENDING_S + 3600
        assert vans["van-b"]["oldest_pending_s"] is None
        blocks = {bl["id"]: bl for bl in doc["blocks"]}
        assert blocks["B-A"]["state"] == "late" and blocks["B-B"]["state"] == "done"
        van = await (await b.get("api/vans/van-a")).json()
        assert [(s["id"], s["outcome"], s["on_time"]) for s in van["stops"]] == [
            ("S1", "delivered", True), ("S2", "partial", False), ("S3", "exception", None)]
        assert van["track"][0]["lat"] == 47.605
    run(cloud_db, scenario)


def test_a_proof_in_two_requests_and_its_photo(cloud_db: CloudTarget) -> None:
    async def scenario(b: Browser) -> None:
        await b.login("olga")
        proof = await (await b.get("api/vans/van-a/stops/S1")).json()
        checks = [i for i in proof["items"] if i["type"] == "photo.checked"]
        assert [(c["data"]["verdict"], c["data"]["read"], c["photo_received"]) for c in checks] == [
            ("mismatch", "19", False), ("match", "12A", True)]
        assert checks[1]["fix"]["lat"] == 47.61 and checks[1]["chain"] == "ok"
        photo = await b.get("api/vans/van-a/photos/ph-2")
        assert photo.status == 200 and await photo.read() == PHOTO
        assert (await b.get("api/vans/van-a/photos/ph-1")).status == 404
    run(cloud_db, scenario)


def test_a_station_manager_sees_only_their_station(cloud_db: CloudTarget) -> None:
    async def scenario(mark: Browser, nina: Browser) -> None:
        await mark.login("mark")
        await nina.login("nina")
        fleet = await (await mark.get("api/fleet")).json()
        assert [v["device"] for v in fleet["vans"]] == ["van-a"]
        assert [bl["id"] for bl in fleet["blocks"]] == ["B-A"]
        assert (await mark.get("api/vans/van-b")).status == 404
        assert (await mark.get("api/vans/van-b/stops/T1")).status == 404
        assert (await nina.get("api/vans/van-a/photos/ph-2")).status == 404
        assert (await nina.post("api/blocks/B-A/reoffer")).status == 404
        rows = list(csv.DictReader(io.StringIO(await (await nina.get(f"api/export.csv?day={DAY_TEXT}")).text())))
        assert {r["device"] for r in rows} == {"van-b"}
        analytics = await (await mark.get(f"api/analytics?day={DAY_TEXT}")).json()
        assert [r["device"] for r in analytics["rows"]] == ["van-a"]
    assert run(cloud_db, scenario, browsers=2) == []


def test_a_station_manager_sees_the_vans_the_stations_map_puts_at_their_station(cloud_db: CloudTarget) -> None:
    def set_map(stations: dict[str, str]) -> None:
        db = cloud_db.open()
        try:
            db.set_device_stations(stations)
        finally:
            db.close()

    async def names(browser: Browser) -> list[str]:
        return [v["device"] for v in (await (await browser.get("api/fleet")).json())["vans"]]

    async def scenario(mark: Browser, nina: Browser) -> None:
        await mark.login("mark")
        await nina.login("nina")
        assert await names(mark) == ["van-a"]
        set_map({"van-a": STATION, "van-b": STATION})  # van-b moved to mark's station, no block won there yet
        assert await names(mark) == ["van-a", "van-b"]
        assert (await mark.get("api/vans/van-b")).status == 200
        assert await names(nina) == ["van-b"]  # the block van-b won at nina's station keeps it in her view
        set_map({})  # a map replaced, not merged
        assert await names(mark) == ["van-a"]
        assert (await mark.get("api/vans/van-b")).status == 404
    assert run(cloud_db, scenario, browsers=2) == []


def test_a_reoffer_tells_the_van_and_the_page_shows_its_answer(cloud_db: CloudTarget) -> None:
    """The real re-offer action (its dispatcher parts captured): the block is no longer the van's, the van stays
    in its station's view with its events and figures, and the withdraw_block it was told by is listed with the
    page's other commands and on the block's row, "sent" until the van's result is stored."""
    told: list[Command] = []

    async def publish(blocks: list[tuple[Block, Route]]) -> None:
        assert told, "the van is told before the offers go out"

    async def tell(command: Command) -> None:
        told.append(command)

    async def scenario(mark: Browser) -> None:
        await mark.login("mark")
        figures_before = await (await mark.get(f"api/analytics?day={DAY_TEXT}")).json()
        r = await mark.post("api/blocks/B-A/reoffer")
        assert r.status == 200, await r.text()
        doc = await r.json()
        assert doc["winner"] == "van-a" and doc["told"]["name"] == "withdraw_block"
        assert doc["told"]["args"] == {"block": "B-A"} and doc["told"]["operator"] == "mark"
        assert [(c.id, c.device) for c in told] == [(doc["told"]["id"], "van-a")]
        fleet = await (await mark.get("api/fleet")).json()
        block = fleet["blocks"][0]
        assert (block["id"], block["winner"], block["state"]) == ("B-A", None, "unclaimed")
        assert block["withdrawn"]["device"] == "van-a" and block["withdrawn"]["told"] == "sent"
        van = next(v for v in fleet["vans"] if v["device"] == "van-a")  # still this station's van
        assert van["block"] is None
        assert (await (await mark.get("api/vans/van-a")).json())["block"] is None
        assert await (await mark.get(f"api/analytics?day={DAY_TEXT}")).json() == figures_before
        listed = (await (await mark.get("api/vans/van-a/commands")).json())["commands"]
        assert [(i["name"], i["status"], i["operator"]) for i in listed] == [("withdraw_block", "sent", "mark")]
        db = cloud_db.open()
        try:
            ingest(db, cloud_db.photo_dir.parent, "van-a", [Event(EventType.COMMAND_RESULT, {
                "id": told[0].id, "name": "withdraw_block", "status": "ok", "detail": "block B-A withdrawn",
                "data": {"block": "B-A", "return_packages": ["P9"]}})])
        finally:
            db.close()
        block = (await (await mark.get("api/fleet")).json())["blocks"][0]
        assert block["withdrawn"]["told"] == "ok" and block["withdrawn"]["return_packages"] == ["P9"]
        listed = (await (await mark.get("api/vans/van-a/commands")).json())["commands"]
        assert [(i["name"], i["status"]) for i in listed] == [("withdraw_block", "ok")]

    async def main() -> None:
        home = cloud_db.photo_dir.parent
        server = OperatorServer(HttpSettings("127.0.0.1", 0, cloud_db.db, home / "ops.sqlite", live_interval_s=0.1,
                                             command_log=home / "commands.jsonl"),
                                reoffer(cloud_db.db, publish, tell))
        await server.start()
        try:
            async for clients in _browsers(server, 1):
                await scenario(*clients)
        finally:
            await server.stop()
    asyncio.run(main())


def test_the_csv_export_of_a_day(cloud_db: CloudTarget) -> None:
    """One line per stop event of the day, in the vans' order, with what a station keeps for its records."""
    async def scenario(b: Browser) -> None:
        await b.login("olga")
        r = await b.get(f"api/export.csv?day={DAY_TEXT}")
        assert r.headers["Content-Type"].startswith("text/csv")
        assert r.headers["Content-Disposition"] == f'attachment; filename="flexedge-{DAY_TEXT}.csv"'
        text = await r.text()
        assert text.splitlines()[0] == ",".join(queries.EXPORT_COLUMNS)
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 12 + 3  # van-a's stop events of the day (no GPS, not the next day) and van-b's
        van_a = [(r["type"], r["stop"]) for r in rows if r["device"] == "van-a"]
        expected = [(e.type.value, e.stop) for e in van_a_day() if e.type.value in queries.EXPORT_TYPES
                    and e.ts.startswith(DAY_TEXT)]
        assert van_a == expected
        assert [r["seq"] for r in rows if r["device"] == "van-a"] == sorted(
            (r["seq"] for r in rows if r["device"] == "van-a"), key=int)
        match = next(r for r in rows if r["type"] == "photo.checked" and r["verdict"] == "match" and r["stop"] == "S1")
        assert (match["block"], match["read"], match["packages"], match["lat"], match["lon"]) == (
            "B-A", "12A", "P1", "47.61", "-122.34")  # a negative number stays a number
        late = next(r for r in rows if r["type"] == "stop.completed" and r["stop"] == "S2")
        assert (late["outcome"], late["on_time"], late["ts"]) == ("partial", "False", at(8.5))
        refused = next(r for r in rows if r["type"] == "delivery.exception" and r["stop"] == "S2")
        assert (refused["reason"], refused["packages"]) == ("refused", "P3")
        assert [r["type"] for r in rows if r["device"] == "van-b"] == ["stop.arrived", "photo.checked",
                                                                      "stop.completed"]
        empty = await b.get("api/export.csv?day=2020-01-01")
        assert (await empty.text()).splitlines() == [",".join(queries.EXPORT_COLUMNS)]
    run(cloud_db, scenario)


def test_what_a_hostile_van_sent_neither_breaks_the_page_nor_runs_in_a_spreadsheet(cloud_db: CloudTarget,
                                                                                  tmp_path: Path) -> None:
    """Event data the cloud stores as sent (it checks ids, seqs and hashes, not each type's data): a formula as a
    reason or a stop id is exported with a leading apostrophe; data or a fix that is not an object, packages that
    are not texts, leave the fleet view and the export working."""
    with EventStore(tmp_path / "van-x.db") as store:
        store.append_many([
            Event(EventType.DELIVERY_EXCEPTION, {"reason": '=HYPERLINK("http://evil.example","pay here")',
                                                 "packages": [1, "@SUM(A1)"]}, block="B-X", stop="-1+1", ts=at(8.8)),
            Event(EventType.STOP_COMPLETED, {}, block="B-X", stop="S1", ts=at(8.9)),
            Event(EventType.GPS_FIX, {}, ts=at(8.95)),
            Event(EventType.PHOTO_CHECKED, {"verdict": "match"}, block="B-X", stop="S1", ts=at(8.97))])
        events = [orjson.loads(e.body) | {"hash": e.hash} for e in store.pending()]
    events[1]["data"] = ["not", "an", "object"]
    events[2]["fix"] = "not a fix"
    events[3]["data"]["photo_id"] = ["not", "an", "id"]
    block, route = block_a()
    db = cloud_db.open()
    try:
        db.add_block(dataclasses.replace(block, id="B-X"), dataclasses.replace(route, block_id="B-X"))
        db.grant("B-X", "van-x", STATION, max_open=1)
        db.ingest("van-x", EventBatch("hostile-1", "van-x", 0, 1, tuple(events)))
    finally:
        db.close()

    async def scenario(b: Browser) -> None:
        await b.login("olga")
        fleet = await b.get("api/fleet")
        assert fleet.status == 200
        assert {v["device"]: v["position"] for v in (await fleet.json())["vans"]}["van-x"] is None
        r = await b.get(f"api/export.csv?day={DAY_TEXT}")
        assert r.status == 200
        rows = [row for row in csv.DictReader(io.StringIO(await r.text())) if row["device"] == "van-x"]
        assert [(row["type"], row["stop"]) for row in rows] == [("delivery.exception", "'-1+1"),
                                                                ("stop.completed", "S1"), ("photo.checked", "S1")]
        assert rows[0]["reason"] == "'" + '=HYPERLINK("http://evil.example","pay here")'
        assert rows[0]["packages"] == "1;@SUM(A1)"
        assert (await b.get("api/vans/van-x")).status == 200
        proof = await b.get("api/vans/van-x/stops/S1")
        assert proof.status == 200
        assert [(i["type"], i["photo_received"]) for i in (await proof.json())["items"] if "photo_received" in i] \
            == [("photo.checked", False)]
    run(cloud_db, scenario)


def test_the_live_stream_sends_the_fleet_and_its_changes(cloud_db: CloudTarget) -> None:
    async def scenario(b: Browser) -> None:
        await b.login("mark")
        async with (await b.get("api/events")) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await _next_fleet(stream)
            assert [v["link"] for v in first["vans"]] == ["online"]
            db = cloud_db.open()  # the van's Last Will arrives at the cloud
            will = DeviceStatus(Presence.OFFLINE, "van-a", "1.0", ts="")
            await asyncio.to_thread(db.record_status, "van-a",
                                    status_record(will, db.device_status("van-a"), time.time()))
            db.close()
            second = await _next_fleet(stream)
            assert [(v["link"], v["outbox_depth"]) for v in second["vans"]] == [("offline", 3)]
    run(cloud_db, scenario)


def test_a_last_will_keeps_the_last_figures_and_the_backlog_ages(cloud_db: CloudTarget) -> None:
    """The Last Will (offline, made at connect time: no ts, no figures) turns the van offline but keeps what the
    van last said: outbox depth, oldest pending event (still ageing), position, when it last spoke. The same will
    replayed to a restarted cloud changes nothing."""
    db = cloud_db.open()
    try:
        online = db.device_status("van-a")
        assert online is not None
        will = DeviceStatus(Presence.OFFLINE, "van-a", "1.0", ts="")
        db.record_status("van-a", status_record(will, online, time.time()))
        offline = db.device_status("van-a")
        assert offline is not None
        assert status_record(will, offline, time.time() + 60) == offline  # a replay: nothing new
    finally:
        db.close()
    assert offline["state"] == "offline" and offline["offline_at"] >= online["received_at"]
    assert {k: offline[k] for k in online if k != "state"} == {k: v for k, v in online.items() if k != "state"}

    async def scenario(b: Browser) -> None:
        await b.login("olga")
        vans = {v["device"]: v for v in (await (await b.get("api/fleet")).json())["vans"]}
        van = vans["van-a"]
        assert (van["link"], van["outbox_depth"], van["status_ts"]) == ("offline", 3, online["ts"])
        assert van["position"] == {"lat": 47.611, "lon": -122.339}
        assert van["oldest_pending_s"] >= PENDING_S + PENDING_RECEIVED_AGO_S
    run(cloud_db, scenario)


def test_the_map_shows_the_newer_of_the_status_fix_and_the_stored_one() -> None:
    """The status carries the newest breadcrumb still in the van's outbox; after an outage the newest went first
    and is stored, older ones wait: the later receiver time wins, and the status's fix when times are missing."""
    waiting = {"time": "2026-11-25T08:00:00.000Z", "lat": 1.0, "lon": 1.0}
    stored = {"time": "2026-11-25T08:05:00.000Z", "lat": 2.0, "lon": 2.0}
    assert queries.newer_fix(waiting, stored) == stored
    assert queries.newer_fix(stored, waiting) == stored
    assert queries.newer_fix(waiting, None) == waiting and queries.newer_fix(None, stored) == stored
    assert queries.newer_fix({"lat": 3.0, "lon": 3.0}, stored) == {"lat": 3.0, "lon": 3.0}
    assert queries.newer_fix("junk", stored) == stored


async def _next_fleet(stream: aiohttp.ClientResponse) -> dict:
    async with asyncio.timeout(10):
        while True:
            line = (await stream.content.readline()).decode()
            if line.startswith("data: "):
                return json.loads(line[6:])


def test_accounts_refuse_bad_input(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "a.sqlite")
    try:
        with pytest.raises(AccountError):
            accounts.add("x", "short", Role.OPERATOR)
        with pytest.raises(AccountError):
            accounts.add("m", PASSWORD, Role.MANAGER)  # a manager without a station
        with pytest.raises(AccountError):
            accounts.add("bad name", PASSWORD, Role.OPERATOR)
        accounts.add("olga", PASSWORD, Role.OPERATOR)
        session = accounts.login("olga", PASSWORD)
        assert session is not None and accounts.session(session.token) is not None
        stored = accounts.conn.execute("SELECT hash FROM operators").fetchone()[0]
        assert stored.startswith(b"$argon2id$") and PASSWORD.encode() not in stored
        accounts.add("olga", PASSWORD + "!", Role.OPERATOR)  # a new password ends the sessions
        assert accounts.session(session.token) is None
    finally:
        accounts.close()


def test_the_reoffer_action_clears_the_winner_and_republishes(tmp_path: Path, cloud_target: CloudTarget) -> None:
    known_day(tmp_path, cloud_target)
    published: list[list[tuple[Block, Route]]] = []

    told: list[Command] = []

    async def publish(blocks: list[tuple[Block, Route]]) -> None:
        published.append(blocks)

    async def tell(command: Command) -> None:
        told.append(command)
    act = reoffer(cloud_target.db, publish, tell)
    done = asyncio.run(act("B-A"))
    db = cloud_target.open()
    try:
        assert db.winners() == {"B-A": None, "B-B": "van-b"}
        assert db.open_blocks(STATION)[1][0].id == "B-A"
        # The next winner, whoever it is, gets a route newer than the one van-a kept.
        assert db._read("SELECT route_version FROM blocks WHERE id = 'B-A'") == [(2,)]
        assert [r.version for _, r in published[0]] == [2]
        withdrawals = db._read("SELECT command_id, block, device, station FROM block_withdrawals")
    finally:
        db.close()
    assert [[b.id for b, _ in call] for call in published] == [["B-A"]]
    assert [(c.device, c.name, dict(c.args)) for c in told] == [("van-a", "withdraw_block", {"block": "B-A"})]
    assert done.winner == "van-a" and done.told == told[0]
    assert withdrawals == [(told[0].id, "B-A", "van-a", STATION)]
    # An unclaimed block is put on offer again; nobody is told.
    again = asyncio.run(act("B-A"))
    assert (again.winner, again.told, len(told), len(published)) == (None, None, 1, 2)


def test_photo_files_and_their_check(tmp_path: Path, cloud_target: CloudTarget) -> None:
    """The page reads a photo from its file and shows the cloud's sha256 check beside it."""
    known_day(tmp_path, cloud_target)
    other = tmp_path / "elsewhere.jpg"
    other.write_bytes(b"not the photo its event recorded")
    cloud = cloud_target.open()
    try:
        with cloud.engine.transaction() as tx:
            tx.execute("INSERT INTO photo_files (device, photo_id, sha256, size, path, status, received_at) "
                       "VALUES ('van-a', 'ph-1', 'x', 1, ?, 'sha_mismatch', 0)", (str(other),))
    finally:
        cloud.close()
    db = ReadOnlyDb(cloud_target.db)
    try:
        assert queries.photo(db, "van-a", "ph-2", None) == PHOTO
        assert queries.photo(db, "van-a", "ph-1", None) == b"not the photo its event recorded"
        checks = [i for i in queries.proof(db, "van-a", "S1", None)["items"] if i["type"] == "photo.checked"]
        assert [(c["photo_received"], c["photo_check"]) for c in checks] == [(True, "sha_mismatch"), (True, "ok")]
    finally:
        db.close()
