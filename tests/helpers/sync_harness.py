"""Helpers for the cloud_sync tests: an in-process cloud on the TLS broker, device syncs, a raw MQTT client."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sync.cloud import CloudPeer, CloudSettings, CloudThread
from cloud_sync.cloud.db import default_photo_dir
from cloud_sync.connection import Backoff, BrokerSettings
from cloud_sync.device_sync import DeviceSync
from cloud_sync.sync_settings import SyncSettings
from device.contract.domain import Event, EventType
from device.store import EventStore
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import FLEET, STATION, FleetPki

FAST_BACKOFF = Backoff(initial_s=0.05, maximum_s=0.5)


def sync_settings(device: str, **overrides: Any) -> SyncSettings:
    base: dict[str, Any] = {"ack_timeout_s": 3.0, "backoff": FAST_BACKOFF, "claim_timeout_s": 20.0}
    base.update(overrides)
    return SyncSettings(device, FLEET, STATION, **base)


def van_sync(fleet: FleetPki, store: EventStore, port: int, device: str = "van-a", *,
             broker: BrokerSettings | None = None, **overrides: Any) -> DeviceSync:
    """A device's DeviceSync over its store: the tests' settings with `overrides`, its certificate on the TLS
    broker at `port` (or `broker`), the fleet's cloud key."""
    return DeviceSync(store, sync_settings(device, **overrides), broker or fleet.broker_settings(device, port),
                      fleet.verifier)


@contextlib.asynccontextmanager
async def started(sync: DeviceSync) -> AsyncIterator[DeviceSync]:
    """The sync running for the block; stopped cleanly (its retained 'stopped' status) however the block ends."""
    await sync.start()
    try:
        yield sync
    finally:
        await sync.stop()


def as_target(db: Path | CloudTarget) -> CloudTarget:
    """A test's cloud database: a CloudTarget as it is, a path as a SQLite file with its photos beside it."""
    return db if isinstance(db, CloudTarget) else CloudTarget("sqlite", db, default_photo_dir(db))


def start_cloud(fleet: FleetPki, port: int, db: Path | CloudTarget, workers: int = 2, **overrides: Any
                ) -> CloudThread:
    target = as_target(db)
    settings = CloudSettings(FLEET, target.db, ingest_workers=workers, backoff=FAST_BACKOFF, stations=fleet.stations,
                             **({"photo_dir": target.photo_dir} | overrides))
    return CloudThread(lambda: CloudPeer(settings, fleet.cloud_credentials(port), fleet.signer)).start()


def mixed_events(n: int, start: int = 0) -> list[Event]:
    """Two GPS breadcrumbs for every scan: both lanes are exercised."""
    return [Event(EventType.PACKAGE_SCANNED if i % 3 == 0 else EventType.GPS_FIX, {"n": i}) for i in
            range(start, start + n)]


def assert_cloud_holds_exactly(db_path: Path | CloudTarget, device: str, expected_ids: list[str]) -> None:
    """Each event once, seqs 1..N without a hole, every link of the hash chain verified, nothing flagged."""
    db = as_target(db_path).open()
    try:
        rows = list(db.event_rows(device))
        ids = [event_id for _, event_id, _ in rows]
        assert len(ids) == len(set(ids))
        assert sorted(ids) == sorted(expected_ids), (len(ids), len(expected_ids))
        assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
        assert {chain for _, _, chain in rows} == {"ok"}
        assert db.flags(device) == []
    finally:
        db.close()


@dataclass
class RawClient:
    """A plain paho client on its own thread, for what a test does as an outsider (or as a forger)."""

    settings: BrokerSettings
    client_id: str
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        self.client.tls_set_context(self.settings.tls_context())
        self.client.on_message = lambda c, u, m: self._add(self.messages, (m.topic, m.payload))
        self.client.on_publish = lambda c, u, mid, rc, p: self._put(self.pubacks, mid, rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._put(self.subacks, mid, rcs)

    def _add(self, target: list, item: Any) -> None:
        with self._lock:
            target.append(item)

    def _put(self, target: dict, key: Any, value: Any) -> None:
        with self._lock:
            target[key] = value

    def __enter__(self) -> RawClient:
        self.client.connect(self.settings.host, self.settings.port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 10, "raw client did not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=1)
        wait_until(lambda: mid in self.subacks, 10, "no SUBACK")
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.pubacks, 30, "no PUBACK")
        return self.pubacks[info.mid]


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.02)


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.02)


async def drain_with_faults(fleet: FleetPki, store: EventStore, port: int, stored: Callable[[], int], every: int,
                            fault: Callable[[int], Awaitable[None]], rounds: int = 5) -> None:
    """van-a drains `store` into the cloud (batches of 50, acks awaited 2 s) while `fault(k)` strikes each time
    another `every` of its events are stored (`stored()`), `rounds` times; returns once every event is acked."""
    async with started(van_sync(fleet, store, port, batch_max_events=50, ack_timeout_s=2.0)) as sync:
        for k in range(rounds):
            await wait_for(lambda k=k: stored() >= (k + 1) * every, 60, f"{(k + 1) * every} stored")
            await fault(k)
        await sync.wait_drained(120)


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
