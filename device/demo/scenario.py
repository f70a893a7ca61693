"""The demo's world, made from a seed: a station, blocks with routes, the labels on their packages,
and the two mistakes the agents must catch (a package of no route, a photo of the neighbour's house)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from device.contract.domain import Block, Instruction, Package, Route, Stop
from device.testbench.codes import sscc

STATION = "DXX1"
DEPOT = (47.6101, -122.3421)  # the station's loading dock
STOP_SPACING_M = 350.0
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
    for b in range(blocks):
        block_id = f"BLK-{seed}-{b + 1}"
        heading = math.radians(40 + 360 * b / blocks)  # each block drives out in its own direction
        route_stops = []
        for i in range(stops):
            lat, lon = _offset(*DEPOT, STOP_SPACING_M * (i + 1) * math.cos(heading),
                               STOP_SPACING_M * (i + 1) * math.sin(heading))
            number = str(rng.randrange(2, 300))
            packages = [Package(sscc(rng)) for _ in range(rng.randint(1, 2))]
            if i == 1:
                packages[0] = Package(packages[0].id, Instruction.HAND_TO_RESIDENT, signature_required=True)
            if i == stops - 1 and b == 0:  # one unreachable stop in the first block
                packages = [Package(packages[0].id, note=LOCKED_NOTE)]
            route_stops.append(Stop(id=f"S{i + 1:02d}", address=f"{number} {rng.choice(STREETS)}",
                                    house_number=number, lat=lat, lon=lon, packages=tuple(packages),
                                    radius_m=40.0, window_end=now + timedelta(hours=3)))
        block = Block(block_id, STATION, now, now + timedelta(hours=4), pay_cents=rng.randrange(6000, 12000),
                      area=f"zone {b + 1}")
        made.append((block, Route(block_id, 1, tuple(route_stops))))
        wrong_house[block_id] = route_stops[0].id
    return Scenario(tuple(made), sscc(rng), wrong_house)


STREETS = ("Pine St", "Olive Way", "Union St", "Pike St", "Stewart St", "Virginia St", "Lenora St", "Bell St")
