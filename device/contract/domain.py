"""Domain types: Block, Route, Stop, Package and Event. Frozen dataclasses, validated on construction.

Everything that comes from outside (cloud JSON, config) enters through `from_dict`, which raises
`DomainError` naming the offending field.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum, StrEnum
from functools import cached_property
from typing import Any, Mapping

import uuid6

from device.contract.position import Position

SCHEMA_VERSION = 1  # version of the event JSON shape, sent with every batch


class DomainError(ValueError):
    """A domain object failed validation; `field` names what was wrong."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


class Role(StrEnum):
    VEHICLE = "vehicle"
    DOCK = "dock"


class Instruction(StrEnum):
    """How a package is to be handed over."""

    LEAVE_AT_DOOR = "leave_at_door"
    HAND_TO_RESIDENT = "hand_to_resident"
    NEIGHBOUR = "neighbour"
    ACCESS_CODE = "access_code"


class EventType(StrEnum):
    AGENT_STARTED = "agent.started"
    AGENT_STOPPED = "agent.stopped"
    STORE_RECOVERED = "store.recovered"  # a corrupt database was moved aside
    STORE_FULL = "store.full"  # recorded once space returned: how long the disk was full, events refused
    CLOCK_SKEW = "clock.skew"
    HEALTH = "health"
    GPS_FIX = "gps.fix"  # breadcrumb: the only type that may be thinned
    BLOCK_OFFERED = "block.offered"
    BLOCK_CLAIM_REQUESTED = "block.claim_requested"
    BLOCK_CLAIMED = "block.claimed"
    BLOCK_CLAIM_LOST = "block.claim_lost"
    ROUTE_RECEIVED = "route.received"
    ROUTE_REVISED = "route.revised"
    ROUTE_RESEQUENCED = "route.resequenced"  # the van re-ordered its remaining stops itself (old/new order, reason)
    PACKAGE_SCANNED = "package.scanned"
    PACKAGE_REJECTED = "package.rejected"  # wrong van, unknown, duplicate
    PACKAGES_MISSING = "package.missing"
    LOADING_COMPLETE = "loading.complete"
    STOP_ARRIVED = "stop.arrived"
    STOP_DEPARTED = "stop.departed"
    STOP_COMPLETED = "stop.completed"  # every package of the stop delivered or excepted
    PHOTO_CAPTURED = "photo.captured"
    PHOTO_CHECKED = "photo.checked"
    SIGNATURE_CAPTURED = "delivery.signature"  # strokes or an image reference, with the packages it covers
    DELIVERY_PROOF = "delivery.proof"
    DELIVERY_EXCEPTION = "delivery.exception"
    BLOCK_COMPLETED = "block.completed"
    BLOCK_WITHDRAWN = "block.withdrawn"  # the cloud re-offered the van's block: what the van still holds goes back
    STAGING_PLAN_RECEIVED = "dock.plan_received"
    PACKAGE_STAGED = "dock.staged"
    STAGING_COMPLETE = "dock.staging_complete"
    INPUT_REJECTED = "input.rejected"
    COMMAND_RESULT = "command.result"  # a cloud command's answer: id, name, status ok/failed/rejected, detail, data
    UPDATE_APPLIED = "update.applied"  # a new release passed its health gate and is kept
    UPDATE_ROLLED_BACK = "update.rolled_back"  # a new release failed its gate or its starts: the previous is back


class Verdict(StrEnum):
    """The house-number check of a proof photo."""

    MATCH = "match"
    MISMATCH = "mismatch"
    UNREADABLE = "unreadable"


class Lane(IntEnum):
    """Sync priority: lower drains first after an outage."""

    EVENTS = 0  # blocks, scans, stops, proofs
    TRACK = 1  # telemetry: GPS breadcrumbs and health (may wait to go up in bigger, cheaper batches)


TELEMETRY = frozenset({EventType.GPS_FIX, EventType.HEALTH})


def lane_of(event_type: EventType) -> Lane:
    return Lane.TRACK if event_type in TELEMETRY else Lane.EVENTS


BLOB_ID_PREFIX = "blob-"  # an upload that is not a proof photo (logs): recorded by a command.result, not photo.checked


def new_event_id() -> str:
    """A time-ordered unique id (UUIDv7), made on the device."""
    return str(uuid6.uuid7())


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- validation helpers -------------------------------------------------------------------------


def _optional_text(raw: Mapping[str, Any], key: str, where: str, *, max_len: int = 200) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DomainError(f"{where}.{key}", f"expected a non-empty string, got {value!r:.60}")
    if len(value) > max_len:
        raise DomainError(f"{where}.{key}", f"longer than {max_len} characters")
    return value


def _text(raw: Mapping[str, Any], key: str, where: str, *, max_len: int = 200) -> str:
    value = _optional_text(raw, key, where, max_len=max_len)
    if value is None:
        raise DomainError(f"{where}.{key}", "missing")
    return value


