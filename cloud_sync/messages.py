"""Typed, size-capped, schema-checked payloads of the topic contract (DESIGN.md section 3).

Parsing is pure (bytes in, frozen dataclass out, MessageRejected on anything wrong); no I/O here.
Signed payloads (offers, claim results, routes, commands) are checked with `signing.Verifier` first and the
body then parsed by the `from_body` of its class.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Mapping

import orjson
import zstandard

from cloud_sync.errors import MessageRejected, RejectReason
from device.contract.domain import Block, DomainError, Route, iso_utc

MAX_INBOUND_BYTES = 1024 * 1024  # device side: the largest offer/route/command accepted
MAX_BATCH_BYTES = 4 * 1024 * 1024  # cloud side: the largest event batch accepted (after decompression too)
MAX_BATCH_EVENTS = 5000
ZSTD_LEVEL = 9  # batches of a few hundred events: level 9 is a tenth smaller than 3 at a few ms per batch
MAX_LANE = 15  # sync lanes are a handful of priorities (device.contract.domain.Lane)
MAX_SEQ = 2**63 - 1  # seqs are SQLite INTEGERs (signed 64-bit) on both ends
MAX_ID_CHARS = 128  # ids (events, batches, requests, photos, blocks) and event types
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Compression(StrEnum):
    NONE = "none"
    ZSTD = "zstd"


def decode_json(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """The size cap comes before any parsing: an oversized payload is never decoded."""
    if len(payload) > max_bytes:
        raise MessageRejected(RejectReason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageRejected(RejectReason.NOT_JSON, str(exc)[:120]) from None
    if not isinstance(doc, dict):
        raise MessageRejected(RejectReason.SCHEMA, f"expected an object, got {type(doc).__name__}")
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    return orjson.dumps(doc)


def _field(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):  # no field of the contract is a bool
        raise MessageRejected(RejectReason.SCHEMA, f"{where}.{key}: expected {kind}, got {value!r:.60}")
    if isinstance(value, str) and not value:
        raise MessageRejected(RejectReason.SCHEMA, f"{where}.{key}: empty")
    return value


def _int(doc: Mapping[str, Any], key: str, where: str, low: int = 0, high: int = MAX_SEQ) -> int:
    value: int = _field(doc, key, int, where)
    if not low <= value <= high:
        raise MessageRejected(RejectReason.SCHEMA, f"{where}.{key}: {value} outside {low}..{high}")
    return value


def _optional_int(doc: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if doc.get(key) is None else _int(doc, key, where)


def _text(doc: Mapping[str, Any], key: str, where: str, max_chars: int = MAX_ID_CHARS) -> str:
    value: str = _field(doc, key, str, where)
    if len(value) > max_chars:
        raise MessageRejected(RejectReason.SCHEMA, f"{where}.{key}: longer than {max_chars} characters")
    return value


def _utc(value: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MessageRejected(RejectReason.SCHEMA, f"{where}: not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise MessageRejected(RejectReason.SCHEMA, f"{where}: time without UTC offset")
    return moment


# --- up: event batches ---------------------------------------------------------------------------


MAX_HEADER_BYTES = 4096  # the JSON header line of a binary payload (a zstd batch, a photo chunk)


def split_binary(payload: bytes, max_bytes: int, where: str) -> tuple[dict[str, Any], bytes] | None:
    """A binary payload is one JSON header line, b"\n", then raw bytes (no base64: a third less on the wire).
    None for a plain JSON payload (orjson never writes a raw newline)."""
    if len(payload) > max_bytes:
        raise MessageRejected(RejectReason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    head, newline, rest = payload.partition(b"\n")
    if not newline:
        return None
    if len(head) > MAX_HEADER_BYTES:
        raise MessageRejected(RejectReason.SCHEMA, f"{where}: header longer than {MAX_HEADER_BYTES} bytes")
    return decode_json(head, MAX_HEADER_BYTES), rest


def join_binary(header: Mapping[str, Any], data: bytes) -> bytes:
    return orjson.dumps(header) + b"\n" + data


@dataclass(frozen=True)
class EventBatch:
    """A batch of outbox events of one lane. `events` are the stored event documents (with seq); the last one
    carries `hash`, its link in the device's hash chain (a checkpoint: the cloud computes every hash itself and
    compares where the device sent one, so a changed or missing event shows at the batch's checkpoint at the
    latest; a per-event hash would be half of a compressed batch). Others may carry `hash` too.

    `floor_seq` is the device's lowest unacked seq when the batch was made: every seq below it was acked by
    the cloud, so the cloud must hold it (a missing one is a real gap, not one still in transit).

    On the wire: plain JSON, or with zstd a JSON header line followed by the compressed event list.
    """

    batch_id: str
    device: str
    lane: int
    floor_seq: int
    events: tuple[Mapping[str, Any], ...]

    def to_payload(self, compression: Compression = Compression.NONE) -> bytes:
        doc: dict[str, Any] = {"batch_id": self.batch_id, "device": self.device, "lane": self.lane,
                               "floor_seq": self.floor_seq, "count": len(self.events)}
        if compression is Compression.ZSTD:
            doc["compression"] = Compression.ZSTD.value
            return join_binary(doc, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(orjson.dumps(self.events)))
        doc["events"] = self.events
        return orjson.dumps(doc)

    @classmethod
    def from_payload(cls, payload: bytes, max_bytes: int = MAX_BATCH_BYTES) -> EventBatch:
        where = "batch"
        binary = split_binary(payload, max_bytes, where)
        if binary is None:
            doc = decode_json(payload, max_bytes)
            events: Any = doc.get("events")
            if doc.get("compression", Compression.NONE.value) != Compression.NONE.value:
                raise MessageRejected(RejectReason.SCHEMA, f"batch.compression: {doc.get('compression')!r:.30} "
                                      "in a plain JSON batch")
        else:
            doc, packed = binary
            if doc.get("compression") != Compression.ZSTD.value:
                raise MessageRejected(RejectReason.SCHEMA, f"batch.compression: unknown {doc.get('compression')!r:.30}")
            events = _inflate_events(packed, max_bytes)
        if not isinstance(events, list) or not 0 < len(events) <= MAX_BATCH_EVENTS:
            raise MessageRejected(RejectReason.SCHEMA, f"batch.events: expected 1..{MAX_BATCH_EVENTS} events")
        if doc.get("count") != len(events):
            raise MessageRejected(RejectReason.SCHEMA, "batch.count does not match the events")
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                raise MessageRejected(RejectReason.SCHEMA, f"batch.events[{i}]: expected an object")
            _text(event, "id", f"batch.events[{i}]")
            _text(event, "type", f"batch.events[{i}]")
            _int(event, "seq", f"batch.events[{i}]", low=1)
            if ("hash" in event or i == len(events) - 1) and \
                    not _HEX64.match(_field(event, "hash", str, f"batch.events[{i}]")):
                raise MessageRejected(RejectReason.SCHEMA, f"batch.events[{i}].hash: expected 64 hex digits")
        return cls(batch_id=_text(doc, "batch_id", where), device=_text(doc, "device", where),
                   lane=_int(doc, "lane", where, high=MAX_LANE), floor_seq=_int(doc, "floor_seq", where),
                   events=tuple(events))


def _inflate_events(packed: bytes, max_bytes: int) -> Any:
    try:
        declared = zstandard.frame_content_size(packed)
        if declared > max_bytes:  # a decompression bomb is refused before it is inflated
            raise MessageRejected(RejectReason.TOO_LARGE, f"batch inflates to {declared} bytes > {max_bytes}")
        raw = zstandard.ZstdDecompressor().decompress(packed, max_output_size=max_bytes)
    except zstandard.ZstdError as exc:
        raise MessageRejected(RejectReason.SCHEMA, f"batch.events: bad zstd data ({exc})") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageRejected(RejectReason.NOT_JSON, f"batch.events: {str(exc)[:100]}") from None


PHOTO_CHUNK_BYTES = 64 * 1024  # raw bytes per chunk: small enough to go through on a weak cellular link
MAX_PHOTO_CHUNKS = 1024  # 64 MiB at most per photo
_SHA256 = _HEX64
_PHOTO_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")  # a UUID or similar: also a file name in the cloud


@dataclass(frozen=True)
class PhotoChunk:
    """One piece of a proof photo. Acked like an event batch (same ack topic, by `batch_id`), so an upload
    resumes chunk by chunk after an outage or a restart."""

    batch_id: str
    photo_id: str
    seq: int  # 0-based chunk index
    total: int
    sha256: str  # of the whole photo: the cloud checks it once every chunk is there
    data: bytes

    def to_payload(self) -> bytes:
        return join_binary({"batch_id": self.batch_id, "photo_id": self.photo_id, "seq": self.seq,
                            "total": self.total, "sha256": self.sha256}, self.data)

    @classmethod
    def from_payload(cls, payload: bytes, max_bytes: int = PHOTO_CHUNK_BYTES + MAX_HEADER_BYTES + 1) -> PhotoChunk:
        where = "photo_chunk"
        binary = split_binary(payload, max_bytes, where)
        if binary is None:
            raise MessageRejected(RejectReason.SCHEMA, f"{where}: expected a JSON header line and the bytes")
        doc, data = binary
        total, seq = _field(doc, "total", int, where), _field(doc, "seq", int, where)
        if not 0 < total <= MAX_PHOTO_CHUNKS or not 0 <= seq < total:
            raise MessageRejected(RejectReason.SCHEMA, f"{where}: chunk {seq} of {total} out of range")
        sha = _field(doc, "sha256", str, where)
        if not _SHA256.match(sha):
            raise MessageRejected(RejectReason.SCHEMA, f"{where}.sha256: expected 64 hex digits")
        if not data or len(data) > PHOTO_CHUNK_BYTES:
            raise MessageRejected(RejectReason.SCHEMA, f"{where}.bytes: 1..{PHOTO_CHUNK_BYTES} bytes expected")
        photo_id = _text(doc, "photo_id", where)
        if not _PHOTO_ID.match(photo_id):  # also the chunk's topic level and a file name in the cloud
            raise MessageRejected(RejectReason.SCHEMA, f"{where}.photo_id: {photo_id!r:.40} is not a plain id")
        return cls(_text(doc, "batch_id", where), photo_id, seq, total, sha, data)


@dataclass(frozen=True)
class BatchAck:
    """The cloud stored (or already had) every event of the batch."""

    batch_id: str
    upto_seq: int  # the highest seq in the batch
    stored: int = 0
    duplicates: int = 0

    def to_payload(self) -> bytes:
        return encode({"batch_id": self.batch_id, "upto_seq": self.upto_seq, "stored": self.stored,
                       "duplicates": self.duplicates})

    @classmethod
    def from_payload(cls, payload: bytes, max_bytes: int = 4096) -> BatchAck:
        doc = decode_json(payload, max_bytes)
        return cls(batch_id=_field(doc, "batch_id", str, "ack"), upto_seq=_field(doc, "upto_seq", int, "ack"),
                   stored=doc.get("stored", 0) if isinstance(doc.get("stored"), int) else 0,
                   duplicates=doc.get("duplicates", 0) if isinstance(doc.get("duplicates"), int) else 0)


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # the Last Will: the broker publishes it when the device vanishes
    STOPPED = "stopped"  # a clean shutdown


@dataclass(frozen=True)
class DeviceStatus:
    """Retained on `.../status`."""

    state: Presence
    device: str
    version: str = ""
    outbox_depth: int | None = None
    last_ack_seq: int | None = None
    position: Mapping[str, Any] | None = None  # the newest fix, so the operator sees it before the backlog
    ts: str = field(default_factory=lambda: iso_utc(datetime.now(timezone.utc)))
    storage: str = "ok"  # the event store's disk: ok | low | full (full: events are being refused)

    def to_payload(self) -> bytes:
        return encode({"state": self.state.value, "device": self.device, "version": self.version,
                       "outbox_depth": self.outbox_depth, "last_ack_seq": self.last_ack_seq,
                       "position": self.position, "ts": self.ts, "storage": self.storage})

    @classmethod
    def from_payload(cls, payload: bytes, max_bytes: int = 16 * 1024) -> DeviceStatus:
        """Every field type-checked: the cloud stores and shows what it keeps."""
        doc = decode_json(payload, max_bytes)
        where = "status"
        try:
            state = Presence(doc.get("state", ""))  # absent: "" is no state either
        except ValueError:
            raise MessageRejected(RejectReason.SCHEMA, f"status.state: unknown {doc.get('state')!r:.30}") from None
        storage = doc.get("storage", "ok")
        if storage not in STORAGE_CONDITIONS:
            raise MessageRejected(RejectReason.SCHEMA, f"status.storage: unknown {storage!r:.30}")
        position = doc.get("position")
        if position is not None and not _flat_object(position):
            raise MessageRejected(RejectReason.SCHEMA, "status.position: expected a flat object of numbers/strings")
        return cls(state=state, device=_text(doc, "device", where),
                   version=_text(doc, "version", where, 64) if doc.get("version") else "",
                   outbox_depth=_optional_int(doc, "outbox_depth", where),
                   last_ack_seq=_optional_int(doc, "last_ack_seq", where),
                   position=position, ts=_text(doc, "ts", where, 40) if doc.get("ts") else "", storage=storage)


STORAGE_CONDITIONS = ("ok", "low", "full")  # device.store's DiskCondition values
MAX_POSITION_FIELDS = 32


def _flat_object(value: Any) -> bool:
    """A fix as the device reports it: a small object of scalars."""
    return (isinstance(value, dict) and len(value) <= MAX_POSITION_FIELDS
            and all(v is None or isinstance(v, (int, float, str)) for v in value.values()))


# --- claims ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimRequest:
    block_id: str
    request_id: str

    def to_payload(self) -> bytes:
        return encode({"block_id": self.block_id, "request_id": self.request_id})

    @classmethod
    def from_payload(cls, payload: bytes, max_bytes: int = 4096) -> ClaimRequest:
        doc = decode_json(payload, max_bytes)
        return cls(block_id=_text(doc, "block_id", "claim"), request_id=_text(doc, "request_id", "claim"))


class ClaimStatus(StrEnum):
    GRANTED = "granted"
    TAKEN = "taken"  # another device won
    UNKNOWN_BLOCK = "unknown_block"
    WRONG_STATION = "wrong_station"  # the block is offered at another station than the device's
    LIMIT_REACHED = "limit_reached"  # the device already holds as many open blocks as the cloud allows


@dataclass(frozen=True)
class ClaimResult:
    block_id: str
    request_id: str
    device: str
    status: ClaimStatus

    @property
    def granted(self) -> bool:
        return self.status is ClaimStatus.GRANTED

    def to_body(self) -> dict[str, Any]:
        return {"block_id": self.block_id, "request_id": self.request_id, "device": self.device,
                "status": self.status.value}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClaimResult:
        try:
            status = ClaimStatus(body.get("status", ""))  # absent: "" is no status either
        except ValueError:
            raise MessageRejected(RejectReason.SCHEMA, f"claim_result.status: {body.get('status')!r:.30}") from None
        return cls(block_id=_field(body, "block_id", str, "claim_result"),
                   request_id=_field(body, "request_id", str, "claim_result"),
                   device=_field(body, "device", str, "claim_result"), status=status)


# --- signed downlink -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offers:
    """The open blocks of one station, retained. `version` grows with every republish (newest wins)."""

    station: str
    version: int
    blocks: tuple[Block, ...]

    def to_body(self) -> dict[str, Any]:
        return {"station": self.station, "version": self.version, "blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Offers:
        blocks = body.get("blocks")
        if not isinstance(blocks, list) or len(blocks) > 1000:
            raise MessageRejected(RejectReason.SCHEMA, "offers.blocks: expected a list of at most 1000")
        try:
            parsed = tuple(Block.from_dict(b, f"offers.blocks[{i}]") for i, b in enumerate(blocks))
        except DomainError as exc:
            raise MessageRejected(RejectReason.SCHEMA, str(exc)) from None
        return cls(station=_field(body, "station", str, "offers"), version=_field(body, "version", int, "offers"),
                   blocks=parsed)


@dataclass(frozen=True)
class RouteAssignment:
    """A route for one device (the device checks it is the addressee: a route is never forwarded)."""

    device: str
    route: Route

    def to_body(self) -> dict[str, Any]:
        return {"device": self.device, "route": self.route.to_dict()}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RouteAssignment:
        try:
            route = Route.from_dict(body.get("route"))
        except DomainError as exc:
            raise MessageRejected(RejectReason.SCHEMA, str(exc)) from None
        return cls(device=_field(body, "device", str, "route"), route=route)


@dataclass(frozen=True)
class Command:
    """A cloud command: unique id, addressee, expiry. The device refuses an expired or already seen id."""

    id: str
    device: str
    name: str
    args: Mapping[str, Any]
    expires_at: datetime

    def to_body(self) -> dict[str, Any]:
        return {"id": self.id, "device": self.device, "name": self.name, "args": dict(self.args),
                "expires_at": iso_utc(self.expires_at)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Command:
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise MessageRejected(RejectReason.SCHEMA, "cmd.args: expected an object")
        return cls(id=_field(body, "id", str, "cmd"), device=_field(body, "device", str, "cmd"),
                   name=_field(body, "name", str, "cmd"), args=args,
                   expires_at=_utc(_field(body, "expires_at", str, "cmd"), "cmd.expires_at"))
