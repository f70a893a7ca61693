"""Solomon's VRPTW instances (the classic benchmark): read the text format into a `Problem` and report a
solution in the instance's own units.

Travel time equals Euclidean distance, unrounded. PyVRP works in integers, so coordinates are scaled by
`SCALE`: distances are rounded (the objective), travel times rounded *up* so a schedule the solver finds
feasible is feasible in exact arithmetic too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sync.cloud.planning.problem import Fleet, Problem, Solution

SCALE = 1000  # integer units per instance unit: a rounding error of 0.0005 per arc
MAX_CUSTOMERS = 2000


class SolomonError(ValueError):
    """A file that is not a Solomon instance."""


@dataclass(frozen=True)
class Instance:
    name: str
    vehicles: int
    capacity: int
    xy: np.ndarray  # (n+1, 2) float, row 0 the depot
    demand: np.ndarray  # (n+1,) int
    ready: np.ndarray  # (n+1,) float
    due: np.ndarray
    service: np.ndarray

    @property
    def customers(self) -> int:
        return len(self.demand) - 1

    def euclid(self) -> np.ndarray:
        diff = self.xy[:, None, :] - self.xy[None, :, :]
        out: np.ndarray = np.sqrt((diff ** 2).sum(axis=2))
        return out


def read(path: Path) -> Instance:
    lines = [line.split() for line in path.read_text().splitlines()]
    lines = [fields for fields in lines if fields]
    try:
        name = lines[0][0]
        head = next(i for i, f in enumerate(lines) if f[0].upper() == "NUMBER")
        vehicles, capacity = int(lines[head + 1][0]), int(lines[head + 1][1])
        rows = [f for f in lines[head + 2:] if f[0].isdigit() and len(f) == 7]
        table = np.array([[float(v) for v in f] for f in rows])
    except (IndexError, StopIteration, ValueError) as exc:
        raise SolomonError(f"{path}: not a Solomon instance ({exc})") from exc
    if len(table) < 2 or len(table) > MAX_CUSTOMERS + 1 or list(table[:, 0]) != list(range(len(table))):
        raise SolomonError(f"{path}: customers must be numbered 0..n (0 the depot), {len(table)} rows read")
    if vehicles < 1 or capacity < 1:
        raise SolomonError(f"{path}: fleet of {vehicles} x {capacity}")
    return Instance(name, vehicles, capacity, table[:, 1:3], table[:, 3].astype(np.int64), table[:, 4],
                    table[:, 5], table[:, 6])


def to_problem(inst: Instance) -> Problem:
    exact = inst.euclid() * SCALE
    return Problem(
        distance=np.rint(exact).astype(np.int64),
        durations=(np.ceil(exact - 1e-9).astype(np.int64),),
        demand=inst.demand.reshape(-1, 1).copy(),
        tw_early=np.rint(inst.ready * SCALE).astype(np.int64),
        tw_late=np.rint(inst.due * SCALE).astype(np.int64),
        service=np.rint(inst.service * SCALE).astype(np.int64),
        fleets=(Fleet(count=inst.vehicles, capacity=(inst.capacity,), name="solomon"),),
    )


def report(inst: Instance, solution: Solution) -> dict[str, Any]:
    """`{"routes": [[customer numbers], ...], "vehicles": N, "distance": D}`, D in exact Euclidean units."""
    dist = inst.euclid()
    total = 0.0
    for route in solution.routes:
        path = [0, *route, 0]
        total += math.fsum(dist[a, b] for a, b in zip(path, path[1:]))
    return {"routes": [list(map(int, r)) for r in solution.routes], "vehicles": len(solution.routes),
            "distance": round(total, 4)}
