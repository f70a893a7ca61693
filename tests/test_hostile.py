"""One bad van must not take down the fleet: what a device certificate holder can send, against the real broker
setup (mutual TLS, dynamic-security access, client id = CN), the reference cloud and the agent's files.

Each test names the finding of issue 15 it holds.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from cloud_sync.cloud import CloudDb
from cloud_sync.cloud.db import PhotoLimits
from cloud_sync.connection import Backoff, BrokerSettings
from cloud_sync.device_sync import DeviceSync
from cloud_sync.messages import PHOTO_CHUNK_BYTES, ClaimStatus, PhotoChunk
from cloud_sync.pki import Pki
from cloud_sync.topics import FleetTopics
from device.cli import main as cli_main
from device.cloud_adapter import CloudAdapter
from device.console.api import REQUEST_HEADER, TOKEN_HEADER
from device.console.pairing import Pairing, PairingError, PairingSettings
from device.contract.domain import Block, Event, EventType, Package, Route, Stop
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from device.testbench.procs import free_tcp_port, wait_for_port
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.console import build_agent
from tests.helpers.fleet import FLEET, OTHER_STATION, STATION, FleetPki, device_config
from tests.helpers.store import mark_acked_upto
from tests.helpers.sync_harness import (
    RawClient,
    assert_cloud_holds_exactly,
    mixed_events,
    start_cloud,
    sync_settings,
    wait_for,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent

TOPICS = FleetTopics(FLEET)
VAN_A = TOPICS.device("van-a")


def _batch(device: str, seq: int, data: bytes = b"{}") -> bytes:
    return (b'{"batch_id": "junk", "device": "%s", "lane": 0, "floor_seq": 0, "count": 1, "events": [{"id": '
            b'"junk-%d", "type": "scan", "seq": %d, "hash": "%s", "data": %s}]}'
            % (device.encode(), seq, seq, b"0" * 64, data))


def _chunk(photo_id: str, seq: int = 0, total: int = 2, data: bytes = b"x") -> bytes:
    return PhotoChunk(f"c-{photo_id}-{seq}", photo_id, seq, total, "0" * 64, data).to_payload()


# What issue 15 sent, retained so the broker replays it to every cloud that starts.
RETAINED_JUNK = (
    (VAN_A.base + "/photo/P-1", _chunk("$x")),  # ValueError in the topic check: the cloud crash-looped
    (VAN_A.events, _batch("van-a", 2**63)),  # OverflowError in SQLite
    (VAN_A.events, _batch("van-a", 1, b"[" * 300 + b"]" * 300)),  # parses, but too deep to hash: the catch-all
    (VAN_A.events, b"\xff\xfe not json"),
    (VAN_A.claim, b"[1, 2]"),
    (VAN_A.status, orjson.dumps({"state": "online", "device": "van-a", "outbox_depth": "lots",
                                 "position": [[[]]], "storage": {"x": 1}})),
)


def honest_delivery(fleet: FleetPki, port: int, tmp_path: Path, device: str, n: int = 60,
                    claims: tuple[str, ...] = ()) -> tuple[list[str], list[ClaimStatus]]:
    """A device drains `n` events (in batches of 3) through its DeviceSync and claims `claims`; returns the
    event ids and the claim answers."""
    store = EventStore(tmp_path / f"{device}.db")

    async def run() -> tuple[list[str], list[ClaimStatus]]:
        sync = DeviceSync(store, sync_settings(device, batch_max_events=3), fleet.broker_settings(device, port),
                          fleet.verifier)
        await sync.start()
        try:
            await asyncio.wait_for(sync.connected.wait(), 30)
            events = mixed_events(n)
            await store.append_async(events)
            sync.kick()
            answers = [(await sync.claim(block)).status for block in claims]
            await sync.wait_drained(60)
        finally:
            await sync.stop()
        assert sync.counters.rejected == Counter()
        return [e.id for e in events], answers

    try:
        return asyncio.run(run())
    finally:
        store.close()


def clear_retained(fleet: FleetPki, port: int, topics: list[str]) -> None:
    with RawClient(fleet.broker_settings("cloud", port), "cloud") as cloud:
        for topic in topics:
            cloud.publish(topic, b"", retain=True)


# --- finding 1: any single device crashed the cloud, and kept it down ---------------------------------------


def test_garbage_from_one_device_is_counted_and_the_cloud_stays_up(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                                 tmp_path: Path) -> None:
    """Every inbound channel (events, photo chunks, claims, status) turns any exception from a payload into a
    counted reject; retained junk is rejected again at every start, and honest vans keep delivering."""
    port, db_path = tls_broker.port, tmp_path / "cloud.db"
    cloud = start_cloud(fleet, port, db_path)
    try:
        with RawClient(fleet.broker_settings("van-a", port), "van-a") as van:
            for topic, payload in RETAINED_JUNK:
                assert not van.publish(topic, payload, retain=True).is_failure
        wait_until(lambda: cloud.peer.counters["rejected"] >= len(RETAINED_JUNK), 20, "every junk message rejected")
        ids, _ = honest_delivery(fleet, port, tmp_path, "van-b")
        assert cloud.running
        assert cloud.peer.counters["rejected"] == len(RETAINED_JUNK)
        assert cloud.peer.counters["rejected.schema"] >= 3
        assert cloud.peer.counters["rejected.malformed"] == 1
        cloud.stop()
        # A restart: the broker replays the retained junk to the new cloud, which rejects it and goes on.
        cloud = start_cloud(fleet, port, db_path)
        wait_until(lambda: cloud.peer.counters["rejected"] >= len(RETAINED_JUNK), 20, "retained junk rejected")
        more, _ = honest_delivery(fleet, port, tmp_path, "sim-049")
        assert cloud.running
    finally:
        cloud.stop()
        clear_retained(fleet, port, [topic for topic, _ in RETAINED_JUNK])
    assert_cloud_holds_exactly(db_path, "van-b", ids)
    assert_cloud_holds_exactly(db_path, "sim-049", more)
    db = CloudDb(db_path)
    try:
        assert db.event_count("van-a") == 0
        # finding 8: the status is type-checked before it is stored
        stored = {view["device"]: view["status"] for view in db.device_view()}
        assert stored.get("van-a") is None or isinstance(stored["van-a"]["outbox_depth"], (int, type(None)))
    finally:
        db.close()


# --- finding 2: a device could swallow other devices' traffic --------------------------------------------


def test_a_device_cannot_subscribe_to_shares_or_other_devices(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                              tmp_path: Path) -> None:
    """Three intruder connections try `$share/ingest/...`, `$share/dispatch/...`, `#` and other devices'
    topics: refused at SUBACK; every batch and claim of an honest van reaches the cloud and is answered."""
    port = tls_broker.port
    cloud = start_cloud(fleet, port, tmp_path / "cloud.db")
    stolen = [TOPICS.shared("ingest", TOPICS.all_devices("events")),
              TOPICS.shared("dispatch", TOPICS.all_devices("claim")),
              TOPICS.shared("ingest", TOPICS.all_devices("photo/+")),
              "#", f"{TOPICS.root}/#", TOPICS.all_devices("events"), TOPICS.device("van-b").ack,
              TOPICS.offers(OTHER_STATION), "$SYS/#"]
    try:
        with RawClient(fleet.broker_settings("van-a", port), "van-a") as a, \
                RawClient(fleet.broker_settings("sim-000", port), "sim-000") as b, \
                RawClient(fleet.broker_settings("sim-001", port), "sim-001") as c:
            for intruder in (a, b, c):
                for topic in stolen:
                    assert all(code.is_failure for code in intruder.subscribe(topic)), topic
            assert not any(code.is_failure for code in a.subscribe(VAN_A.ack))  # its own topics stay open
            assert not any(code.is_failure for code in a.subscribe(TOPICS.offers(STATION)))
            ids, answers = honest_delivery(fleet, port, tmp_path, "van-b", n=60,
                                           claims=tuple(f"B-NONE-{n}" for n in range(8)))
            assert a.messages == b.messages == c.messages == [] or all(
                topic in (VAN_A.ack, TOPICS.offers(STATION)) for topic, _ in a.messages)
    finally:
        cloud.stop()
    assert answers == [ClaimStatus.UNKNOWN_BLOCK] * 8
    assert_cloud_holds_exactly(tmp_path / "cloud.db", "van-b", ids)


# --- finding 3: client-id takeover ------------------------------------------------------------------------


def test_another_client_id_cannot_be_taken_over(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                tmp_path: Path) -> None:
    """A van connecting with another van's client id, or the cloud's, gets its own (client id = CN): nobody is
    kicked off."""
    port = tls_broker.port
    cloud = start_cloud(fleet, port, tmp_path / "cloud.db")
    try:
        with RawClient(fleet.broker_settings("van-a", port), "van-a") as victim:
            drops: list[Any] = []
            victim.client.on_disconnect = lambda *args: drops.append(args)
            for stolen in ("van-a", "cloud-dispatch", "cloud-ingest-0", "cloud-ingest-1"):
                with RawClient(fleet.broker_settings("van-b", port), stolen) as thief:
                    assert not any(code.is_failure for code in thief.subscribe(TOPICS.device("van-b").ack))
            assert not any(code.is_failure for code in victim.subscribe(VAN_A.claim_result))
            assert not victim.publish(VAN_A.claim, b'{"block_id": "B-NONE", "request_id": "r-1"}').is_failure
            wait_until(lambda: victim.messages, 10, "the dispatcher answered the victim's claim")
            assert drops == []
        assert cloud.peer.counters["dispatch_sessions"] == 1
        assert cloud.peer.counters["ingest_sessions"] == 2
    finally:
        cloud.stop()


# --- finding 6: claims ------------------------------------------------------------------------------------


def _block(block_id: str, station: str = STATION) -> tuple[Block, Route]:
    start = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    stop = Stop("S0", "10 Pine St", "10", 47.61, -122.34, (Package(f"TBA{block_id}"),))
    return Block(block_id, station, start, start + timedelta(hours=4), pay_cents=9000), Route(block_id, 1, (stop,))


def test_claims_are_granted_for_the_own_station_and_up_to_the_limit(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                                    tmp_path: Path, cloud_target: CloudTarget) -> None:
    """A block of another station is refused; a van holds at most `max_open_blocks` (2 here) until it reports
    one completed."""
    port = tls_broker.port
    cloud = start_cloud(fleet, port, cloud_target, max_open_blocks=2)
    blocks = [_block("B-AWAY", OTHER_STATION), *(_block(f"B-HOME-{n}") for n in range(3))]
    store = EventStore(tmp_path / "van-a.db")

    async def scenario() -> list[ClaimStatus]:
        sync = DeviceSync(store, sync_settings("van-a"), fleet.broker_settings("van-a", port), fleet.verifier)
        await sync.start()
        try:
            await asyncio.wait_for(sync.connected.wait(), 30)
            await asyncio.to_thread(cloud.call, cloud.peer.add_blocks(blocks))
            answers = [(await sync.claim(b)).status for b in ("B-AWAY", "B-HOME-0", "B-HOME-1", "B-HOME-2")]
            await store.append_async([Event(EventType.BLOCK_COMPLETED, {}, block="B-HOME-0")])
            sync.kick()
            await sync.wait_drained(30)
            answers.append((await sync.claim("B-HOME-2")).status)
        finally:
            await sync.stop()
        return answers

    try:
        answers = asyncio.run(scenario())
        db = cloud_target.open()
        winners = db.winners()
        db.close()
    finally:
        cloud.stop()
        store.close()
    assert answers == [ClaimStatus.WRONG_STATION, ClaimStatus.GRANTED, ClaimStatus.GRANTED,
                       ClaimStatus.LIMIT_REACHED, ClaimStatus.GRANTED]
    assert winners == {"B-AWAY": None, "B-HOME-0": "van-a", "B-HOME-1": "van-a", "B-HOME-2": "van-a"}


# --- finding 7: photo chunks that never complete ------------------------------------------------------------


def test_incomplete_photos_are_bounded_per_device(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                  cloud_target: CloudTarget) -> None:
    """Chunks of photos that never complete: acked up to the device's byte quota, then refused and counted."""
    port = tls_broker.port
    quota = 3 * PHOTO_CHUNK_BYTES
    cloud = start_cloud(fleet, port, cloud_target, photo_limits=PhotoLimits(max_pending_bytes=quota))
    try:
        with RawClient(fleet.broker_settings("van-a", port), "van-a") as van:
            van.subscribe(VAN_A.ack)
            for n in range(5):
                assert not van.publish(f"{VAN_A.base}/photo/P-{n}", _chunk(f"P-{n}", data=os.urandom(
                    PHOTO_CHUNK_BYTES))).is_failure
            wait_until(lambda: cloud.peer.counters["rejected.quota"] == 2, 20, "two chunks over the quota")
            wait_until(lambda: len(van.messages) == 3, 10, "three chunks acked")
        assert cloud.peer.counters["photo_chunks"] == 3
    finally:
        cloud.stop()
    db = cloud_target.open()
    try:
        assert db.pending_photo_bytes("van-a") == quota
    finally:
        db.close()


