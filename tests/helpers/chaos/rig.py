"""The chaos rig: a real TLS mosquitto with the fleet ACL, the reference cloud, and the device side as two
real processes on one store — a producer (steady event load) and `flexedge sync` (the cloud link) — plus an
optional loopback proxy between the device and the broker."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from cloud_sync.cloud import CloudDb, CloudPeer, CloudSettings, CloudThread
from cloud_sync.connection import Backoff
from cloud_sync.messages import BatchAck
from device.paths import store_path
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from tests.helpers.chaos.proxy import TcpProxy
from tests.helpers.fleet import FLEET, STATION, FleetPki

REPO = Path(__file__).resolve().parents[3]
DEVICE = "van-a"
T = TypeVar("T")
FAST_BACKOFF = Backoff(initial_s=0.05, maximum_s=0.5)


class AckDroppingPeer(CloudPeer):
    """The reference cloud, except every other ack never leaves it: the batch is stored, the device never hears."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._acks = 0

    async def _publish_ack(self, client: object, device: str, ack: BatchAck) -> None:
        self._acks += 1
        if self._acks % 2:
            self.counters["acks_dropped"] += 1
            return
        await super()._publish_ack(client, device, ack)  # type: ignore[arg-type]


@dataclass
class Tally:
    """What a scenario produced and what the cloud holds, from the cloud's own rows."""

    produced: int
    stored: int
    lost: int
    duplicates: int
    chain_ok: bool
    cloud_duplicates_discarded: int
    clock_flags: int = 0  # timestamps the cloud distrusts (clock steps, ts ahead of it)


