"""The offline road model both sides share: great-circle distance x a road factor, at a speed that depends on
the time of day. The cloud's planner uses it when the operator has no road matrix; the van uses it to time the
legs of an order it re-sequenced itself, so both speak of the same minutes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
DAY_S = 86_400
ROAD_FACTOR = 1.35  # road distance / great-circle distance in a street grid (typical urban detour ratio)
# Urban delivery-van speeds by hour of the day, km/h: slow in the morning and evening peaks.
DEFAULT_SPEEDS_KMH = (35, 35, 35, 35, 35, 32, 28, 20, 18, 22, 26, 26,
                      24, 24, 26, 24, 20, 18, 20, 26, 30, 32, 35, 35)


class TravelModelError(ValueError):
    """A road model that cannot be used (bad factor or speeds)."""


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def second_of_day(moment: datetime) -> float:
    """Local second of the day (this machine's time zone), for the hourly speed profile."""
    local = moment.astimezone()
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def distance_matrix(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Haversine metres between every pair of (lat, lon) points, vectorised: (n, n)."""
    rad = np.radians(np.asarray(points, dtype=float).reshape(-1, 2))
    lat, lon = rad[:, 0:1], rad[:, 1:2]
    a = np.sin((lat.T - lat) / 2) ** 2 + np.cos(lat) * np.cos(lat.T) * np.sin((lon.T - lon) / 2) ** 2
    metres: np.ndarray = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return metres


@dataclass(frozen=True)
class SpeedProfile:
    """24 hourly speeds (km/h) for the local time of day."""

    kmh: tuple[float, ...] = DEFAULT_SPEEDS_KMH

    def __post_init__(self) -> None:
        if len(self.kmh) != 24 or not all(isinstance(v, (int, float)) and 1 <= v <= 150 for v in self.kmh):
            raise TravelModelError(f"speed profile needs 24 speeds in [1, 150] km/h, got {self.kmh!r:.80}")

    def at(self, second_of_day: float) -> float:
        """Speed in m/s at a local second of the day (wraps past midnight)."""
        return self.kmh[int(second_of_day % DAY_S) // 3600] / 3.6

    def slowest(self, start_s: float, end_s: float) -> float:
        """The lowest speed (m/s) of any hour that [start_s, end_s] touches."""
        hours = range(int(start_s) // 3600, int(max(start_s, end_s)) // 3600 + 1)
        return min(self.kmh[h % 24] for h in hours) / 3.6


@dataclass(frozen=True)
class RoadModel:
    road_factor: float = ROAD_FACTOR
    profile: SpeedProfile = SpeedProfile()

    def __post_init__(self) -> None:
        if not 1.0 <= self.road_factor <= 5.0:
            raise TravelModelError(f"road factor {self.road_factor} outside [1, 5]")

    def road_m(self, lat1: float, lon1: float, lat2: float, lon2: float) -> float:
        return distance_m(lat1, lon1, lat2, lon2) * self.road_factor

    def road_matrix(self, points: Sequence[tuple[float, float]]) -> np.ndarray:
        return distance_matrix(points) * self.road_factor

    def seconds(self, road_m: float, second_of_day: float) -> float:
        """Driving time of a leg that starts at `second_of_day` (local)."""
        return road_m / self.profile.at(second_of_day)

    def to_dict(self) -> dict[str, Any]:
        return {"road_factor": self.road_factor, "speeds_kmh": list(self.profile.kmh)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> RoadModel:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise TravelModelError("travel: expected an object")
        factor = raw.get("road_factor", ROAD_FACTOR)
        speeds = raw.get("speeds_kmh", DEFAULT_SPEEDS_KMH)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise TravelModelError(f"road_factor: expected a number, got {factor!r:.40}")
        if not isinstance(speeds, (list, tuple)):
            raise TravelModelError("speeds_kmh: expected a list of 24 numbers")
        return cls(float(factor), SpeedProfile(tuple(speeds)))
