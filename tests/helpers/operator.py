"""A known day of two vans at two stations, stored by the real cloud ingest (device EventStore -> outbox batch
-> CloudDb.ingest), for the operator page's tests: blocks granted, stop events with proof, a photo."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from cloud_sync.cloud import CloudDb
from cloud_sync.cloud.presence import status_record
from cloud_sync.messages import DeviceStatus, EventBatch, PhotoChunk, Presence
from device.contract.domain import Block, Event, EventType, Package, Route, Stop, iso_utc
from device.contract.position import Position
from device.store import EventStore
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import OTHER_STATION, STATION

DAY = datetime(2026, 11, 25, tzinfo=timezone.utc)
DAY_TEXT = "2026-11-25"
PENDING_S = 300.0  # van-a's oldest unacked event had waited this long when its status was made...
PENDING_RECEIVED_AGO_S = 20.0  # ...which the cloud received this long ago
PHOTO = b"\xff\xd8\xff\xe0 not really a jpeg, but bytes the page serves back \xff\xd9"


@dataclass(frozen=True)
class Recorded:
    """What a van sent: the events in order (device, type, ts, block, stop, data) for hand computation."""

    device: str
    events: list[Event]


def at(hours: float) -> str:
    return iso_utc(DAY + timedelta(hours=hours))


def fix(lat: float, lon: float) -> Position:
    return Position.from_dict({"time": "2026-11-25T08:00:00.000Z", "mode": 3, "lat": lat, "lon": lon, "eph": 4.0})


def block_a() -> tuple[Block, Route]:
    end = DAY + timedelta(hours=9)
    route = Route("B-A", 1, (
        Stop("S1", "12A Pine St", "12A", 47.6100, -122.3400, (Package("P1"),), window_end=DAY + timedelta(hours=8.5)),
        Stop("S2", "40 Cedar Ave", "40", 47.6135, -122.3365, (Package("P2"), Package("P3")),
             window_end=DAY + timedelta(hours=8.4)),
        Stop("S3", "7 Birch Ln", "7", 47.6160, -122.3420, (Package("P4"),), window_end=end)))
    return Block("B-A", STATION, DAY + timedelta(hours=7), end, pay_cents=10000), route


def block_b() -> tuple[Block, Route]:
    route = Route("B-B", 1, (Stop("T1", "1 Main St", "1", 47.5000, -122.3000, (Package("Q1"),),
                                  window_end=DAY + timedelta(hours=11)),))
    return Block("B-B", OTHER_STATION, DAY + timedelta(hours=9), DAY + timedelta(hours=12)), route


def van_a_day() -> list[Event]:
    """Three stops: S1 delivered on time after one retake; S2 late, one package refused; S3 no access."""
    def ev(t: EventType, hours: float, stop: str | None, data: dict[str, Any], where: Position | None = None) -> Event:
        return Event(t, data, block="B-A", stop=stop, fix=where, ts=at(hours), mono=1000.0 + hours * 3600)
    s1 = fix(47.6100, -122.3400)
    return [
        Event(EventType.GPS_FIX, {}, block="B-A", fix=fix(47.6050, -122.3400), ts=at(7.9), mono=1000 + 7.9 * 3600),
        ev(EventType.STOP_ARRIVED, 8.0, "S1", {"in_order": True, "packages": ["P1"]}, s1),
        ev(EventType.PHOTO_CHECKED, 8.02, "S1", {"verdict": "mismatch", "read": "19", "expected": "12A",
                                                "confidence": 0.7, "photo_id": "ph-1", "sha256": "0" * 64,
                                                "packages": ["P1"], "box": [10, 10, 40, 20]}, s1),
        ev(EventType.PHOTO_CHECKED, 8.05, "S1", {"verdict": "match", "read": "12A", "expected": "12A",
                                                "confidence": 0.93, "photo_id": "ph-2",
                                                "sha256": hashlib.sha256(PHOTO).hexdigest(),
                                                "packages": ["P1"], "box": [12, 8, 60, 30]}, s1),
        ev(EventType.DELIVERY_PROOF, 8.05, "S1", {"packages": ["P1"], "photo_id": "ph-2", "signatures": {}}, s1),
        ev(EventType.STOP_COMPLETED, 8.1, "S1", {"outcome": "delivered", "delivered": 1, "packages": 1,
                                                "on_time": True}),
        ev(EventType.STOP_ARRIVED, 8.3, "S2", {"in_order": True, "packages": ["P2", "P3"]}),
        ev(EventType.PHOTO_CHECKED, 8.35, "S2", {"verdict": "match", "read": "40", "expected": "40",
                                                "confidence": 0.9, "photo_id": "ph-3", "sha256": "1" * 64,
                                                "packages": ["P2"], "box": None}),
        ev(EventType.DELIVERY_EXCEPTION, 8.45, "S2", {"reason": "refused", "packages": ["P3"]}),
        ev(EventType.STOP_COMPLETED, 8.5, "S2", {"outcome": "partial", "delivered": 1, "packages": 2,
                                                "on_time": False}),
        ev(EventType.STOP_ARRIVED, 8.7, "S3", {"in_order": True, "packages": ["P4"]}),
        ev(EventType.DELIVERY_EXCEPTION, 8.75, "S3", {"reason": "no_access", "packages": ["P4"]}),
        ev(EventType.STOP_COMPLETED, 9.0, "S3", {"outcome": "exception", "delivered": 0, "packages": 1,
                                                "on_time": None}),
        # The next day: never counted in this day's figures.
        Event(EventType.STOP_COMPLETED, {"outcome": "delivered", "delivered": 1, "packages": 1, "on_time": True},
              block="B-A2", stop="S9", ts=at(24 + 8.0), mono=1000.0 + 32 * 3600),
    ]


def van_b_day() -> list[Event]:
    def ev(t: EventType, hours: float, data: dict[str, Any]) -> Event:
        return Event(t, data, block="B-B", stop="T1", ts=at(hours), mono=500.0 + hours * 3600)
    return [
        ev(EventType.STOP_ARRIVED, 10.0, {"in_order": True, "packages": ["Q1"]}),
        ev(EventType.PHOTO_CHECKED, 10.1, {"verdict": "match", "read": "1", "expected": "1", "confidence": 0.8,
                                          "photo_id": "pb-1", "sha256": "2" * 64, "packages": ["Q1"], "box": None}),
        ev(EventType.STOP_COMPLETED, 10.2, {"outcome": "delivered", "delivered": 1, "packages": 1,
                                           "on_time": True}),
    ]


def ingest(db: CloudDb, directory: Path, device: str, events: list[Event]) -> None:
    """Through a real device store: seqs and the hash chain as a van makes them."""
    with EventStore(directory / f"{device}.db") as store:
        store.append_many(events)
        stored = store.pending(limit=10_000, max_bytes=1 << 30)
    batch = EventBatch(f"batch-{device}", device, 0, 1, tuple(orjson.loads(e.body) | {"hash": e.hash}
                                                              for e in stored))
    db.ingest(device, batch)


def known_day(directory: Path, target: CloudTarget | None = None) -> Path:
    """The cloud database of the known day: both blocks granted, both vans' events, van-a's matching photo,
    van-a online with a position and a backlog, van-b offline. In `directory / cloud.db`, or filled into `target`
    (either engine; its `db` is then what the page opens)."""
    path = directory / "cloud.db"
    db = CloudDb(path) if target is None else target.open()
    try:
        for (block, route), device in ((block_a(), "van-a"), (block_b(), "van-b")):
            db.add_block(block, route)
            db.grant(block.id, device, block.station, max_open=1)
        ingest(db, directory, "van-a", van_a_day())
        ingest(db, directory, "van-b", van_b_day())
        db.store_photo_chunk("van-a", PhotoChunk("c1", "ph-2", 0, 1, hashlib.sha256(PHOTO).hexdigest(), PHOTO))
        now = time.time()
        db.record_status("van-a", status_record(DeviceStatus(
            Presence.ONLINE, "van-a", "1.0", outbox_depth=3, last_ack_seq=12, oldest_pending_s=PENDING_S,
            position={"lat": 47.611, "lon": -122.339}), None, now - PENDING_RECEIVED_AGO_S))
        db.record_status("van-b", status_record(DeviceStatus(Presence.OFFLINE, "van-b", "1.0", ts=at(10.3)), None, now))
    finally:
        db.close()
    return path
