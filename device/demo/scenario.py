"""The demo's world, made from a seed: a station, blocks whose stops are scattered around it and sequenced by
the cloud's route planner, the labels on their packages, and the two mistakes the agents must catch (a package of
no route, a photo of the neighbour's house)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from cloud_sync.cloud.planning.station import plan_station, read_station
from cloud_sync.cloud.planning.travel import RoadModelTimes
from device.contract.domain import Block, Instruction, Package, Route, Stop, iso_utc
from device.contract.travel import distance_m
from device.testbench.codes import sscc

STATION = "DXX1"
DEPOT = (47.6101, -122.3421)  # the station's loading dock
STOP_RADIUS_M = (250.0, 1200.0)  # stops lie this far from the station, in the block's quarter
PLAN_S = 0.5  # solver seconds per block
MIN_APART_M = 150.0
LOCKED_NOTE = "gate locked: no access"  # the simulated driver reports an exception for such a package


@dataclass(frozen=True)
class Scenario:
    blocks: tuple[tuple[Block, Route], ...]
    wrong_package: str  # an SSCC on no route: scanned once in every van
    wrong_house_stops: dict[str, str]  # block id -> the stop whose first photo shows the neighbour's number

    def route(self, block_id: str) -> Route:
        return next(r for b, r in self.blocks if b.id == block_id)


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (lat + north_m / 111_320.0, lon + east_m / (111_320.0 * math.cos(math.radians(lat))))


def make_scenario(seed: int, blocks: int = 2, stops: int = 4) -> Scenario:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    made = []
    wrong_house = {}
    placed: list[tuple[float, float]] = []
    for b in range(blocks):
        block_id = f"BLK-{seed}-{b + 1}"
        heading = 40 + 360 * b / blocks  # each block's stops lie in their own part of town
        route_stops = []
        for i in range(stops):
            lat, lon = _place(rng, heading, placed)
            placed.append((lat, lon))
            number = str(rng.randrange(2, 300))
            packages = [Package(sscc(rng)) for _ in range(rng.randint(1, 2))]
            if i == 1:
                packages[0] = Package(packages[0].id, Instruction.HAND_TO_RESIDENT, signature_required=True)
            route_stops.append(Stop(id=f"S{i + 1:02d}", address=f"{number} {rng.choice(STREETS)}",
                                    house_number=number, lat=lat, lon=lon, packages=tuple(packages),
                                    radius_m=40.0, window_end=now + timedelta(hours=3)))
        block = Block(block_id, STATION, now, now + timedelta(hours=4), pay_cents=rng.randrange(6000, 12000),
                      area=f"zone {b + 1}")
        planned = list(_sequenced(route_stops, now))
        if b == 0:  # the first block's last stop is unreachable
            planned[-1] = replace(planned[-1], packages=(Package(planned[-1].packages[0].id, note=LOCKED_NOTE),))
        made.append((block, Route(block_id, 1, tuple(planned))))
        wrong_house[block_id] = planned[0].id
    return Scenario(tuple(made), sscc(rng), wrong_house)


def _place(rng: random.Random, heading: float, placed: list[tuple[float, float]]) -> tuple[float, float]:
    """A spot in the block's part of town, apart from every stop placed so far (geofences must not overlap)."""
    while True:
        angle, reach = math.radians(heading + rng.uniform(-45, 45)), rng.uniform(*STOP_RADIUS_M)
        lat, lon = _offset(*DEPOT, reach * math.cos(angle), reach * math.sin(angle))
        if all(distance_m(lat, lon, *other) >= MIN_APART_M for other in placed):
            return lat, lon


def _sequenced(stops: list[Stop], now: datetime) -> tuple[Stop, ...]:
    """The stops in the order the cloud's planner gives them (one van, from the station), with its ETAs."""
    day = {"station": STATION, "lat": DEPOT[0], "lon": DEPOT[1],
           "vans": [{"id": "demo", "volume_l": 4000, "weight_kg": 900, "shift_start": iso_utc(now),
                     "shift_hours": 4}],
           "packages": [{"id": s.packages[0].id, "address": s.address, "house_number": s.house_number,
                         "lat": s.lat, "lon": s.lon, "service_s": 60} for s in stops]}
    plan = plan_station(read_station(day), RoadModelTimes(), PLAN_S)
    by_package = {s.packages[0].id: s for s in stops}
    return tuple(Stop(**{**by_package[p.packages[0].id].__dict__, "eta": p.eta})
                 for block in plan.blocks for p in block.route.stops)


STREETS = ("Pine St", "Olive Way", "Union St", "Pike St", "Stewart St", "Virginia St", "Lenora St", "Bell St")
