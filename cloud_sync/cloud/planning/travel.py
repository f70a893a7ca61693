"""Travel times for the planner: the `TravelTimes` interface and its two implementations.

- `RoadModelTimes` (the default, offline): haversine x a road factor at the speed of the hour of the day
  (`device.contract.travel.RoadModel`, the same model the van re-sequences with).
- `MatrixTimes`: an operator's road matrix (what an OSRM/Valhalla `table` service returns: metres and seconds
  between every pair of the points it was asked for), read from a JSON file.

Both give road metres and the seconds of a leg that departs at a local second of the day. `Slowdowns` wraps
either with the traffic/weather factors of areas (the re-planner's input).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from device.contract.travel import DAY_S, RoadModel
from device.contract.travel import distance_matrix as great_circle

Point = tuple[float, float]  # lat, lon
CLOSED_S = 10 * DAY_S  # a leg into or out of a closed area: no van can drive it within a day


class TravelTimesError(ValueError):
    """A travel-time source that cannot answer (bad file, points it does not know)."""


class TravelTimes(Protocol):
    def metres(self, points: Sequence[Point]) -> np.ndarray:
        """Road metres between every pair, (n, n) float."""

    def seconds(self, points: Sequence[Point], second_of_day: float) -> np.ndarray:
        """Driving seconds between every pair for a leg departing at `second_of_day` (local), (n, n) float."""


@dataclass(frozen=True)
class RoadModelTimes:
    model: RoadModel = RoadModel()

    def metres(self, points: Sequence[Point]) -> np.ndarray:
        return self.model.road_matrix(points)

    def seconds(self, points: Sequence[Point], second_of_day: float) -> np.ndarray:
        return self.metres(points) / self.model.profile.at(second_of_day)


class MatrixTimes:
    """A fixed road matrix over known points: {"points": [[lat, lon], ...], "distances": [[m]], "durations":
    [[s]]} (optionally "durations_by_hour": 24 such matrices). Points are matched to within `MATCH_M`."""

    MATCH_M = 15.0

    def __init__(self, points: Sequence[Point], distances: np.ndarray, durations: Sequence[np.ndarray]) -> None:
        n = len(points)
        if distances.shape != (n, n) or any(d.shape != (n, n) for d in durations) or len(durations) not in (1, 24):
            raise TravelTimesError(f"matrix shapes do not match {n} points (1 or 24 duration matrices)")
        if not np.isfinite(distances).all() or any(not np.isfinite(d).all() or (d < 0).any() for d in durations):
            raise TravelTimesError("matrix holds a negative or non-finite value")
        self._points = np.asarray(points, dtype=float)
        self._distances, self._durations = distances, tuple(durations)

    @classmethod
    def from_file(cls, path: Path) -> MatrixTimes:
        try:
            doc = json.loads(path.read_text())
            durations = doc.get("durations_by_hour") or [doc["durations"]]
            return cls([tuple(p) for p in doc["points"]], np.asarray(doc["distances"], dtype=float),
                       [np.asarray(d, dtype=float) for d in durations])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TravelTimesError(f"cannot read a road matrix from {path}: {exc}") from exc

    def _index(self, points: Sequence[Point]) -> np.ndarray:
        both = np.vstack([np.asarray(points, dtype=float).reshape(-1, 2), self._points])
        near = great_circle([(float(a), float(b)) for a, b in both])[: len(points), len(points):]
        idx = near.argmin(axis=1)
        if (near[np.arange(len(points)), idx] > self.MATCH_M).any():
            raise TravelTimesError("a point is not in the road matrix")
        found: np.ndarray = idx
        return found

    def metres(self, points: Sequence[Point]) -> np.ndarray:
        idx = self._index(points)
        out: np.ndarray = self._distances[np.ix_(idx, idx)]
        return out

    def seconds(self, points: Sequence[Point], second_of_day: float) -> np.ndarray:
        idx = self._index(points)
        hour = int(second_of_day % DAY_S) // 3600 if len(self._durations) == 24 else 0
        out: np.ndarray = self._durations[hour][np.ix_(idx, idx)]
        return out


@dataclass(frozen=True)
class Slowdown:
    """Traffic or weather in a circle for a time of day: legs touching it take `factor` times longer;
    `math.inf` closes it."""

    area: str
    lat: float
    lon: float
    radius_m: float
    factor: float
    start_s: float = 0.0  # local second of day
    end_s: float = float(DAY_S)

    def __post_init__(self) -> None:
        if not (self.factor >= 1.0 and self.radius_m > 0 and self.end_s > self.start_s):
            raise TravelTimesError(f"slowdown {self.area}: factor {self.factor} < 1, radius or hours invalid")

    @property
    def closed(self) -> bool:
        return math.isinf(self.factor)


@dataclass(frozen=True)
class Slowdowns:
    """`base` with the factors of the areas in force: a leg with an end in an area takes its factor (the
    highest that applies); a closed area's legs take `CLOSED_S`."""

    base: TravelTimes
    slowdowns: tuple[Slowdown, ...] = ()

    def metres(self, points: Sequence[Point]) -> np.ndarray:
        return self.base.metres(points)

    def seconds(self, points: Sequence[Point], second_of_day: float) -> np.ndarray:
        out = np.array(self.base.seconds(points, second_of_day), dtype=float)
        tod = second_of_day % DAY_S
        for s in self.slowdowns:
            if not s.start_s <= tod < s.end_s:
                continue
            inside = great_circle([(s.lat, s.lon), *points])[0, 1:] <= s.radius_m
            touched = inside[:, None] | inside[None, :]
            np.fill_diagonal(touched, False)
            out[touched] = CLOSED_S if s.closed else out[touched] * s.factor
        return out