def test_incomplete_photos_expire(cloud_target: CloudTarget) -> None:
    db = cloud_target.open()
    limits = PhotoLimits(max_age_s=3600, max_pending_bytes=1 << 30)
    data = b"y" * 1000
    sha = hashlib.sha256(data * 2).hexdigest()
    try:
        assert db.store_photo_chunk("van-a", PhotoChunk("c1", "P-OLD", 0, 2, sha, data), limits, now=1000.0) is None
        assert db.expire_photo_chunks(limits.max_age_s, now=1000.0 + 3599) == 0
        assert db.pending_photo_bytes("van-a") == 1000
        assert db.expire_photo_chunks(limits.max_age_s, now=1000.0 + 3601) == 1
        assert db.store_photo_chunk("van-b", PhotoChunk("c2", "P-NEW", 0, 2, sha, data), limits) is None
        assert db.pending_photo_bytes("van-a") == 0 and db.pending_photo_bytes("van-b") == 1000
    finally:
        db.close()


# --- finding 5: the pairing race ----------------------------------------------------------------------------


def test_parallel_pairing_guesses_burn_the_code_after_the_allowed_tries(tmp_path: Path) -> None:
    """40 guesses at once from threads (as the console's handlers run them): exactly `max_attempts` are
    checked, the code is then burnt, and no guess fails with anything but a PairingError."""
    pairing = Pairing(tmp_path, PairingSettings(max_attempts=5))
    code = pairing.new_code()
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    start = threading.Barrier(40)
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess() -> None:
        start.wait()
        try:
            Pairing(tmp_path, PairingSettings(max_attempts=5)).pair(wrong)
            result = "paired"
        except PairingError:
            result = "refused"
        except Exception as exc:  # noqa: BLE001 - what the console would have answered with a 500
            result = f"error {exc!r}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=guess) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["refused"] * 40
    with pytest.raises(PairingError):
        pairing.pair(code)  # burnt after 5 wrong tries, even the right code
    assert not list(tmp_path.glob("*.tmp"))


