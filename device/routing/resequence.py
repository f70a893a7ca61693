"""Re-sequence the stops a van has left, on the van, without the cloud.

Small and dependency-light (numpy only): a start order (the given one, or a nearest-begin-time greedy, the
better of the two), then first-improvement local search, 2-opt and or-opt (segments of 1-3 stops moved), whose
candidate moves are ranked by their travel-time change (computed for all moves at once with numpy) and accepted
only after a full schedule pass: lateness (time past a window's end) first, then the time the last stop is done.
Waiting for a window to open is part of the schedule. Bounded work: at most `MAX_ROUNDS` accepted moves and
`TRIES` schedule passes per round, so the time is bounded and the result deterministic.

Times are seconds relative to "now" (the van's clock); the legs are the shared road model
(`device.contract.travel`) at one speed: the hour's speed x the van's observed speed ratio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from device.contract.travel import distance_matrix

MAX_ROUNDS = 400  # accepted improving moves
TRIES = 24  # schedule passes per round, best travel deltas first
REPAIR_PASSES = 400  # schedule passes spent moving late stops earlier
REPAIR_SLOTS = 6  # earlier slots tried per late stop, least added travel first
EPS = 1e-6
SEGMENTS = (1, 2, 3)  # or-opt segment lengths


@dataclass(frozen=True)
class Visit:
    id: str
    lat: float
    lon: float
    opens_s: float = -math.inf  # window start, seconds from now
    closes_s: float = math.inf  # window end, seconds from now
    service_s: float = 0.0


@dataclass(frozen=True)
class Sequenced:
    order: tuple[str, ...]
    arrivals_s: tuple[float, ...]  # seconds from now, per stop of `order`
    late_s: float  # total time past window ends
    finish_s: float  # when the last stop is done
    late_stops: int


class _Schedule:
    """The visits as lists for a fast forward pass; node 0 is the start, 1..n the visits."""

    def __init__(self, secs: np.ndarray, visits: Sequence[Visit]) -> None:
        self.rows = secs.tolist()
        self.opens = [0.0, *(v.opens_s for v in visits)]
        self.closes = [math.inf, *(v.closes_s for v in visits)]
        self.service = [0.0, *(v.service_s for v in visits)]

    def cost(self, order: Sequence[int], start: int = 0, prefix: tuple[list[float], list[float]] | None = None,
             bound: float = math.inf) -> tuple[float, float]:
        """(lateness, finish) of `order`; with the `prefix` of an order that agrees up to index `start`, only
        the rest is walked; stops early (inf) once the lateness passes `bound`."""
        rows, opens, closes, service = self.rows, self.opens, self.closes, self.service
        t, late, here = (prefix[0][start], prefix[1][start], order[start - 1] if start else 0) if prefix \
            else (0.0, 0.0, 0)
        for k in range(start if prefix else 0, len(order)):
            v = order[k]
            t += rows[here][v]
            if t < opens[v]:
                t = opens[v]
            if t > closes[v]:
                late += t - closes[v]
                if late > bound + EPS:
                    return math.inf, math.inf
            t += service[v]
            here = v
        return late, t

    def prefix(self, order: Sequence[int]) -> tuple[list[float], list[float]]:
        """Time and lateness after each stop: index k holds the state before order[k]."""
        rows, opens, closes, service = self.rows, self.opens, self.closes, self.service
        times, lates = [0.0], [0.0]
        t, late, here = 0.0, 0.0, 0
        for v in order:
            t = max(t + rows[here][v], opens[v])
            late += max(0.0, t - closes[v])
            t += service[v]
            here = v
            times.append(t)
            lates.append(late)
        return times, lates

    def arrivals(self, order: Sequence[int]) -> list[float]:
        out, t, here = [], 0.0, 0
        for v in order:
            t += self.rows[here][v]
            out.append(t)
            t = max(t, self.opens[v]) + self.service[v]
            here = v
        return out


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[0] - EPS or (a[0] <= b[0] + EPS and a[1] < b[1] - EPS)


def _greedy(secs: np.ndarray, sched: _Schedule) -> list[int]:
    """Next: the stop where service can begin soonest (travel, or waiting for its window)."""
    n = secs.shape[0] - 1
    opens = np.array(sched.opens)
    left = np.ones(n + 1, dtype=bool)
    left[0] = False
    order, t, here = [], 0.0, 0
    service = sched.service
    for _ in range(n):
        begin = np.maximum(t + secs[here], opens)
        begin[~left] = np.inf
        nxt = int(begin.argmin())
        order.append(nxt)
        left[nxt] = False
        t, here = float(begin[nxt]) + service[nxt], nxt
    return order


def _moves(m: np.ndarray, n: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Travel change of every 2-opt and or-opt move on the path whose matrix (by position) is `m`: positions
    0 (start) .. n (last stop), n+1 a free end. Returns the deltas and, for each, (kind, i, j)."""
    deltas, keys = [], []
    pos = np.arange(1, n + 1)
    i, j = pos[:, None], pos[None, :]
    two = m[i - 1, j] + m[i, j + 1] - m[i - 1, i] - m[j, j + 1]
    two = np.where(j > i, two, np.inf)
    deltas.append(two.ravel())
    keys.append((0, n, n))
    for length in SEGMENTS:
        if length >= n:
            break
        starts = np.arange(1, n - length + 2)[:, None]
        ends = starts + length - 1
        dest = np.arange(0, n + 1)[None, :]
        d = (m[starts - 1, ends + 1] - m[starts - 1, starts] - m[ends, ends + 1]
             + m[dest, starts] + m[ends, dest + 1] - m[dest, dest + 1])
        d = np.where((dest >= starts - 1) & (dest <= ends), np.inf, d)
        deltas.append(d.ravel())
        keys.append((length, d.shape[0], d.shape[1]))
    return np.concatenate(deltas), keys


