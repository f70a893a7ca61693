"""The operator page's remote commands over the real server, wired as `flexedge cloud --http` wires it: the page
sends through a real CloudPeer's dispatcher connection on the TLS broker (no connection of its own), over the
known day's database (van-a at DXX1, van-b at DYY2, stored by the real ingest). What arrives on the van's `cmd`
topic is checked as the van checks it (the fleet's signature); results are `command.result` events stored by the
real ingest; the page shows them, live.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest

from cloud_sync.cloud import CloudDb, CloudPeer, CloudSettings
from cloud_sync.cloud.web.api import OperatorCounters
from cloud_sync.cloud.web.commands import CommandDesk
from cloud_sync.cloud.web.server import HttpSettings, OperatorServer
from cloud_sync.messages import Command, PhotoChunk, decode_json
from cloud_sync.topics import FleetTopics
from device.contract.domain import Event, EventType
from device.testbench.broker import MosquittoBroker
from tests.helpers.fleet import FLEET, OTHER_STATION, FleetPki
from tests.helpers.operator import ingest, known_day
from tests.helpers.sync_harness import FAST_BACKOFF, RawClient, wait_for
from tests.test_operator_api import Browser, make_accounts

Scenario = Callable[..., Awaitable[None]]


@pytest.fixture
def cloud_db(tmp_path: Path) -> Path:
    path = known_day(tmp_path)
    make_accounts(tmp_path / "ops.sqlite")
    return path


def run(cloud_db: Path, fleet: FleetPki, port: int, scenario: Scenario, browsers: int = 1,
        dispatch: bool = True) -> tuple[CommandDesk, OperatorCounters]:
    """The page with a CloudPeer's `send_command` (none without dispatch), as `flexedge cloud --http` wires it;
    `browsers` logged-out clients. Returns the page's command desk and its guard's counters. The peer's
    dispatcher kept its one connection throughout: the page opened none with the cloud's identity (the broker
    would have cut the dispatcher's, and it would have reconnected)."""
    # The known day has van-b work at the other station: the stations map the dispatcher stores says so too.
    stations = {**fleet.stations, "van-b": OTHER_STATION}
    settings = CloudSettings(FLEET, cloud_db, backoff=FAST_BACKOFF, stations=stations)
    kept: list[Any] = []

    async def main() -> None:
        peer = CloudPeer(settings, fleet.cloud_credentials(port), fleet.signer)
        running = asyncio.create_task(peer.run())
        try:
            await asyncio.wait_for(peer.ready.wait(), 20)
            server = OperatorServer(HttpSettings("127.0.0.1", 0, cloud_db, cloud_db.parent / "ops.sqlite",
                                                 live_interval_s=0.1), send=peer.send_command if dispatch else None)
            await server.start()
            assert server.app is not None
            kept.extend((server.commands, server.app.counters))
            sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(browsers)]
            try:
                await scenario(*[Browser(s, server.url) for s in sessions])
            finally:
                for s in sessions:
                    await s.close()
                await server.stop()
            assert peer.counters["dispatch_sessions"] == 1
        finally:
            peer.stop()
            await running
    asyncio.run(main())
    return kept[0], kept[1]


def van_hears(fleet: FleetPki, port: int, device: str) -> RawClient:
    """The van's side of its `cmd` topic (a clean session of the van's identity)."""
    raw = RawClient(fleet.broker_settings(device, port), device).__enter__()
    raw.subscribe(FleetTopics(FLEET).device(device).cmd)
    return raw


def heard(fleet: FleetPki, raw: RawClient) -> list[Command]:
    """The commands on the topic, each verified with the fleet's key as the van verifies it."""
    return [Command.from_body(fleet.verifier.verify(decode_json(payload, 1 << 16)))
            for _, payload in list(raw.messages)]


def result_event(command_id: str, name: str, status: str, data: dict[str, Any], detail: str = "") -> Event:
    return Event(EventType.COMMAND_RESULT, {"id": command_id, "name": name, "status": status, "detail": detail,
                                            "data": data})


