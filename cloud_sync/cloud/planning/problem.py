"""A solver-neutral VRP with time windows and capacities, in integers: node 0 is the depot, 1..n the visits.

Every solver wrapper reads this and nothing else, so the station planner, the Solomon reader and the re-planner
share one model and a second solver can be put beside the first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ProblemError(ValueError):
    """A problem no solver can be asked: mismatched shapes, negative values, an empty fleet."""


@dataclass(frozen=True)
class Fleet:
    """`count` identical vehicles starting and ending at the depot."""

    count: int
    capacity: tuple[int, ...]  # one per load dimension
    profile: int = 0  # which duration matrix they drive on
    tw_early: int = 0
    tw_late: int = 2**40
    shift: int = 2**40  # longest route duration
    name: str = ""


@dataclass(frozen=True)
class Problem:
    distance: np.ndarray  # (n+1, n+1) int64
    durations: tuple[np.ndarray, ...]  # per profile, (n+1, n+1) int64
    demand: np.ndarray  # (n+1, dims) int64, row 0 zero
    tw_early: np.ndarray  # (n+1,) int64, row 0 the depot's opening
    tw_late: np.ndarray
    service: np.ndarray
    fleets: tuple[Fleet, ...]
    prize: int = 0  # 0: every visit required; >0: a visit may be left out at this cost

    def __post_init__(self) -> None:
        size = self.distance.shape[0]
        if self.distance.shape != (size, size) or size < 1:
            raise ProblemError(f"distance matrix shape {self.distance.shape}")
        for m in self.durations:
            if m.shape != (size, size):
                raise ProblemError(f"duration matrix shape {m.shape}, expected {(size, size)}")
        for name in ("tw_early", "tw_late", "service"):
            if getattr(self, name).shape != (size,):
                raise ProblemError(f"{name} shape {getattr(self, name).shape}, expected ({size},)")
        if self.demand.ndim != 2 or self.demand.shape[0] != size:
            raise ProblemError(f"demand shape {self.demand.shape}")
        if (self.distance < 0).any() or any((m < 0).any() for m in self.durations) or (self.demand < 0).any():
            raise ProblemError("negative distance, duration or demand")
        if (self.tw_late < self.tw_early).any():
            raise ProblemError("a time window closes before it opens")
        if not self.fleets or any(f.count < 1 or len(f.capacity) != self.dims for f in self.fleets):
            raise ProblemError("a fleet needs vehicles and one capacity per load dimension")
        if any(not 0 <= f.profile < len(self.durations) for f in self.fleets):
            raise ProblemError("a fleet names a duration profile that does not exist")

    @property
    def visits(self) -> int:
        return int(self.distance.shape[0]) - 1

    @property
    def dims(self) -> int:
        return int(self.demand.shape[1])


@dataclass(frozen=True)
class Solution:
    routes: tuple[tuple[int, ...], ...]  # node numbers (1..n) in visiting order, depot excluded
    fleet_of_route: tuple[int, ...]  # index into Problem.fleets, one per route
    unassigned: tuple[int, ...]  # visits left out (only when the problem has a prize)
    distance: int  # the solver's integer objective distance
    feasible: bool
