"""Fuzzing what the cloud accepts from devices: event batches, photo chunks, claims and status, published by a
device certificate through the real broker to a live reference cloud.

Each message must end in exactly one counted outcome (stored, answered, or a reject with its reason) and the
cloud must keep running; nothing a device sends may end it. Inputs that once crashed the cloud are kept in
tests/fuzz_corpus/cloud/ and replayed (add any input the fuzz run below finds there).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_sync.cloud import CloudThread
from cloud_sync.messages import MAX_PENDING_AGE_S
from cloud_sync.topics import FleetTopics
from device.testbench.broker import MosquittoBroker
from tests.helpers.fleet import FLEET, FleetPki
from tests.helpers.sync_harness import RawClient, start_cloud, wait_until

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus" / "cloud"
DEVICE = "van-a"
TOPICS = FleetTopics(FLEET).device(DEVICE)
CHANNELS = ("events", "photo", "claim", "status")
# Every way a handled message is counted (see CloudPeer): exactly one of these grows per message.
OUTCOMES = ("rejected", "batches", "photo_chunks", "claims.granted", "claims.taken", "claims.unknown_block",
            "claims.wrong_station", "claims.limit_reached", "statuses", "statuses_cleared", "db_errors")
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Channel:
    """A live cloud and a device's raw connection; `send` publishes and waits for the cloud's one outcome."""

    def __init__(self, cloud: CloudThread, van: RawClient) -> None:
        self.cloud = cloud
        self.van = van

    def _outcomes(self) -> int:
        assert self.cloud.peer is not None
        return sum(self.cloud.peer.counters[key] for key in OUTCOMES)

    def send(self, channel: str, payload: bytes, photo_topic_id: str = "P-1") -> None:
        assert self.cloud.peer is not None
        counters = self.cloud.peer.counters
        before, outcomes = counters["inbound"], self._outcomes()
        topic = {"events": TOPICS.events, "claim": TOPICS.claim, "status": TOPICS.status,
                 "photo": f"{TOPICS.base}/photo/{photo_topic_id}"}[channel]
        assert not self.van.publish(topic, payload).is_failure
        wait_until(lambda: counters["inbound"] > before and self._outcomes() > outcomes, 20,
                   f"the cloud counted no outcome for {payload[:80]!r} on {channel}: {dict(counters)}")
        assert counters["inbound"] == before + 1 and self._outcomes() == outcomes + 1
        assert counters["db_errors"] == 0
        assert self.cloud.running


@pytest.fixture(scope="module")
def channel(fleet: FleetPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channel]:
    """A broker of its own (the fleet's config): no retained message or Last Will of another test reaches this
    cloud, so each message's outcome is counted exactly."""
    broker = MosquittoBroker(tmp_path_factory.mktemp("fuzz-broker"), extra_config=fleet.mosquitto_config()).start()
    cloud = start_cloud(fleet, broker.port, tmp_path_factory.mktemp("fuzz-cloud") / "cloud.db", workers=1)
    try:
        with RawClient(fleet.broker_settings(DEVICE, broker.port), DEVICE) as van:
            yield Channel(cloud, van)
            assert cloud.running
    finally:
        cloud.stop()
        broker.stop()


# --- payloads: valid shapes with any field replaced by any JSON value, and plain bytes --------------------

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what JSON parsers on both ends read
    st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 1e308]),
    st.text(max_size=40), st.sampled_from(["", "$x", "a/b", "+", "#", "\x00", "0" * 64, "zstd", "online", "ok"]),
)
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)
HASH = "0" * 64


def _event(seq: int) -> dict[str, Any]:
    return {"id": f"fz-{seq}", "type": "package.scanned", "seq": seq, "hash": HASH, "ts": "2026-11-25T08:00:00Z",
            "mono": 1.0, "fix": None, "block": None, "stop": None, "data": {}}


def _valid(channel: str) -> dict[str, Any]:
    if channel == "events":
        return {"batch_id": "fz", "device": DEVICE, "lane": 0, "floor_seq": 0, "count": 1, "events": [_event(1)]}
    if channel == "photo":
        return {"batch_id": "fz-c", "photo_id": "P-1", "seq": 0, "total": 2, "sha256": HASH}  # + b"\n" + bytes
    if channel == "claim":
        return {"block_id": "B-FUZZ", "request_id": "r-1"}
    return {"state": "online", "device": DEVICE, "version": "1", "outbox_depth": 0, "last_ack_seq": None,
            "oldest_pending_s": 12.5, "position": None, "ts": "2026-11-25T08:00:00Z", "storage": "ok"}


@st.composite
def mutated(draw: st.DrawFn, channel: str) -> bytes:
    doc = _valid(channel)
    target = doc
    if channel == "events" and draw(st.booleans()):
        target = doc["events"][0]  # a field of the event rather than of the batch
    for key in draw(st.lists(st.sampled_from([*target, "extra"]), min_size=1, max_size=3, unique=True)):
        target[key] = draw(JSON_ANY)
    tail = b"\n" + draw(st.binary(max_size=64)) if channel == "photo" else b""  # a header line, then the bytes
    if draw(st.booleans()):
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) + tail
    return draw(st.sampled_from([orjson.dumps(doc)[:-1], orjson.dumps([doc]), b"\xff" + orjson.dumps(doc)])) + tail


PAYLOADS = {name: st.one_of(mutated(name), st.binary(max_size=300), JSON_ANY.map(orjson.dumps))
            for name in CHANNELS}


@pytest.mark.parametrize("name", CHANNELS)
def test_any_payload_is_one_counted_outcome(channel: Channel, name: str) -> None:
    @FUZZ
    @given(payload=PAYLOADS[name])
    def run(payload: bytes) -> None:
        channel.send(name, payload)

    run()


@FUZZ
@given(photo_id=st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["$x", "P-1", "a b", "é"])))
def test_photo_ids_of_any_text_are_one_counted_outcome(channel: Channel, photo_id: str) -> None:
    doc = _valid("photo") | {"photo_id": photo_id}
    level = photo_id if photo_id.isprintable() and not any(c in photo_id for c in "/+#$") else "P-1"
    channel.send("photo", orjson.dumps(doc) + b"\n" + b"chunk", photo_topic_id=level)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_corpus_inputs_are_one_counted_outcome(channel: Channel, path: Path) -> None:
    channel.send(path.name.split("__")[0], path.read_bytes())


@pytest.mark.parametrize("value", ["300", -1, -0.5, 1e300, MAX_PENDING_AGE_S + 1, True, [1], {"s": 1}])
def test_a_hostile_oldest_pending_age_is_a_counted_schema_reject(channel: Channel, value: Any) -> None:
    """The status's `oldest_pending_s` is a duration in 0..ten years: anything else is refused, not stored."""
    assert channel.cloud.peer is not None
    counters = channel.cloud.peer.counters
    before = counters["rejected.schema"], counters["statuses"]
    channel.send("status", orjson.dumps(_valid("status") | {"oldest_pending_s": value}))
    assert (counters["rejected.schema"], counters["statuses"]) == (before[0] + 1, before[1])


@pytest.mark.parametrize("value", [None, 0, 0.25, 86_400, MAX_PENDING_AGE_S])
def test_an_oldest_pending_age_in_range_is_stored(channel: Channel, value: float | None) -> None:
    assert channel.cloud.peer is not None
    counters = channel.cloud.peer.counters
    before = counters["rejected"], counters["statuses"]
    channel.send("status", orjson.dumps(_valid("status") | {"oldest_pending_s": value}))
    assert (counters["rejected"], counters["statuses"]) == (before[0], before[1] + 1)
