"""Outbox drain to the cloud with end-to-end acks vs a raw paho QoS 1 publish loop, same events, same run.

A real mosquitto with mutual TLS, the reference cloud as a separate process (`flexedge cloud`, SQLite,
chain-checked ingest), and DeviceSync draining an N-event backlog (default 100,000) until every event is acked
by the cloud. The baseline publishes the same event bodies one message each with QoS 1 through paho (TLS, same
broker, same in-flight window) and waits for every PUBACK: transport only, nothing stored or acked end to end.

    python bench/sync_throughput.py [--events N] [--compression zstd|none]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from cloud_sync.connection import BrokerSettings  # noqa: E402
from cloud_sync.device_sync import DeviceSync  # noqa: E402
from cloud_sync.messages import Compression  # noqa: E402
from cloud_sync.signing import Verifier  # noqa: E402
from cloud_sync.sync_settings import SyncSettings  # noqa: E402
from cloud_sync.topics import FleetTopics  # noqa: E402
from device.contract.domain import Event, EventType  # noqa: E402
from device.contract.position import Position  # noqa: E402
from device.store import EventStore  # noqa: E402
from device.testbench.broker import MosquittoBroker  # noqa: E402
from device.testbench.fleet import LocalFleet  # noqa: E402

FLEET, DEVICE, STATION = "bench", "van-bench", "DXX1"
INFLIGHT = 100  # paho's in-flight window for both sides
REPO = Path(__file__).resolve().parent.parent


def make_events(n: int) -> list[Event]:
    """Two GPS breadcrumbs (with a fix) per scan, as a van produces them."""
    out = []
    for i in range(n):
        if i % 3:
            fix = Position.from_dict({"lat": 47.61 + i * 1e-6, "lon": -122.34, "mode": 3, "speed": 8.2,
                                      "track": 91.0, "eph": 4.0})
            out.append(Event(EventType.GPS_FIX, {}, fix=fix, block="B-1"))
        else:
            out.append(Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{i:09d}", "result": "ok"}, block="B-1"))
    return out


def raw_publish(settings: BrokerSettings, topic: str, bodies: list[bytes]) -> float:
    done = threading.Event()
    acked = [0]
    # paho's message ids are 16 bit: more than 65535 messages queued at once would reuse ids and lose messages.
    outstanding = threading.Semaphore(4 * INFLIGHT)

    def on_publish(client: paho.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        acked[0] += 1
        outstanding.release()
        if acked[0] == len(bodies):
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{DEVICE}-raw", protocol=paho.MQTTv5)
    client.tls_set_context(settings.tls_context())
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(settings.host, settings.port)
    client.loop_start()
    started = time.perf_counter()
    for body in bodies:
        outstanding.acquire()
        client.publish(topic, body, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"raw loop: only {acked[0]} of {len(bodies)} PUBACKs")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(bodies) / elapsed


async def drain(store: EventStore, settings: SyncSettings, broker: BrokerSettings, verifier: Verifier,
                total: int) -> tuple[float, dict]:
    sync = DeviceSync(store, settings, broker, verifier)
    started = time.perf_counter()
    await sync.start()
    await sync.wait_drained(900)
    elapsed = time.perf_counter() - started
    await sync.stop()
    return total / elapsed, sync.counters.snapshot()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--compression", choices=[c.value for c in Compression], default="zstd")
    parser.add_argument("--batch-events", type=int, default=SyncSettings.batch_max_events)
    parser.add_argument("--batch-kib", type=int, default=SyncSettings.batch_max_bytes // 1024)
    parser.add_argument("--inflight", type=int, default=SyncSettings.inflight_batches)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flexedge-bench-sync-") as tmp:
        work = Path(tmp)
        fleet = LocalFleet.create(work / "pki", FLEET, {DEVICE: STATION})
        broker = MosquittoBroker(work / "mosquitto", extra_config=fleet.mosquitto_config())
        broker.start()
        settings = fleet.broker_settings(DEVICE, broker.port)
        cloud = None
        try:
            store = EventStore(work / "device.db")
            events = make_events(args.events)
            for i in range(0, len(events), 5000):
                store.append_many(events[i:i + 5000])
            bodies = [e.body.encode() for e in store.pending(limit=args.events, max_bytes=1 << 40)]
            # The baseline first, while nobody subscribes: the broker only acks.
            raw_rate = raw_publish(settings, FleetTopics(FLEET).device(DEVICE).events, bodies)
            cloud = subprocess.Popen(
                [sys.executable, "-m", "device.cli", "cloud", "--db", str(work / "cloud.db"), "--fleet", FLEET,
                 "--broker", f"127.0.0.1:{broker.port}", "--pki", str(work / "pki"), "--log-level", "WARNING"],
                cwd=REPO, stdout=subprocess.PIPE, env={**os.environ, "FLEXEDGE_DATA_DIR": str(work / "cloud-data")})
            assert cloud.stdout is not None
            ready = cloud.stdout.readline()
            if b"ready" not in ready:
                raise RuntimeError(f"cloud did not start: {ready!r}")
            sync_settings = SyncSettings(DEVICE, FLEET, STATION, compression=Compression(args.compression),
                                         batch_max_events=args.batch_events, batch_max_bytes=args.batch_kib * 1024,
                                         inflight_batches=args.inflight)
            rate, counters = asyncio.run(drain(store, sync_settings, settings,
                                               fleet.verifier, args.events))
            depth = store.stats().depth
            store.close()
        finally:
            if cloud is not None:
                cloud.terminate()
                cloud.wait(10)
            broker.stop()
        print(json.dumps({
            "bench": "sync_throughput", "events": args.events, "compression": args.compression,
            "events_per_s": round(rate), "raw_events_per_s": round(raw_rate), "ratio": round(rate / raw_rate, 2),
            "batch_events": args.batch_events, "inflight_batches": args.inflight,
            "batches": counters["batches_sent"], "events_acked": counters["events_acked"],
            "outbox_left": depth,
        }))


if __name__ == "__main__":
    main()
