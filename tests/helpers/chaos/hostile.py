"""A hostile van for the chaos rig: it holds a real device certificate and, while the honest van delivers,
publishes garbage on every uplink channel, leaves retained junk for the cloud's next start, subscribes to the
cloud's shares and to everything, and connects with other clients' ids. It counts what it sent and notes
anything the broker let through."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import orjson

from cloud_sync.connection import BrokerSettings
from cloud_sync.messages import PhotoChunk
from cloud_sync.topics import FleetTopics
from tests.helpers.fleet import FLEET, FleetPki
from tests.helpers.sync_harness import RawClient

HOSTILE = "van-b"
GARBAGE_INTERVAL_S = 0.01


def retained_junk(topics: FleetTopics, device: str) -> list[tuple[str, bytes]]:
    """Payloads that crashed the cloud before issue 15, on the device's own topics (published retained)."""
    own = topics.device(device)
    chunk = PhotoChunk("c", "$x", 0, 2, "0" * 64, b"x").to_payload()
    event = {"id": "junk", "type": "scan", "seq": 2**63, "hash": "0" * 64}
    batch = {"batch_id": "junk", "device": device, "lane": 0, "floor_seq": 0, "count": 1, "events": [event]}
    return [(f"{own.base}/photo/P-1", chunk), (own.events, orjson.dumps(batch)),
            (own.claim, b"[]"), (own.status, orjson.dumps({"state": "online", "device": device, "position": 7}))]


@dataclass
class HostileVan:
    fleet: FleetPki
    port: int
    victim: str  # the honest device whose traffic and client id it goes after
    seed: int = 9
    sent: int = 0  # messages that are junk by construction: each must be a counted reject
    breaches: list[str] = field(default_factory=list)  # what the broker should not have allowed
    heard: list[str] = field(default_factory=list)  # topics of messages it received (it should receive none)
    _stop: threading.Event = field(default_factory=threading.Event)
    _go: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _sending: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.topics = FleetTopics(FLEET)
        self.own = self.topics.device(HOSTILE)

    def settings(self) -> BrokerSettings:
        return self.fleet.broker_settings(HOSTILE, self.port)

    def leave_retained_junk(self) -> None:
        with RawClient(self.settings(), HOSTILE) as van:
            for topic, payload in retained_junk(self.topics, HOSTILE):
                if not van.publish(topic, payload, retain=True).is_failure:
                    self.sent += 1

    def try_takeovers(self) -> None:
        """Connect with the victim's and the cloud's client ids (the broker must give it its own: CN)."""
        for stolen in (self.victim, "cloud-ingest-0", "cloud-dispatch"):
            with RawClient(self.settings(), stolen) as van:
                van.subscribe(self.own.ack)  # a full round trip: the connection was really made

    def start(self) -> None:
        """One connection (the broker allows one per certificate): the subscriptions that must be refused,
        then garbage on every uplink channel until stop()."""
        self._go.set()
        self._thread = threading.Thread(target=self._run, name="hostile-van", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            self.breaches.append("the hostile van could not connect")

    def _run(self) -> None:
        rng = random.Random(self.seed)
        with RawClient(self.settings(), HOSTILE) as van:
            for topic in (self.topics.shared("ingest", self.topics.all_devices("events")),
                          self.topics.shared("dispatch", self.topics.all_devices("claim")),
                          self.topics.shared("ingest", self.topics.all_devices("photo/+")),
                          "#", f"{self.topics.root}/#", self.topics.device(self.victim).ack):
                if not all(code.is_failure for code in van.subscribe(topic)):
                    self.breaches.append(f"subscription {topic} granted")
            self._ready.set()
            channels = (self.own.events, self.own.claim, self.own.status, f"{self.own.base}/photo/P-1")
            while not self._stop.is_set():
                self._go.wait(1.0)
                with self._sending:
                    if self._go.is_set() and not self._stop.is_set():
                        payload = b"\xff" + rng.randbytes(rng.randrange(0, 200))  # never JSON: always a reject
                        if not van.publish(rng.choice(channels), payload).is_failure:
                            self.sent += 1
                time.sleep(GARBAGE_INTERVAL_S)
            self.heard = [topic for topic, _ in van.messages]

    def pause(self) -> None:
        """No garbage until resume() (while the cloud restarts, nobody would be there to count it)."""
        self._go.clear()
        with self._sending:
            pass

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        if self._thread is not None:
            self._thread.join(60)
