"""Route progress from filtered fixes: next-stop distance/bearing/ETA, geofenced arrival and departure.

Arrival: inside a pending stop's radius for `dwell_s` (by fix time). Departure: outside radius plus
`depart_margin_m` for `depart_confirm_s`. The margin and the confirm time are the hysteresis that keeps
parked jitter at the fence from flapping. A drive past a stop without dwelling is not an arrival.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, Sequence, Union

from device.positioning.fix_filter import FilterConfig, FixFilter, Located
from device.positioning.geo import bearing_deg, distance_m
from firmware_bridge.fix import Fix

log = logging.getLogger(__name__)


class StopPlace(Protocol):
    """What the tracker reads of a stop it is given (`device.contract.domain.Stop` and StopPoint have it)."""

    @property
    def id(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def radius_m(self) -> float: ...


@dataclass(frozen=True)
class StopPoint:
    """A stop as the tracker keeps it: what it needs of a `StopPlace`."""

    id: str
    lat: float
    lon: float
    radius_m: float = 40.0


@dataclass(frozen=True)
class Arrived:
    stop_id: str
    at: datetime  # fix time when the dwell began (the van was at the door from then on)
    fix: Fix


@dataclass(frozen=True)
class Departed:
    stop_id: str
    at: datetime  # fix time of the first fix outside the departure fence
    fix: Fix


@dataclass(frozen=True)
class NextStop:
    stop_id: str
    distance_m: float
    bearing: float  # degrees true from the van
    eta_s: float


PositionEvent = Union[Arrived, Departed, NextStop]


@dataclass(frozen=True)
class TrackerConfig:
    dwell_s: float = 20.0  # inside the fence this long = arrived
    depart_margin_m: float = 30.0  # departure fence = radius + this
    depart_confirm_s: float = 10.0  # outside the departure fence this long = departed
    typical_speed_mps: float = 8.0  # ETA speed when stopped or crawling (about 30 km/h in town)
    speed_smoothing: float = 0.1  # weight of the newest speed in the running average


class PositionTracker:
    """Feed fixes in time order; get typed events. Knows the route's stops, nothing about packages."""

    def __init__(self, stops: Sequence[StopPlace], config: TrackerConfig | None = None,
                 fix_filter: FixFilter | None = None) -> None:
        self.config = config or TrackerConfig()
        self.filter = fix_filter or FixFilter(FilterConfig())
        self.stops = [StopPoint(s.id, s.lat, s.lon, s.radius_m) for s in stops]
        self.visited: list[str] = []
        self.current: StopPoint | None = None  # the stop the van is at
        self._candidate: tuple[StopPoint, Located] | None = None  # inside a fence, dwell running
        self._outside_since: Located | None = None  # at a stop, outside the departure fence since
        self._speed: float | None = None

    def revise(self, stops: Sequence[StopPlace]) -> None:
        """A route revision: new stop list, progress kept (visited stays visited; the stop the van is at
        stays current if it is still on the route)."""
        self.stops = [StopPoint(s.id, s.lat, s.lon, s.radius_m) for s in stops]
        ids = {s.id for s in self.stops}
        if self.current is not None:
            self.current = next((s for s in self.stops if s.id == self.current.id), None)
            self._outside_since = None
        self._candidate = None
        log.info("route revised: %d stops, %d visited", len(self.stops), sum(v in ids for v in self.visited))

    @property
    def pending(self) -> list[StopPoint]:
        done = set(self.visited)
        return [s for s in self.stops if s.id not in done]

    def feed(self, raw: Fix) -> list[PositionEvent]:
        result = self.filter.feed(raw)
        here = None if result.fix is None else Located.of(result.fix)
        if here is None:
            return []
        self._update_speed(here.fix)
        events: list[PositionEvent] = []
        if self.current is None:
            events += self._check_arrival(here)
        else:
            events += self._check_departure(self.current, here)
        nxt = self.next_stop(here)
        if nxt is not None:
            events.append(nxt)
        return events

    def next_stop(self, here: Located) -> NextStop | None:
        target = next((s for s in self.pending if s is not self.current), None)
        if target is None:
            return None
        dist = distance_m(here.lat, here.lon, target.lat, target.lon)
        speed = max(self._speed or 0.0, self.config.typical_speed_mps)
        return NextStop(target.id, dist, bearing_deg(here.lat, here.lon, target.lat, target.lon), dist / speed)

    def _update_speed(self, fix: Fix) -> None:
        if fix.speed is None:
            return
        a = self.config.speed_smoothing
        self._speed = fix.speed if self._speed is None else (1 - a) * self._speed + a * fix.speed

    def _check_arrival(self, here: Located) -> list[PositionEvent]:
        inside = [s for s in self.pending if distance_m(here.lat, here.lon, s.lat, s.lon) <= s.radius_m]
        if not inside:
            self._candidate = None
            return []
        nearest = min(inside, key=lambda s: distance_m(here.lat, here.lon, s.lat, s.lon))
        if self._candidate is None or self._candidate[0] is not nearest:
            self._candidate = (nearest, here)
            return []
        stop, since = self._candidate
        if (here.time - since.time).total_seconds() < self.config.dwell_s:
            return []
        self._candidate = None
        self.current = stop
        log.info("arrived at stop %s", stop.id)
        return [Arrived(stop.id, since.time, here.fix)]

    def _check_departure(self, stop: StopPoint, here: Located) -> list[PositionEvent]:
        fence = stop.radius_m + self.config.depart_margin_m
        if distance_m(here.lat, here.lon, stop.lat, stop.lon) <= fence:
            self._outside_since = None
            return []
        if self._outside_since is None:
            self._outside_since = here
        if (here.time - self._outside_since.time).total_seconds() < self.config.depart_confirm_s:
            return []
        left = self._outside_since
        self._outside_since = None
        self.current = None
        self.visited.append(stop.id)
        log.info("departed stop %s", stop.id)
        return [Departed(stop.id, left.time, here.fix)]