async def next_view(stream: aiohttp.ClientResponse, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            line = (await stream.content.readline()).decode()
            if line.startswith("data: "):
                doc = json.loads(line[6:])
                if want(doc):
                    return doc


def test_an_operator_sends_a_signed_command_and_sees_its_result_live(
        cloud_db: Path, fleet: FleetPki, tls_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud_sync.cloud.web.commands")
    raw = van_hears(fleet, tls_broker.port, "van-a")
    log_text = b"13:00:01 INFO device.selftest: 7 pass\n" * 40
    blob = gzip.compress(log_text)

    async def scenario(b: Browser) -> None:
        await b.login("olga")
        menu = await (await b.get("api/vans/van-a/commands")).json()
        assert menu["allowed"] == ["selftest", "upload_logs", "restart", "set_config", "update"]
        assert menu["commands"] == []
        async with (await b.get("api/vans/van-a/commands/events")) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            r = await b.post("api/vans/van-a/commands", json={"name": "selftest", "pairs": []})
            assert r.status == 202, await r.text()
            sent = await r.json()
            assert (sent["operator"], sent["device"], sent["name"], sent["args"]) == ("olga", "van-a", "selftest", {})
            await wait_for(lambda: len(raw.messages) == 1, 10, "the command on the van's cmd topic")
            [command] = heard(fleet, raw)
            assert (command.id, command.device, command.name, dict(command.args)) == (sent["id"], "van-a",
                                                                                       "selftest", {})
            view = await next_view(stream, lambda d: bool(d["commands"]))
            assert [(c["id"], c["status"], c["operator"]) for c in view["commands"]] == [(sent["id"], "sent", "olga")]

            # The van answers through its event stream; the page shows it once the cloud stored it.
            db = CloudDb(cloud_db)
            try:
                await asyncio.to_thread(ingest, db, cloud_db.parent, "van-a", [result_event(
                    sent["id"], "selftest", "ok", {"ok": True, "counts": {"pass": 7, "skip": 3}}, "7 pass")])
            finally:
                db.close()
            view = await next_view(stream, lambda d: d["commands"][0]["status"] != "sent")
            item = view["commands"][0]
            assert (item["status"], item["detail"], item["data"]["counts"]) == ("ok", "7 pass", {"pass": 7, "skip": 3})
            assert item["operator"] == "olga" and item["answered_at"]

        # upload_logs with its arguments from the form's KEY=VALUE lines; the log arrives as a blob to download.
        r = await b.post("api/vans/van-a/commands", json={"name": "upload_logs", "pairs": ["since_s=600", " "]})
        assert r.status == 202, await r.text()
        logs = await r.json()
        assert logs["args"] == {"since_s": 600}
        blob_id = f"blob-{logs['id']}"
        sha = hashlib.sha256(blob).hexdigest()
        db = CloudDb(cloud_db)
        try:
            await asyncio.to_thread(ingest, db, cloud_db.parent, "van-a", [result_event(
                logs["id"], "upload_logs", "ok", {"blob_id": blob_id, "sha256": sha, "size": len(blob),
                                                  "encoding": "gzip"})])
            await asyncio.to_thread(db.store_photo_chunk, "van-a", PhotoChunk("c-logs", blob_id, 0, 1, sha, blob))
        finally:
            db.close()
        listing = await (await b.get("api/vans/van-a/commands")).json()
        newest = listing["commands"][0]
        assert (newest["name"], newest["status"]) == ("upload_logs", "ok")
        assert newest["blob"] == {"id": blob_id, "check": "ok", "size": len(blob)}
        download = await b.get(f"api/vans/van-a/blobs/{blob_id}")
        assert download.status == 200 and download.headers["Content-Type"] == "application/gzip"
        assert "attachment" in download.headers["Content-Disposition"]
        assert gzip.decompress(await download.read()) == log_text
        assert (await b.get("api/vans/van-a/blobs/ph-2")).status == 404  # a photo is no blob

    desk, _ = run(cloud_db, fleet, tls_broker.port, scenario)
    raw.__exit__()
    assert desk.counters == {"sent": 2}
    audit = [json.loads(line) for line in (Path(f"{cloud_db}.commands.jsonl")).read_text().splitlines()]
    assert [(a["operator"], a["device"], a["name"]) for a in audit] == [("olga", "van-a", "selftest"),
                                                                         ("olga", "van-a", "upload_logs")]
    assert all(a["sent_at"] and a["expires_at"] > a["sent_at"] for a in audit)
    assert sum("operator olga (operator) sent selftest" in r.getMessage() for r in caplog.records) == 1


def test_refusals_are_4xx_counted_by_reason_and_nothing_is_sent(
        cloud_db: Path, fleet: FleetPki, tls_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture) -> None:
    raw_a, raw_b = van_hears(fleet, tls_broker.port, "van-a"), van_hears(fleet, tls_broker.port, "van-b")

    async def scenario(olga: Browser, mark: Browser) -> None:
        await olga.login("olga")
        await mark.login("mark")  # the manager of DXX1: van-a's station, not van-b's
        cmd = "api/vans/van-a/commands"
        refusals = [
            (olga, cmd, {"name": "launch_rockets"}, 400, "unknown command"),
            (olga, cmd, {"name": "selftest", "pairs": ["x=1"]}, 400, "takes no arguments"),
            (olga, cmd, {"name": "set_config", "pairs": ["no equals sign"]}, 400, "expected KEY=VALUE"),
            (olga, cmd, {"name": "set_config", "pairs": ["port=1"]}, 400, "expected section.key"),
            (olga, cmd, {"name": "set_config"}, 400, "at least one"),
            (olga, cmd, {"name": "upload_logs", "pairs": ["since=yesterday"]}, 400, "ISO 8601"),
            (olga, cmd, {"name": "upload_logs", "pairs": ["since_s=-5"]}, 400, "since_s"),
            (olga, cmd, {"name": "selftest", "pairs": "x=1"}, 400, "pairs"),
            (olga, "api/vans/van-zzz/commands", {"name": "selftest"}, 404, "no such van"),
            (mark, cmd, {"name": "set_config", "pairs": ["sync.status_interval_s=30"]}, 403, "fleet operators"),
            (mark, cmd, {"name": "update"}, 403, "fleet operators"),
            (mark, "api/vans/van-b/commands", {"name": "restart"}, 404, "no such van"),
        ]
        for who, path, body, status, words in refusals:
            r = await who.post(path, json=body)
            assert r.status == status, (body, await r.text())
            assert words in (await r.json())["error"], body
        assert (await olga.post(cmd, data=b"{not json")).status == 400
        # The guard's checks, as for every action: the CSRF token, a same-origin Origin, a known Host.
        assert (await olga.post(cmd, csrf=False, json={"name": "selftest"})).status == 403
        for header in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
            assert (await olga.post(cmd, json={"name": "selftest"}, headers=header)).status == 403
        # A station manager's own van and the commands they may send.
        assert (await (await mark.get(cmd)).json())["allowed"] == ["selftest", "upload_logs", "restart"]
        assert (await mark.get("api/vans/van-b/commands")).status == 404
        assert (await mark.get("api/vans/van-b/commands/events")).status == 404
        r = await mark.post(cmd, json={"name": "restart"})
        assert r.status == 202, await r.text()
        await wait_for(lambda: len(raw_a.messages) == 1, 10, "mark's restart on van-a's topic")

    desk, guard = run(cloud_db, fleet, tls_broker.port, scenario, browsers=2)
    assert [c.name for c in heard(fleet, raw_a)] == ["restart"]
    assert raw_b.messages == []
    raw_a.__exit__()
    raw_b.__exit__()
    assert guard.forbidden == 3 + 2  # the guard's three (CSRF, Origin, Host), and the desk's two 403s
    assert desk.counters == {"sent": 1, "refused": 13, "refused.unknown_command": 1,
                                        "refused.bad_args": 8, "refused.no_such_van": 2, "refused.not_allowed": 2}
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 13 and any("mark: command to van-b refused (no_such_van)" in m for m in refused)
    audit = [json.loads(line) for line in (Path(f"{cloud_db}.commands.jsonl")).read_text().splitlines()]
    assert [(a["operator"], a["role"], a["name"]) for a in audit] == [("mark", "manager", "restart")]


def test_an_ingest_only_cloud_sends_nothing(cloud_db: Path, fleet: FleetPki, tls_broker: MosquittoBroker) -> None:
    async def scenario(b: Browser) -> None:
        await b.login("olga")
        r = await b.post("api/vans/van-a/commands", json={"name": "selftest"})
        assert r.status == 409 and "does not dispatch" in (await r.json())["error"]
    desk, _ = run(cloud_db, fleet, tls_broker.port, scenario, dispatch=False)
    assert desk.counters["refused.not_dispatching"] == 1


def test_a_hostile_vans_results_are_shown_not_fatal(cloud_db: Path, fleet: FleetPki,
                                                    tls_broker: MosquittoBroker) -> None:
    """command.result events of the wrong shape (what a broken or hostile van may send) list as they are."""
    db = CloudDb(cloud_db)
    try:
        ingest(db, cloud_db.parent, "van-a", [
            Event(EventType.COMMAND_RESULT, {"id": 5, "status": ["ok"], "data": "not an object"}),
            Event(EventType.COMMAND_RESULT, {"id": "x", "name": "upload_logs", "status": "ok",
                                             "data": {"blob_id": "blob-../../etc/passwd", "size": "big"}}),
            Event(EventType.COMMAND_RESULT, {}),
        ])
    finally:
        db.close()

    async def scenario(b: Browser) -> None:
        await b.login("olga")
        r = await b.get("api/vans/van-a/commands")
        assert r.status == 200, await r.text()
        items = (await r.json())["commands"]
        assert len(items) == 3 and {i["operator"] for i in items} == {None}
        assert [i["blob"] for i in items] == [None, None, None]  # no path a page would fetch
        async with (await b.get("api/vans/van-a/commands/events")) as stream:
            assert len((await next_view(stream, lambda d: True))["commands"]) == 3
    run(cloud_db, fleet, tls_broker.port, scenario)
