"""cloud_sync pieces on their own: signatures, payload checks, backoff, topics, PKI, the cloud's ingest and grants."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import zstandard
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sync.cloud import FlagKind
from cloud_sync.cloud.db import PhotoStatus
from cloud_sync.connection import Backoff, BrokerSettings
from cloud_sync.device_sync import DeviceSync
from cloud_sync.errors import MessageRejected, PkiError, RejectReason
from cloud_sync.messages import (
    PHOTO_CHUNK_BYTES,
    BatchAck,
    ClaimStatus,
    Command,
    Compression,
    EventBatch,
    Offers,
    PhotoChunk,
    RouteAssignment,
    decode_json,
)
from cloud_sync.pki import Pki, broker_security
from cloud_sync.signing import Signer, Verifier
from cloud_sync.sync_settings import SyncSettings
from cloud_sync.topics import FleetTopics
from device.cli import main as cli_main
from device.cloud_adapter import sync_settings_from_config
from device.config import ConfigError, load_config
from device.contract.domain import Block, Event, EventType, Lane, Package, Route, Stop
from device.store import EventStore
from device.store.outbox import StoredEvent
from tests.helpers.cloud_target import CloudTarget


def _route(block_id: str = "B1", version: int = 1) -> Route:
    return Route(block_id, version, (Stop("S1", "1 Main St", "1", 47.6, -122.3, (Package("P1"),)),))


# --- signatures ------------------------------------------------------------------------------------


def test_signed_message_round_trip_and_forgeries() -> None:
    cloud, forger = Signer.generate(), Signer.generate()
    verifier = Verifier.of(cloud.public_key)
    body = RouteAssignment("van-a", _route()).to_body()
    signed = json.loads(orjson.dumps(cloud.sign(body)))  # through the wire format
    assert RouteAssignment.from_body(verifier.verify(signed)).route == _route()

    with pytest.raises(MessageRejected) as wrong_key:
        verifier.verify(forger.sign(body))
    assert wrong_key.value.reason is RejectReason.BAD_SIGNATURE
    impostor = forger.sign(body) | {"kid": cloud.kid}  # claims to be the cloud's key
    with pytest.raises(MessageRejected) as forged:
        verifier.verify(impostor)
    assert forged.value.reason is RejectReason.BAD_SIGNATURE
    tampered = cloud.sign(body)
    tampered["body"]["route"]["version"] = 2
    with pytest.raises(MessageRejected) as changed:
        verifier.verify(tampered)
    assert changed.value.reason is RejectReason.BAD_SIGNATURE
    for shape in ([], {"body": body}, {"body": body, "kid": cloud.kid, "sig": 5}, {"body": "x", "kid": "", "sig": ""}):
        with pytest.raises(MessageRejected) as bad:
            verifier.verify(shape)
        assert bad.value.reason is RejectReason.SCHEMA
    with pytest.raises(MessageRejected) as not_base64:
        verifier.verify({"body": body, "kid": cloud.kid, "sig": "***"})
    assert not_base64.value.reason is RejectReason.BAD_SIGNATURE


def test_signing_keys_load_from_pem(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.init()
    signer, verifier = Signer.from_pem_file(pki.signing_key), Verifier.from_pem_files(pki.signing_pub)
    assert verifier.verify(signer.sign({"a": 1})) == {"a": 1}
    with pytest.raises(PkiError):
        Signer.from_pem_file(pki.ca_key)  # an EC key is not an Ed25519 signing key
    with pytest.raises(PkiError):
        Verifier.from_pem_files(tmp_path / "missing.pub")


# --- payloads --------------------------------------------------------------------------------------


def _batch(n: int = 3) -> EventBatch:
    events = tuple({"id": f"e{i}", "seq": i + 1, "type": "gps.fix", "hash": "ab" * 32, "data": {"n": i}}
                   for i in range(n))
    return EventBatch("b1", "van-a", int(Lane.TRACK), 1, events)


@pytest.mark.parametrize("compression", list(Compression))
def test_event_batch_round_trip(compression: Compression) -> None:
    batch = _batch(200)
    payload = batch.to_payload(compression)
    assert (b'"compression":"zstd"' in payload) == (compression is Compression.ZSTD)
    assert EventBatch.from_payload(payload) == batch


def test_event_batch_rejects() -> None:
    def reason(payload: bytes, max_bytes: int = 1 << 20) -> RejectReason:
        with pytest.raises(MessageRejected) as exc:
            EventBatch.from_payload(payload, max_bytes)
        return exc.value.reason

    good = orjson.loads(_batch().to_payload())
    assert reason(b"x" * 2000, max_bytes=1000) is RejectReason.TOO_LARGE
    assert reason(b"\xff\xfe{") is RejectReason.NOT_JSON
    assert reason(b"[1, 2]") is RejectReason.SCHEMA
    assert reason(orjson.dumps(good | {"count": 7})) is RejectReason.SCHEMA
    assert reason(orjson.dumps(good | {"events": []})) is RejectReason.SCHEMA
    assert reason(orjson.dumps(good | {"compression": "lz4"})) is RejectReason.SCHEMA
    for broken in ({"seq": 0}, {"seq": True}, {"hash": "zz"}, {"id": ""}):
        event = good["events"][0] | broken
        assert reason(orjson.dumps(good | {"events": [event, *good["events"][1:]]})) is RejectReason.SCHEMA
    last = good["events"][-1]
    unhashed = {k: v for k, v in last.items() if k != "hash"}  # the last event carries the chain checkpoint
    assert reason(orjson.dumps(good | {"events": [*good["events"][:-1], unhashed]})) is RejectReason.SCHEMA
    first = {k: v for k, v in good["events"][0].items() if k != "hash"}  # the others need not
    assert EventBatch.from_payload(orjson.dumps(good | {"events": [first, *good["events"][1:]]})).events[0] == first
    header = {k: v for k, v in good.items() if k != "events"} | {"compression": "zstd"}
    zstd_batch = _batch().to_payload(Compression.ZSTD)
    assert zstd_batch.startswith(orjson.dumps(header) + b"\n")  # a JSON header line, then raw zstd: no base64
    assert EventBatch.from_payload(zstd_batch) == _batch()
    bomb = zstandard.ZstdCompressor().compress(b"[" + b" " * (8 << 20) + b"]")  # 8 MB of nothing, 300 bytes sent
    packed = orjson.dumps(header) + b"\n" + bomb
    assert len(packed) < 2000
    assert reason(packed) is RejectReason.TOO_LARGE
    assert reason(orjson.dumps(header) + b"\nnot zstd") is RejectReason.SCHEMA
    assert reason(orjson.dumps(header | {"compression": "lz4"}) + b"\n" + bomb) is RejectReason.SCHEMA
    assert reason(orjson.dumps(good | {"compression": "zstd"})) is RejectReason.SCHEMA  # zstd is binary only


@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_rejected_never_crash(payload: bytes) -> None:
    for parse in (EventBatch.from_payload, BatchAck.from_payload):
        try:
            parse(payload)
        except MessageRejected:
            pass


def test_size_cap_comes_before_parsing() -> None:
    with pytest.raises(MessageRejected) as exc:
        decode_json(b"{" * (10 * 1024 * 1024), 1024 * 1024)
    assert exc.value.reason is RejectReason.TOO_LARGE


def test_downlink_bodies_are_schema_checked() -> None:
    start = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    offers = Offers("DXX1", 3, (Block("B1", "DXX1", start, start + timedelta(hours=4)),))
    assert Offers.from_body(json.loads(json.dumps(offers.to_body()))) == offers
    command = Command("c1", "van-a", "ping", {"x": 1}, start)
    assert Command.from_body(command.to_body()) == command
    for bad in ({"station": "DXX1", "version": 1, "blocks": [{"id": "B1"}]}, {"station": "DXX1", "blocks": []}):
        with pytest.raises(MessageRejected):
            Offers.from_body(bad)
    with pytest.raises(MessageRejected):
        Command.from_body(command.to_body() | {"expires_at": "tomorrow"})
    with pytest.raises(MessageRejected):
        RouteAssignment.from_body({"device": "van-a", "route": {"block_id": "B1", "version": 0, "stops": []}})


# --- connection policy, topics ---------------------------------------------------------------------


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    import random

    delays = Backoff(initial_s=0.1, maximum_s=2.0).delays(random.Random(7))
    first = [next(delays) for _ in range(40)]
    assert all(0.05 <= d <= 2.0 for d in first)
    assert max(first[:3]) <= 0.4 and max(first[10:]) > 1.0  # grows, then stays under the cap
    assert len(set(first)) == len(first)  # jittered: no two devices retry in lockstep


def test_topics_refuse_wildcards_and_separators() -> None:
    fleet = FleetTopics("demo")
    assert fleet.device("van-1").events == "flex/v1/demo/dev/van-1/events"
    assert fleet.device_of("flex/v1/demo/dev/van-1/claim") == "van-1"
    assert fleet.device_of("flex/v1/other/dev/van-1/claim") is None
    assert fleet.shared("ingest", fleet.all_devices("events")) == "$share/ingest/flex/v1/demo/dev/+/events"
    for bad in ("a/b", "+", "#", "", "$SYS"):
        with pytest.raises(ValueError):
            fleet.device(bad)


# --- PKI ---------------------------------------------------------------------------------------------


def test_pki_issues_device_and_broker_certificates(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.init()
    with pytest.raises(PkiError):
        pki.init()  # never replaces a CA
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    device = x509.load_pem_x509_certificate(pki.issue("van-0001").cert_path.read_bytes())
    broker = x509.load_pem_x509_certificate(pki.issue_broker(["mqtt.example.com", "10.0.0.5"]).cert_path.read_bytes())
    device.verify_directly_issued_by(ca)
    broker.verify_directly_issued_by(ca)
    assert device.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "van-0001"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in device.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example.com"]
    assert (tmp_path / "van-0001.key").stat().st_mode & 0o077 == 0
    for bad in ("van/1", "+", "", "a b"):
        with pytest.raises(PkiError):
            pki.issue(bad)


def test_broker_security_gives_devices_their_own_tree_and_station() -> None:
    doc = broker_security("demo", {"van-1": "DXX1"}, ("cloud", "cloud-dispatch"))
    roles = {role["rolename"]: {(a["acltype"], a["topic"]) for a in role["acls"]} for role in doc["roles"]}
    device = roles["device-van-1"]
    assert ("publishClientSend", "flex/v1/demo/dev/van-1/events") in device
    assert ("subscribeLiteral", "flex/v1/demo/dev/van-1/route") in device
    assert ("subscribeLiteral", "flex/v1/demo/station/DXX1/offers") in device
    assert not any(kind == "subscribePattern" or "#" in topic or "$" in topic for kind, topic in device)
    assert ("subscribePattern", "$share/+/flex/v1/demo/#") in roles["cloud"]
    assert {c["username"]: c["roles"][0]["rolename"] for c in doc["clients"]} == {
        "cloud": "cloud", "cloud-dispatch": "cloud", "van-1": "device-van-1"}
    assert doc["defaultACLAccess"]["subscribe"] is False


def test_pki_cli_provisions_a_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["pki", "init", "--dir", str(tmp_path)]) == 0
    assert cli_main(["pki", "broker", "--dir", str(tmp_path), "--host", "localhost"]) == 0
    assert cli_main(["pki", "device", "--dir", str(tmp_path), "--json", "van-0042"]) == 0
    issued = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(issued["cert"]).exists()
    conf = tmp_path / "mosquitto"
    assert cli_main(["pki", "mosquitto", "--dir", str(tmp_path), "--fleet", "demo", "--device", "van-0042=DXX1",
                     "--conf-dir", str(conf)]) == 0
    out = (conf / "conf.d" / "flexedge.conf").read_text()
    assert "require_certificate true" in out and "use_identity_as_username true" in out
    assert "use_username_as_clientid true" in out and "mosquitto_dynamic_security.so" in out
    assert json.loads((tmp_path / "stations.json").read_text()) == {"van-0042": "DXX1"}
    assert "van-0042" in (tmp_path / "dynamic-security.json").read_text()
    assert "van-0042" in (conf / "flexedge" / "dynamic-security.json").read_text()
    assert cli_main(["pki", "device", "--dir", str(tmp_path), "bad/name"]) == 2


def test_sync_config_section(tmp_path: Path) -> None:
    config = load_config(None, env={"FLEXEDGE_SYNC__BATCH_MAX_EVENTS": "50", "FLEXEDGE_SYNC__COMPRESSION": "none"})
    settings = sync_settings_from_config(config)
    assert settings.batch_max_events == 50 and settings.compression is Compression.NONE
    with pytest.raises(ConfigError):
        sync_settings_from_config(load_config(None, env={"FLEXEDGE_SYNC__COMPRESSION": "lz4"}))


# --- the cloud's ingest --------------------------------------------------------------------------------


def _stored(tmp_path: Path, n: int) -> list[StoredEvent]:
    with EventStore(tmp_path / "device.db") as store:
        store.append_many([Event(EventType.PACKAGE_SCANNED if i % 4 == 0 else EventType.GPS_FIX, {"n": i})
                           for i in range(n)])
        return store.pending(limit=n, max_bytes=1 << 30)


def _batch_of(events: list[StoredEvent], floor_seq: int = 1, batch_id: str = "b") -> EventBatch:
    docs = tuple(orjson.loads(e.body) | {"hash": e.hash} for e in events)
    return EventBatch(batch_id, "van-a", 0, floor_seq, docs)


def test_ingest_is_idempotent_and_verifies_the_chain(tmp_path: Path, cloud_target: CloudTarget) -> None:
    events = _stored(tmp_path, 40)
    db = cloud_target.open()
    events_lane = [e for e in events if e.lane is Lane.EVENTS]
    track = [e for e in events if e.lane is Lane.TRACK]
    early = db.ingest("van-a", _batch_of(events_lane))  # the priority lane arrives first: chain waits
    assert early.stored == 10 and early.verified_seq == 1  # seq 1 is a scan, seq 2 a breadcrumb not yet here
    assert [chain for _, _, chain in db.event_rows("van-a")] == ["ok"] + ["pending"] * 9
    done = db.ingest("van-a", _batch_of(track))
    assert done.verified_seq == 40 and done.flagged == 0
    again = db.ingest("van-a", _batch_of(track))  # a resend after a lost ack
    assert (again.stored, again.duplicates) == (0, 30)
    rows = db.event_rows("van-a")
    assert [seq for seq, _, _ in rows] == list(range(1, 41))
    assert {chain for _, _, chain in rows} == {"ok"}
    assert db.flags() == []


def test_ingest_flags_breaks_conflicts_and_gaps(tmp_path: Path, cloud_target: CloudTarget) -> None:
    events = _stored(tmp_path, 10)
    db = cloud_target.open()
    docs = [orjson.loads(e.body) | {"hash": e.hash} for e in events]
    docs[3]["data"] = {"n": 999}  # altered after hashing
    db.ingest("van-a", EventBatch("b1", "van-a", 0, 1, tuple(docs[:6])))
    conflict = docs[2] | {"id": "another-id"}  # seq 3 again, with a different id
    db.ingest("van-a", EventBatch("b2", "van-a", 0, 1, (conflict,)))
    # The device says everything below seq 10 was acked, but 7 to 9 never came: a real gap.
    db.ingest("van-a", EventBatch("b3", "van-a", 0, 10, tuple(docs[9:])))
    kinds = {(f["seq"], f["kind"]) for f in db.flags("van-a")}
    assert kinds == {(4, FlagKind.CHAIN_BREAK.value), (3, FlagKind.SEQ_CONFLICT.value), (7, FlagKind.GAP.value)}
    assert [chain for seq, _, chain in db.event_rows("van-a") if seq <= 6] == ["ok", "ok", "ok", "broken", "ok", "ok"]
    assert db.event_count("van-a") == 7  # the conflicting copy is not stored over the original
    assert "van-a" not in {f["device"] for f in db.flags() if f["kind"] == FlagKind.DEVICE_MISMATCH.value}
    assert db.ingest("van-b", EventBatch("b4", "van-b", 0, 1, (docs[0],))).flagged == 1  # van-a's event id


def test_chain_checked_at_each_batch_checkpoint(tmp_path: Path, cloud_target: CloudTarget) -> None:
    """Batches as the device sends them: only the last event carries its hash. The cloud computes the rest, so
    an event changed anywhere in a batch shows at that batch's checkpoint."""
    events = _stored(tmp_path, 12)
    db = cloud_target.open()
    docs = [orjson.loads(e.body) for e in events]
    for start in (0, 6):
        docs[start + 5]["hash"] = events[start + 5].hash
    docs[8]["data"] = {"n": 999}  # altered in the second batch, whose checkpoint is seq 12
    for n, start in enumerate((0, 6)):
        db.ingest("van-a", EventBatch(f"b{n}", "van-a", 0, 1, tuple(docs[start:start + 6])))
    assert {(f["seq"], f["kind"]) for f in db.flags("van-a")} == {(12, FlagKind.CHAIN_BREAK.value)}
    rows = db._read("SELECT seq, hash, chain FROM events WHERE device = 'van-a' ORDER BY seq")
    assert [h for seq, h, _ in rows if seq <= 8] == [e.hash for e in events[:8]]  # computed here, as the device's
    assert [chain for _, _, chain in rows] == ["ok"] * 11 + ["broken"]


