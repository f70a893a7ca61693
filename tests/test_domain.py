from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.contract.domain import (
    Block,
    DomainError,
    Event,
    EventType,
    Instruction,
    Lane,
    Package,
    Route,
    Stop,
    new_event_id,
)
from device.contract.position import Position
from firmware_bridge.fix import Fix, FixError, FixMode


def route_doc(version: int = 1) -> dict:
    return {
        "block_id": "B1",
        "version": version,
        "stops": [
            {"id": "S1", "address": "12 Elm St", "house_number": "12A", "lat": 47.61, "lon": -122.33,
             "window_end": "2026-11-24T18:00:00Z",
             "packages": [{"id": "TBA001", "instruction": "access_code", "access_code": "4711"},
                          {"id": "TBA002", "signature_required": True}]},
            {"id": "S2", "address": "14 Elm St", "house_number": "14", "lat": 47.612, "lon": -122.331,
             "packages": [{"id": "TBA003", "instruction": "neighbour", "note": "No. 16"}]},
        ],
    }


def test_route_round_trip_and_manifest() -> None:
    route = Route.from_dict(route_doc())
    assert Route.from_dict(json.loads(json.dumps(route.to_dict()))) == route
    assert route.manifest() == {"TBA001": "S1", "TBA002": "S1", "TBA003": "S2"}
    assert route.stops[0].packages[0].instruction is Instruction.ACCESS_CODE
    assert route.stops[0].window_end == datetime(2026, 11, 24, 18, tzinfo=timezone.utc)


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.update(version=0), "route.version"),
    (lambda d: d.update(version="2"), "route.version"),
    (lambda d: d["stops"][0].update(lat=123), "route.stops[0].lat"),
    (lambda d: d["stops"][0].pop("house_number"), "route.stops[0].house_number"),
    (lambda d: d["stops"][0]["packages"][0].pop("access_code"), "package.access_code"),
    (lambda d: d["stops"][1]["packages"][0].update(instruction="throw_over_fence"),
     "route.stops[1].packages[0].instruction"),
    (lambda d: d["stops"][1].update(id="S1"), "route.stops"),
    (lambda d: d["stops"][1]["packages"][0].update(id="TBA001"), "route.stops"),
    (lambda d: d["stops"][0].update(window_end="tomorrow"), "route.stops[0].window_end"),
    (lambda d: d.update(stops="S1,S2"), "route.stops"),
])
def test_route_validation_names_the_field(mutate, field) -> None:
    doc = route_doc()
    mutate(doc)
    with pytest.raises(DomainError) as info:
        Route.from_dict(doc)
    assert info.value.field == field


def test_block_validation() -> None:
    raw = {"id": "BLK-1", "station": "DXX1", "starts_at": "2026-11-25T08:00:00Z", "ends_at": "2026-11-25T12:00:00Z",
           "pay_cents": 9000}
    block = Block.from_dict(raw)
    assert Block.from_dict(block.to_dict()) == block
    with pytest.raises(DomainError, match="ends_at"):
        Block.from_dict({**raw, "ends_at": "2026-11-25T07:00:00Z"})
    with pytest.raises(DomainError, match="starts_at"):
        Block.from_dict({**raw, "starts_at": "2026-11-25T08:00:00"})  # no UTC offset


def test_event_ids_are_time_ordered_and_unique() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert ids == sorted(ids)
    assert all(i[14] == "7" for i in ids)  # UUID version 7


def test_event_carries_wall_clock_monotonic_and_fix() -> None:
    fix = Fix(time=datetime(2026, 11, 24, 10, 0, 0, 123000, tzinfo=timezone.utc), lat=47.6, lon=-122.3,
              mode=FixMode.FIX_3D, eph=3.5)
    before = time.monotonic()
    event = Event(EventType.PACKAGE_SCANNED, {"package": "TBA001"}, fix=Position(fix.to_dict()))
    assert before <= event.mono <= time.monotonic()
    assert event.ts.endswith("Z")
    doc = event.to_dict()
    assert doc["fix"]["mode"] == 3 and doc["fix"]["eph"] == 3.5
    assert Event.from_dict(json.loads(json.dumps(doc))) == event
    assert event.lane is Lane.EVENTS
    assert Event(EventType.GPS_FIX, fix=Position(fix.to_dict())).lane is Lane.TRACK


def test_fix_rejects_impossible_values() -> None:
    with pytest.raises(FixError):
        Fix(time=None, lat=91.0, lon=0.0, mode=FixMode.FIX_2D)
    with pytest.raises(FixError):
        Fix(time=None, lat=None, lon=None, mode=FixMode.FIX_3D)
    with pytest.raises(FixError):
        Fix(time=datetime(2026, 1, 1), lat=1.0, lon=1.0, mode=FixMode.FIX_2D)  # naive time
    assert not Fix(time=None, lat=None, lon=None).has_position


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                      st.lists(st.integers(), max_size=3)), max_size=6))
def test_any_json_object_either_parses_or_raises_domain_error(doc) -> None:
    for parse in (Route.from_dict, Block.from_dict, Event.from_dict, Package.from_dict, Stop.from_dict):
        try:
            parse(doc)
        except DomainError:
            pass


@pytest.mark.parametrize("doc", [{"lat": 91.0, "lon": 0.0, "mode": 2}, {"mode": 3}, {"mode": 7},
                                 {"lat": "47", "lon": 8.0, "mode": 2}, {"time": "2026-01-01T00:00:00", "mode": 1},
                                 {"speed": float("nan")}])
def test_event_fix_on_the_wire_is_checked(doc) -> None:
    raw = Event(EventType.GPS_FIX).to_dict()
    with pytest.raises(DomainError, match="event.fix"):
        Event.from_dict({**raw, "fix": doc})