# --- finding 9: private files from the first byte -----------------------------------------------------------

_WATCHED: list[Path] = []
_SEEN_OPEN: list[tuple[str, int]] = []


def _audit(event: str, args: tuple) -> None:
    """Whenever a file is opened, renamed or chmod-ed, look at the mode of every key file in the watched
    directory: a key readable by others for any moment is caught here."""
    if not _WATCHED or event not in ("open", "os.chmod", "os.rename"):
        return
    for path in list(_WATCHED[0].iterdir()):
        if path.suffix == ".key" or ".key." in path.name:
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                continue
            if mode & 0o077:
                _SEEN_OPEN.append((path.name, stat.S_IMODE(mode)))


@contextlib.contextmanager
def watching_keys(directory: Path) -> Iterator[list[tuple[str, int]]]:
    if not getattr(sys, "_flexedge_key_audit", False):  # an audit hook cannot be removed: install it once
        sys.addaudithook(_audit)
        sys._flexedge_key_audit = True  # type: ignore[attr-defined]
    old_umask = os.umask(0o022)  # the usual umask: files are 0644 unless made otherwise
    _SEEN_OPEN.clear()
    _WATCHED.append(directory)
    try:
        yield _SEEN_OPEN
    finally:
        _WATCHED.clear()
        os.umask(old_umask)


