"""What an event carries of a GPS fix: the wire form, gpsd's TPV field names (DESIGN.md section 3).

The receiver's typed reading is `firmware_bridge.fix.Fix`; the agent turns it into a `Position` at one place
(`device.positioning.wire`). Here the form is only checked the way the cloud reads it off the wire: known
fields, numbers where numbers belong, a position inside the globe, a UTC time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

NUMBERS = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "alt": (-math.inf, math.inf),
           "speed": (-math.inf, math.inf), "track": (-math.inf, math.inf), "eph": (-math.inf, math.inf)}
MODES = range(4)  # gpsd's TPV `mode`: unknown, no fix, 2D, 3D
POSITION_MODE = 2  # from this mode on a fix has a position


class PositionError(ValueError):
    """A fix document no receiver can have produced."""


@dataclass(frozen=True)
class Position:
    """A checked fix document: `time` (ISO 8601 UTC), `mode`, and the numbers gpsd reports, absent ones left out."""

    doc: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.doc)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Position:
        doc: dict[str, Any] = {}
        for name, (low, high) in NUMBERS.items():
            value = raw.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise PositionError(f"{name} {value!r:.40} is not a number in [{low}, {high}]")
            doc[name] = value
        mode = raw.get("mode", 1)
        if isinstance(mode, bool) or mode not in MODES:
            raise PositionError(f"mode {mode!r:.40} is not one of {list(MODES)}")
        if mode >= POSITION_MODE and ("lat" not in doc or "lon" not in doc):
            raise PositionError(f"mode {mode} without lat/lon")
        doc["mode"] = mode
        moment = raw.get("time")
        if moment is not None:
            if not isinstance(moment, str):
                raise PositionError(f"time {moment!r:.40} is not text")
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise PositionError("time must be UTC")
            doc["time"] = moment
        return cls(doc)
