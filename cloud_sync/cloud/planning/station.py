"""A station's day: packages (position, time window, service time, size, weight) and vans (volume and weight
capacity, shift) -> blocks with sequenced, timed routes.

Packages for one address and window become one stop. Time is in local seconds of the station's day. The
solver gets, for each shift, the travel times of the slowest hour that shift touches, so a plan it finds
feasible stays feasible whatever the hour; the published ETAs are then timed leg by leg at the speed of the
hour each leg starts in (never later than what the solver planned with).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

import numpy as np

from cloud_sync.cloud.planning.problem import Fleet, Problem
from cloud_sync.cloud.planning.solver import solve
from cloud_sync.cloud.planning.travel import TravelTimes
from device.contract.domain import Block, DomainError, Package, Route, Stop, iso_utc

log = logging.getLogger(__name__)

DROP_PRIZE = 10**8  # metres a van would rather drive than leave a stop out: a stop is dropped only if infeasible
MAX_PACKAGES = 20_000
MAX_VANS = 500
DEFAULT_SERVICE_S = 120.0


class PlanError(ValueError):
    """A station file the planner cannot use; names the offending field."""


@dataclass(frozen=True)
class Parcel:
    package: Package
    address: str
    house_number: str
    lat: float
    lon: float
    window_start: datetime | None
    window_end: datetime | None
    service_s: float
    volume_l: float
    weight_kg: float


@dataclass(frozen=True)
class Van:
    id: str
    volume_l: float
    weight_kg: float
    shift_start: datetime
    shift_hours: float


@dataclass(frozen=True)
class StationDay:
    station: str
    lat: float
    lon: float
    parcels: tuple[Parcel, ...]
    vans: tuple[Van, ...]

    @property
    def midnight(self) -> datetime:
        first = min(v.shift_start for v in self.vans)
        return first.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class PlannedBlock:
    block: Block
    route: Route
    van: str
    distance_m: float
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"van": self.van, "block": self.block.to_dict(), "route": self.route.to_dict(),
                "distance_m": round(self.distance_m, 1), "duration_s": round(self.duration_s, 1)}


@dataclass(frozen=True)
class Plan:
    station: str
    blocks: tuple[PlannedBlock, ...]
    unassigned: tuple[str, ...]  # package ids no van can take (capacity, windows, closed roads)

    def to_dict(self) -> dict[str, Any]:
        return {"station": self.station, "blocks": [b.to_dict() for b in self.blocks],
                "unassigned": list(self.unassigned), "vehicles": len(self.blocks),
                "distance_m": round(sum(b.distance_m for b in self.blocks), 1)}


# --- reading a station file ------------------------------------------------------------------------------


def _num(raw: Mapping[str, Any], key: str, where: str, low: float, high: float, default: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise PlanError(f"{where}.{key}: expected a number in [{low}, {high}], got {value!r:.40}")
    return float(value)


def _when(raw: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise PlanError(f"{where}.{key}: not an ISO 8601 time: {value!r:.40}") from exc
    if moment.tzinfo is None:
        raise PlanError(f"{where}.{key}: a time needs its UTC offset")
    return moment


def _required_when(raw: Mapping[str, Any], key: str, where: str) -> datetime:
    moment = _when(raw, key, where)
    if moment is None:
        raise PlanError(f"{where}.{key}: missing")
    return moment


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        raise PlanError(f"{where}.{key}: expected a non-empty string")
    return value


def read_station(doc: Any) -> StationDay:
    """{"station", "lat", "lon", "vans": [{"id", "volume_l", "weight_kg", "shift_start", "shift_hours"}],
    "packages": [{"id", "address", "house_number", "lat", "lon", "window_start"?, "window_end"?, "service_s"?,
    "volume_l", "weight_kg", instruction...}]}"""
    if not isinstance(doc, Mapping):
        raise PlanError("station: expected an object")
    packages, vans = doc.get("packages"), doc.get("vans")
    if not isinstance(packages, list) or len(packages) > MAX_PACKAGES:
        raise PlanError(f"station.packages: expected a list of at most {MAX_PACKAGES}")
    if not isinstance(vans, list) or not 1 <= len(vans) <= MAX_VANS:
        raise PlanError(f"station.vans: expected a list of 1 to {MAX_VANS}")
    parcels = []
    for i, raw in enumerate(packages):
        where = f"packages[{i}]"
        if not isinstance(raw, Mapping):
            raise PlanError(f"{where}: expected an object")
        try:
            package = Package.from_dict(raw, where)
        except DomainError as exc:
            raise PlanError(str(exc)) from exc
        parcel = Parcel(package, _str(raw, "address", where), _str(raw, "house_number", where),
                        _num(raw, "lat", where, -90, 90), _num(raw, "lon", where, -180, 180),
                        _when(raw, "window_start", where), _when(raw, "window_end", where),
                        _num(raw, "service_s", where, 0, 7200, DEFAULT_SERVICE_S),
                        _num(raw, "volume_l", where, 0, 5000, 0), _num(raw, "weight_kg", where, 0, 2000, 0))
        if parcel.window_start and parcel.window_end and parcel.window_end <= parcel.window_start:
            raise PlanError(f"{where}.window_end: not after window_start")
        parcels.append(parcel)
    if len({p.package.id for p in parcels}) != len(parcels):
        raise PlanError("station.packages: a package id appears twice")
    fleet = []
    for i, raw in enumerate(vans):
        where = f"vans[{i}]"
        if not isinstance(raw, Mapping):
            raise PlanError(f"{where}: expected an object")
        fleet.append(Van(_str(raw, "id", where), _num(raw, "volume_l", where, 1, 100_000),
                         _num(raw, "weight_kg", where, 1, 100_000), _required_when(raw, "shift_start", where),
                         _num(raw, "shift_hours", where, 0.5, 16)))
    if len({v.id for v in fleet}) != len(fleet):
        raise PlanError("station.vans: a van id appears twice")
    return StationDay(_str(doc, "station", "station"), _num(doc, "lat", "station", -90, 90),
                      _num(doc, "lon", "station", -180, 180), tuple(parcels), tuple(fleet))


# --- planning -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Visit:
    parcels: tuple[Parcel, ...]

    @property
    def first(self) -> Parcel:
        return self.parcels[0]


def _visits(parcels: Sequence[Parcel]) -> list[_Visit]:
    groups: dict[tuple[object, ...], list[Parcel]] = {}
    for p in parcels:
        groups.setdefault((p.address, p.house_number, p.lat, p.lon, p.window_start, p.window_end), []).append(p)
    return [_Visit(tuple(g)) for g in groups.values()]


def _seconds_of_day(moment: datetime | None, midnight: datetime, default: float) -> float:
    return default if moment is None else (moment - midnight).total_seconds()


def plan_station(day: StationDay, travel: TravelTimes, time_limit_s: float, seed: int = 1) -> Plan:
    visits = _visits(day.parcels)
    points = [(day.lat, day.lon), *((v.first.lat, v.first.lon) for v in visits)]
    midnight = day.midnight
    shifts = sorted({(v.shift_start, v.shift_hours) for v in day.vans})
    fleets, durations, fleet_vans = [], [], []
    for start, hours in shifts:
        start_s = _seconds_of_day(start, midnight, 0)
        end_s = start_s + hours * 3600
        # the slowest hour's travel times for this shift (elementwise max over the hours it touches)
        worst = np.max([travel.seconds(points, h * 3600.0) for h in range(int(start_s) // 3600,
                                                                           int(end_s) // 3600 + 1)], axis=0)
        durations.append(np.ceil(worst).astype(np.int64))
        by_size: dict[tuple[int, int], list[Van]] = {}
        for van in day.vans:
            if (van.shift_start, van.shift_hours) == (start, hours):
                by_size.setdefault((round(van.volume_l * 10), round(van.weight_kg * 1000)), []).append(van)
        for capacity, vans in by_size.items():
            fleets.append(Fleet(len(vans), capacity, len(durations) - 1, int(start_s), int(end_s),
                                int(hours * 3600), vans[0].id))
            fleet_vans.append(vans)
    horizon = max(f.tw_late for f in fleets)
    tw_early = [min(f.tw_early for f in fleets)]
    tw_late = [horizon]
    for v in visits:
        tw_early.append(int(math.ceil(_seconds_of_day(v.first.window_start, midnight, 0))))
        tw_late.append(int(_seconds_of_day(v.first.window_end, midnight, horizon)))
    if any(late < early for early, late in zip(tw_early, tw_late)):
        raise PlanError("a package's window is outside every van's day")
    problem = Problem(
        distance=np.rint(travel.metres(points)).astype(np.int64),
        durations=tuple(durations),
        demand=np.array([[0, 0], *([round(sum(p.volume_l for p in v.parcels) * 10),
                                    round(sum(p.weight_kg for p in v.parcels) * 1000)] for v in visits)],
                        dtype=np.int64),
        tw_early=np.array(tw_early, dtype=np.int64),
        tw_late=np.array(tw_late, dtype=np.int64),
        service=np.array([0, *(math.ceil(sum(p.service_s for p in v.parcels)) for v in visits)], dtype=np.int64),
        fleets=tuple(fleets), prize=DROP_PRIZE)
    solution = solve(problem, time_limit_s, seed)
    metres = travel.metres(points)
    blocks, used = [], [0] * len(fleets)
    for k, (nodes, fleet_idx) in enumerate(sorted(zip(solution.routes, solution.fleet_of_route),
                                                  key=lambda r: (r[1], r[0]))):
        van = fleet_vans[fleet_idx][used[fleet_idx]]
        used[fleet_idx] += 1
        blocks.append(_block(day, van, [visits[n - 1] for n in nodes], list(nodes), points, metres, travel,
                             midnight, k + 1))
    unassigned = tuple(p.package.id for n in solution.unassigned for p in visits[n - 1].parcels)
    if unassigned:
        log.warning("plan %s: %d packages fit no van (capacity, windows or closed roads)", day.station,
                    len(unassigned))
    return Plan(day.station, tuple(blocks), unassigned)


def timed_route(nodes: Sequence[int], depart_s: float, service: Sequence[float], opens: Sequence[float],
                points: Sequence[tuple[float, float]], travel: TravelTimes) -> tuple[list[float], float]:
    """Arrival second of each node (waiting for a window to open), legs timed at the hour they start in;
    and the second the van is back at node 0."""
    hourly: dict[int, np.ndarray] = {}
    arrivals, here, clock = [], 0, depart_s
    for node in [*nodes, 0]:
        hour = int(clock // 3600)
        if hour not in hourly:
            hourly[hour] = travel.seconds(points, hour * 3600.0)
        clock += float(hourly[hour][here, node])
        if node == 0:
            break
        arrivals.append(clock)
        clock = max(clock, opens[node]) + service[node]
        here = node
    return arrivals, clock


def _block(day: StationDay, van: Van, visits: list[_Visit], nodes: list[int],
           points: Sequence[tuple[float, float]], metres: np.ndarray, travel: TravelTimes, midnight: datetime,
           number: int) -> PlannedBlock:
    opens = [0.0] * len(points)
    service = [0.0] * len(points)
    for node, visit in zip(nodes, visits):
        opens[node] = _seconds_of_day(visit.first.window_start, midnight, 0)
        service[node] = sum(p.service_s for p in visit.parcels)
    depart = _seconds_of_day(van.shift_start, midnight, 0)
    arrivals, back = timed_route(nodes, depart, service, opens, points, travel)
    block_id = f"{day.station}-{van.shift_start.date().isoformat()}-{number:03d}"
    stops = tuple(
        Stop(id=f"{block_id}-{i + 1:03d}", address=v.first.address, house_number=v.first.house_number,
             lat=v.first.lat, lon=v.first.lon, packages=tuple(p.package for p in v.parcels),
             window_end=v.first.window_end, window_start=v.first.window_start, service_s=service[node],
             eta=midnight + timedelta(seconds=arrival))
        for i, (v, node, arrival) in enumerate(zip(visits, nodes, arrivals)))
    path = [0, *nodes, 0]
    distance = float(sum(metres[a, b] for a, b in zip(path, path[1:])))
    block = Block(block_id, day.station, van.shift_start, midnight + timedelta(seconds=max(back, depart + 60)))
    log.info("block %s: van %s, %d stops, %.1f km, back at %s", block_id, van.id, len(stops), distance / 1000,
             iso_utc(block.ends_at))
    return PlannedBlock(block, Route(block_id, 1, stops), van.id, distance, back - depart)