def test_private_keys_are_never_readable_by_others(tmp_path: Path) -> None:
    """CA, broker, device and signing keys are 0600 from the first byte (not written, then chmod-ed)."""
    pki = Pki(tmp_path / "pki")
    (tmp_path / "pki").mkdir()
    with watching_keys(tmp_path / "pki") as exposed:
        pki.init()
        pki.issue_broker()
        pki.issue("van-a")
        pki.issue("van-a", replace=True)  # re-issue replaces the key (`pki device --force`)
    assert exposed == []
    keys = sorted(tmp_path.glob("pki/*.key"))
    assert [k.name for k in keys] == ["broker.key", "ca.key", "signing.key", "van-a.key"]
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)


def test_the_data_dir_and_the_store_are_private(tmp_path: Path) -> None:
    """Outside systemd (umask 022): the agent's data dir is made 0700, events.db and its WAL 0600."""
    from device.assembly import open_store
    from device.config import Config

    data_dir = tmp_path / "state" / "flexedge"
    old_umask = os.umask(0o022)
    try:
        store = open_store(Config(), data_dir)
        store.append(Event(EventType.PACKAGE_SCANNED, {"n": 1}))
        store.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("events.db", "events.db-wal"):
        path = data_dir / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


# --- finding 10: `flexedge outbox --verify` and deleted newest events ---------------------------------------