def _apply(order: list[int], kind: int, a: int, b: int) -> list[int]:
    """kind 0: reverse path positions a..b; kind L: move the L stops at path position a after position b."""
    if kind == 0:
        return order[:a - 1] + order[a - 1:b][::-1] + order[b:]
    seg = order[a - 1:a - 1 + kind]
    rest = order[:a - 1] + order[a - 1 + kind:]
    at = b if b < a else b - kind  # position b counted in the path without the segment
    return rest[:at] + seg + rest[at:]


def _decode(flat: int, keys: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    for kind, rows, cols in keys:
        if flat < rows * cols:
            r, c = divmod(flat, cols)
            return (0, r + 1, c + 1) if kind == 0 else (kind, r + 1, c)
        flat -= rows * cols
    raise IndexError(flat)


def _first_change(kind: int, a: int, b: int) -> int:
    """The first index of the order a move changes."""
    return a - 1 if kind == 0 else min(a - 1, b)


def _local_search(order: list[int], secs: np.ndarray, sched: _Schedule) -> list[int]:
    n = len(order)
    padded = np.zeros((n + 2, n + 2))
    padded[: n + 1, : n + 1] = secs  # node n+1: a free end, zero from and to everything
    cost = sched.cost(order)
    for _ in range(MAX_ROUNDS):
        path = np.array([0, *order, n + 1])
        deltas, keys = _moves(padded[np.ix_(path, path)], n)
        tries = min(TRIES, deltas.size - 1)
        best = np.argpartition(deltas, tries)[:tries]
        best = best[np.argsort(deltas[best], kind="stable")]
        prefix = sched.prefix(order)
        for flat in best:
            if deltas[flat] >= -EPS:
                return order
            move = _decode(int(flat), keys)
            candidate = _apply(order, *move)
            new = sched.cost(candidate, _first_change(*move), prefix, cost[0])
            if _better(new, cost):
                order, cost = candidate, new
                break
        else:
            return order
    return order


def _repair(order: list[int], secs: np.ndarray, sched: _Schedule) -> list[int]:
    """Move late stops earlier while that lowers the lateness (moves that cost travel to save a window): for
    each late stop, the `REPAIR_SLOTS` earlier slots that add the least travel are tried."""
    budget = REPAIR_PASSES
    cost = sched.cost(order)
    while cost[0] > EPS and budget > 0:
        arrivals = sched.arrivals(order)
        prefix = sched.prefix(order)
        path = np.array([0, *order])
        late = [k for k, v in enumerate(order) if max(arrivals[k], sched.opens[v]) > sched.closes[v] + EPS]
        improved = False
        for k in late:
            v = order[k]
            slots = np.arange(k)  # insert before order[at]
            added = secs[path[slots], v] + secs[v, path[slots + 1]] - secs[path[slots], path[slots + 1]]
            for at in slots[np.argsort(added, kind="stable")[:REPAIR_SLOTS]]:
                budget -= 1
                candidate = order[:at] + [v] + order[at:k] + order[k + 1:]
                new = sched.cost(candidate, int(at), prefix, cost[0])
                if _better(new, cost):
                    order, cost, improved = candidate, new, True
                    break
            if improved or budget <= 0:
                break
        if not improved:
            break
    return order


def resequence(visits: Sequence[Visit], secs: np.ndarray) -> Sequenced:
    """The best order found for `visits`; `secs[a][b]` the leg seconds, node 0 where the van is and
    node k the k-th visit. The given order is a candidate: nothing worse than it is returned."""
    n = len(visits)
    if secs.shape != (n + 1, n + 1):
        raise ValueError(f"leg matrix {secs.shape} for {n} visits")
    sched = _Schedule(secs, visits)
    given = list(range(1, n + 1))
    order = given
    if n > 1:
        greedy = _greedy(secs, sched)
        order = greedy if _better(sched.cost(greedy), sched.cost(given)) else given
        order = _local_search(order, secs, sched)
        order = _repair(order, secs, sched)
        order = _local_search(order, secs, sched)
        if _better(sched.cost(given), sched.cost(order)):
            order = given
    return _result(order, visits, sched)


def as_given(visits: Sequence[Visit], secs: np.ndarray) -> Sequenced:
    """The schedule of the visits in the order given (what keeping the old order would mean)."""
    return _result(list(range(1, len(visits) + 1)), visits, _Schedule(secs, visits))


def _result(order: list[int], visits: Sequence[Visit], sched: _Schedule) -> Sequenced:
    late, finish = sched.cost(order)
    arrivals = sched.arrivals(order)
    late_stops = sum(max(a, sched.opens[v]) > sched.closes[v] + EPS for a, v in zip(arrivals, order))
    return Sequenced(tuple(visits[v - 1].id for v in order), tuple(arrivals), late, finish, late_stops)


def leg_seconds(start: tuple[float, float], visits: Sequence[Visit], road_factor: float,
                speed_mps: float) -> np.ndarray:
    """The leg matrix for `resequence` from the shared road model at one speed."""
    points = [start, *((v.lat, v.lon) for v in visits)]
    return distance_matrix(points) * road_factor / speed_mps