def test_exactly_one_grant_under_concurrent_claims(cloud_target: CloudTarget) -> None:
    """Eight connections (as eight workers would have) race to grant the same blocks."""
    start = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    setup = cloud_target.open()
    for n in range(5):
        setup.add_block(Block(f"B{n}", "DXX1", start, start + timedelta(hours=3)), _route(f"B{n}"))
    results: list[tuple[str, str, ClaimStatus]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        db = cloud_target.open()
        for n in range(5):
            status, _, _ = db.grant(f"B{n}", f"van-{k}", "DXX1", max_open=5)
            with lock:
                results.append((f"B{n}", f"van-{k}", status))
        db.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = setup.winners()
    for n in range(5):
        granted = [dev for block, dev, status in results if block == f"B{n}" and status is ClaimStatus.GRANTED]
        assert granted == [winners[f"B{n}"]]
    assert setup.grant("B0", winners["B0"], "DXX1", 5)[0] is ClaimStatus.GRANTED  # a retry by the winner still wins
    assert setup.grant("nope", "van-1", "DXX1", 5)[0] is ClaimStatus.UNKNOWN_BLOCK
    version, open_blocks = setup.open_blocks("DXX1")
    assert open_blocks == [] and setup.open_blocks("DXX1")[0] > version  # each republish outranks the last


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)


