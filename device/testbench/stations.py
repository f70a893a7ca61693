"""A station's day made from a seed: packages scattered around the station (not on a line), some with a
delivery window, sizes and weights of parcels, and a few vans. The demo and the tests plan it."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from device.contract.domain import iso_utc
from device.testbench.codes import sscc

STREETS = ("Pine St", "Olive Way", "Union St", "Pike St", "Stewart St", "Virginia St", "Lenora St", "Bell St")


def station_day(seed: int, *, packages: int = 60, vans: int = 3, depot: tuple[float, float] = (47.6101, -122.3421),
                radius_m: float = 3000.0, start: datetime, station: str = "DXX1", shift_hours: float = 8.0,
                window_share: float = 0.3) -> dict[str, Any]:
    rng = random.Random(seed)
    out = []
    for _ in range(packages):
        r, heading = radius_m * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        lat = depot[0] + r * math.cos(heading) / 111_320.0
        lon = depot[1] + r * math.sin(heading) / (111_320.0 * math.cos(math.radians(depot[0])))
        number = str(rng.randrange(2, 400))
        doc = {"id": sscc(rng), "address": f"{number} {rng.choice(STREETS)}", "house_number": number,
               "lat": round(lat, 6), "lon": round(lon, 6), "service_s": rng.choice((60, 90, 120, 180)),
               "volume_l": round(rng.uniform(2, 60), 1), "weight_kg": round(rng.uniform(0.2, 15), 1)}
        if rng.random() < window_share:
            opens = start + timedelta(hours=rng.choice((0, 1, 2, 3, 4)))
            doc["window_start"], doc["window_end"] = iso_utc(opens), iso_utc(opens + timedelta(hours=2))
        out.append(doc)
    fleet = [{"id": f"VAN-{k + 1}", "volume_l": 4000, "weight_kg": 900, "shift_start": iso_utc(start),
              "shift_hours": shift_hours} for k in range(vans)]
    return {"station": station, "lat": depot[0], "lon": depot[1], "vans": fleet, "packages": out}
