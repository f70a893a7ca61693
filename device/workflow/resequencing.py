"""The van re-orders its remaining stops itself, offline, when its day changes: a stop excepted, the driver
arriving out of order, or speeds well below the plan's. The order is the van's own until the cloud's next route
version replaces it (`_on_route` accepts only a higher version: a retained re-send of the same version does not
undo the van's order). Pure: works on the handler's copy of the state, emits through the step.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from device.contract.domain import EventType, Route, Stop, iso_utc
from device.contract.travel import RoadModel, second_of_day
from device.routing.eta import Eta, etas, leg_ratio, speed_ratio, visits
from device.routing.resequence import as_given, leg_seconds, resequence
from device.workflow.core import Step
from device.workflow.outputs import NoticeKind
from device.workflow.state import VehicleState

log = logging.getLogger(__name__)

ROAD = RoadModel()  # the planner's default road model; the speed ratio corrects it to this van's day
SLOW_RATIO = 0.75  # median observed/planned speed below this re-sequences ("well below the plan's")
RATIO_STEP = 0.15  # ... again only once the ratio moved this much since the last slow re-sequence
KEPT_LEGS = 8


class Reason:
    EXCEPTION = "exception"  # a stop excepted (skipped or refused): the rest re-planned from here
    OUT_OF_ORDER = "out_of_order"  # the driver arrived at another stop than the next one
    SLOW = "slow"  # observed speeds well below the plan's


def open_stops(s: VehicleState) -> list[Stop]:
    if s.route is None:
        return []
    return [stop for stop in s.route.stops if not s.stops[stop.id].done and stop.id != s.current_stop]


def position(s: VehicleState) -> tuple[float, float] | None:
    """Where the van is as far as the workflow knows: its current stop, else the stop it last left."""
    ref = s.current_stop or (s.departed or {}).get("stop")
    stop = next((x for x in s.route.stops if x.id == ref), None) if s.route and ref else None
    return (stop.lat, stop.lon) if stop else None


def note_departure(s: VehicleState, stop_id: str, now: datetime) -> None:
    s.departed = {"stop": stop_id, "at": iso_utc(now)}


def note_arrival(s: VehicleState, stop: Stop, now: datetime) -> None:
    """Measure the leg from the last departure: its observed/planned speed joins the recent ratios."""
    start = position(s) if s.departed and not s.current_stop else None
    if start is None or s.departed is None:
        return
    departed = datetime.fromisoformat(s.departed["at"].replace("Z", "+00:00"))
    ratio = leg_ratio(ROAD, start, (stop.lat, stop.lon), departed, now)
    if ratio is not None:
        s.speed_ratios = [*s.speed_ratios, round(ratio, 3)][-KEPT_LEGS:]


def slow(s: VehicleState) -> bool:
    ratio = speed_ratio(s.speed_ratios)
    return ratio < SLOW_RATIO and (s.slow_ratio is None or abs(ratio - s.slow_ratio) >= RATIO_STEP)


def resequence_remaining(step: Step, s: VehicleState, reason: str, here: tuple[float, float]) -> bool:
    """Re-order the open stops from `here`; the route keeps its version, finished stops and the current one stay
    in front. Records `route.resequenced` when the order changed (an unchanged order is no event: the ETAs
    in the view follow the van anyway). Returns whether it did."""
    left = open_stops(s)
    ratio = speed_ratio(s.speed_ratios)
    if reason == Reason.SLOW:
        s.slow_ratio = ratio
    if len(left) < 2 or s.route is None:
        return False
    current = next((x for x in s.route.stops if x.id == s.current_stop), None)
    start = step.now + timedelta(seconds=current.service_s if current else 0.0)
    todo = visits(left, start)
    secs = leg_seconds(here, todo, ROAD.road_factor, ROAD.profile.at(second_of_day(start)) * ratio)
    before, after = as_given(todo, secs), resequence(todo, secs)
    old_order = [x.id for x in left]
    if list(after.order) == old_order:
        return False
    by_id = {x.id: x for x in left}
    new_left = [by_id[i] for i in after.order]
    timed = {e.stop_id: e.at for e in etas(ROAD, here, new_left, start, ratio)}
    front = [x for x in s.route.stops if x.id not in by_id]
    s.route = Route(s.route.block_id, s.route.version,
                    tuple(front + [replace(x, eta=timed[x.id]) for x in new_left]))
    s.resequenced += 1
    data = {"reason": reason, "version": s.route.version, "old_order": old_order, "new_order": list(after.order),
            "late_stops_before": before.late_stops, "late_stops": after.late_stops,
            "speed_ratio": round(ratio, 3)}
    step.event(EventType.ROUTE_RESEQUENCED, data)
    step.notice(NoticeKind.ROUTE_RESEQUENCED, f"stops re-ordered ({reason.replace('_', ' ')}): next "
                f"{new_left[0].address}", **data, route=s.route.to_dict())
    log.info("re-sequenced %d stops (%s): %d late before, %d after", len(left), reason, before.late_stops,
             after.late_stops)
    return True


def stop_etas(s: VehicleState, now: datetime) -> list[Eta]:
    """ETA per open stop in the route's order from where the van is (the console's figures)."""
    if s.route is None:
        return []
    here = position(s)
    left = open_stops(s)
    if here is None or not left:  # not started: the plan's own
        return [Eta(x.id, x.eta, x.window_end is not None and x.eta > x.window_end) for x in left if x.eta]
    return etas(ROAD, here, left, now, speed_ratio(s.speed_ratios))


def forecast(s: VehicleState, now: datetime) -> dict[str, Any]:
    """The ETAs, and the on-time rate the block is heading for: finished stops as they were, open stops with a
    window by their ETA (the block summary's figure, before the block is done)."""
    timed = stop_etas(s, now)
    windows = {x.id for x in s.route.stops if x.window_end is not None} if s.route else set()
    finished = [r.on_time for r in s.stops.values() if r.done and r.on_time is not None]
    ahead = [not e.late for e in timed if e.stop_id in windows]
    counted = finished + ahead
    return {"etas": {e.stop_id: iso_utc(e.at) for e in timed}, "late": [e.stop_id for e in timed if e.late],
            "on_time_rate": round(sum(counted) / len(counted), 3) if counted else None}