@settings(max_examples=60, deadline=None)
@given(topic=st.sampled_from(["ack", "claim_result", "route", "cmd", "offers"]),
       payload=st.one_of(st.binary(max_size=200),
                         st.recursive(JSON_SCALARS,
                                      lambda inner: st.lists(inner, max_size=4)
                                      | st.dictionaries(st.sampled_from(["body", "kid", "sig", "batch_id",
                                                                         "upto_seq", "route", "device"]),
                                                        inner, max_size=4),
                                      max_leaves=12).map(orjson.dumps)))
def test_inbound_garbage_is_rejected_never_raised(tmp_path_factory: pytest.TempPathFactory, topic: str,
                                                  payload: bytes) -> None:
    """Whatever arrives on a device's inbound topics is either used or rejected with a reason."""
    store = EventStore(tmp_path_factory.mktemp("fuzz") / "d.db")
    sync = DeviceSync(store, SyncSettings("van-a", "demo", "DXX1"), BrokerSettings("127.0.0.1", 1),
                      Verifier.of(Signer.generate().public_key))
    full_topic = sync.offers_topic if topic == "offers" else getattr(sync.topics, topic)

    async def feed() -> None:
        try:
            await sync.downlink.handle(full_topic, payload, None)
        except MessageRejected:
            pass

    try:
        asyncio.run(feed())
    finally:
        store.close()


