"""Re-planning a block under way: its unfinished stops, from where the van is, on travel times with the
traffic/weather factors in force. Finished stops stay in front in their order; stops in a closed area are
dropped (the van's revision returns their packages); the rest is re-sequenced by the solver with the windows
still ahead. The result is the route the dispatcher publishes as the next version.
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np

from cloud_sync.cloud.planning.problem import Fleet, Problem
from cloud_sync.cloud.planning.solver import solve
from cloud_sync.cloud.planning.station import DROP_PRIZE, timed_route
from cloud_sync.cloud.planning.travel import Slowdown, TravelTimes
from device.contract.domain import Route, Stop
from device.contract.travel import DAY_S, distance_m, second_of_day

log = logging.getLogger(__name__)

HORIZON_S = DAY_S  # windows already missed, or none: due any time today


def touches(route: Route, finished: set[str], slowdowns: Sequence[Slowdown], now: datetime) -> bool:
    """Whether an unfinished stop lies in an area whose factor is in force now."""
    tod = second_of_day(now)
    return any(s.start_s <= tod < s.end_s and distance_m(stop.lat, stop.lon, s.lat, s.lon) <= s.radius_m
               for s in slowdowns for stop in route.stops if stop.id not in finished)


def replan(route: Route, finished: set[str], here: tuple[float, float], now: datetime, travel: TravelTimes,
           time_limit_s: float) -> Route:
    """The block's route re-planned (same version: the dispatcher numbers it)."""
    done = [s for s in route.stops if s.id in finished]
    left = [s for s in route.stops if s.id not in finished]
    if not left:
        return route
    points = [here, *((s.lat, s.lon) for s in left)]
    tod = second_of_day(now)
    secs = np.array(travel.seconds(points, tod), dtype=float)
    secs[:, 0] = 0.0  # an open route: the van's way back is not this plan's business
    metres = np.array(travel.metres(points), dtype=float)
    metres[:, 0] = 0.0

    def rel(moment: datetime | None, default: float) -> float:
        return default if moment is None else (moment - now).total_seconds()
    opens = [0.0, *(max(0.0, rel(s.window_start, 0.0)) for s in left)]
    closes = [HORIZON_S, *(rel(s.window_end, HORIZON_S) for s in left)]
    closes = [c if c > o else HORIZON_S for o, c in zip(opens, closes)]  # already late: as soon as possible
    problem = Problem(
        distance=np.rint(metres).astype(np.int64),
        durations=(np.ceil(np.minimum(secs, 10 * HORIZON_S)).astype(np.int64),),
        demand=np.zeros((len(points), 1), dtype=np.int64),
        tw_early=np.array([math.ceil(o) for o in opens], dtype=np.int64),
        tw_late=np.array([int(c) for c in closes], dtype=np.int64),
        service=np.array([0, *(math.ceil(s.service_s) for s in left)], dtype=np.int64),
        fleets=(Fleet(1, (1,), tw_early=0, tw_late=HORIZON_S),), prize=DROP_PRIZE)
    solution = solve(problem, time_limit_s)
    nodes = list(solution.routes[0]) if solution.routes else []
    dropped = [left[n - 1].id for n in solution.unassigned]
    arrivals, _ = timed_route(nodes, tod, [0.0, *(s.service_s for s in left)],
                              [tod + o for o in opens], points, _Open(travel))
    stops: list[Stop] = [*done, *(replace(left[n - 1], eta=now + timedelta(seconds=a - tod))
                                  for n, a in zip(nodes, arrivals))]
    log.info("re-planned %s: %d finished, %d re-sequenced, %d dropped (closed)", route.block_id, len(done),
             len(nodes), len(dropped))
    return Route(route.block_id, route.version, tuple(stops))


class _Open:
    """The provider with legs back to node 0 free (an open route)."""

    def __init__(self, base: TravelTimes) -> None:
        self.base = base

    def metres(self, points: Sequence[tuple[float, float]]) -> np.ndarray:
        out = np.array(self.base.metres(points), dtype=float)
        out[:, 0] = 0.0
        return out

    def seconds(self, points: Sequence[tuple[float, float]], second_of_day: float) -> np.ndarray:
        out = np.array(self.base.seconds(points, second_of_day), dtype=float)
        out[:, 0] = 0.0
        return out