def test_outbox_verify_notices_the_newest_events_deleted(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    data_dir = tmp_path / "data"
    store = EventStore(data_dir / "events.db")
    store.append_many(mixed_events(10))
    mark_acked_upto(store, 10)
    store.close()
    args = ["outbox", "--verify", "--data-dir", str(data_dir)]
    assert cli_main(args) == 0
    with sqlite3.connect(data_dir / "events.db") as conn:  # what someone hiding the last deliveries would do
        conn.execute("DELETE FROM events WHERE seq > 7")
    capsys.readouterr()
    assert cli_main(args) == 1
    assert "8..10 missing" in capsys.readouterr().out


# --- finding 4: the agent's cloud link died silently -----------------------------------------------------


def test_a_certificate_missing_for_a_moment_is_one_failed_attempt(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                                  tmp_path: Path) -> None:
    """The client certificate is gone when the link starts (a renewal replacing it): each connection attempt
    fails and is retried with backoff; once the file is back the link connects and the outbox drains."""
    issued = fleet.pki.client("van-a")
    cert = tmp_path / "van-a.crt"
    shutil.copy(issued.key_path, tmp_path / "van-a.key")
    broker = BrokerSettings("127.0.0.1", tls_broker.port, str(fleet.pki.ca_cert), str(cert),
                            str(tmp_path / "van-a.key"), keepalive_s=10, connect_timeout_s=5)
    cloud = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db", workers=1)
    store = EventStore(tmp_path / "van-a.db")
    events = mixed_events(30)

    async def scenario() -> DeviceSync:
        sync = DeviceSync(store, sync_settings("van-a"), broker, fleet.verifier)
        await sync.start()
        try:
            await asyncio.sleep(1.5)  # several attempts without the file
            assert not sync.connected.is_set() and sync.healthy
            shutil.copy(issued.cert_path, cert)
            await asyncio.wait_for(sync.connected.wait(), 30)
            await store.append_async(events)
            sync.kick()
            await sync.wait_drained(30)
        finally:
            await sync.stop()
        return sync

    try:
        sync = asyncio.run(scenario())
    finally:
        cloud.stop()
        store.close()
    assert sync.counters.link_restarts == 0
    assert_cloud_holds_exactly(tmp_path / "cloud.db", "van-a", [e.id for e in events])


def test_a_dead_link_task_is_restarted_and_the_agent_reports_it(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                                tmp_path: Path) -> None:
    """The link task ends (as an unforeseen error would end it): `Agent.healthy()` (what pets systemd's
    watchdog) is False until the supervisor has started it again after a backoff; then it connects and drains."""
    cloud = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db", workers=1)
    events = mixed_events(30)

    async def scenario() -> DeviceSync:
        agent = await build_agent(tmp_path / "agent")
        sync = DeviceSync(agent.store, sync_settings("van-a", backoff=Backoff(initial_s=1.0, maximum_s=2.0)),
                          fleet.broker_settings("van-a", tls_broker.port), fleet.verifier)
        agent.cloud = CloudAdapter(sync)
        await agent.cloud.start()
        try:
            await asyncio.wait_for(sync.connected.wait(), 30)
            assert agent.healthy()
            link = sync._link_task  # noqa: SLF001 - the fault: the task under the supervisor ends
            assert link is not None
            while not link.done():  # one cancel may be absorbed by a task group inside the link
                link.cancel()
                await asyncio.wait({link}, timeout=0.05)
            await wait_for(lambda: not agent.healthy(), 5, "unhealthy while the link is down")
            await wait_for(lambda: agent.healthy() and sync.connected.is_set(), 15, "the link back")
            await agent.store.append_async(events)
            sync.kick()
            await sync.wait_drained(30)
        finally:
            await sync.stop()
            agent.store.close()
        return sync

    try:
        sync = asyncio.run(scenario())
    finally:
        cloud.stop()
    assert sync.counters.link_restarts == 1
    db = CloudDb(tmp_path / "cloud.db")
    try:
        stored = {event_id for _, event_id, _ in db.event_rows("van-a")}
    finally:
        db.close()
    assert {e.id for e in events} <= stored


FLOOD = 300  # idle connections, as in the issue
AGENT_NOFILE = 256  # the agent's file descriptor limit in the issue (the unit now sets LimitNOFILE)


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (AGENT_NOFILE, AGENT_NOFILE))


