"""cloud_sync end to end: real mosquitto with mutual TLS and the fleet's access control, the reference cloud,
device syncs.

Fault criteria (DESIGN.md section 4): zero events lost, zero duplicates stored by the cloud.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from cloud_sync.cloud import CloudDb, CloudSettings, CloudThread
from cloud_sync.device_sync import DeviceSync
from cloud_sync.errors import RejectReason
from cloud_sync.messages import ClaimStatus, Command, EventBatch, Offers, RouteAssignment, encode
from cloud_sync.signing import Signer
from cloud_sync.topics import FleetTopics
from device.contract.domain import Block, Event, EventType, Package, Route, Stop
from device.paths import store_path
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import FLEET, OTHER_STATION, STATION, FleetPki, device_config
from tests.helpers.store import current_route
from tests.helpers.sync_harness import (
    RawClient,
    assert_cloud_holds_exactly,
    mixed_events,
    start_cloud,
    started,
    sync_settings,
    van_sync,
    wait_for,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
TOPICS = FleetTopics(FLEET)


def a_route(block_id: str, version: int = 1, stops: int = 2) -> Route:
    return Route(block_id, version, tuple(
        Stop(f"S{i}", f"{10 + i} Pine St", str(10 + i), 47.61 + i / 1000, -122.34,
             (Package(f"TBA{block_id}{i:03d}"),)) for i in range(stops)))


def a_block(block_id: str, station: str = STATION) -> Block:
    start = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    return Block(block_id, station, start, start + timedelta(hours=4), pay_cents=9000)


# --- outbox drain under faults ---------------------------------------------------------------------------


def test_drain_survives_broker_killed_every_2s(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path,
                                               cloud_target: CloudTarget) -> None:
    """10,000 events appended during the drain while the broker is SIGKILLed and restarted every 2 s."""
    cloud = start_cloud(fleet, tls_broker.port, cloud_target)
    store = EventStore(tmp_path / "van-a.db")
    ids: list[str] = []
    stop_killing = threading.Event()
    kills = []

    def killer() -> None:
        while not stop_killing.wait(2.0):
            tls_broker.kill()
            kills.append(time.monotonic())
            time.sleep(0.3)  # a short outage; the backlog grows meanwhile
            tls_broker.start()

    async def scenario() -> DeviceSync:
        sync = DeviceSync(store, sync_settings("van-a", batch_max_events=200),
                          fleet.broker_settings("van-a", tls_broker.port), fleet.verifier)
        await sync.start()
        thread = threading.Thread(target=killer)
        thread.start()
        try:
            for burst in range(100):  # 10,000 events over about 8 s
                events = mixed_events(100, burst * 100)
                ids.extend(e.id for e in events)
                await store.append_async(events)
                sync.kick()
                await asyncio.sleep(0.08)
            await wait_for(lambda: len(kills) >= 3, 30, "three broker kills")
        finally:
            stop_killing.set()
            await asyncio.to_thread(thread.join)
        if not tls_broker.running:
            tls_broker.start()
        await sync.wait_drained(60)
        await sync.stop()
        return sync

    try:
        sync = asyncio.run(scenario())
    finally:
        cloud.stop()
        store_stats = store.stats()
        store.close()
    assert len(kills) >= 3
    assert sync.counters.connects >= 4  # it really was cut off and came back, repeatedly
    assert store_stats.depth == 0
    assert sync.counters.rejected == Counter()
    assert_cloud_holds_exactly(cloud_target, "van-a", ids)


def test_agent_sigkilled_mid_drain_loses_nothing(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                 tmp_path: Path) -> None:
    """`flexedge sync` (a child process) is SIGKILLed 5 times while draining 20,000 events: every event reaches
    the cloud exactly once; resends show up only as transport duplicates the cloud discards."""
    # A will delay of 1 s (default 5): each kill waits for the van's Last Will before the next child starts; the
    # will is the same, 20 s of waiting less.
    config = device_config(tmp_path, fleet, tls_broker.port, "van-b",
                           'batch_max_events = 100\nwill_delay_s = 1\n[logging]\nlevel = "WARNING"')
    (tmp_path / "data").mkdir()
    with EventStore(store_path(tmp_path / "data")) as store:
        events = mixed_events(20_000)
        for i in range(0, len(events), 1000):
            store.append_many(events[i:i + 1000])
    cloud = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db")
    db = CloudDb(tmp_path / "cloud.db")
    env = {**os.environ, "FLEXEDGE_CONFIG": str(config)}
    command = [sys.executable, "-m", "device.cli", "sync", "--until-empty", "--timeout", "120"]
    try:
        for _ in range(5):
            target = db.event_count("van-b") + 1500
            child = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                wait_until(lambda c=child, t=target: db.event_count("van-b") >= t or c.poll() is not None, 60,
                           "the child to drain some events")
                assert child.poll() is None, f"child ended early: {child.communicate()}"
                child.send_signal(signal.SIGKILL)
            finally:
                child.communicate(timeout=10)
            assert child.returncode == -signal.SIGKILL
            # The broker publishes the Last Will: the operator sees the van offline.
            wait_until(lambda: _presence(db, "van-b") == "offline", 20, "the Last Will")
        final = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr[-2000:]
        wait_until(lambda: _presence(db, "van-b") == "stopped", 20, "the retained 'stopped' status")
        counters = cloud.peer.counters.copy()
    finally:
        cloud.stop()
        db.close()
    with EventStore(store_path(tmp_path / "data")) as store:
        assert store.stats().depth == 0
    assert_cloud_holds_exactly(tmp_path / "cloud.db", "van-b", [e.id for e in events])
    assert counters["events_stored"] == 20_000
    assert counters["events_duplicate"] > 0  # batches in flight at each kill were sent again


def _presence(db: CloudDb, device: str) -> str | None:
    view = {row["device"]: row["status"] for row in db.device_view()}
    status = view.get(device)
    return status["state"] if status else None


# --- dispatch ----------------------------------------------------------------------------------------


def test_fifty_devices_race_for_ten_blocks(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path,
                                           cloud_target: CloudTarget) -> None:
    """Every device claims every block at once: one winner per block, an answer for every claim, the route
    goes to the winner, no device holds more blocks than the cloud allows."""
    devices = [d for d in fleet.devices if d.startswith("sim-")]
    blocks = [a_block(f"B{n:02d}") for n in range(10)]
    cloud = start_cloud(fleet, tls_broker.port, cloud_target, workers=1)
    stores = [EventStore(tmp_path / f"{d}.db") for d in devices]

    async def scenario() -> tuple[list[list], list[DeviceSync]]:
        syncs = [DeviceSync(store, sync_settings(d), fleet.broker_settings(d, tls_broker.port), fleet.verifier)
                 for d, store in zip(devices, stores)]
        for sync in syncs:
            await sync.start()
        try:
            await asyncio.gather(*(asyncio.wait_for(s.connected.wait(), 30) for s in syncs))
            await asyncio.to_thread(cloud.call, cloud.peer.add_blocks([(b, a_route(b.id)) for b in blocks]))
            results = await asyncio.gather(*(asyncio.gather(*(s.claim(b.id) for b in blocks)) for s in syncs))
            await asyncio.sleep(0.5)  # routes follow the grants
        finally:
            await asyncio.gather(*(sync.stop() for sync in syncs))
        return results, syncs

    try:
        results, syncs = asyncio.run(scenario())
        db = cloud_target.open()
        winners_in_db = db.winners()
        db.close()
    finally:
        cloud.stop()
        for store in stores:
            store.close()
    assert len(results) == 50 and all(len(r) == 10 for r in results)  # every device got every answer
    inboxes = {device: _drain_inbox(sync) for device, sync in zip(devices, syncs)}
    for n, block in enumerate(blocks):
        statuses = [device_results[n].status for device_results in results]
        assert statuses.count(ClaimStatus.GRANTED) == 1, block.id
        assert statuses.count(ClaimStatus.TAKEN) + statuses.count(ClaimStatus.LIMIT_REACHED) == 49
        winner = devices[statuses.index(ClaimStatus.GRANTED)]
        assert winners_in_db[block.id] == winner
        assert any(isinstance(i, RouteAssignment) and i.route.block_id == block.id for i in inboxes[winner])
    for device, sync in zip(devices, syncs):
        assert sync.counters.rejected == Counter()
        assert any(isinstance(i, Offers) and i.station == STATION for i in inboxes[device])
    held = Counter(winner for winner in winners_in_db.values())
    assert max(held.values()) <= CloudSettings.max_open_blocks


def _drain_inbox(sync: DeviceSync) -> list:
    items = []
    while not sync.inbox.empty():
        items.append(sync.inbox.get_nowait())
    return items


# --- isolation and forged input ----------------------------------------------------------------------


def test_broker_keeps_devices_apart(tls_broker: MosquittoBroker, fleet: FleetPki) -> None:
    """The broker's access control (username = client id = certificate CN, dynamic-security roles): van-a
    cannot publish into van-b's tree or read it, nor another station's offers; its own topics work."""
    b = TOPICS.device("van-b")
    with RawClient(fleet.broker_settings("van-a", tls_broker.port), "van-a-intruder") as van_a, \
            RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-observer") as cloud:
        cloud.subscribe(TOPICS.all_devices("events"))
        # Publishing as van-b: the broker answers PUBACK "Not authorized" and forwards nothing.
        assert van_a.publish(b.events, b'{"forged": true}').getName() == "Not authorized"
        assert van_a.publish(b.status, b'{"state": "offline"}').getName() == "Not authorized"
        own = van_a.publish(TOPICS.device("van-a").events, b'{"own": true}')
        assert not own.is_failure
        # Reading van-b's downlink and another station's offers: refused at SUBACK, and nothing may arrive.
        for topic in (b.cmd, b.route, b.ack, TOPICS.offers(OTHER_STATION), f"{TOPICS.root}/#"):
            assert all(code.is_failure for code in van_a.subscribe(topic)), topic
        for topic in (b.cmd, b.route, b.ack, TOPICS.offers(OTHER_STATION)):
            assert not cloud.publish(topic, b"secret").is_failure
        wait_until(lambda: any(t == TOPICS.device("van-a").events for t, _ in cloud.messages), 10,
                   "van-a's own event to reach the cloud")
        time.sleep(0.5)
    assert [t for t, _ in cloud.messages] == [TOPICS.device("van-a").events]
    # Only what van-a may read reached it (its station's retained offers, via the '#' subscription); no secret.
    assert {t for t, _ in van_a.messages} <= {TOPICS.offers(STATION)}
    assert all(payload != b"secret" for _, payload in van_a.messages)


def test_forged_and_malformed_downlink_rejected_and_counted(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                            tmp_path: Path, cloud: CloudThread,
                                                            van_store: EventStore) -> None:
    """A route signed with the wrong key, a replayed command, a 10 MB payload and invalid JSON are each
    rejected and counted; the agent goes on: a genuine route and command are taken, events keep draining."""
    me = TOPICS.device("van-a")
    forger = Signer.generate()
    genuine = fleet.signer
    command = Command("cmd-1", "van-a", "ping", {}, datetime.now(timezone.utc) + timedelta(minutes=5))
    expired = Command("cmd-2", "van-a", "ping", {}, datetime.now(timezone.utc) - timedelta(minutes=1))
    other_device = Command("cmd-3", "van-b", "ping", {}, datetime.now(timezone.utc) + timedelta(minutes=5))
    wrong_key_route = encode(forger.sign(RouteAssignment("van-a", a_route("B-EVIL", 99)).to_body()))
    tampered = genuine.sign(RouteAssignment("van-a", a_route("B-OK", 5)).to_body())
    tampered["body"]["route"]["version"] = 6  # a valid signature over different bytes

    async def scenario() -> tuple[DeviceSync, list]:
        sync = DeviceSync(van_store, sync_settings("van-a"), fleet.broker_settings("van-a", tls_broker.port),
                          fleet.verifier)
        await sync.start()
        await asyncio.wait_for(sync.connected.wait(), 30)
        await asyncio.sleep(0.3)  # subscriptions in place
        with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-forger") as raw:
            signed_command = encode(genuine.sign(command.to_body()))
            sent = [
                (me.route, wrong_key_route),
                (me.route, encode(tampered)),
                (me.cmd, signed_command),
                (me.cmd, signed_command),  # the replay
                (me.cmd, encode(genuine.sign(expired.to_body()))),
                (me.cmd, encode(genuine.sign(other_device.to_body()))),
                (me.cmd, b"x" * (10 * 1024 * 1024)),  # 10 MB
                (me.route, b"{not json"),
                (me.route, encode(genuine.sign({"device": "van-a", "route": {"block_id": "B1"}}))),  # no version
            ]
            for topic, payload in sent:
                await asyncio.to_thread(raw.publish, topic, payload)
        await wait_for(lambda: sum(sync.counters.rejected.values()) >= 8, 30, "eight rejects")
        # Still working: a genuine route (via the cloud), more events drained and acked.
        await asyncio.to_thread(cloud.call, cloud.peer.add_blocks([(a_block("B-OK"), a_route("B-OK"))]))
        claim = await sync.claim("B-OK")
        events = [Event(EventType.PACKAGE_SCANNED, {"n": i}) for i in range(50)]
        await van_store.append_async(events)
        sync.kick()
        await sync.wait_drained(30)
        await wait_for(lambda: current_route(van_store, "B-OK") is not None, 10, "the genuine route")
        await sync.stop()
        assert claim.granted
        return sync, _drain_inbox(sync)

    sync, inbox = asyncio.run(scenario())
    route = current_route(van_store, "B-OK")
    evil = current_route(van_store, "B-EVIL")
    assert sync.counters.rejected == Counter({
        RejectReason.BAD_SIGNATURE: 2, RejectReason.REPLAY: 1, RejectReason.EXPIRED: 1,
        RejectReason.WRONG_DEVICE: 1, RejectReason.TOO_LARGE: 1, RejectReason.NOT_JSON: 1,
        RejectReason.SCHEMA: 1})
    assert evil is None and route is not None and route.version == 1
    commands = [i for i in inbox if isinstance(i, Command)]
    assert [c.id for c in commands] == ["cmd-1"]  # executed once
    assert any(isinstance(i, Offers) for i in inbox)
    assert any(isinstance(i, RouteAssignment) and i.route.block_id == "B-OK" for i in inbox)
    assert_cloud_holds_exactly(tmp_path / "cloud.db", "van-a", _ids_in(tmp_path / "cloud.db", "van-a"))


def _ids_in(db_path: Path, device: str) -> list[str]:
    db = CloudDb(db_path)
    try:
        return [event_id for _, event_id, _ in db.event_rows(device)]
    finally:
        db.close()


def test_priority_lane_and_live_position_after_outage(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                      tmp_path: Path) -> None:
    """After an outage, the newest position goes first, then scans/proofs, then the GPS backlog oldest first."""
    store = EventStore(tmp_path / "van-a.db")
    track = [Event(EventType.GPS_FIX, {"n": i}) for i in range(600)]
    scans = [Event(EventType.PACKAGE_SCANNED, {"n": i}) for i in range(30)]
    store.append_many(track)
    store.append_many(scans)
    order: list[tuple[str, list[int]]] = []

    with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-order") as raw:
        raw.subscribe(TOPICS.device("van-a").events)

        async def scenario() -> None:
            sync = DeviceSync(store, sync_settings("van-a", batch_max_events=100, inflight_batches=100),
                              fleet.broker_settings("van-a", tls_broker.port), fleet.verifier)
            await sync.start()
            await wait_for(lambda: sum(1 for _ in raw.messages) >= 8, 30, "the batches")
            await sync.stop()

        asyncio.run(scenario())
        for _, payload in raw.messages:
            batch = EventBatch.from_payload(payload)
            order.append((batch.events[0]["type"], [e["seq"] for e in batch.events]))
    store.close()
    assert order[0] == ("gps.fix", [600])  # the live position
    assert order[1] == ("package.scanned", list(range(601, 631)))
    assert order[2] == ("gps.fix", list(range(1, 101)))


def test_route_revisions_replace_older_versions(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path,
                                                cloud_target: CloudTarget) -> None:
    """A won block's route arrives (v1); a revision (v2) replaces it; a genuine but older v1 sent again is
    ignored and the stored route stays v2. Presence is online while connected."""
    cloud = start_cloud(fleet, tls_broker.port, cloud_target, workers=1)
    van_store = EventStore(tmp_path / "van-a.db")
    me = TOPICS.device("van-a")

    async def scenario() -> DeviceSync:
        async with started(van_sync(fleet, van_store, tls_broker.port)) as sync:
            await asyncio.wait_for(sync.connected.wait(), 30)
            await asyncio.to_thread(cloud.call, cloud.peer.add_blocks([(a_block("B-REV"), a_route("B-REV"))]))
            assert (await sync.claim("B-REV")).granted
            await wait_for(lambda: current_route(van_store, "B-REV") is not None, 10, "route v1")
            revised = await asyncio.to_thread(cloud.call, cloud.peer.revise_route(a_route("B-REV", stops=3)))
            assert revised.version == 2
            await wait_for(lambda: current_route(van_store, "B-REV").version == 2, 10, "route v2")
            old = encode(fleet.signer.sign(RouteAssignment("van-a", a_route("B-REV", 1)).to_body()))
            with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-old-route") as raw:
                await asyncio.to_thread(raw.publish, me.route, old)
            await wait_for(lambda: sync.counters.routes_ignored >= 1, 10, "the old version ignored")
            db = cloud_target.open()
            await wait_for(lambda: _presence(db, "van-a") == "online", 10, "online presence")
            db.close()
        return sync

    try:
        sync = asyncio.run(scenario())
        route = current_route(van_store, "B-REV")
    finally:
        cloud.stop()
        van_store.close()
    assert route is not None and route.version == 2 and len(route.stops) == 3
    assert sync.counters.rejected == Counter()


def test_cloud_program_serves_claims_and_ingest(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path,
                                                cloud_target: CloudTarget) -> None:
    """`flexedge cloud` as a real program: offers the blocks of --blocks, grants a claim, stores events."""
    blocks = tmp_path / "blocks.json"
    blocks.write_text(json.dumps([{"block": a_block("B-CLI").to_dict(), "route": a_route("B-CLI").to_dict()}]))
    cloud = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "cloud", *cloud_target.cli_args(), "--fleet", FLEET,
         "--broker", f"127.0.0.1:{tls_broker.port}", "--pki", str(fleet.pki.dir), "--workers", "2",
         "--client-prefix", "cloud-cli", "--blocks", str(blocks), "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "FLEXEDGE_DATA_DIR": str(tmp_path / "cloud-data")})
    store = EventStore(tmp_path / "van-a.db")
    events = mixed_events(300)
    store.append_many(events)

    async def scenario() -> tuple[bool, list]:
        async with started(van_sync(fleet, store, tls_broker.port)) as sync:
            result = await sync.claim("B-CLI", request_id="R-WORKFLOW-1")  # the id the workflow recorded
            assert result.request_id == "R-WORKFLOW-1"
            await sync.wait_drained(30)
            await wait_for(lambda: current_route(store, "B-CLI") is not None, 10, "the route")
        return result.granted, _drain_inbox(sync)

    try:
        assert cloud.stdout is not None
        ready = json.loads(cloud.stdout.readline())
        assert ready["ready"] is True and ready["fleet"] == FLEET and len(ready["workers"]) == 2  # two processes
        granted, inbox = asyncio.run(scenario())
    finally:
        cloud.send_signal(signal.SIGTERM)
        _, stderr = cloud.communicate(timeout=15)
        store.close()
    assert cloud.returncode == 0, stderr[-2000:]
    assert granted
    assert any(isinstance(i, Offers) and [b.id for b in i.blocks] == ["B-CLI"] for i in inbox)
    assert_cloud_holds_exactly(cloud_target, "van-a", [e.id for e in events])


def test_cloud_restart_mid_drain(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    """The cloud goes away while batches are in flight (the broker stays): whatever was not acked is sent again
    (queued session or ack timeout) and stored once."""
    store = EventStore(tmp_path / "van-a.db")
    events = mixed_events(20_000)
    store.append_many(events)
    cloud = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db", workers=1)
    acked_at_outage: list[int] = []

    async def scenario() -> DeviceSync:
        nonlocal cloud
        async with started(van_sync(fleet, store, tls_broker.port, batch_max_events=100,
                                    ack_timeout_s=2.0)) as sync:
            await wait_for(lambda: sync.counters.events_acked >= 1000, 30, "some acks")
            await asyncio.to_thread(cloud.stop)
            acked_at_outage.append(sync.counters.events_acked)
            await asyncio.sleep(3.0)  # longer than the ack timeout: the device sends again into the void
            cloud = await asyncio.to_thread(start_cloud, fleet, tls_broker.port, tmp_path / "cloud.db", 1)
            await sync.wait_drained(60)
        return sync

    try:
        sync = asyncio.run(scenario())
    finally:
        cloud.stop()
        store.close()
    assert acked_at_outage[0] < len(events) // 2  # the cloud really vanished mid-drain
    assert sync.counters.batches_resent > 0
    assert_cloud_holds_exactly(tmp_path / "cloud.db", "van-a", [e.id for e in events])


def test_photo_upload_yields_to_events_and_resumes(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                   tmp_path: Path, cloud_target: CloudTarget) -> None:
    """A 300 KB proof photo goes up in chunks after the waiting events; stopped half way, a new run (as after
    a restart) sends only the chunks not yet acked; the cloud reassembles it and checks its sha256."""
    photo = tmp_path / "proof.jpg"
    photo.write_bytes(os.urandom(300 * 1024))  # 5 chunks of 64 KiB
    cloud = start_cloud(fleet, tls_broker.port, cloud_target, workers=1)
    van_store = EventStore(tmp_path / "van-a.db")
    events = mixed_events(3000)
    van_store.append_many(events)
    settings = sync_settings("van-a", inflight_batches=1, batch_max_events=300)
    arrivals: list[str] = []

    async def first_run() -> DeviceSync:
        sync = DeviceSync(van_store, settings, fleet.broker_settings("van-a", tls_broker.port), fleet.verifier)
        await sync.upload_photo("P-1", photo)
        async with started(sync):
            await wait_for(lambda: sync.counters.photo_chunks_sent >= 3, 30, "three chunks sent")
        return sync

    async def second_run() -> DeviceSync:
        sync = DeviceSync(van_store, settings, fleet.broker_settings("van-a", tls_broker.port), fleet.verifier)
        async with started(sync):
            await wait_for(lambda: sync.counters.photos_uploaded == 1, 30, "the photo uploaded")
            assert await sync.photos_pending() == []
        return sync

    try:
        with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-watch") as raw:
            raw.subscribe(TOPICS.device("van-a").events)
            raw.subscribe(f"{TOPICS.device('van-a').base}/photo/+")
            first = asyncio.run(first_run())
            second = asyncio.run(second_run())
            arrivals = [topic.rsplit("/", 2)[-2] if "/photo/" in topic else "events" for topic, _ in raw.messages]
        db = cloud_target.open()
        stored = db.photo("van-a", "P-1")
        db.close()
    finally:
        cloud.stop()
        van_store.close()
    assert arrivals.index("photo") > max(i for i, kind in enumerate(arrivals) if kind == "events")
    assert first.counters.photo_chunks_sent >= 3 and first.counters.photos_uploaded == 0
    assert first.counters.photo_chunks_sent + second.counters.photo_chunks_sent <= 5 + 1  # resumed, not restarted
    assert stored is not None and stored[1] == photo.read_bytes()
    assert_cloud_holds_exactly(cloud_target, "van-a", [e.id for e in events])


def test_the_agent_claims_with_the_request_id_it_recorded(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                          tmp_path: Path, cloud: CloudThread,
                                                          van_store: EventStore) -> None:
    """The request id in the agent's block.claim_requested event is the one that goes over MQTT (payload and
    correlation data) and comes back in the cloud's answer."""
    from device.agent import Agent
    from device.cloud_adapter import CloudAdapter
    from device.contract.domain import Role
    from device.workflow import ClaimRequested, OffersReceived
    from device.workflow.runner import WorkflowRunner

    cloud.call(cloud.peer.add_blocks([(a_block("B-AG"), a_route("B-AG"))]))

    async def scenario() -> str:
        runner = await WorkflowRunner.open(van_store, Role.VEHICLE)
        link = fleet.broker_settings("van-a", tls_broker.port)
        adapter = CloudAdapter(DeviceSync(van_store, sync_settings("van-a"), link, fleet.verifier))
        agent = Agent(store=van_store, runner=runner, role=Role.VEHICLE, cloud=adapter)
        await adapter.start()
        try:
            await agent.submit(OffersReceived((a_block("B-AG"),)))
            await agent.submit(ClaimRequested("B-AG"))
            await wait_for(lambda: runner.workflow.phase == "claimed", 30, "the claim granted")
        finally:
            await adapter.stop()
        return runner.workflow.phase

    with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-claims") as raw:
        raw.subscribe(TOPICS.device("van-a").claim)
        assert asyncio.run(scenario()) == "claimed"
        sent = [json.loads(payload) for topic, payload in raw.messages if topic.endswith("/claim")]
    recorded = [e["data"]["request_id"] for e in van_store.events() if e["type"] == "block.claim_requested"]
    granted = [e["data"]["request_id"] for e in van_store.events() if e["type"] == "block.claimed"]
    assert [s["request_id"] for s in sent] == recorded == granted and len(recorded) == 1