def _photo_chunks(photo: bytes, photo_id: str, sha: str | None = None) -> list[PhotoChunk]:
    import hashlib

    sha = sha or hashlib.sha256(photo).hexdigest()
    size = PHOTO_CHUNK_BYTES
    total = -(-len(photo) // size)
    return [PhotoChunk(f"{photo_id}-{i}", photo_id, i, total, sha, photo[i * size:(i + 1) * size])
            for i in range(total)]


def _photo_event_batch(store: EventStore, photos: dict[str, str], batch_id: str) -> EventBatch:
    """photo.checked events (photo id -> the upload copy's sha256) as the device commits and sends them."""
    stored = store.append_many([Event(EventType.PHOTO_CHECKED, {"photo_id": pid, "sha256": "ee" * 32,
                                                                "upload_sha256": sha}, block="B-1", stop="S3")
                                for pid, sha in photos.items()])
    return _batch_of([e for e in stored if e is not None], batch_id=batch_id)


def test_photo_chunks_parse_and_reassemble(tmp_path: Path, cloud_target: CloudTarget) -> None:
    import hashlib

    photo = bytes(range(256)) * 600  # 150 KiB: three chunks
    sha = hashlib.sha256(photo).hexdigest()
    size = PHOTO_CHUNK_BYTES
    chunks = _photo_chunks(photo, "P-1")
    assert PhotoChunk.from_payload(chunks[1].to_payload()) == chunks[1]
    header, _, data = chunks[0].to_payload().partition(b"\n")
    assert data == chunks[0].data  # the bytes go raw after the header line: no base64 on the wire
    good = orjson.loads(header)
    for bad, body in (({"seq": 3}, data), ({"total": 0}, data), ({"sha256": "x"}, data), ({}, b""),
                      ({}, b"x" * (size + 1)), ({"photo_id": "../etc"}, data), ({"photo_id": ".hidden"}, data)):
        with pytest.raises(MessageRejected):
            PhotoChunk.from_payload(orjson.dumps(good | bad) + b"\n" + body, max_bytes=1 << 20)
    with pytest.raises(MessageRejected):
        PhotoChunk.from_payload(orjson.dumps(good | {"bytes": "AAAA"}))  # the old base64 form
    db = cloud_target.open()
    with EventStore(tmp_path / "device.db") as store:
        db.ingest("van-a", _photo_event_batch(store, {"P-1": sha, "P-2": sha}, "b1"))
    stored = [db.store_photo_chunk("van-a", c) for c in (chunks[2], chunks[0], chunks[0], chunks[1])]
    assert stored[:3] == [None, None, None] and stored[3].status is PhotoStatus.OK
    assert db.photo("van-a", "P-1") == (sha, photo)
    # Stored as a file outside the table, linked to its event, block and stop.
    row, = db.photo_rows()
    assert row["path"] == str(tmp_path / "cloud-photos" / "van-a" / "P-1.jpg") and row["bytes"] == len(photo)
    assert Path(row["path"]).read_bytes() == photo and (row["block"], row["stop"]) == ("B-1", "S3")
    assert row["event_id"] == db._read("SELECT id FROM events WHERE type = 'photo.checked' "
                                       f"AND {db.dialect.json_text('body', 'data', 'photo_id')} = 'P-1'")[0][0]
    assert db.store_photo_chunk("van-a", chunks[1]) is None  # a resend after completion changes nothing
    assert len(db.photo_rows()) == 1
    # Chunks that do not hash to what they announced: stored, flagged, never silently dropped.
    forged = [PhotoChunk(f"f{i}", "P-2", i, 2, sha, b"not the photo") for i in range(2)]
    results = [db.store_photo_chunk("van-a", c) for c in forged]
    assert results[0] is None and results[1].status is PhotoStatus.CORRUPT
    assert db.photo("van-a", "P-2")[1] == b"not the photo" * 2
    assert [f["kind"] for f in db.flags("van-a")] == [FlagKind.PHOTO_CORRUPT.value]


def test_the_adapter_gives_the_agent_its_own_types(tmp_path: Path) -> None:
    """Offers, routes and commands come out as the agent's inputs; a claim nobody answers is a refusal."""
    from device.cloud_adapter import CloudAdapter, as_input
    from device.cloud_port import CloudCommand
    from device.workflow.inputs import ClaimResult as ClaimAnswer
    from device.workflow.inputs import OffersReceived, RouteReceived

    route = _route()
    assert as_input(RouteAssignment("van-a", route)) == RouteReceived(route)
    assert as_input(Offers("DXX1", 3, ())) == OffersReceived(())
    expires = datetime.now(timezone.utc)
    assert as_input(Command("c1", "van-a", "reboot", {"now": True}, expires)) == \
        CloudCommand("c1", "reboot", {"now": True})

    async def claim() -> ClaimAnswer:
        with EventStore(tmp_path / "d.db") as store:
            settings = SyncSettings("van-a", "demo", "DXX1", claim_timeout_s=0.2)
            adapter = CloudAdapter(DeviceSync(store, settings, BrokerSettings("127.0.0.1", 1),
                                              Verifier.of(Signer.generate().public_key)))
            assert not adapter.online
            return await adapter.claim("B1", "R-1")

    answer = asyncio.run(claim())
    assert answer.block_id == "B1" and not answer.granted and answer.reason.startswith("timeout")


def test_photo_checked_against_its_event_in_either_order(tmp_path: Path, cloud_target: CloudTarget) -> None:
    """A photo whose bytes differ from the sha256 its event recorded is kept and flagged; a photo complete
    before its event waits for it and is settled by the event's batch."""
    import hashlib

    db = cloud_target.open()
    wrong, early = b"\xff\xd8 a different photo", b"\xff\xd8 ahead of its event"
    with EventStore(tmp_path / "device.db") as store:
        db.ingest("van-a", _photo_event_batch(store, {"P-W": "ab" * 32}, "b1"))
        assert db.store_photo_chunk("van-a", _photo_chunks(wrong, "P-W")[0]).status is PhotoStatus.SHA_MISMATCH
        assert db.store_photo_chunk("van-a", _photo_chunks(early, "P-E")[0]).status is PhotoStatus.AWAITING_EVENT
        db.ingest("van-a", _photo_event_batch(store, {"P-E": hashlib.sha256(early).hexdigest()}, "b2"))
    rows = {r["photo_id"]: r for r in db.photo_rows()}
    assert rows["P-W"]["status"] == "sha_mismatch" and rows["P-W"]["expected_sha256"] == "ab" * 32
    assert Path(rows["P-W"]["path"]).read_bytes() == wrong  # kept for the operator to look at
    assert rows["P-E"]["status"] == "ok" and rows["P-E"]["event_id"] is not None
    assert [f["kind"] for f in db.flags("van-a")] == [FlagKind.PHOTO_SHA_MISMATCH.value]
