"""The typed GPS fix every position source yields (gpsd, raw NMEA, simulators)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any


class FixMode(IntEnum):
    """gpsd's TPV `mode` values."""

    UNKNOWN = 0
    NO_FIX = 1
    FIX_2D = 2
    FIX_3D = 3


class FixError(ValueError):
    """A fix with values no receiver can produce."""


@dataclass(frozen=True)
class Fix:
    """One position epoch. Units follow gpsd: degrees, metres, metres/second, degrees true."""

    time: datetime | None
    lat: float | None
    lon: float | None
    mode: FixMode = FixMode.NO_FIX
    alt: float | None = None
    speed: float | None = None
    track: float | None = None
    eph: float | None = None  # horizontal accuracy estimate, metres (95%)

    def __post_init__(self) -> None:
        if self.time is not None and self.time.tzinfo is None:
            raise FixError("fix time must be timezone-aware UTC")
        for name, value, low, high in (("lat", self.lat, -90.0, 90.0), ("lon", self.lon, -180.0, 180.0)):
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                raise FixError(f"{name} {value!r} out of range [{low}, {high}]")
        for name in ("alt", "speed", "track", "eph"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise FixError(f"{name} is not finite: {value!r}")
        if self.mode >= FixMode.FIX_2D and (self.lat is None or self.lon is None):
            raise FixError(f"mode {self.mode.name} without lat/lon")

    @property
    def has_position(self) -> bool:
        return self.mode >= FixMode.FIX_2D

    def to_dict(self) -> dict[str, Any]:
        """gpsd TPV field names; absent values are left out."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        out["mode"] = int(self.mode)
        if self.time is not None:
            out["time"] = self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fix:
        time = raw.get("time")
        return cls(
            time=datetime.fromisoformat(time.replace("Z", "+00:00")) if time else None,
            lat=raw.get("lat"),
            lon=raw.get("lon"),
            mode=FixMode(raw.get("mode", FixMode.NO_FIX)),
            alt=raw.get("alt"),
            speed=raw.get("speed"),
            track=raw.get("track"),
            eph=raw.get("eph"),
        )
