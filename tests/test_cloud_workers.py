"""Many cloud workers on one database, each a process of its own: claims granted exactly once, one device's
batches stored by different workers in any order and verified when the gaps close, on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier
from pathlib import Path

import aiohttp
import orjson
import pytest

from cloud_sync.cloud import CloudDb, FlagKind
from cloud_sync.cloud.schema import MIGRATIONS
from cloud_sync.cloud.web.accounts import Accounts, Role
from cloud_sync.messages import ClaimStatus, EventBatch
from device.contract.domain import Block, Event, EventType, Package, Route, Stop
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import CLI_CLOUD_PREFIX, FLEET, FleetPki
from tests.helpers.sync_harness import (
    assert_cloud_holds_exactly,
    drain_with_faults,
    mixed_events,
    wait_for,
    wait_until,
)
from tests.test_operator_api import PASSWORD

REPO = Path(__file__).resolve().parent.parent

WORKERS = 4
BLOCKS = 6
DEVICES_PER_WORKER = 3
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, as separate machines would be


def _claimer(target: CloudTarget, worker: int, barrier: Barrier, out: multiprocessing.Queue) -> None:
    db = target.open()
    try:
        barrier.wait(30)
        for n in range(BLOCKS):
            for d in range(DEVICES_PER_WORKER):
                device = f"van-{worker}-{d}"
                status, _, _ = db.grant(f"B{n}", device, "DXX1", max_open=BLOCKS)
                out.put((f"B{n}", device, status.value))
    finally:
        db.close()


def _ingester(target: CloudTarget, batches: list[bytes], barrier: Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait(30)
    db = target.open()  # all at once, on a fresh database: the migrations race too
    try:
        for payload in batches:
            batch = EventBatch.from_payload(payload)
            out.put(db.ingest(batch.device, batch).flagged)
    finally:
        db.close()


def _run(target: object, args: list[tuple[object, ...]]) -> list[object]:
    out: multiprocessing.Queue = SPAWN.Queue()
    barrier = SPAWN.Barrier(len(args))
    procs = [SPAWN.Process(target=target, args=(*a, barrier, out)) for a in args]  # type: ignore[arg-type]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"worker process ended with {p.exitcode}"
    results = []
    while not out.empty():
        results.append(out.get(timeout=5))
    return results


def test_claims_granted_once_by_racing_worker_processes(cloud_target: CloudTarget) -> None:
    """Four processes, twelve devices, every device claims every block at the same moment: one winner each."""
    start = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    setup = cloud_target.open()
    try:
        for n in range(BLOCKS):
            route = Route(f"B{n}", 1, (Stop("S1", "1 Main St", "1", 47.6, -122.3, (Package("P1"),)),))
            setup.add_block(Block(f"B{n}", "DXX1", start, start + timedelta(hours=3)), route)
        results = _run(_claimer, [(cloud_target, w) for w in range(WORKERS)])
        assert len(results) == WORKERS * DEVICES_PER_WORKER * BLOCKS
        winners = setup.winners()
        for n in range(BLOCKS):
            granted = [dev for block, dev, status in results if block == f"B{n}" and status == "granted"]
            assert granted == [winners[f"B{n}"]], f"B{n}: {granted}"
            assert {status for block, _, status in results if block == f"B{n}"} <= {"granted", "taken"}
        assert setup.open_blocks("DXX1")[1] == []
        assert setup.grant("B0", winners["B0"], "DXX1", BLOCKS)[0] is ClaimStatus.GRANTED  # the winner's retry
    finally:
        setup.close()


def _device_batches(tmp_path: Path, device: str, n: int, per_batch: int, tamper_seq: int | None = None
                    ) -> list[bytes]:
    """The device's stream as it sends it: batches of `per_batch`, only the last event of each carrying its
    chain hash (the checkpoint)."""
    with EventStore(tmp_path / f"{device}.db") as store:
        store.append_many([Event(EventType.PACKAGE_SCANNED if i % 4 == 0 else EventType.GPS_FIX, {"n": i})
                           for i in range(n)])
        stored = store.pending(limit=n, max_bytes=1 << 30)
    payloads = []
    for k in range(0, n, per_batch):
        part = stored[k:k + per_batch]
        docs = [orjson.loads(e.body) for e in part]
        docs[-1]["hash"] = part[-1].hash
        for doc in docs:
            if doc["seq"] == tamper_seq:
                doc["data"] = {"n": -1}  # changed after the device hashed it
        payloads.append(EventBatch(f"{device}-b{k}", device, 0, 1, tuple(docs)).to_payload())
    return payloads


def test_one_devices_batches_on_many_workers_in_any_order(tmp_path: Path, cloud_target: CloudTarget) -> None:
    """Each device's batches are shuffled over four processes (and some sent twice, as after a lost ack):
    every event stored once, the whole chain verified, no flag but the one real break. The processes open the
    fresh database at the same moment: each migration runs once."""
    rng = random.Random(19)
    devices = {"van-a": None, "van-b": None, "van-c": 23}  # van-c: one event altered after hashing
    batches = [b for dev, tamper in devices.items() for b in _device_batches(tmp_path, dev, 60, 5, tamper)]
    sends = batches + rng.sample(batches, 10)
    rng.shuffle(sends)
    flagged = _run(_ingester, [(cloud_target, sends[w::WORKERS]) for w in range(WORKERS)])
    db = cloud_target.open()
    try:
        for device in devices:
            rows = db.event_rows(device)
            assert [seq for seq, _, _ in rows] == list(range(1, 61)), device
        assert {chain for d in ("van-a", "van-b") for _, _, chain in db.event_rows(d)} == {"ok"}
        # The break shows at the checkpoint of the batch that holds seq 23 (seq 25): once, whatever the order.
        assert [(f["device"], f["seq"], f["kind"]) for f in db.flags()] == [("van-c", 25, FlagKind.CHAIN_BREAK.value)]
        assert sum(flagged) == 1  # type: ignore[arg-type]
        assert {d["device"]: d["verified_seq"] for d in db.device_view()} == {d: 60 for d in devices}
        assert db._read("SELECT version FROM schema_migrations ORDER BY version") == [(m.version,) for m in MIGRATIONS]
        catalog = ("SELECT name FROM sqlite_master WHERE type = 'index'" if cloud_target.engine == "sqlite"
                   else "SELECT indexname FROM pg_indexes")
        assert {"operator_events_by_type", "operator_blocks_by_winner"} <= {name for (name,) in db._read(catalog)}
    finally:
        db.close()


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.mark.parametrize("cloud_target", ["postgresql"], indirect=True)  # SQLite: the race tests above
def test_a_sigkilled_worker_process_loses_nothing(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path,
                                                  cloud_target: CloudTarget) -> None:
    """`flexedge cloud --workers 3`: while a van drains 6,000 events, a worker process is SIGKILLed five times.
    The batches it held unacked come again from the van and land on a live worker; the supervisor starts the
    killed one again. Every event stored once, the chain whole, no flag. The same process serves the operator
    page (`--http`) over the PostgreSQL database, its accounts beside the photo directory."""
    accounts = Accounts(Path(f"{cloud_target.photo_dir}.operators"))
    accounts.add("olga", PASSWORD, Role.OPERATOR)
    accounts.close()
    cloud = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "cloud", *cloud_target.cli_args(), "--fleet", FLEET,
         "--broker", f"127.0.0.1:{tls_broker.port}", "--pki", str(fleet.pki.dir), "--workers", "3",
         "--client-prefix", CLI_CLOUD_PREFIX, "--no-dispatch", "--http", "127.0.0.1:0", "--http-plain",
         "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "FLEXEDGE_DATA_DIR": str(tmp_path / "cloud-data")})
    store = EventStore(tmp_path / "van-a.db")
    events = mixed_events(6000)
    store.append_many(events)
    db = cloud_target.open()
    killed: list[int] = []

    async def kill_a_worker(k: int) -> None:
        await wait_for(lambda: len(_children(cloud.pid)) == 3, 30, "three live workers")
        victim = sorted(_children(cloud.pid))[k % 3]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    try:
        assert cloud.stdout is not None
        ready = json.loads(cloud.stdout.readline())
        assert len(ready["workers"]) == 3
        asyncio.run(drain_with_faults(fleet, store, tls_broker.port, lambda: db.event_count("van-a"), 800,
                                      kill_a_worker))
        assert [v["device"] for v in asyncio.run(_fleet_view(ready["http"]))["vans"]] == ["van-a"]
        wait_until(lambda: len(_children(cloud.pid)) == 3, 30, "the killed worker started again")
        assert not set(killed) & _children(cloud.pid)
    finally:
        cloud.send_signal(signal.SIGTERM)
        _, stderr = cloud.communicate(timeout=30)
        store.close()
        db.close()
    assert cloud.returncode == 0, stderr[-2000:]
    assert len(killed) == 5
    assert_cloud_holds_exactly(cloud_target, "van-a", [e.id for e in events])


async def _fleet_view(base: str) -> dict:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        login = await http.post(base + "api/login", json={"name": "olga", "password": PASSWORD})
        assert login.status == 200
        fleet_view = await http.get(base + "api/fleet")
        assert fleet_view.status == 200
        return dict(await fleet_view.json())


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """A SQLite file made by an earlier cloud (no schema_migrations, photo chunks without an age) opens as it
    is: version 1 adopts its tables, later versions apply."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE events (device TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
            body TEXT NOT NULL, hash TEXT NOT NULL, batch_id TEXT NOT NULL, received_at REAL NOT NULL,
            chain TEXT NOT NULL DEFAULT 'pending', PRIMARY KEY (device, seq)) WITHOUT ROWID;
        INSERT INTO events VALUES ('van-a', 1, 'e1', 'gps.fix', '{}', '', 'b1', 1.0, 'pending');
        CREATE TABLE photo_chunks (device TEXT NOT NULL, photo_id TEXT NOT NULL, seq INTEGER NOT NULL,
            total INTEGER NOT NULL, sha256 TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (device, photo_id, seq));
    """)
    conn.close()
    db = CloudDb(path)
    try:
        assert db.schema_version == len(MIGRATIONS) and db.event_count("van-a") == 1
        assert db.expire_photo_chunks(60.0) == 0  # received_at is there
    finally:
        db.close()