# --- presence: the Last Will ---------------------------------------------------------------------------------


def _states(raw: RawClient, since: int) -> list[str]:
    return [orjson.loads(payload)["state"] for _, payload in raw.messages[since:] if payload]


def test_a_connection_cut_repaired_within_the_will_delay_shows_no_offline(tls_broker: MosquittoBroker,
                                                                         fleet: FleetPki, tmp_path: Path) -> None:
    """The van's Last Will carries an MQTT 5 Will Delay: a dropped TCP connection (no DISCONNECT, as when the
    cell network changes) that the van repairs at once never reaches the operator as 'offline'."""
    will_delay_s = 8  # the reconnect (backoff, TLS handshake) must fit inside it on a busy machine: 2 s did not
    with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-presence") as raw, \
            EventStore(tmp_path / "van-a.db") as store:
        raw.subscribe(TOPICS.device("van-a").status)

        async def scenario() -> None:
            async with started(van_sync(fleet, store, tls_broker.port, will_delay_s=will_delay_s)) as sync:
                await wait_for(lambda: sync.counters.connects == 1 and "online" in _states(raw, 0), 30, "online")
                mark = len(raw.messages)
                sock = sync.link.client._client.socket()  # noqa: SLF001 - cut the TCP connection under paho
                sock.shutdown(socket.SHUT_RDWR)
                await wait_for(lambda: sync.counters.connects == 2 and "online" in _states(raw, mark), 30,
                               "back online")
                await asyncio.sleep(will_delay_s + 1.0)  # past the delay: a will would have been published
                assert _states(raw, mark) == ["online"]
            await wait_for(lambda: _states(raw, mark)[-1:] == ["stopped"], 10, "the clean stop")
        asyncio.run(scenario())