def _number(raw: Mapping[str, Any], key: str, where: str, low: float, high: float,
            default: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DomainError(f"{where}.{key}", f"expected a number, got {value!r:.60}")
    if not low <= value <= high:
        raise DomainError(f"{where}.{key}", f"{value} outside [{low}, {high}]")
    return float(value)


def _optional_time(raw: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = _optional_text(raw, key, where)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DomainError(f"{where}.{key}", f"not an ISO 8601 time: {value!r:.40}") from exc
    if moment.tzinfo is None:
        raise DomainError(f"{where}.{key}", "time without a UTC offset")
    return moment


def _time(raw: Mapping[str, Any], key: str, where: str) -> datetime:
    moment = _optional_time(raw, key, where)
    if moment is None:
        raise DomainError(f"{where}.{key}", "missing")
    return moment


def _list(raw: Mapping[str, Any], key: str, where: str, max_items: int) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise DomainError(f"{where}.{key}", "expected a list")
    if len(value) > max_items:
        raise DomainError(f"{where}.{key}", f"more than {max_items} items")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DomainError(where, f"expected an object, got {type(value).__name__}")
    return value


# --- the delivery domain --------------------------------------------------------------------------

MAX_STOPS = 500
MAX_PACKAGES_PER_STOP = 200


@dataclass(frozen=True)
class Package:
    id: str  # the barcode printed on the label (tracking id or SSCC)
    instruction: Instruction = Instruction.LEAVE_AT_DOOR
    signature_required: bool = False
    access_code: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.id.isprintable():
            raise DomainError("package.id", f"not a printable id: {self.id!r:.40}")
        if self.instruction is Instruction.ACCESS_CODE and not self.access_code:
            raise DomainError("package.access_code", "required for instruction access_code")

    @classmethod
    def from_dict(cls, raw: Any, where: str = "package") -> Package:
        raw = _mapping(raw, where)
        try:
            instruction = Instruction(raw.get("instruction", Instruction.LEAVE_AT_DOOR))
        except ValueError as exc:
            raise DomainError(f"{where}.instruction", f"unknown {raw.get('instruction')!r:.40}") from exc
        signature = raw.get("signature_required", False)
        if not isinstance(signature, bool):
            raise DomainError(f"{where}.signature_required", "expected true or false")
        return cls(
            id=_text(raw, "id", where),
            instruction=instruction,
            signature_required=signature,
            access_code=_optional_text(raw, "access_code", where, max_len=40),
            note=_optional_text(raw, "note", where, max_len=500),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "instruction": self.instruction.value,
                               "signature_required": self.signature_required}
        if self.access_code:
            out["access_code"] = self.access_code
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Stop:
    id: str
    address: str
    house_number: str  # what the proof photo must show, e.g. "12A"
    lat: float
    lon: float
    packages: tuple[Package, ...]
    radius_m: float = 40.0  # geofence radius for arrival
    window_end: datetime | None = None  # promised delivery time, for the on-time rate
    window_start: datetime | None = None  # not before (a planned route's time window opens)
    service_s: float = 0.0  # planned time spent at the stop
    eta: datetime | None = None  # planned arrival (the planner's, or the van's own after a re-sequence)

    def __post_init__(self) -> None:
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise DomainError("stop.lat/lon", f"out of range: {self.lat}, {self.lon}")
        if not self.packages:
            raise DomainError(f"stop[{self.id}].packages", "a stop needs at least one package")

    @classmethod
    def from_dict(cls, raw: Any, where: str = "stop") -> Stop:
        raw = _mapping(raw, where)
        packages = tuple(
            Package.from_dict(p, f"{where}.packages[{i}]")
            for i, p in enumerate(_list(raw, "packages", where, MAX_PACKAGES_PER_STOP))
        )
        return cls(
            id=_text(raw, "id", where),
            address=_text(raw, "address", where, max_len=300),
            house_number=_text(raw, "house_number", where, max_len=12),
            lat=_number(raw, "lat", where, -90, 90),
            lon=_number(raw, "lon", where, -180, 180),
            packages=packages,
            radius_m=_number(raw, "radius_m", where, 5, 1000, default=40.0),
            window_end=_optional_time(raw, "window_end", where),
            window_start=_optional_time(raw, "window_start", where),
            service_s=_number(raw, "service_s", where, 0, 86400, default=0.0),
            eta=_optional_time(raw, "eta", where),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "address": self.address, "house_number": self.house_number,
                               "lat": self.lat, "lon": self.lon, "radius_m": self.radius_m,
                               "packages": [p.to_dict() for p in self.packages]}
        for name in ("window_end", "window_start", "eta"):
            if getattr(self, name):
                out[name] = iso_utc(getattr(self, name))
        if self.service_s:
            out["service_s"] = self.service_s
        return out


@dataclass(frozen=True)
class Route:
    """The ordered stops of one block. A higher `version` replaces a lower one."""

    block_id: str
    version: int
    stops: tuple[Stop, ...]

    def __post_init__(self) -> None:
        if self.version < 1:
            raise DomainError("route.version", "must be >= 1")
        stop_ids = [s.id for s in self.stops]
        if len(set(stop_ids)) != len(stop_ids):
            raise DomainError("route.stops", "duplicate stop id")
        package_ids = [p.id for s in self.stops for p in s.packages]
        if len(set(package_ids)) != len(package_ids):
            raise DomainError("route.stops", "a package appears twice")

    def manifest(self) -> dict[str, str]:
        """package id -> stop id"""
        return {p.id: s.id for s in self.stops for p in s.packages}

    def stop(self, stop_id: str) -> Stop | None:
        """The stop with this id, or None (a dict lookup: handlers ask this several times per input)."""
        return self._stops_by_id.get(stop_id)

    @cached_property
    def _stops_by_id(self) -> dict[str, Stop]:
        return {s.id: s for s in self.stops}

    @classmethod
    def from_dict(cls, raw: Any) -> Route:
        raw = _mapping(raw, "route")
        version = raw.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise DomainError("route.version", f"expected an integer, got {version!r:.40}")
        stops = tuple(
            Stop.from_dict(s, f"route.stops[{i}]") for i, s in enumerate(_list(raw, "stops", "route", MAX_STOPS))
        )
        return cls(block_id=_text(raw, "block_id", "route"), version=version, stops=stops)

    def to_dict(self) -> dict[str, Any]:
        return {"block_id": self.block_id, "version": self.version, "stops": [s.to_dict() for s in self.stops]}


@dataclass(frozen=True)
class Block:
    """A pre-scheduled delivery shift a driver can claim."""

    id: str
    station: str
    starts_at: datetime
    ends_at: datetime
    pay_cents: int = 0
    area: str = ""

    def __post_init__(self) -> None:
        if self.ends_at <= self.starts_at:
            raise DomainError("block.ends_at", "must be after starts_at")
        if self.pay_cents < 0:
            raise DomainError("block.pay_cents", "must not be negative")

    @classmethod
    def from_dict(cls, raw: Any, where: str = "block") -> Block:
        raw = _mapping(raw, where)
        pay = raw.get("pay_cents", 0)
        if isinstance(pay, bool) or not isinstance(pay, int):
            raise DomainError(f"{where}.pay_cents", "expected an integer")
        return cls(
            id=_text(raw, "id", where),
            station=_text(raw, "station", where),
            starts_at=_time(raw, "starts_at", where),
            ends_at=_time(raw, "ends_at", where),
            pay_cents=pay,
            area=_optional_text(raw, "area", where) or "",
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "station": self.station, "starts_at": iso_utc(self.starts_at),
               "ends_at": iso_utc(self.ends_at), "pay_cents": self.pay_cents}
        if self.area:
            out["area"] = self.area
        return out


@dataclass(frozen=True)
class Event:
    """Something that happened on the device. `seq` and `hash` are given by the store on commit."""

    type: EventType
    data: Mapping[str, Any] = field(default_factory=dict)
    block: str | None = None
    stop: str | None = None
    fix: Position | None = None
    id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=lambda: iso_utc(utc_now()))  # wall clock, UTC
    mono: float = field(default_factory=time.monotonic)  # survives wall-clock jumps

    @property
    def lane(self) -> Lane:
        return lane_of(self.type)

    def to_dict(self, seq: int | None = None) -> dict[str, Any]:
        """The contract's event shape (DESIGN.md section 3); `seq` is added once the store assigned it."""
        # Built whole in one literal (adding "seq" afterwards grows the dict), its keys in the canonical (sorted)
        # order, which orjson's key sort then finds already in place, and the type's value read as the member's
        # attribute (`.value` is a descriptor call): the store runs this once per event it appends.
        fix = self.fix
        doc = {
            "block": self.block,
            "data": self.data,
            "fix": None if fix is None else fix.to_dict(),
            "id": self.id,
            "mono": self.mono,
            "seq": seq,
            "stop": self.stop,
            "ts": self.ts,
            "type": self.type._value_,
        }
        if seq is None:
            del doc["seq"]
        return doc

    @classmethod
    def from_dict(cls, raw: Any) -> Event:
        raw = _mapping(raw, "event")
        try:
            event_type = EventType(raw.get("type"))
        except ValueError as exc:
            raise DomainError("event.type", f"unknown {raw.get('type')!r:.40}") from exc
        data = raw.get("data") or {}
        fix = raw.get("fix")
        try:
            parsed_fix = Position.from_dict(_mapping(fix, "event.fix")) if fix else None
        except (ValueError, TypeError, AttributeError) as exc:
            raise DomainError("event.fix", str(exc)) from exc
        return cls(
            type=event_type,
            data=dict(_mapping(data, "event.data")),
            block=_optional_text(raw, "block", "event"),
            stop=_optional_text(raw, "stop", "event"),
            fix=parsed_fix,
            id=_text(raw, "id", "event"),
            ts=_text(raw, "ts", "event"),
            mono=_number(raw, "mono", "event", 0, math.inf),
        )
