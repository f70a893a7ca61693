"""ETAs on the van: each remaining stop's arrival from the plan's road model (the planner's travel times,
`device.contract.travel`) corrected by the van's own recent speed, and the legs that speed is measured on."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from device.contract.domain import Stop
from device.contract.travel import RoadModel, second_of_day
from device.routing.resequence import Visit

RATIO_LIMITS = (0.2, 2.0)  # a leg's observed/planned speed outside this is a detour or a stop, not traffic
RECENT_LEGS = 5  # the speed ratio is the median of this many last legs
MIN_LEG_S = 30.0  # shorter legs say nothing about speed


@dataclass(frozen=True)
class Eta:
    stop_id: str
    at: datetime
    late: bool  # arrives after the stop's window end


def leg_ratio(model: RoadModel, frm: tuple[float, float], to: tuple[float, float], departed: datetime,
              arrived: datetime) -> float | None:
    """Observed speed / planned speed for one leg, or None if the leg says nothing (too short, implausible)."""
    observed = (arrived - departed).total_seconds()
    if observed < MIN_LEG_S:
        return None
    planned = model.seconds(model.road_m(*frm, *to), second_of_day(departed))
    ratio = planned / observed
    return ratio if RATIO_LIMITS[0] <= ratio <= RATIO_LIMITS[1] else None


def speed_ratio(recent: Sequence[float]) -> float:
    return statistics.median(recent[-RECENT_LEGS:]) if recent else 1.0


def visits(stops: Sequence[Stop], now: datetime) -> list[Visit]:
    """Stops as the re-sequencer's visits, times in seconds from `now`."""
    def rel(moment: datetime | None, default: float) -> float:
        return default if moment is None else (moment - now).total_seconds()
    return [Visit(s.id, s.lat, s.lon, rel(s.window_start, float("-inf")), rel(s.window_end, float("inf")),
                  s.service_s) for s in stops]


def etas(model: RoadModel, here: tuple[float, float], stops: Sequence[Stop], now: datetime,
         ratio: float = 1.0) -> list[Eta]:
    """Arrival at each stop in the given order: legs at the hour's speed x `ratio`, waiting for windows."""
    out, clock, position = [], now, here
    for stop in stops:
        speed = model.profile.at(second_of_day(clock)) * ratio
        clock += timedelta(seconds=model.road_m(*position, stop.lat, stop.lon) / speed)
        out.append(Eta(stop.id, clock, stop.window_end is not None and clock > stop.window_end))
        if stop.window_start is not None and clock < stop.window_start:
            clock = stop.window_start
        clock += timedelta(seconds=stop.service_s)
        position = (stop.lat, stop.lon)
    return out