def test_a_connection_flood_on_the_console_leaves_the_agent_and_its_sync_running(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    """`flexedge run` with 256 file descriptors gets 300 idle TCP connections on its console: the console caps
    them (the rest are closed at once), the log stays small, the agent and its cloud link live on; once the flood
    is gone the console answers and a scan made through it reaches the cloud."""
    console_port = free_tcp_port()
    cloud = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db", workers=1)
    log_path = tmp_path / "agent.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed below)
    agent = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config",
                              str(device_config(tmp_path, fleet, tls_broker.port, "van-b",
                                                f"[gps]\nenabled = false\n[console]\nenabled = true\n"
                                                f"port = {console_port}"))],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_limit_files)
    base = f"http://127.0.0.1:{console_port}"
    flood: list[socket.socket] = []
    try:
        wait_for_port(console_port, timeout_s=30)
        wait_until(lambda: _cloud_types(tmp_path / "cloud.db").get("agent.started"), 30, "the agent's first event")
        for _ in range(FLOOD):
            with contextlib.suppress(OSError):
                flood.append(socket.create_connection(("127.0.0.1", console_port), timeout=2))
        time.sleep(3)  # the flood stands
        assert agent.poll() is None
        for sock in flood:
            sock.close()
        flood.clear()
        wait_until(lambda: _answers(f"{base}/api/pairing-code"), 10, "the console answers once the flood is gone")
        code = _get(f"{base}/api/pairing-code")["code"]
        token = _post(f"{base}/api/pair", {"code": code}, {})["token"]
        _post(f"{base}/api/scan", {"code": "PKG-AFTER-FLOOD"}, {TOKEN_HEADER: token}, expect=409)
        wait_until(lambda: _cloud_types(tmp_path / "cloud.db").get("input.rejected"), 30,
                   "the scan made after the flood reached the cloud")
        assert agent.poll() is None
    finally:
        for sock in flood:
            sock.close()
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
        log.close()
        cloud.stop()
    assert log_path.stat().st_size < 100_000, log_path.read_text()[-2000:]


def _cloud_types(db_path: Path) -> Counter[str]:
    db = CloudDb(db_path)
    try:
        return Counter(kind for _, kind, _, _ in db.arrivals("van-b"))
    finally:
        db.close()


def _answers(url: str) -> bool:
    try:
        _get(url)
    except OSError:  # refused over the cap while the server still closes the flood's connections
        return False
    return True


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, doc: dict[str, Any], headers: dict[str, str], expect: int = 200) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json",
                                                                    REQUEST_HEADER: "1", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    assert status == expect, body
    return json.loads(body)


def test_a_hung_link_is_reported_and_started_again(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                   tmp_path: Path) -> None:
    """aiomqtt runs paho's blocking connect in the loop's default executor, without a timeout: with every thread
    of that executor hung (a disk that stopped answering), the connect never returns. The supervisor sees no
    connection and no new attempt for longer than the backoff, the connect timeout and the grace: the sync is
    unhealthy (no watchdog pet) and the link is cancelled; once the executor is free it connects again."""
    store = EventStore(tmp_path / "van-a.db")

    async def scenario() -> DeviceSync:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        hang = threading.Event()
        hung = [loop.run_in_executor(None, hang.wait) for _ in range(2)]
        sync = DeviceSync(store, sync_settings("van-a", stuck_grace_s=1.0), fleet.broker_settings("van-a",
                          tls_broker.port), fleet.verifier)
        await sync.start()
        try:
            await wait_for(lambda: not sync.healthy, 20, "the hung link reported")
            assert not sync.connected.is_set()
            hang.set()
            await asyncio.gather(*hung)
            await wait_for(lambda: sync.healthy and sync.connected.is_set(), 30, "the link back")
        finally:
            hang.set()
            await sync.stop()
        return sync

    try:
        sync = asyncio.run(scenario())
    finally:
        store.close()
    assert sync.counters.link_restarts >= 1