def test_a_sigkilled_van_turns_offline_after_the_will_delay_and_keeps_its_figures(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path, cloud: CloudThread) -> None:
    """`flexedge sync` with telemetry waiting (below track_min_batch) is SIGKILLed: the broker publishes its
    retained Last Will after the will delay (not before), and the cloud turns it offline keeping the outbox depth,
    the oldest pending event and the time the van last spoke."""
    will_delay_s = 2
    config = device_config(tmp_path, fleet, tls_broker.port, "van-b",
                           f"status_interval_s = 5\nwill_delay_s = {will_delay_s}\ntrack_linger_s = 600\n"
                           '[logging]\nlevel = "WARNING"')
    (tmp_path / "data").mkdir()
    with EventStore(store_path(tmp_path / "data")) as store:
        store.append_many([Event(EventType.GPS_FIX, {"n": i}) for i in range(3)])  # telemetry: it lingers
    db = CloudDb(tmp_path / "cloud.db")
    child = subprocess.Popen([sys.executable, "-m", "device.cli", "sync"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "FLEXEDGE_CONFIG": str(config)})
    try:
        with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-presence") as raw:
            raw.subscribe(TOPICS.device("van-b").status)
            wait_until(lambda: (db.device_status("van-b") or {}).get("state") == "online"
                       and (db.device_status("van-b") or {}).get("oldest_pending_s") is not None, 30,
                       "the van online with its backlog")
            mark = len(raw.messages)
            killed_at = time.monotonic()
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
            wait_until(lambda: "offline" in _states(raw, mark), 30, "the Last Will")
            offline_after_s = time.monotonic() - killed_at
            wait_until(lambda: (db.device_status("van-b") or {}).get("state") == "offline", 10, "the cloud's record")
            record = db.device_status("van-b")
            last = [doc for doc in (orjson.loads(p) for _, p in raw.messages if p) if doc["state"] == "online"][-1]
        with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud-presence") as late:
            late.subscribe(TOPICS.device("van-b").status)  # retained: a cloud that starts now learns it too
            wait_until(lambda: _states(late, 0) == ["offline"], 10, "the retained will")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
        db.close()
    assert child.returncode == -signal.SIGKILL
    assert offline_after_s >= will_delay_s - 0.2  # the broker waited out the will delay
    assert record is not None and record["state"] == "offline" and record["offline_at"] >= record["received_at"]
    # What the van said last, before it vanished, stays: its backlog of three lingering breadcrumbs, their age.
    assert (last["outbox_depth"], last["oldest_pending_s"] > 0) == (3, True)
    assert {k: record[k] for k in ("ts", "outbox_depth", "last_ack_seq", "oldest_pending_s")} == {
        k: last[k] for k in ("ts", "outbox_depth", "last_ack_seq", "oldest_pending_s")}
