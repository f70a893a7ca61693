"""Bytes on the wire for a van's day vs the naive baseline of one uncompressed JSON MQTT message per event.

A day: 8 h of GPS breadcrumbs every 5 s (5,760), a health event a minute, and a 150-stop block driven through the
real workflow (offers, claim, route, 300 loading scans, then at each stop arrival, the proof photo's check, a
signature at every third stop, delivery proof and departure), plus the 150 proof photos: camera-sized
(2304x1296) JPEGs with sensor noise, and their bounded upload copies (device/upload_copy.py, 1600 px,
<= 300 KiB).

Everything crosses a counting TCP proxy in front of a real mosquitto with mutual TLS, so the figures are what a
modem would count, both directions (TLS records, MQTT headers, PUBACKs, the cloud's acks): first DeviceSync
drains the day's events (zstd batches) to the reference cloud, then the photos go up in chunks. The baseline, in
the same run through the same proxy: every event's JSON as its own QoS 1 message (paho, same TLS), and a few
originals uploaded as they were taken, to price a photo without the upload copy.

    python bench/wire_cost.py [--distinct 4]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from PIL import Image  # noqa: E402

from cloud_sync.cloud.peer import CloudPeer, CloudSettings, CloudThread  # noqa: E402
from cloud_sync.device_sync import DeviceSync  # noqa: E402
from cloud_sync.pki import CLOUD_IDENTITY  # noqa: E402
from cloud_sync.sync_settings import SyncCounters, SyncSettings  # noqa: E402
from cloud_sync.topics import FleetTopics  # noqa: E402
from device.agent import AgentCounters  # noqa: E402
from device.config import SyncSection  # noqa: E402
from device.contract.domain import Block, Event, EventType, Package, Role, Route, Stop, Verdict  # noqa: E402
from device.contract.position import Position  # noqa: E402
from device.store import EventStore  # noqa: E402
from device.testbench.broker import MosquittoBroker  # noqa: E402
from device.testbench.fleet import LocalFleet  # noqa: E402
from device.upload_copy import UploadLimits, make_upload_copy  # noqa: E402
from device.vision.synth import render_photo  # noqa: E402
from device.workflow import (  # noqa: E402
    ArrivedAt,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    LoadingDone,
    OffersReceived,
    PackageScanned,
    PhotoChecked,
    RouteReceived,
    SignatureCaptured,
)
from device.workflow.runner import WorkflowRunner  # noqa: E402
from firmware_bridge.camera.photo import exif_bytes  # noqa: E402
from firmware_bridge.fix import Fix, FixMode  # noqa: E402
from tests.helpers.chaos.proxy import TcpProxy  # noqa: E402

FLEET, DEVICE, LIVE_DEVICE, STATION = "bench", "van-wire", "van-live", "DXX1"
DAY_S, TRACK_S, HEALTH_S = 8 * 3600, 5, 60  # a van's day, one breadcrumb per 5 s, one health event a minute
STOPS, PER_STOP = 150, 2
CAMERA_SIZE = (2304, 1296)
START = datetime(2026, 5, 4, 8, 0, tzinfo=timezone.utc)
DRAIN_TIMEOUT_S = 600.0


def day_route() -> tuple[Block, Route]:
    block = Block.from_dict({"id": "B1", "station": STATION, "starts_at": "2026-05-04T08:00:00Z",
                             "ends_at": "2026-05-04T16:00:00Z"})
    stops = tuple(Stop(f"S{i:03d}", f"{i + 2} Main St", str(i + 2), 47.6 + i * 4e-4, -122.3 + i * 2e-4,
                       tuple(Package(f"TBA{i:05d}{j}", signature_required=(i % 3 == 0 and j == 0))
                             for j in range(PER_STOP)))
                  for i in range(STOPS))
    return block, Route("B1", 1, stops)


def camera_jpeg(seed: int, number: str) -> bytes:
    """A camera-sized photo with sensor noise (a clean render compresses far better than a real photo)."""
    rng = np.random.default_rng(seed)
    image = render_photo(rng, number, size=CAMERA_SIZE).image.astype(np.int16)
    noisy = np.clip(image + rng.normal(0, 9, image.shape), 0, 255).astype(np.uint8)
    fix = Fix(time=START, lat=47.61, lon=-122.34, mode=FixMode.FIX_3D)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90, exif=exif_bytes(START, fix))
    return buf.getvalue()


def make_photos(folder: Path, count: int, distinct: int) -> list[tuple[str, Path, str, Path, str]]:
    """(photo id, original, its sha256, upload copy, its sha256): `distinct` originals, used in turn."""
    import hashlib

    made = []
    for n in range(distinct):
        original = folder / f"orig{n}.jpg"
        original.write_bytes(camera_jpeg(n, str(n + 2)))
        copy = make_upload_copy(original, UploadLimits())
        made.append((original, hashlib.sha256(original.read_bytes()).hexdigest(), copy.path, copy.sha256))
    photos = []
    for i in range(count):
        original, sha, copy, copy_sha = made[i % distinct]
        photos.append((f"P{i:04d}", original, sha, copy, copy_sha))
    return photos


def signature() -> tuple[tuple[tuple[float, float], ...], ...]:
    """A signature as a tablet records it: three strokes, ~150 points."""
    return tuple(tuple((round(10 + s * 60 + t * 0.9, 1), round(40 + 20 * math.sin(t / 6 + s), 1))
                       for t in range(50)) for s in range(3))


Pace = Callable[[], Awaitable[None]]


async def record_day(store: EventStore, photos: list, pace: Pace | None = None) -> int:
    """The day's events into the store: the workflow's own events plus breadcrumbs and health between them.
    `pace` (live mode) is awaited after each input and each breadcrumb, as the agent's day unfolds."""
    block, route = day_route()
    runner = await WorkflowRunner.open(store, Role.VEHICLE)

    async def apply(item: object) -> None:
        await runner.apply(item)
        if pace is not None:
            await pace()

    async def append(events: list[Event]) -> None:
        if pace is None:
            await store.append_async(events)
            return
        for event in events:
            await store.append_async([event])
            await pace()
    for item in (OffersReceived((block,)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(route)):
        await apply(item)
    for code in route.manifest():
        await apply(PackageScanned(code))
    await apply(LoadingDone())
    health = {"outbox_depth": 3, "last_seq": 0, **vars(AgentCounters()), "sync": SyncCounters().snapshot()}
    track_points = DAY_S // TRACK_S
    clock = 0
    for i, stop in enumerate(route.stops):
        crumbs = []
        track_per_stop = (i + 1) * track_points // STOPS - i * track_points // STOPS
        for k in range(track_per_stop):
            clock += TRACK_S
            frac = k / track_per_stop
            fix = Position.from_dict({
                "time": (START + timedelta(seconds=clock)).isoformat().replace("+00:00", "Z"), "mode": 3,
                "lat": round(stop.lat - 4e-4 * (1 - frac), 7), "lon": round(stop.lon - 2e-4 * (1 - frac), 7),
                "alt": 31.5, "speed": round(8 + 3 * math.sin(clock / 50), 2),
                "track": round(27 + 5 * math.cos(clock / 70), 1), "eph": 4.2})
            crumbs.append(Event(EventType.GPS_FIX, {}, fix=fix, block="B1"))
            if clock % HEALTH_S == 0:
                health["last_seq"] += 1
                crumbs.append(Event(EventType.HEALTH, dict(health)))
        await append(crumbs)
        photo_id, _, sha, _, copy_sha = photos[i]
        await apply(ArrivedAt(stop.id))
        await apply(PhotoChecked(stop.id, (), Verdict.MATCH, stop.house_number, 0.97, photo_id, sha,
                                 (812, 304, 96, 64), copy_sha))
        if i % 3 == 0:
            await apply(SignatureCaptured(stop.id, strokes=signature()))
        await apply(DepartedFrom(stop.id))
    rejected = sum(1 for doc in store.events(limit=1_000_000) if doc["type"] == EventType.INPUT_REJECTED)
    if rejected:
        raise RuntimeError(f"the day's workflow rejected {rejected} inputs")
    return store.stats().last_seq


async def drain_and_upload(store: EventStore, fleet: LocalFleet, port: int, proxy: TcpProxy,
                           photos: list) -> tuple[int, int]:
    """(wire bytes of the events, of the photos) through the proxy."""
    sync = DeviceSync(store, sync_settings(DEVICE), fleet.broker_settings(DEVICE, port), fleet.verifier)
    await sync.start()
    try:
        await sync.wait_drained(DRAIN_TIMEOUT_S)
        await asyncio.sleep(0.5)  # the last acks' PUBACKs
        events_bytes = proxy.bytes_up + proxy.bytes_down
        for photo_id, _, _, copy, _ in photos:
            await sync.upload_photo(photo_id, copy)
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while sync.counters.photos_uploaded < len(photos):
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        return events_bytes, proxy.bytes_up + proxy.bytes_down - events_bytes
    finally:
        await sync.stop()


def sync_settings(device: str) -> SyncSettings:
    """As the agent runs it: the config's defaults (telemetry batched by track_min_batch/track_linger_s)."""
    defaults = SyncSection()
    return SyncSettings(device, FLEET, STATION, track_min_batch=defaults.track_min_batch,
                        track_linger_s=defaults.track_linger_s)


async def live_day(store: EventStore, fleet: LocalFleet, port: int, proxy: TcpProxy, photos: list) -> tuple[int, int]:
    """(events acked, wire bytes) of the day recorded while the sync runs: after each input and breadcrumb,
    the proofs and scans are acked by the cloud and the telemetry waits for its batch, as when the agent is
    online all day (time compressed: track_linger_s never expires here, track_min_batch decides)."""
    sync = DeviceSync(store, sync_settings(LIVE_DEVICE), fleet.broker_settings(LIVE_DEVICE, port), fleet.verifier)
    await sync.start()
    await sync.connected.wait()
    before = proxy.bytes_up + proxy.bytes_down
    min_batch = sync.settings.track_min_batch

    async def pace() -> None:
        sync.kick()
        async with asyncio.timeout(30):
            while True:
                depth = (await asyncio.to_thread(store.stats)).depth_by_lane
                if not depth.get("events") and depth.get("track", 0) < min_batch:
                    return
                await asyncio.sleep(0.002)
    try:
        await record_day(store, photos, pace)
        await asyncio.sleep(0.5)
        stats = store.stats()
        return stats.last_seq - stats.depth, proxy.bytes_up + proxy.bytes_down - before
    finally:
        await sync.stop(timeout_s=0.5)


def naive_publish(fleet: LocalFleet, port: int, topic: str, bodies: list[bytes]) -> None:
    """One QoS 1 message per payload, the whole list in flight at paho's pace, until every PUBACK is back."""
    settings = fleet.broker_settings(DEVICE, port)
    done = threading.Event()
    acked = [0]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{DEVICE}", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)

    def on_publish(*_: object) -> None:
        acked[0] += 1
        if acked[0] == len(bodies):
            done.set()
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for start in range(0, len(bodies), 20_000):  # paho's 16-bit message ids: never 65536 queued at once
            target = min(start + 20_000, len(bodies))
            for body in bodies[start:target]:
                client.publish(topic, body, qos=1)
            while acked[0] < target:
                time.sleep(0.05)
        if not done.wait(DRAIN_TIMEOUT_S):
            raise TimeoutError(f"{acked[0]} of {len(bodies)} PUBACKs")
    finally:
        client.disconnect()
        client.loop_stop()


def photo_wire_baseline(fleet: LocalFleet, port: int, proxy: TcpProxy, workdir: Path, photos: list,
                        distinct: int) -> int:
    """Wire bytes of uploading the distinct originals as taken (no upload copy): same sync, same chunks."""
    store = EventStore(workdir / "originals.db")

    async def upload() -> None:
        sync = DeviceSync(store, SyncSettings(DEVICE, FLEET, STATION), fleet.broker_settings(DEVICE, port),
                          fleet.verifier)
        await sync.start()
        try:
            for photo_id, original, _, _, _ in photos[:distinct]:
                await sync.upload_photo(f"O{photo_id}", original)
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while sync.counters.photos_uploaded < distinct:
                    await asyncio.sleep(0.2)
        finally:
            await sync.stop()
    before = proxy.bytes_up + proxy.bytes_down
    try:
        asyncio.run(upload())
    finally:
        store.close()
    return proxy.bytes_up + proxy.bytes_down - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", type=int, default=4, help="distinct camera photos (re-encoding is slow)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="flexedge-wire-"))
    fleet = LocalFleet.create(workdir / "pki", FLEET, {DEVICE: STATION, LIVE_DEVICE: STATION})
    broker = MosquittoBroker(workdir / "broker", extra_config=fleet.mosquitto_config()).start()
    cloud = CloudThread(lambda: CloudPeer(CloudSettings(FLEET, workdir / "cloud.db"),
                                          fleet.broker_settings(CLOUD_IDENTITY, broker.port), fleet.signer))
    proxy = TcpProxy(broker.port).start()
    try:
        photos = make_photos(workdir, STOPS, args.distinct)
        store = EventStore(workdir / "van.db")
        try:
            events = asyncio.run(record_day(store, photos))
            bodies = [json.dumps(doc).encode() for doc in store.events(limit=events)]
            cloud.start()
            events_wire, photos_wire = asyncio.run(drain_and_upload(store, fleet, proxy.port, proxy, photos))
        finally:
            store.close()
        stored = cloud.peer.counters
        ok_photos = stored["photos.ok"]
        live_store = EventStore(workdir / "van-live.db")
        try:
            live_events, live_wire = asyncio.run(live_day(live_store, fleet, proxy.port, proxy, photos))
        finally:
            live_store.close()
        original_wire = photo_wire_baseline(fleet, proxy.port, proxy, workdir, photos, args.distinct)
        cloud.stop()  # the naive baseline's messages have no one to ack them: transport only
        before = proxy.bytes_up + proxy.bytes_down
        naive_publish(fleet, proxy.port, FleetTopics(FLEET).device(DEVICE).events, bodies)
        naive_wire = proxy.bytes_up + proxy.bytes_down - before
    finally:
        proxy.stop()
        broker.stop()
    copy_mean = sum(p[3].stat().st_size for p in photos) / len(photos)
    original_mean = sum(p[1].stat().st_size for p in photos) / len(photos)
    print(json.dumps({"bench": "wire_cost", "phase": "events", "events": events,
                      "figure": "wire_bytes_per_event", "baseline": "baseline_wire_bytes_per_event",
                      "wire_bytes_per_event": round(events_wire / events, 1),
                      "baseline_wire_bytes_per_event": round(naive_wire / events, 1),
                      "wire_mb": round(events_wire / 1e6, 3), "baseline_wire_mb": round(naive_wire / 1e6, 3),
                      "ratio_smaller": round(naive_wire / events_wire, 2)}))
    print(json.dumps({"bench": "wire_cost", "phase": "events_live", "events": live_events,
                      "figure": "wire_bytes_per_event", "baseline": "baseline_wire_bytes_per_event",
                      "wire_bytes_per_event": round(live_wire / live_events, 1),
                      "baseline_wire_bytes_per_event": round(naive_wire / events, 1),
                      "ratio_smaller": round(naive_wire / events / (live_wire / live_events), 2)}))
    print(json.dumps({"bench": "wire_cost", "phase": "photos", "photos": len(photos), "photos_ok_in_cloud": ok_photos,
                      "figure": "wire_bytes_per_photo", "baseline": "baseline_original_wire_bytes_per_photo",
                      "wire_bytes_per_photo": round(photos_wire / len(photos)),
                      "baseline_original_wire_bytes_per_photo": round(original_wire / args.distinct),
                      "upload_copy_bytes_mean": round(copy_mean), "original_bytes_mean": round(original_mean),
                      "ratio_smaller": round(original_wire / args.distinct / (photos_wire / len(photos)), 2)}))
    print(json.dumps({"bench": "wire_cost", "phase": "day", "figure": "wire_mb", "baseline": "baseline_wire_mb",
                      "wire_mb": round((events_wire + photos_wire) / 1e6, 2),
                      "baseline_wire_mb": round((naive_wire + original_wire / args.distinct * len(photos)) / 1e6, 2),
                      "ratio_smaller": round((naive_wire + original_wire / args.distinct * len(photos))
                                             / (events_wire + photos_wire), 2)}))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
