"""The VRP solver behind the planner: PyVRP (MIT), chosen after measuring it beside VROOM and OR-Tools
(README, "Route planning"). Everything PyVRP-specific lives here."""
from __future__ import annotations

import logging
import warnings
from typing import Any

import pyvrp
from pyvrp.stop import MaxRuntime

from cloud_sync.cloud.planning.problem import Problem, ProblemError, Solution

log = logging.getLogger(__name__)


def to_pyvrp(problem: Problem) -> pyvrp.ProblemData:
    """The problem as PyVRP's data: one location per node, depot first."""
    size = problem.visits + 1
    locations = [pyvrp.Location(x=0.0, y=0.0, name=str(i)) for i in range(size)]
    depot = pyvrp.Depot(location=0, tw_early=int(problem.tw_early[0]), tw_late=int(problem.tw_late[0]))
    clients = [
        pyvrp.Client(location=i, delivery=[int(d) for d in problem.demand[i]],
                     service_duration=int(problem.service[i]), tw_early=int(problem.tw_early[i]),
                     tw_late=int(problem.tw_late[i]), prize=problem.prize, required=problem.prize == 0,
                     name=str(i))
        for i in range(1, size)
    ]
    vehicle_types = [
        pyvrp.VehicleType(num_available=f.count, capacity=list(f.capacity), profile=f.profile,
                          tw_early=f.tw_early, tw_late=f.tw_late, shift_duration=f.shift, name=f.name or str(k))
        for k, f in enumerate(problem.fleets)
    ]
    distances: list[Any] = [problem.distance.astype("int64")] * len(problem.durations)
    durations: list[Any] = [m.astype("int64") for m in problem.durations]
    return pyvrp.ProblemData(locations, clients, [depot], vehicle_types, distances, durations)


def solve(problem: Problem, time_limit_s: float, seed: int = 1) -> Solution:
    """PyVRP's iterated local search for `time_limit_s` seconds of wall time."""
    if problem.visits == 0:
        return Solution((), (), (), 0, True)
    if time_limit_s <= 0:
        raise ProblemError(f"time limit {time_limit_s} s")
    data = to_pyvrp(problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pyvrp.solve(data, stop=MaxRuntime(time_limit_s), seed=seed, collect_stats=False, display=False)
    for warning in {str(w.message).split(".")[0].strip() for w in caught}:
        log.warning("pyvrp: %s", warning)
    best = result.best
    routes, fleets = [], []
    visited: set[int] = set()
    for route in best.routes():
        nodes = tuple(data.clients()[a.idx].location for a in route if a.is_client())
        if nodes:
            routes.append(nodes)
            fleets.append(route.vehicle_type())
            visited.update(nodes)
    unassigned = tuple(i for i in range(1, problem.visits + 1) if i not in visited)
    log.info("pyvrp: %d visits, %d routes, distance %d, feasible %s, %d unassigned, %d iterations",
             problem.visits, len(routes), best.distance(), best.is_feasible(), len(unassigned),
             result.num_iterations)
    if not best.is_feasible():
        raise ProblemError(f"no feasible plan found in {time_limit_s} s (excess load {best.has_excess_load()}, "
                           f"late {best.has_time_warp()})")
    return Solution(tuple(routes), tuple(fleets), unassigned, int(best.distance()), True)