@dataclass
class Rig:
    work: Path
    fleet: FleetPki
    drop_acks: bool = False
    proxied: bool = False
    keepalive_s: int = 5
    batch_max_events: int = 100
    data_dir: Path | None = None
    produced: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = MosquittoBroker(self.work / "mosquitto", extra_config=self.fleet.mosquitto_config())
        self.data_dir = self.data_dir or self.work / "data"
        self.cloud_db = self.work / "cloud.db"
        self.proxy: TcpProxy | None = None
        self.cloud: CloudThread | None = None
        self.sync_proc: subprocess.Popen | None = None
        self.producer: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self.producer_refusals = 0
        self._logs: list[BinaryIO] = []
        self.producer_thinned = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Rig:
        self.broker.start()
        if self.proxied:
            self.proxy = TcpProxy(self.broker.port).start()
        peer_class = AckDroppingPeer if self.drop_acks else CloudPeer
        settings = CloudSettings(FLEET, self.cloud_db, ingest_workers=1, backoff=FAST_BACKOFF)
        broker = self.fleet.broker_settings("cloud", self.broker.port)
        self.cloud = CloudThread(lambda: peer_class(settings, broker, self.fleet.signer)).start()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        EventStore(self.store_path).close()  # created before two processes open it
        return self

    def close(self) -> None:
        for proc in (self.producer, self.sync_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        if self.producer is not None and self.producer.stdout is not None:
            self.producer.stdout.close()
        for handle in self._logs:
            handle.close()
        if self.cloud is not None:
            self.cloud.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.broker.stop()

    @property
    def store_path(self) -> Path:
        return store_path(self.data_dir)

    @property
    def device_port(self) -> int:
        return self.proxy.port if self.proxy is not None else self.broker.port

    # --- device processes --------------------------------------------------------------------------

    def start_producer(self, events: int, rate: float, *extra: str) -> None:
        self.producer = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.chaos.producer", str(self.store_path), str(events), str(rate),
             *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=self._log_file("producer.log"))
        producer = self.producer

        def read() -> None:
            assert producer.stdout is not None
            for line in producer.stdout:
                if line.endswith(b"\n"):
                    self.produced.append(line.decode().strip())
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_producer(self, timeout_s: float) -> None:
        assert self.producer is not None
        self.producer.wait(timeout_s)
        assert self._reader is not None and self.producer.stdout is not None
        self._reader.join(10)
        self.producer.stdout.close()  # read to the end; a scenario may start another producer
        err = (self.work / "producer.log").read_bytes()
        self.producer_refusals = err.count(b"FULL\n")
        self.producer_thinned = err.count(b"THINNED\n")
        if self.producer.returncode != 0:
            raise RuntimeError(f"producer failed: {err[-2000:].decode(errors='replace')}")

    def config_file(self) -> Path:
        issued = self.fleet.pki.client(DEVICE)
        path = self.work / "flexedge.toml"
        path.write_text(f"""
data_dir = "{self.data_dir}"
[device]
id = "{DEVICE}"
fleet = "{FLEET}"
station = "{STATION}"
[mqtt]
host = "127.0.0.1"
port = {self.device_port}
ca_file = "{self.fleet.pki.ca_cert}"
cert_file = "{issued.cert_path}"
key_file = "{issued.key_path}"
keepalive_s = {self.keepalive_s}
[sync]
cloud_key_file = "{self.fleet.pki.signing_pub}"
batch_max_events = {self.batch_max_events}
ack_timeout_s = 2.0
track_linger_s = 1.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
[logging]
level = "WARNING"
""")
        return path

    def start_sync(self) -> None:
        env = {**os.environ, "FLEXEDGE_CONFIG": str(self.config_file())}
        self.sync_proc = subprocess.Popen([sys.executable, "-m", "device.cli", "sync"], env=env, cwd=REPO,
                                          stdout=subprocess.DEVNULL, stderr=self._log_file("sync.log"))

    def _log_file(self, name: str) -> BinaryIO:
        handle = open(self.work / name, "ab")  # noqa: SIM115 (closed with the rig)
        self._logs.append(handle)
        return handle

    def kill_sync(self) -> None:
        assert self.sync_proc is not None
        self.sync_proc.send_signal(signal.SIGKILL)
        self.sync_proc.wait(10)

    def stop_sync(self) -> int:
        assert self.sync_proc is not None
        self.sync_proc.terminate()
        return self.sync_proc.wait(15)

    # --- observing ---------------------------------------------------------------------------------

    def cloud_count(self) -> int:
        db = CloudDb(self.cloud_db)
        try:
            return db.event_count(DEVICE)
        finally:
            db.close()

    def wait_cloud_has_all(self, timeout_s: float) -> float:
        """Seconds until the cloud holds every produced event (or the timeout)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.cloud_count() >= len(self.produced):
                break
            time.sleep(0.1)
        return time.monotonic() - started

    def tally(self) -> Tally:
        db = CloudDb(self.cloud_db)
        try:
            rows = list(db.event_rows(DEVICE))
            flags = db.flags(DEVICE)
            clock_flags = len(db.clock_flags(DEVICE))
        finally:
            db.close()
        ids = [event_id for _, event_id, _ in rows]
        produced = set(self.produced)
        seqs = [seq for seq, _, _ in rows]
        chain_ok = (seqs == list(range(1, len(rows) + 1)) and {c for _, _, c in rows} <= {"ok"} and not flags)
        counters = self.cloud.peer.counters if self.cloud and self.cloud.peer else {}
        return Tally(produced=len(produced), stored=len(produced & set(ids)), lost=len(produced - set(ids)),
                     duplicates=len(ids) - len(set(ids)), chain_ok=chain_ok,
                     cloud_duplicates_discarded=counters.get("events_duplicate", 0), clock_flags=clock_flags)

    def _read_cloud(self, read: Callable[[CloudDb], T]) -> T:
        db = CloudDb(self.cloud_db)
        try:
            return read(db)
        finally:
            db.close()

    def clock_flags(self) -> list[dict]:
        """The cloud's flags on the device's timestamps (seq, kind, jump_s, detail), in seq order."""
        return self._read_cloud(lambda db: db.clock_flags(DEVICE))

    def arrivals(self) -> list[tuple[int, str, str, float]]:
        """(seq, type, batch id, received at) in the order the cloud stored them."""
        return self._read_cloud(lambda db: db.arrivals(DEVICE))

    def cloud_ingest_sessions(self) -> int:
        """How many times the cloud's ingest worker has (re)subscribed."""
        return self.cloud.peer.counters["ingest_sessions"] if self.cloud and self.cloud.peer else 0

    def cloud_photos(self) -> list[dict]:
        """The cloud's photo rows of the device (photo id, sha256 and the event's, status, path, bytes...)."""
        return self._read_cloud(lambda db: db.photo_rows(DEVICE))

    def photo_event_arrivals(self) -> dict[str, float]:
        """photo id -> when the cloud stored the photo.checked event that records it."""
        return dict(self._cloud_rows("SELECT json_extract(body, '$.data.photo_id'), received_at FROM events "
                                     "WHERE device = ? AND type = 'photo.checked'", (DEVICE,)))

    def _cloud_rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def _device_rows(self, sql: str) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def device_partial_uploads(self) -> int:
        """Photos part way up: some chunks acknowledged, not all."""
        return self._device_rows("SELECT COUNT(*) FROM photos WHERE uploaded_at IS NULL "
                                 "AND chunks_done IS NOT NULL AND chunks_done != '[]'")[0][0]

    def device_photo_ids(self) -> list[str]:
        """Photos the device committed (queued for upload)."""
        return [i for (i,) in self._device_rows("SELECT photo_id FROM photos WHERE queued_at IS NOT NULL")]

    def store_intact(self) -> bool:
        with EventStore(self.store_path) as store:
            return store.integrity_check() == "ok" and store.verify_chain().ok
